"""Results before teardown (issue 14, failures 2 and 5): where results land, a failed fetch keeps the
machine (fetch-failed, `gpujob fetch`, `down --discard`), an interrupted fetch resumes per file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from launcher import artifacts
from launcher.errors import FetchFailed, UsageError
from launcher.localhost import LocalHost
from launcher.providers.local import LocalProvider
from launcher.runner import RunOptions, Runner
from launcher.spec import parse_spec
from launcher.store import Store

TINY = """
name: tiny
workload: {model: mlp, image_size: 8, num_classes: 10, in_channels: 1, dataset: digits,
           samples_per_epoch: 256, epochs: 1, batch_size: 64, precision: fp32}
limits: {max_duration: 5m}
"""


def test_destination_for_every_shape_of_artifacts(tmp_path, monkeypatch):
    cwd = tmp_path / "work"
    cwd.mkdir()
    (cwd / "mine.txt").write_text("x")
    home = tmp_path / "home"
    home.mkdir()
    (home / ".bashrc").write_text("x")
    monkeypatch.setenv("HOME", str(home))
    choose = lambda d: artifacts.choose_destination("r1", d, cwd=cwd)  # noqa: E731
    assert choose(None) == cwd / "gpujob-runs" / "r1"
    assert choose(".") == cwd / "gpujob-r1"  # failure 2: "PosixPath('.') has an empty name"
    assert choose("..") == tmp_path / "gpujob-r1"
    assert choose("~") == home / "gpujob-r1"
    assert choose("new") == cwd / "new"  # missing: used as is
    (cwd / "empty").mkdir()
    assert choose("empty") == cwd / "empty"
    with pytest.raises(UsageError, match="is a file"):
        choose("mine.txt")
    with pytest.raises(UsageError, match="is a file"):
        choose("mine.txt/sub")
    (cwd / "gpujob-runs").write_text("a file where the default directory goes")
    with pytest.raises(UsageError, match="gpujob-runs is a file"):
        choose(None)


class _Local(LocalProvider):
    teardowns: list[str] = []

    def teardown(self, run_id, resources, ctx):
        _Local.teardowns.append(run_id)
        return []


class _BrokenFetchHost(LocalHost):
    """A host whose downloads fail `fail` times (then work)."""

    fail = 1

    def get_dir(self, remote_dir, local_dir, on_skip=None):
        if _BrokenFetchHost.fail > 0:
            _BrokenFetchHost.fail -= 1
            raise OSError("link dropped during the download")
        return super().get_dir(remote_dir, local_dir, on_skip)


@pytest.fixture
def runner(tmp_path, monkeypatch):
    monkeypatch.setenv("GPUJOB_HOME", str(tmp_path / "state"))
    monkeypatch.chdir(tmp_path)
    _Local.teardowns = []
    return Runner(store=Store(), provider_factory=lambda name, **cfg: _Local(),
                  host_factory=lambda m: _BrokenFetchHost())


def test_artifacts_dot_lands_in_a_fresh_directory_inside(runner, tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    _BrokenFetchHost.fail = 0
    rec = runner.run(parse_spec(TINY), RunOptions(baseline=False, artifacts_dir=".")).run
    assert rec.state == "succeeded"
    assert Path(rec.artifacts_dir) == tmp_path / f"gpujob-{rec.id}"
    assert (Path(rec.artifacts_dir) / "outputs" / "model.pt").is_file()
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_default_directory_being_a_file_is_refused_before_launch(runner, tmp_path):
    (tmp_path / "gpujob-runs").write_text("not a directory")
    with pytest.raises(UsageError, match="is a file"):
        runner.run(parse_spec(TINY), RunOptions(baseline=False))
    (rec,) = runner.store.list_runs()
    assert rec.state == "cancelled" and rec.launched_at is None and _Local.teardowns == []


def test_failed_fetch_keeps_the_machine_then_fetch_resumes_and_releases(runner, tmp_path):
    _BrokenFetchHost.fail = 1
    with pytest.raises(FetchFailed, match=r"gpujob fetch r\w+.*gpujob down r\w+ --discard"):
        runner.run(parse_spec(TINY), RunOptions(baseline=False))
    (rec,) = runner.store.list_runs()
    assert rec.state == "fetch-failed" and rec.exit_status == 0 and not rec.finished
    assert _Local.teardowns == []  # the only copy is not released
    assert Path(rec.machine["workdir"], "outputs", "model.pt").is_file()  # local: the workdir is kept too
    result = runner.fetch(rec.id)
    assert result.run.state == "succeeded" and result.run.fetched_at
    assert (Path(result.run.artifacts_dir) / "outputs" / "model.pt").is_file()
    assert _Local.teardowns == [rec.id]


def test_down_refuses_to_drop_unfetched_results_unless_discard(runner, tmp_path):
    _BrokenFetchHost.fail = 3
    with pytest.raises(FetchFailed):
        runner.run(parse_spec(TINY), RunOptions(baseline=False))
    (rec,) = runner.store.list_runs()
    with pytest.raises(FetchFailed):
        runner.down(rec.id)
    assert runner.store.get_run(rec.id).state == "fetch-failed" and _Local.teardowns == []
    runner.down(rec.id, discard=True)
    got = runner.store.get_run(rec.id)
    assert got.state == "cancelled" and "discard" in got.reason and _Local.teardowns == [rec.id]


@pytest.mark.sshd
def test_interrupted_download_resumes_per_file(tmp_path, sshd, client_key):
    """Complete files are skipped (not fetched again), a partial one is continued from its length."""
    from launcher.remote import Session

    remote = tmp_path / "remote"
    (remote / "sub").mkdir(parents=True)
    big = os.urandom(3 << 20)
    (remote / "big.bin").write_bytes(big)
    (remote / "sub" / "small.txt").write_text("small")
    local = tmp_path / "local"
    (local / "sub").mkdir(parents=True)
    (local / "big.bin").write_bytes(big[: 1 << 20])  # a download stopped a third of the way
    (local / "sub" / "small.txt").write_text("SMALL")  # complete (same size): kept as is
    with Session(sshd.host, sshd.port, sshd.user, client_key.path, host_keys=[sshd.host_public]) as s:
        got = s.get_dir(str(remote), local)
    assert sorted(p.name for p in got) == ["big.bin", "small.txt"]
    assert (local / "big.bin").read_bytes() == big
    assert (local / "sub" / "small.txt").read_text() == "SMALL"


@pytest.mark.sshd
def test_fetch_from_a_peer_that_stops_answering_ends_fetch_failed_then_resumes(tmp_path, monkeypatch, sshd, client_key):
    """Failure 5: a fetch "hung 174 s in sftp.get" while the instance billed. The machine's sshd stops
    answering (SIGSTOP: the kernel still acks, nothing replies) as the download starts: the fetch
    ends, bounded, in fetch-failed naming `gpujob fetch RUN`; once the peer is back, that command
    resumes into the same directory and releases the run."""
    import signal as _signal
    import sys

    from launcher import remote
    from launcher.remote import Session
    from launcher.runner import Runner
    from launcher.store import Store

    monkeypatch.setattr(remote, "DEAD_LINK_S", 1)  # keep the test short; the product waits 15 s x 4
    monkeypatch.setenv("GPUJOB_HOME", str(tmp_path / "home"))
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.chdir(project)
    (project / "job.py").write_text("import os\nos.makedirs('outputs', exist_ok=True)\n"
                                    "open('outputs/weights.bin', 'wb').write(os.urandom(4 << 20))\n")
    known = tmp_path / "known_hosts"
    known.write_text(sshd.known_hosts_line() + "\n")
    config = {"host": sshd.host, "port": sshd.port, "user": sshd.user, "identity": str(client_key.path),
              "known_hosts": str(known)}
    stopped: list[int] = []
    real_get_dir = Session.get_dir

    def get_dir(self, remote_dir, local_dir, **kw):
        if not stopped:  # the first download: the peer freezes
            stopped.extend(sshd.connection_pids())
            for pid in stopped:
                os.kill(pid, _signal.SIGSTOP)
        return real_get_dir(self, remote_dir, local_dir, **kw)

    monkeypatch.setattr(Session, "get_dir", get_dir)
    runner = Runner(store=Store())
    spec = parse_spec(f"name: stall\npayload: {{entrypoint: job.py, python: {sys.executable}}}\n"
                      "limits: {max_duration: 5m}\n")
    try:
        with pytest.raises(FetchFailed) as info:
            runner.run(spec, RunOptions(provider="ssh", provider_config=config, baseline=False))
    finally:
        for pid in stopped:
            os.kill(pid, _signal.SIGCONT)
    (rec,) = runner.store.list_runs()
    assert stopped and rec.state == "fetch-failed" and rec.exit_status == 0
    assert f"gpujob fetch {rec.id}" in str(info.value) and f"gpujob down {rec.id} --discard" in str(info.value)
    result = runner.fetch(rec.id)
    assert result.run.state == "succeeded" and result.run.artifacts_dir == rec.artifacts_dir
    assert (Path(rec.artifacts_dir) / "outputs" / "weights.bin").stat().st_size == 4 << 20
