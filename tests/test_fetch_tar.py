"""Results come home as one streamed tar (Session.get_dir), against a real sshd on loopback:
nested and empty directories arrive, entries that would escape the results directory are refused
and named, an interrupted fetch resumes (complete files kept, partial ones continued, missing ones
in a tar of just their names), and nothing already there is overwritten."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from launcher import signals
from launcher.errors import RemoteError, SSHConnectError
from launcher.remote import Session

pytestmark = pytest.mark.sshd


def tree(root: Path) -> Path:
    """outputs-like tree: nested dirs, an empty dir, a binary file, a link inside, one pointing out."""
    (root / "ckpt" / "epoch1").mkdir(parents=True)
    (root / "empty" / "deeper").mkdir(parents=True)
    (root / "metrics.json").write_text('{"loss": 0.1}')
    (root / "ckpt" / "epoch1" / "model.pt").write_bytes(os.urandom(300_000))
    (root / "ckpt" / "latest").symlink_to("epoch1")  # inside: kept as a link
    (root / "passwd").symlink_to("/etc/passwd")  # outside: refused
    (root / "up").symlink_to("../../..")  # outside through ..: refused
    return root


def test_fresh_fetch_is_one_tar_with_nested_and_empty_dirs(session, tmp_path):
    remote = tree(tmp_path / "remote")
    skipped: list[str] = []
    channels = []
    real = session._session_channel
    session._session_channel = lambda: channels.append(1) or real()
    got = session.get_dir(str(remote), tmp_path / "local", on_skip=skipped.append)
    local = tmp_path / "local"
    assert sorted(p.relative_to(local).as_posix() for p in got) == ["ckpt/epoch1/model.pt", "metrics.json"]
    assert (local / "ckpt" / "epoch1" / "model.pt").read_bytes() == (remote / "ckpt" / "epoch1" / "model.pt").read_bytes()
    assert (local / "empty" / "deeper").is_dir()
    assert os.readlink(local / "ckpt" / "latest") == "epoch1"
    assert not os.path.lexists(local / "passwd") and not os.path.lexists(local / "up")
    assert sorted(s.split(":")[0] for s in skipped) == ["./passwd", "./up"], skipped
    assert all("link" in s for s in skipped), skipped
    assert channels == [1]  # one exec channel for the whole tree, no SFTP round trips per file
    assert session._sftp_client is None


def test_missing_remote_directory_gives_nothing(session, tmp_path):
    assert session.get_dir(str(tmp_path / "nope"), tmp_path / "local") == []
    (tmp_path / "local2").mkdir()
    (tmp_path / "local2" / "x").write_text("mine")  # the resume path, too
    assert session.get_dir(str(tmp_path / "nope"), tmp_path / "local2") == []
    assert (tmp_path / "local2" / "x").read_text() == "mine"


def test_a_fetch_cut_mid_stream_resumes_without_fetching_twice(session, tmp_path, monkeypatch):
    """The link drops after ~1 MiB of the tar: a retry keeps what is complete, continues the
    partial file from its length over SFTP and fetches the rest in a tar of just those names."""
    remote = tmp_path / "remote"
    (remote / "a").mkdir(parents=True)
    blobs = {f"a/part{i}.bin": os.urandom(400_000) for i in range(6)}
    for rel, data in blobs.items():
        (remote / rel).write_bytes(data)
    (remote / "z-empty").mkdir()
    local = tmp_path / "local"

    import launcher.remote as remote_mod

    real_read = remote_mod._ChannelReader.read

    def cut(self, size=1 << 20):
        if self.total > 1_000_000:  # the link dies mid-stream: what it still held is lost
            session._transport.close()
            return b""
        return real_read(self, min(size, 64 << 10))

    monkeypatch.setattr(remote_mod._ChannelReader, "read", cut)
    with pytest.raises(SSHConnectError, match="lost during download"):
        session.get_dir(str(remote), local)
    monkeypatch.setattr(remote_mod._ChannelReader, "read", real_read)
    partial = [p for p in local.rglob("*.bin") if p.stat().st_size < 400_000]
    complete = {p: p.stat().st_mtime_ns for p in local.rglob("*.bin") if p.stat().st_size == 400_000}
    assert complete and len(complete) < 6, "the cut should land mid-tree"

    tarred: list[list[str]] = []
    real_tar = Session._get_tar

    def spy(self, root, dest, names, skip):
        tarred.append(names)
        return real_tar(self, root, dest, names, skip)

    monkeypatch.setattr(Session, "_get_tar", spy)
    got = session.get_dir(str(remote), local)
    assert sorted(p.relative_to(local).as_posix() for p in got) == sorted(blobs)
    for rel, data in blobs.items():
        assert (local / rel).read_bytes() == data, rel
    assert {p: p.stat().st_mtime_ns for p in complete} == complete  # complete files were not written again
    (names,) = tarred  # one tar, of only what was missing (not the partial file, not the complete ones)
    assert set(names) == {rel for rel in blobs if not (local / rel) in complete and (local / rel) not in partial}
    assert (local / "z-empty").is_dir()


def test_a_local_file_in_the_way_is_named_and_kept(session, tmp_path):
    remote = tmp_path / "remote"
    (remote / "ckpt").mkdir(parents=True)
    (remote / "ckpt" / "model.pt").write_bytes(b"weights")
    (remote / "log.txt").write_text("log")
    local = tmp_path / "local"
    local.mkdir()
    (local / "ckpt").write_text("a file where the directory goes")
    with pytest.raises(RemoteError) as info:
        session.get_dir(str(remote), local)
    assert f"{local / 'ckpt'} is already there (a file)" in info.value.message
    assert "move" in info.value.hint
    assert (local / "ckpt").read_text() == "a file where the directory goes"
    # the destination itself being a file
    (tmp_path / "afile").write_text("mine")
    with pytest.raises(RemoteError, match="already there"):
        session.get_dir(str(remote), tmp_path / "afile")
    assert (tmp_path / "afile").read_text() == "mine"


def test_a_fifo_is_skipped_and_named(session, tmp_path):
    remote = tmp_path / "remote"
    remote.mkdir()
    os.mkfifo(remote / "pipe")
    (remote / "ok.txt").write_text("ok")
    skipped: list[str] = []
    got = session.get_dir(str(remote), tmp_path / "local", on_skip=skipped.append)
    assert [p.name for p in got] == ["ok.txt"]
    assert len(skipped) == 1 and skipped[0].startswith("./pipe:"), skipped
    assert not os.path.lexists(tmp_path / "local" / "pipe")


def test_a_signal_mid_fetch_stops_between_reads(session, tmp_path):
    import signal

    remote = tmp_path / "remote"
    remote.mkdir()
    (remote / "big.bin").write_bytes(os.urandom(4 << 20))
    with signals.handled():
        os.kill(os.getpid(), signal.SIGINT)
        with pytest.raises(signals.Stop):
            session.get_dir(str(remote), tmp_path / "local")
    assert session._alive()  # the connection survives a stopped fetch


def test_channel_reader_reports_a_dead_link():
    from launcher.remote import _ChannelReader

    class Chan:
        def recv(self, n):
            raise socket.timeout()

    with pytest.raises(EOFError):
        _ChannelReader(Chan(), lambda: False).read(10)


def test_a_run_over_ssh_brings_the_tree_home_and_reports_what_it_refused(sshd, client_key, tmp_path, monkeypatch):
    """The real Runner on the ssh provider: the job's outputs (nested, empty dirs, a link out)
    arrive through the tar fetch; the link out is named in a warning, the run succeeds."""
    import sys

    from launcher.runner import RunOptions, Runner
    from launcher.spec import parse_spec
    from launcher.store import Store

    monkeypatch.setenv("GPUJOB_HOME", str(tmp_path / "state"))
    project = tmp_path / "project"
    project.mkdir()
    (project / "job.py").write_text(
        "import os\nos.makedirs('outputs/a/b', exist_ok=True)\nos.makedirs('outputs/empty', exist_ok=True)\n"
        "open('outputs/a/b/w.bin', 'wb').write(b'w' * 1000)\nos.symlink('/etc/hostname', 'outputs/host')\n")
    monkeypatch.chdir(project)
    known = tmp_path / "known_hosts"
    known.write_text(sshd.known_hosts_line() + "\n")
    events: list[tuple[str, dict]] = []
    runner = Runner(store=Store(), on_event=lambda kind, **f: events.append((kind, f)))
    spec = parse_spec(f"name: tarfetch\npayload: {{python: {sys.executable}, entrypoint: job.py}}\n")
    result = runner.run(spec, RunOptions(provider="ssh", baseline=False, artifacts_dir=str(tmp_path / "res"),
                                         provider_config={"host": sshd.host, "port": sshd.port, "user": sshd.user,
                                                          "identity": str(client_key.path), "known_hosts": str(known)}))
    assert result.run.state == "succeeded", result.run.reason
    out = tmp_path / "res" / "outputs"
    assert (out / "a" / "b" / "w.bin").read_bytes() == b"w" * 1000 and (out / "empty").is_dir()
    assert not os.path.lexists(out / "host")
    warned = [f["message"] for k, f in events if k == "warning" and "not fetched" in f["message"]]
    assert len(warned) == 1 and "./host" in warned[0] and "link" in warned[0], warned


def test_channel_reader_gives_up_on_a_peer_that_stopped_answering():
    from launcher.remote import _ChannelReader

    class Chan:
        def recv(self, n):
            raise socket.timeout()

    with pytest.raises(EOFError, match="no data for 0 s"):
        _ChannelReader(Chan(), lambda: True, stall_s=0).read(10)
