"""Signals in one place (issue 14, failures 3, 4 and 6): handlers only set a flag; Stop comes at safe points."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from launcher import signals
from launcher.store import Store, new_run_id
from tests.test_liveness import ssh_cli  # noqa: F401 - the fixture


def _kill_repeatedly(sig: int, n: int, every_s: float) -> threading.Thread:
    def send():
        for _ in range(n):
            os.kill(os.getpid(), sig)
            time.sleep(every_s)

    t = threading.Thread(target=send, daemon=True)
    t.start()
    return t


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_signals_during_database_commits_never_break_one(tmp_path, sig):
    """Failure 3: a Ctrl-C inside a SQLite commit gave "cannot rollback" and hid the interrupt."""
    store = Store(tmp_path / "runs.db")
    run_id = new_run_id()
    store.create_run(run_id, "job", "ssh", spec_path=None, spec_text=None, spec={}, provider_config={})
    with signals.handled():
        sender = _kill_repeatedly(sig, 20, 0.005)
        for i in range(100):  # log lines/s worth of commits, signals landing among them
            store.append_log(run_id, i * 10, f"line {i:05d}\n")
        sender.join()
        assert signals.received() >= 1 and signals.signal_name() == signal.Signals(sig).name
        with pytest.raises(signals.Stop):
            signals.check()
    assert store.log_text(run_id).count("\n") == 100  # every commit landed whole


def test_shielded_section_absorbs_one_signal_and_says_so(tmp_path):
    told = []
    with signals.handled():
        with signals.shielded(1, lambda: told.append(signals.received())):
            os.kill(os.getpid(), signal.SIGINT)
            signals.check()  # absorbed: noticed once at this safe point
            signals.check()
            assert told == [1]
            os.kill(os.getpid(), signal.SIGINT)
            with pytest.raises(signals.Stop):
                signals.check()
        with signals.shielded():  # the release: never stopped
            os.kill(os.getpid(), signal.SIGTERM)
            signals.check()
            assert signals.nap(0.0) is False


def test_sleep_ends_at_a_signal_and_nap_shortens():
    with signals.handled():
        threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT)).start()
        with pytest.raises(signals.Stop):
            signals.sleep(30)
        with signals.shielded():
            threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT)).start()
            assert signals.nap(30) is True


def test_handlers_are_restored():
    before = {s: signal.getsignal(s) for s in signals.HANDLED}
    with signals.handled():
        assert all(signal.getsignal(s) is not before[s] for s in signals.HANDLED)
    assert {s: signal.getsignal(s) for s in signals.HANDLED} == before


@pytest.mark.sshd
def test_signal_during_upload_is_an_interruption_not_an_ssh_failure(tmp_path, sshd, client_key):
    """Failure 4: a signal during the upload came out as "connection lost while running unpack"."""
    from launcher.remote import Session

    src = tmp_path / "payload"
    src.mkdir()
    for i in range(200):
        (src / f"f{i}.bin").write_bytes(os.urandom(64 << 10))
    with Session(sshd.host, sshd.port, sshd.user, client_key.path, host_keys=[sshd.host_public]) as s:
        s.connect()
        with signals.handled():
            os.kill(os.getpid(), signal.SIGINT)  # already pending when the upload starts
            with pytest.raises(signals.Stop):
                s.put_dir(src, str(tmp_path / "remote"))
        # the session is still usable afterwards (nothing was cut mid-packet)
        assert s.run("echo ok")[1].strip() == "ok"


FAST_LOG_PY = ("import time\nfor i in range(100000):\n    print('line', i, 'x' * 60, flush=True)\n"
               "    time.sleep(0.002)\n")  # ~500 lines/s, each its own write


@pytest.mark.sshd
@pytest.mark.parametrize("presses", [1, 2, 40])
def test_ctrl_c_on_a_job_logging_500_lines_per_second_stops_it(ssh_cli, presses):
    """Failure 3 as reported: the CLI (a real process, SIGINT at its default) follows a job that logs
    ~500 lines/s over the ssh provider, so Ctrl-C lands among log commits; pressed once, twice, or
    40 times through the stop, the release and the exit. It used to exit 1 with "internal error:
    OperationalError('cannot rollback ...')" and leave the job running; the late presses killed the
    CLI by SIGINT after the release. Now: exit 130, state interrupted, the job stopped, no traceback."""
    from launcher.localhost import group_alive
    from tests.test_liveness import _start, _wait_state

    env, project, args, home = ssh_cli
    (project / "slow.py").write_text(FAST_LOG_PY)
    proc = _start(args, env, project)
    store = Store(home / "runs.db")
    rec = _wait_state(store, "running")
    while store.log_text(rec.id).count("\n") < 200:  # the job is logging fast (bounded: pytest timeout)
        time.sleep(0.05)
    for _ in range(presses):
        proc.send_signal(signal.SIGINT)
        time.sleep(0.1)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, (out[-2000:], err)
    assert "Traceback" not in out + err and "internal error" not in out + err, err
    got = store.get_run(rec.id)
    assert got.state == "interrupted" and "SIGINT" in got.reason and got.ended_at
    assert not group_alive(got.machine["pid"])
