"""Remote execution against a real sshd on loopback (tests/sshd.py)."""

from __future__ import annotations

import hashlib
import time

import paramiko
import pytest

from launcher.errors import HostKeyError, RemoteCommandFailed, RemoteError, SSHConnectError, WaitTimeout
from launcher.keys import fingerprint, generate_ed25519
from launcher.remote import Session, _Cursor, known_host_keys
from launcher.uploads import select_files

pytestmark = pytest.mark.sshd


def test_run_returns_status_stdout_stderr(session):
    assert session.run("echo out; echo err >&2; exit 7", check=False) == (7, "out\n", "err\n")
    assert session.run("printf 'h\\xc3\\xa9'")[1] == "hé"
    assert session.connections_opened == 1  # one connection for every command


def test_run_check_raises_with_stderr_tail(session):
    with pytest.raises(RemoteCommandFailed) as info:
        session.run("echo first >&2; echo 'the real reason' >&2; exit 3")
    assert info.value.exit_status == 3 and "the real reason" in str(info.value)


def test_run_timeout(session):
    # Without the timeout this would outlast pytest's own timeout; how long it takes is bench's business.
    with pytest.raises(WaitTimeout):
        session.run("sleep 900", timeout=0.5)


def test_unknown_host_key_refused(sshd, client_key, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    s = Session(sshd.host, sshd.port, sshd.user, client_key.path, known_hosts=empty)
    with pytest.raises(HostKeyError) as info:
        s.connect()
    msg = str(info.value)
    assert "not known" in msg and f"ssh-keyscan -p {sshd.port} {sshd.host}" in msg
    assert fingerprint(sshd.host_public) in msg and "\n" not in msg
    assert s.connections_opened == 0


def test_changed_host_key_refused_naming_both_fingerprints(sshd, client_key):
    other = generate_ed25519()[1]
    s = Session(sshd.host, sshd.port, sshd.user, client_key.path, host_keys=[other])
    with pytest.raises(HostKeyError) as info:
        s.connect()
    assert fingerprint(other) in str(info.value) and fingerprint(sshd.host_public) in str(info.value)
    # a changed key is not retried into a timeout: the wait gives up with the key error
    with pytest.raises(HostKeyError):
        s.wait_until_reachable(1)


def test_known_hosts_plain_and_hashed(sshd, client_key, tmp_path):
    plain = tmp_path / "plain"
    plain.write_text("# comment\nbad line\n" + sshd.known_hosts_line() + "\n")
    hashed = tmp_path / "hashed"
    name = paramiko.HostKeys.hash_host(f"[{sshd.host}]:{sshd.port}")
    hashed.write_text(f"{name} {sshd.host_public}\n")
    for path in (plain, hashed):
        assert known_host_keys(path, sshd.host, sshd.port) == [sshd.host_public]
        s = Session(sshd.host, sshd.port, sshd.user, client_key.path, known_hosts=path)
        assert s.run("echo ok")[1] == "ok\n"
        s.close()
    # the port matters: an entry for port 22 does not vouch for another port
    other_port = tmp_path / "p22"
    other_port.write_text(f"{sshd.host} {sshd.host_public}\n")
    assert known_host_keys(other_port, sshd.host, sshd.port) == []


def test_wrong_client_key_is_a_connect_error(sshd, tmp_path):
    from launcher.keys import write_private_key

    key = write_private_key(tmp_path / "other", generate_ed25519()[0])
    s = Session(sshd.host, sshd.port, sshd.user, key, host_keys=[sshd.host_public])
    with pytest.raises(SSHConnectError, match="refused the key"):
        s.connect()


def test_wait_until_reachable(session, sshd, client_key):
    assert session.wait_until_reachable(5) < 5
    assert session.connections_opened == 1
    from tests.sshd import free_port

    nobody = Session(sshd.host, free_port(), sshd.user, client_key.path, host_keys=[sshd.host_public])
    with pytest.raises(WaitTimeout, match="SSH on 127.0.0.1"):
        nobody.wait_until_reachable(1.0)


def test_put_dir_honours_ignore_patterns(session, tmp_path):
    src = tmp_path / "src"
    for rel in ["train.py", "pkg/model.py", "pkg/__pycache__/model.pyc", ".git/config",
                "data/big.bin", "logs/run.log", "notes.log", "keep/data/x.txt", "run.sh"]:
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(rel)
    (src / "run.sh").chmod(0o755)
    (src / ".gpujobignore").write_text("# from the file\n*.log\n!notes.log\n")
    expected = [".gpujobignore", "keep/data/x.txt", "notes.log", "pkg/model.py", "run.sh", "train.py"]
    assert sorted(select_files(src, ["__pycache__/", ".git", "/data"])) == expected
    remote = tmp_path / "remote"
    assert sorted(session.put_dir(src, str(remote), ["__pycache__/", ".git", "/data"])) == expected
    got = sorted(p.relative_to(remote).as_posix() for p in remote.rglob("*") if p.is_file())
    assert got == expected
    assert (remote / "run.sh").stat().st_mode & 0o111  # executable bit kept


def test_put_dir_streams_odd_names_symlinks_and_many_files(session, tmp_path):
    src = tmp_path / "src"
    (src / "deep/er/still").mkdir(parents=True)
    (src / "deep/er/still/ünï cödé.txt").write_text("odd name")
    (src / "target.bin").write_bytes(bytes(range(256)) * 400)
    (src / "link.bin").symlink_to(src / "target.bin")  # followed: the machine gets a copy
    for i in range(300):
        (src / f"many/f{i:03d}.py").parent.mkdir(exist_ok=True)
        (src / f"many/f{i:03d}.py").write_text(f"x = {i}\n")
    remote = tmp_path / "remote dir"  # a space in the remote path too
    files = session.put_dir(src, str(remote))
    assert len(files) == 303
    assert (remote / "deep/er/still/ünï cödé.txt").read_text() == "odd name"
    assert (remote / "link.bin").read_bytes() == (src / "target.bin").read_bytes()
    assert not (remote / "link.bin").is_symlink()
    assert (remote / "many/f299.py").read_text() == "x = 299\n"


def test_put_dir_unreadable_local_file_is_one_clear_error(session, tmp_path, monkeypatch):
    from launcher.errors import RemoteError

    src = tmp_path / "src"
    src.mkdir()
    (src / "a.py").write_text("a")
    (src / "secret.key").write_text("k")
    real_open = open

    def refusing_open(path, *a, **k):
        if str(path).endswith("secret.key"):  # root reads any mode: simulate the refusal
            raise PermissionError(13, "Permission denied")
        return real_open(path, *a, **k)

    monkeypatch.setattr("builtins.open", refusing_open)
    with pytest.raises(RemoteError, match=r"cannot read .*secret.key: Permission denied; .*payload.ignore"):
        session.put_dir(src, str(tmp_path / "remote"))


def test_get_dir_and_read_file(session, tmp_path):
    remote = tmp_path / "artifacts"
    (remote / "ckpt").mkdir(parents=True)
    (remote / "metrics.json").write_text("{}")
    (remote / "ckpt" / "model.pt").write_bytes(b"\x00" * 1000)
    local = tmp_path / "local"
    got = session.get_dir(str(remote), local)
    assert sorted(p.relative_to(local).as_posix() for p in got) == ["ckpt/model.pt", "metrics.json"]
    assert (local / "ckpt" / "model.pt").read_bytes() == b"\x00" * 1000
    assert session.get_dir(str(tmp_path / "missing"), tmp_path / "l2") == []
    assert session.read_file(str(remote / "metrics.json")) == b"{}"
    assert session.read_file(str(tmp_path / "nope")) is None


def test_put_bytes_is_0600(session, tmp_path):
    session.put_bytes(b"secret", str(tmp_path / "d" / "f"))
    assert (tmp_path / "d" / "f").read_bytes() == b"secret"
    assert (tmp_path / "d" / "f").stat().st_mode & 0o777 == 0o600


def _job(session, tmp_path, command, env=None):
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    log, ex = str(tmp_path / "out" / "job.log"), str(tmp_path / "out" / "exit")
    pid = session.start_detached(command, str(work), log, ex, env or {})
    return pid, log, ex


NUMBERED = "for i in $(seq 1 40); do echo line $i; sleep 0.05; done"


def test_stream_numbered_lines_once(session, tmp_path):
    pid, log, ex = _job(session, tmp_path, NUMBERED)
    assert pid > 1
    chunks: list[str] = []
    status, offset = session.stream(log, ex, chunks.append, poll_s=0.2)
    text = "".join(chunks)
    assert status == 0 and text.splitlines() == [f"line {i}" for i in range(1, 41)]
    assert offset == len(text.encode())
    assert len(chunks) > 3  # pushed while running, not one read at the end
    # resuming from an offset gives only the rest
    rest: list[str] = []
    assert session.stream(log, ex, rest.append, offset=len("line 1\n")) == (0, offset)
    assert "".join(rest) == text[len("line 1\n"):]


def test_stream_survives_dropped_connection(session, sshd, tmp_path):
    pid, log, ex = _job(session, tmp_path, NUMBERED)
    chunks: list[str] = []
    killed = []

    def on_text(text):
        chunks.append(text)
        if not killed and "line 10\n" in "".join(chunks):
            killed.append(sshd.kill_connections())

    status, _ = session.stream(log, ex, on_text, poll_s=0.2, reconnect_deadline_s=10)
    assert killed and killed[0] >= 1
    assert status == 0
    assert "".join(chunks).splitlines() == [f"line {i}" for i in range(1, 41)]
    assert session.connections_opened == 2


def test_stream_decodes_multibyte_split_across_chunks(session, tmp_path):
    script = (
        "import sys, time\n"
        "data = ('€' * 300 + 'ü\\n').encode() * 3\n"
        "for i in range(0, len(data), 7):\n"
        "    sys.stdout.buffer.write(data[i:i + 7]); sys.stdout.flush(); time.sleep(0.002)\n"
    )
    (tmp_path / "euro.py").write_text(script)
    pid, log, ex = _job(session, tmp_path, f"python3 {tmp_path / 'euro.py'}")
    chunks: list[str] = []
    status, offset = session.stream(log, ex, chunks.append, poll_s=0.1)
    assert status == 0 and "".join(chunks) == ("€" * 300 + "ü\n") * 3
    assert offset == len((("€" * 300 + "ü\n") * 3).encode())


def test_cursor_decodes_byte_by_byte():
    got: list[str] = []
    cur = _Cursor(0, got.append)
    for b in "a€ü😀".encode():
        cur.feed(bytes([b]))
    cur.finish()
    assert "".join(got) == "a€ü😀" and cur.offset == len("a€ü😀".encode())


def test_failing_job_reports_exit_status(session, tmp_path):
    pid, log, ex = _job(session, tmp_path, "echo before; exit 42")
    out: list[str] = []
    assert session.stream(log, ex, out.append, poll_s=0.1)[0] == 42
    assert "".join(out) == "before\n"


def test_kill_job_ends_stream_with_term_status(session, tmp_path):
    pid, log, ex = _job(session, tmp_path, "echo started; sleep 900")  # unkilled, it outlasts pytest's timeout
    assert session.is_running(pid)
    seen: list[str] = []

    def on_text(text):
        seen.append(text)
        session.kill_job(pid)

    status, _ = session.stream(log, ex, on_text, poll_s=0.1, pid=pid)
    assert status == 143
    end = time.monotonic() + 3  # the wrapper exits just after writing the exit file
    while session.is_running(pid) and time.monotonic() < end:
        time.sleep(0.05)
    assert not session.is_running(pid)
    assert session.kill_job(pid) is False


def test_env_reaches_job_but_never_an_error(session, tmp_path):
    secret = "s3cr3t-Value with 'quotes' $HOME"
    digest = hashlib.sha256(secret.encode()).hexdigest()  # the command line never holds the secret
    pid, log, ex = _job(session, tmp_path, f'printf %s "$API_TOKEN" | sha256sum | grep -q {digest} && echo match',
                        env={"API_TOKEN": secret})
    out: list[str] = []
    assert session.stream(log, ex, out.append, poll_s=0.1)[0] == 0
    assert "".join(out) == "match\n"
    assert not (tmp_path / "out" / "exit.env").exists()  # sourced, then deleted
    with pytest.raises(RemoteError) as info:
        session.start_detached("true", str(tmp_path / "no-such-dir"), log, ex, {"API_TOKEN": secret})
    assert secret not in str(info.value) and secret not in repr(info.value.__dict__)
    assert not (tmp_path / "out" / "exit.env").exists()  # a job that never started left no secret
    with pytest.raises(RemoteError) as info:
        session.start_detached("true", str(tmp_path), log, ex, {"BAD-NAME": secret})
    assert secret not in str(info.value)


def test_wait_until_reachable_while_machine_boots(tmp_path, client_key):
    """The cloud end-to-end shape: host key made on the client, sshd up only later."""
    import threading

    from tests.sshd import Sshd, free_port

    if Sshd.available():
        pytest.skip(Sshd.available())
    host_pem, host_public = generate_ed25519("machine")
    port = free_port("127.0.0.2")
    server = Sshd(tmp_path / "boot", [client_key.public], host="127.0.0.2", port=port, host_key_pem=host_pem)
    timer = threading.Timer(0.8, server.start)
    timer.start()
    try:
        s = Session("127.0.0.2", port, server.user, client_key.path, host_keys=[host_public])
        assert 0.5 < s.wait_until_reachable(15) < 10
        assert s.run("echo up")[1] == "up\n" and s.connections_opened == 1
        s.close()
    finally:
        timer.join()
        server.stop()


def _cut_by_a_signal(chan):
    """An upload's stdin stream that a signal stops after the first bytes (as check() would)."""
    import signal as _signal

    from launcher import signals

    chan.sendall(b"partial")
    raise signals.Stop(_signal.SIGINT)


def test_a_command_cut_by_a_signal_has_ended_before_the_caller_goes_on(session, tmp_path):
    # The command still works for a moment after its input ends (as `tar -x` finishing its
    # last file does); the caller must not clean up or fetch while it does.
    marker = tmp_path / "ended"
    from launcher import signals

    with pytest.raises(signals.Stop):
        session._exec(f"cat >/dev/null; sleep 1; touch {marker}", _cut_by_a_signal, None, "cut")
    assert marker.exists()


@pytest.mark.parametrize("how", ["deadline", "second-signal"])
def test_the_wait_for_a_stopped_command_is_bounded(session, monkeypatch, how):
    import os
    import signal as _signal
    import threading

    from launcher import remote, signals

    if how == "deadline":
        monkeypatch.setattr(remote, "STOPPED_WAIT_S", 0.5)
    started = time.monotonic()
    again = threading.Timer(0.5, os.kill, (os.getpid(), _signal.SIGINT))
    with signals.handled():
        if how == "second-signal":  # the user presses Ctrl-C again while we wait
            again.start()
        with pytest.raises(signals.Stop):
            session._exec("sleep 30 </dev/null", _cut_by_a_signal, None, "ignores its input")
        if how == "second-signal":
            again.join()  # delivered inside handled(): never a stray KeyboardInterrupt
    assert time.monotonic() - started < 10  # far below the command's 30 s and the 15 s default
