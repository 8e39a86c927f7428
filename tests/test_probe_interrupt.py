"""Ctrl-C during the CPU baseline probe: the probe is killed, no estimate follows, exit 130.

The real CLI runs as a child process (`gpujob run jobs/quickstart.yaml --provider local` and
`gpujob estimate`); once it announced the probe and the probe's process exists, SIGINT goes to the
CLI alone (the probe must be stopped by the CLI) or to the CLI's whole process group (what a
terminal's Ctrl-C does). `run` handles signals through a flag (launcher.signals): the wait on the
probe polls it. Before, the CLI waited for the probe to end on its own, then printed a predicted
"estimate:" line (and `run` could refuse the job on it, exit 7, instead of 130).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WAIT_S = 120.0  # bound on any one wait: a hang fails the test instead of the suite

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (ROOT / "payloads" / "train.py").exists(), reason="payload not present")]


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for t in Path(f"/proc/{pid}/task").iterdir()
                for c in (t / "children").read_text().split()]
    except OSError:
        return []


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _probe_of(pid: int) -> int | None:
    for c in _children(pid):
        try:
            if b"--probe-seconds" in Path(f"/proc/{c}/cmdline").read_bytes():
                return c
        except OSError:
            pass
    return None


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs /proc")
@pytest.mark.parametrize("command", ["run", "estimate"])
@pytest.mark.parametrize("to_group", [False, True], ids=["cli-only", "terminal-group"])
def test_ctrl_c_during_the_probe_kills_it_and_prints_no_estimate(tmp_path, command, to_group):
    pytest.importorskip("torch")
    args = [str(ROOT / "jobs" / "quickstart.yaml")] + (["--provider", "local"] if command == "run" else [])
    env = {**os.environ, "GPUJOB_HOME": str(tmp_path / "home"), "PYTHONPATH": str(ROOT), "COLUMNS": "80"}
    out = tmp_path / "cli.out"
    with open(out, "w") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "launcher", command, *args], cwd=tmp_path, env=env,
                                stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True,  # its own group, as a terminal's foreground job
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    probe = None
    try:
        end = time.monotonic() + WAIT_S
        while probe is None or "measuring this machine's CPU" not in out.read_text():
            assert proc.poll() is None, f"exited {proc.returncode} before the probe:\n{out.read_text()}"
            assert time.monotonic() < end, f"no probe in {WAIT_S:.0f} s:\n{out.read_text()}"
            time.sleep(0.05)
            probe = probe or _probe_of(proc.pid)
        if to_group:
            os.killpg(proc.pid, signal.SIGINT)
        else:
            os.kill(proc.pid, signal.SIGINT)
        proc.wait(WAIT_S)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if probe is not None and _alive(probe):
            os.kill(probe, signal.SIGKILL)
            raise AssertionError(f"the probe {probe} still ran after the CLI exited:\n{out.read_text()}")
    text = out.read_text()
    assert proc.returncode == 130, f"exit {proc.returncode}, not 130:\n{text}"
    after = text.split("measuring this machine's CPU", 1)[1]
    assert "estimate:" not in after and "samples/s" not in after, text
    assert "Traceback" not in text and "internal error" not in text, text
    last = text.strip().splitlines()[-1]
    assert last == "interrupted" or (last.startswith("error: run ") and "interrupted (SIGINT)" in last), text
