"""Shared pieces of the end-to-end cloud tests (tests/test_e2e_aws.py, tests/test_e2e_gcp.py).

A cloud run here is the real ``Runner.run`` against a fake cloud (moto / FakeGce) whose
machines "boot" as a real OpenSSH sshd on the instance's 127.0.0.x address, presenting the
host key the provider generated, accepting the run's key. The client must pin that key
from ``Machine.host_keys``: HOME points at an empty folder, so no known_hosts can help.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import socket
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

from launcher.providers.base import Machine
from launcher.runner import RunOptions, Runner
from launcher.spec import JobSpec, parse_spec
from launcher.store import Store
from tests.sshd import Sshd

REPO = Path(__file__).resolve().parent.parent
TINY_WORKLOAD = ("{model: mlp, image_size: 8, num_classes: 10, in_channels: 1, dataset: digits, "
                 "samples_per_epoch: 512, epochs: 1, batch_size: 64, precision: fp32}")
FAIL_PY = ("import os\nos.makedirs('outputs', exist_ok=True)\nopen('outputs/partial.txt', 'w').write('x')\n"
           "print('about to fail', flush=True)\nraise SystemExit(3)\n")


def require_sshd() -> None:
    why_not = Sshd.available()
    if why_not:
        pytest.skip(why_not)


def tiny_spec(name: str, resources: str, entrypoint: str | None = None) -> JobSpec:
    """The tiny MLP job (or a custom entrypoint) on the test's python, which has torch."""
    payload = f"{{python: {sys.executable}" + (f", entrypoint: {entrypoint}" if entrypoint else "") + "}"
    return parse_spec(f"name: {name}\nworkload: {TINY_WORKLOAD}\npayload: {payload}\n"
                      f"resources: {resources}\nlimits: {{max_duration: 5m}}\n")


def guard_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any connection to a non-loopback address fails the test."""
    real = socket.socket.connect

    def connect(self: socket.socket, address: Any) -> Any:
        host = address[0] if isinstance(address, tuple) else None
        if isinstance(host, str) and host != "localhost" and not _is_loopback(host):
            raise AssertionError(f"test tried to reach {address}")
        return real(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def isolate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Own store, empty HOME (no ~/.ssh/known_hosts to fall back on), a clean project dir as cwd
    (a custom entrypoint uploads the cwd). Returns the project dir."""
    monkeypatch.setenv("GPUJOB_HOME", str(tmp_path / "gpujob-home"))
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.chdir(project)
    return project


def gpus_as_launched(host: Any, gpus: int) -> Any:
    """A loopback sshd stands in for a GPU VM: the host pre-flight runs for real (python, torch)
    and its CUDA line is answered as the VM would (``gpus`` devices). Only that line changes."""
    import re
    import shlex

    from launcher.hostcheck import _SCRIPT

    real_run = host.run

    def run(cmd: str, timeout: float | None = None, check: bool = True):
        status, out, err = real_run(cmd, timeout=timeout, check=check)
        if shlex.quote(_SCRIPT) in cmd:
            out = re.sub(r"^cuda \d+$", f"cuda {gpus}", out, flags=re.M)
        return status, out, err

    host.run = run
    return host


class E2E:
    """A Runner whose provider boots a real sshd per launched machine, recording what happened."""

    def __init__(self, provider: Any, boot: Callable[[Machine], Sshd]):
        self.provider = provider
        self.boot = boot
        self.sshds: list[Sshd] = []
        self.machines: list[Machine] = []  # as the provider returned them
        self.events: list[tuple[str, dict]] = []
        self.runner = Runner(store=Store(), on_event=lambda kind, **f: self.events.append((kind, f)),
                             provider_factory=self._factory, host_factory=self._host)
        real_launch = provider.launch

        def launch(spec, ctx, deadline_s):
            m = real_launch(spec, ctx, deadline_s)
            self.machines.append(m)
            sshd = boot(m)
            self.sshds.append(sshd)
            return dataclasses.replace(m, user=sshd.user, port=sshd.port)

        provider.launch = launch  # this instance only

    def _factory(self, name: str, **config: Any) -> Any:
        assert name == self.provider.name, name
        return self.provider

    def _host(self, machine: Machine):
        """The runner's SSH session, checked to pin exactly the provider's host key."""
        from launcher.remote import Session

        sshd = self.sshds[-1]
        assert machine.host_keys and "known_hosts" not in machine.extra, machine
        assert [" ".join(k.split()[:2]) for k in machine.host_keys] == [sshd.host_public.strip()]
        session = Session.from_machine(machine)
        assert session.host_keys == machine.host_keys
        return gpus_as_launched(session, machine.gpu_count)

    def run(self, spec: JobSpec, **config: Any):
        return self.runner.run(spec, RunOptions(provider=self.provider.name, provider_config=config,
                                                baseline=False, launch_deadline_s=60, ssh_deadline_s=30))

    def kinds(self) -> list[str]:
        return [k for k, _ in self.events]

    def stop(self) -> None:
        for sshd in self.sshds:
            sshd.stop()

    def log(self) -> str:
        return "\n".join(s.log_text() for s in self.sshds)


def assert_trained(e2e: E2E, result) -> None:
    """Succeeded, streamed, fetched the artifacts, and the report holds real numbers."""
    rec = result.run
    assert rec.state == "succeeded", f"{rec.reason}\n{e2e.log()}"
    out = Path(rec.artifacts_dir)
    assert (out / "outputs" / "model.pt").is_file()
    metrics = json.loads((out / "outputs" / "metrics.json").read_text())
    assert metrics
    kinds = e2e.kinds()
    assert "progress" in kinds or "log" in kinds
    payload_events = [f["event"].get("event") for k, f in e2e.events if k == "payload"]
    assert "start" in payload_events and "end" in payload_events
    assert '"end"' in e2e.runner.store.log_text(rec.id)
    assert result.report["actual"]["samples"] >= 512
    assert result.report["state"] == "succeeded"
    assert result.report["machine"]["instance_type"]


def assert_torn_down_cleanly(e2e: E2E) -> None:
    """Teardown ran once, after the machine came up, and reported no leftovers."""
    kinds = e2e.kinds()
    assert kinds.index("machine") < kinds.index("teardown") < kinds.index("teardown-done")
    assert [f["leftovers"] for k, f in e2e.events if k == "teardown-done"] == [0]


def run_failing_job(e2e: E2E, project: Path, name: str, resources: str):
    """Run FAIL_PY (exit 3): JobFailed, state failed, log streamed, partial outputs fetched.
    Returns the run record."""
    from launcher.errors import JobFailed

    (project / "fail.py").write_text(FAIL_PY)
    with pytest.raises(JobFailed) as info:
        e2e.run(tiny_spec(name, resources, entrypoint="fail.py"))
    assert info.value.exit_status == 3
    rec = e2e.runner.store.list_runs()[0]
    assert rec.state == "failed" and rec.exit_status == 3
    assert "about to fail" in e2e.runner.store.log_text(rec.id)
    assert (project / "gpujob-runs" / rec.id / "outputs" / "partial.txt").is_file()
    assert_torn_down_cleanly(e2e)
    return rec


def assert_store_released(store: Store, run_id: str, kinds: set[str]) -> None:
    """Every resource the run recorded is marked deleted, and the expected kinds were recorded."""
    rows = store.resources(run_id, live_only=False)
    assert {r.kind for r in rows} >= kinds, rows
    assert all(r.state == "deleted" for r in rows), rows
    assert store.resources(run_id) == []
