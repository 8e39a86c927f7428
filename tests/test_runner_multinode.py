"""A two-node job through the real lifecycle: two sshd "machines", torchrun with gloo on loopback."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from launcher.errors import CapacityError
from launcher.providers.base import Machine
from launcher.runner import RunOptions, Runner
from launcher.spec import parse_spec
from launcher.store import Store
from tests.sshd import Sshd

pytestmark = pytest.mark.sshd

SPEC = f"""
name: two-nodes
workload: {{model: mlp, image_size: 8, num_classes: 10, in_channels: 1, dataset: synthetic,
           samples_per_epoch: 256, epochs: 1, batch_size: 16, precision: fp32}}
resources: {{num_nodes: 2}}
payload: {{python: {sys.executable}}}
env: {{GLOO_SOCKET_IFNAME: lo, OMP_NUM_THREADS: "1"}}
limits: {{max_duration: 30m}}
"""


class TwoMachines:
    """A provider whose 'cluster' is two sshd listeners on this host."""

    name = "fake"

    def __init__(self, servers, key_path, fail: bool = False):
        self.servers, self.key_path, self.fail = servers, key_path, fail
        self.torn_down: list[str] = []

    def plan(self, spec, ctx):
        return {"instance_type": None, "price_per_hour": 1.0}

    def launch_nodes(self, spec, ctx, deadline_s, count):
        if self.fail:
            ctx.intent("instance", "node-0")
            raise CapacityError("fake", f"only 1 of {count} nodes could be launched in zone-a")
        return [Machine(provider="fake", id=f"node-{i}", host=s.host, port=s.port, user=s.user,
                        key_path=str(self.key_path), host_keys=[s.host_public], private_ip="127.0.0.1",
                        price_per_hour=1.0) for i, s in enumerate(self.servers)]

    def poll(self, machine):
        return None

    def teardown(self, run_id, resources, ctx):
        self.torn_down.append(run_id)
        return []

    def find(self, regions):
        return []


@pytest.fixture
def cluster(tmp_path, monkeypatch, sshd, client_key):
    monkeypatch.setenv("GPUJOB_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    second = Sshd(tmp_path / "sshd2", authorized_keys=[client_key.public]).start()
    try:
        yield [sshd, second], client_key.path
    finally:
        second.stop()


def test_two_nodes_train_and_stream_with_rank_prefix(cluster):
    servers, key = cluster
    provider = TwoMachines(servers, key)
    events: list[tuple[str, dict]] = []
    runner = Runner(store=Store(), on_event=lambda k, **f: events.append((k, f)),
                    provider_factory=lambda name, **cfg: provider)
    result = runner.run(parse_spec(SPEC), RunOptions(provider="fake", baseline=False))
    rec = result.run
    assert rec.state == "succeeded", rec.reason
    start = [f["event"] for k, f in events if k == "payload" and f["event"].get("event") == "start"]
    assert start and start[0]["world_size"] == 2
    out = Path(rec.artifacts_dir)
    assert (out / "outputs" / "model.pt").is_file() and (out / "job-node1.log").is_file()
    assert rec.price_per_hour == 2.0  # two machines bill
    assert provider.torn_down == [rec.id]


def test_every_node_streams_with_its_prefix(cluster, tmp_path):
    servers, key = cluster
    (tmp_path / "hello.py").write_text("import os\nprint('hello from rank', os.environ['RANK'], flush=True)\n")
    spec = parse_spec(SPEC.replace("payload: {", "payload: {entrypoint: hello.py, "))
    events: list[tuple[str, dict]] = []
    runner = Runner(store=Store(), on_event=lambda k, **f: events.append((k, f)),
                    provider_factory=lambda name, **cfg: TwoMachines(servers, key))
    assert runner.run(spec, RunOptions(provider="fake", baseline=False)).run.state == "succeeded"
    lines = [f["text"] for k, f in events if k == "log"]
    assert "hello from rank 0" in lines and "[node 1] hello from rank 1" in lines


def test_partial_launch_stops_cleanly_and_tears_down(cluster):
    servers, key = cluster
    provider = TwoMachines(servers, key, fail=True)
    runner = Runner(store=Store(), provider_factory=lambda name, **cfg: provider)
    with pytest.raises(CapacityError, match="only 1 of 2"):
        runner.run(parse_spec(SPEC), RunOptions(provider="fake", baseline=False))
    rec = runner.store.list_runs()[0]
    assert rec.state == "launch-failed" and provider.torn_down == [rec.id]
    assert runner.store.resources(rec.id) == []


def test_single_machine_providers_refuse_num_nodes(tmp_path, monkeypatch):
    monkeypatch.setenv("GPUJOB_HOME", str(tmp_path / "home"))
    from launcher.errors import UsageError

    with pytest.raises(UsageError, match="num_nodes"):
        Runner(store=Store()).run(parse_spec(SPEC), RunOptions(provider="local", baseline=False))
