"""The interruption matrix: aws (moto) / gcp (fake endpoint) / ssh (loopback sshd) x SIGINT, SIGTERM,
SIGHUP x the stages provisioning, waiting for SSH, upload, running, fetch.

The real signal is sent to this process the moment the run enters the stage (the runner's
handlers are installed: nothing is raised from the handler, the lifecycle stops at its next
safe point). After it: Interrupted (exit 130), state `interrupted`, every resource released,
no job left running. SIGKILL of the CLI process is covered in tests/test_liveness.py (gc).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from launcher.errors import Interrupted
from launcher.localhost import group_alive
from launcher.runner import RunOptions, Runner
from launcher.store import Store
from tests.aws_fixtures import aws, aws_env  # noqa: F401 (fixtures)
from tests.e2e_support import E2E, assert_store_released, guard_loopback, isolate, require_sshd, tiny_spec
from tests.sshd import free_port

pytestmark = pytest.mark.sshd

STAGES = ["provisioning", "connecting", "uploading", "running", "fetching"]
SIGNALS = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP]
SLOW_PY = ("import os, time\nos.makedirs('outputs', exist_ok=True)\n"
           "for i in range(300):\n    print('line', i, flush=True)\n    time.sleep(0.05)\n"
           "open('outputs/done.txt', 'w').write('x')\n")


def signal_on_state(store: Store, stage: str, sig: int) -> None:
    """Send `sig` to this process when the run enters `stage` (for `running`: a second after the job started)."""
    real = store.set_state

    def set_state(run_id, state, *a, **k):
        real(run_id, state, *a, **k)
        if state == stage:
            if stage == "running":
                time.sleep(1.0)  # the job is up and logging
            os.kill(os.getpid(), sig)

    store.set_state = set_state


def cells():
    out = []
    for provider in ("aws", "gcp", "ssh"):
        for i, stage in enumerate(STAGES):
            sig = SIGNALS[(i + ("aws", "gcp", "ssh").index(provider)) % 3]  # each signal on each provider
            out.append(pytest.param(provider, stage, sig, id=f"{provider}-{stage}-{signal.Signals(sig).name}"))
    return out


def assert_interrupted(runner: Runner, run_id: str, stage: str) -> None:
    rec = runner.store.get_run(run_id)
    assert rec.state == "interrupted", (rec.state, rec.reason)
    assert rec.ended_at is not None
    assert runner.store.resources(run_id) == []
    pid = (rec.machine or {}).get("pid")
    if pid:  # the job was started: it is stopped (the job host is this machine, via loopback sshd)
        deadline = time.time() + 10
        while group_alive(pid) and time.time() < deadline:
            time.sleep(0.1)
        assert not group_alive(pid)
    if stage == "fetching":  # the fetch finished before the run stopped: results are home
        assert rec.exit_status == 0 and rec.fetched_at
        assert (Path(rec.artifacts_dir) / "outputs" / "done.txt").is_file()


@pytest.fixture
def project(tmp_path, monkeypatch):
    guard_loopback(monkeypatch)
    proj = isolate(tmp_path, monkeypatch)
    (proj / "slow.py").write_text(SLOW_PY)
    return proj


def _aws_run(tmp_path, stage, sig):
    from tests.aws_fixtures import booted_sshd_for, fast_session, loopback_addresses
    from launcher.providers.aws.launch import AwsProvider
    import boto3

    provider = AwsProvider(regions=["us-east-1"], ssh_cidr="127.0.0.1/32", session=fast_session(),
                           sleep=lambda s: time.sleep(min(s, 0.05)))
    e2e = E2E(provider, lambda m: booted_sshd_for(m.id, tmp_path / f"sshd-{m.id}", region=m.region,
                                                  port=free_port(m.host)))
    signal_on_state(e2e.runner.store, stage, sig)
    try:
        with loopback_addresses(first=200 + STAGES.index(stage) * 3 + SIGNALS.index(sig)):
            with pytest.raises(Interrupted) as info:
                e2e.run(tiny_spec("int-aws", "{accelerators: 'T4:1', regions: [us-east-1]}", entrypoint="slow.py"))
    finally:
        e2e.stop()
    assert provider.find(["us-east-1"]) == []
    live = boto3.client("ec2", region_name="us-east-1").describe_instances(
        Filters=[{"Name": "instance-state-name", "Values": ["pending", "running"]}])
    assert [i for r in live["Reservations"] for i in r["Instances"]] == []
    return e2e.runner, info.value


def _gcp_run(tmp_path, monkeypatch, stage, sig):
    from tests.test_e2e_gcp import fake_for, make_e2e

    fake = fake_for(monkeypatch, 100 + STAGES.index(stage) * 3 + SIGNALS.index(sig))
    e2e = make_e2e(fake, tmp_path)
    signal_on_state(e2e.runner.store, stage, sig)
    try:
        with pytest.raises(Interrupted) as info:
            e2e.run(tiny_spec("int-gcp", "{accelerators: 'T4:1', regions: [us-central1]}", entrypoint="slow.py"))
        assert fake.leftovers() == []
    finally:
        e2e.stop()
        fake.stop()
    return e2e.runner, info.value


def _ssh_run(tmp_path, sshd, client_key, stage, sig):
    known = tmp_path / "known_hosts"
    known.write_text(sshd.known_hosts_line() + "\n")
    config = {"host": sshd.host, "port": sshd.port, "user": sshd.user, "identity": str(client_key.path),
              "known_hosts": str(known)}
    runner = Runner(store=Store())
    signal_on_state(runner.store, stage, sig)
    with pytest.raises(Interrupted) as info:
        runner.run(tiny_spec("int-ssh", "{}", entrypoint="slow.py"),
                   RunOptions(provider="ssh", provider_config=config, baseline=False))
    return runner, info.value


@pytest.mark.parametrize("provider,stage,sig", cells())
def test_signal_at_every_stage_releases_everything(provider, stage, sig, project, tmp_path, monkeypatch, request):
    require_sshd()
    if stage == "fetching":  # a job that ends quickly, so the signal lands in the fetch
        (project / "slow.py").write_text(SLOW_PY.replace("range(300)", "range(3)"))
    if provider == "aws":
        pytest.importorskip("moto")
        request.getfixturevalue("aws")
        runner, err = _aws_run(tmp_path, stage, sig)
    elif provider == "gcp":
        pytest.importorskip("google.cloud.compute_v1")
        for var in ("GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT", "CLOUDSDK_CORE_PROJECT"):
            monkeypatch.delenv(var, raising=False)
        monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
        runner, err = _gcp_run(tmp_path, monkeypatch, stage, sig)
    else:
        runner, err = _ssh_run(tmp_path, request.getfixturevalue("sshd"), request.getfixturevalue("client_key"),
                               stage, sig)
    assert err.exit_code == 130 and signal.Signals(sig).name in str(err)
    (rec,) = runner.store.list_runs()
    assert_interrupted(runner, rec.id, stage)
    if provider != "ssh":
        assert_store_released(runner.store, rec.id, {"instance"})
