"""Liveness, not records (issue 14, failures 1 and 6): a killed client leaves an orphaned run that `ls`
shows and `gc --yes` collects (job stopped, results home, resources released). The CLI process
signalled (SIGINT/SIGTERM/SIGHUP) or killed (then gc) at every stage on aws, gcp and ssh is the
interruption matrix, tests/test_interruptions.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launcher.liveness import holder_alive, orphaned, this_client
from launcher.localhost import group_alive
from launcher.store import Store

REPO = Path(__file__).resolve().parent.parent
SLOW_PY = "import time\nfor i in range(2000):\n    print('line', i, flush=True)\n    time.sleep(0.05)\n"


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_lease_of_a_dead_or_reused_pid_is_gone():
    me = this_client()
    assert holder_alive(me)
    assert not holder_alive({**me, "pid": _dead_pid()})
    assert not holder_alive({**me, "started": (me["started"] or 0) + 1})  # same pid, another process
    other = {**me, "host": "elsewhere"}
    assert holder_alive(other) and not holder_alive(other, now=me["refreshed"] + 3600)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_lease_of_a_killed_client_its_parent_has_not_reaped_is_gone():
    """`kill -9` of a `gpujob run` started by a script that does not wait on it (or under a
    container's init that never reaps): `ls` kept saying "running" and `gc` "nothing to collect"
    while the client lingered as a zombie, whose pid still answers os.kill(pid, 0)."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lease = {**this_client(), "pid": child.pid, "started": None}
        assert holder_alive(lease)
        child.kill()
        deadline = time.time() + 10
        while Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
            assert time.time() < deadline
            time.sleep(0.02)
        assert not holder_alive(lease)  # a zombie: not reaped yet (we wait below)
    finally:
        child.kill()
        child.wait()


def _cli(*args, env, **kw):
    return subprocess.run([sys.executable, "-m", "launcher", *args], env=env, capture_output=True, text=True,
                          timeout=120, **kw)


def _start(args, env, cwd):
    """The CLI as a user starts it: SIGINT at its default (a background job would ignore it)."""
    return subprocess.Popen([sys.executable, "-m", "launcher", *args], env=env, cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _wait_state(store: Store, state: str, timeout_s: float = 60):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        runs = store.list_runs()
        if runs and runs[0].state == state and (state != "running" or store.log_text(runs[0].id)):
            return runs[0]
        time.sleep(0.1)
    raise AssertionError(f"never reached {state}: {[(r.id, r.state, r.reason) for r in store.list_runs()]}")


@pytest.fixture
def ssh_cli(tmp_path, sshd, client_key):
    home = tmp_path / "state"
    env = {**os.environ, "GPUJOB_HOME": str(home), "PYTHONPATH": str(REPO)}
    known = tmp_path / "known_hosts"
    known.write_text(sshd.known_hosts_line() + "\n")
    project = tmp_path / "project"
    project.mkdir()
    (project / "slow.py").write_text(SLOW_PY)
    (project / "job.yaml").write_text(f"name: slow\npayload: {{entrypoint: slow.py, python: {sys.executable}}}\n"
                                      "limits: {max_duration: 10m}\n")
    args = ["run", "job.yaml", "--provider", "ssh", "--host", sshd.host, "--port", str(sshd.port), "--user",
            sshd.user, "-i", str(client_key.path), "--known-hosts", str(known), "--no-baseline"]
    return env, project, args, home


@pytest.mark.sshd
def test_sigkilled_client_is_orphaned_then_collected_by_gc(ssh_cli):
    """Failure 1: after kill -9, gc said the resources "belong to live runs"."""
    env, project, args, home = ssh_cli
    proc = _start(args, env, project)
    store = Store(home / "runs.db")
    rec = _wait_state(store, "running")
    proc.kill()
    proc.wait(30)
    pid = store.get_run(rec.id).machine["pid"]
    assert group_alive(pid)  # a killed client stops nothing by itself
    assert orphaned(store.get_run(rec.id))
    ls = json.loads(_cli("ls", "--json", env=env, cwd=project).stdout)
    assert ls[0]["id"] == rec.id and ls[0]["orphaned"] is True

    dry = _cli("gc", env=env, cwd=project)
    assert dry.returncode == 0 and f"orphaned run {rec.id}" in dry.stdout, dry.stdout + dry.stderr
    assert group_alive(pid)  # a dry run touches nothing
    res = _cli("gc", "--provider", "ssh", "--yes", env=env, cwd=project)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "will stop and release" in res.stdout and f"orphaned run {rec.id}" in res.stdout
    assert "Traceback" not in res.stdout + res.stderr
    got = store.get_run(rec.id)
    assert got.state == "interrupted" and "collected by gpujob gc" in got.reason and got.ended_at
    assert not group_alive(pid)
    assert (Path(got.artifacts_dir) / "job.log").is_file()  # brought home before the release


def test_gc_for_gcp_takes_project(tmp_path, monkeypatch):
    """Failure 1 (its second half): `gc --provider gcp` asked for --project and did not accept it."""
    pytest.importorskip("google.cloud.compute_v1")
    from typer.testing import CliRunner

    from launcher.cli import app
    from tests.test_e2e_gcp import fake_for

    monkeypatch.setenv("GPUJOB_HOME", str(tmp_path / "state"))
    for var in ("GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT", "CLOUDSDK_CORE_PROJECT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    fake = fake_for(monkeypatch, 240)
    try:
        res = CliRunner().invoke(app, ["gc", "--provider", "gcp", "--project", "test-project", "--json"])
    finally:
        fake.stop()
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)
    assert report["errors"] == [] and report["orphans"] == [] and report["orphaned_runs"] == []


def test_following_a_run_whose_job_never_started_replays_it(tmp_path):
    """A client killed while it connected or uploaded leaves a machine but no job: `logs --follow`
    (which adopts orphaned runs) replays what there is instead of failing on the missing job."""
    from launcher.runner import Runner

    store = Store(tmp_path / "runs.db")
    store.create_run("rnojob001", "j", "ssh", spec_path=None, spec_text=None, spec={"name": "j"}, provider_config={})
    store.update_run("rnojob001", machine={"provider": "ssh", "id": "box", "host": "127.0.0.1",
                                           "workdir": "/nonexistent/gpujob/rnojob001"})
    store.set_state("rnojob001", "uploading")
    seen = []
    result = Runner(store=store, on_event=lambda kind, **f: seen.append(kind)).attach("rnojob001", follow=True)
    assert result.run.state == "uploading" and seen == ["log"]
