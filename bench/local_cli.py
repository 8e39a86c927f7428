"""One `gpujob run --provider local --json` in its own process group, for the benchmarks that time
the CLI end to end (bench/local_total.py, bench/ddp_scaling.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time


def run_local_cli(spec: str, home: str, env: dict[str, str], stdout_path: str, stderr_path: str,
                  timeout: float, term_grace_s: float) -> tuple[int, float]:
    """Run the CLI on ``spec`` from ``home`` (artifacts under ``home/artifacts``), its JSON events to
    ``stdout_path`` and stderr to ``stderr_path``. Past ``timeout`` seconds (at least 1) the process
    group gets SIGTERM (the CLI stops the job with its checkpoint), then SIGKILL after
    ``term_grace_s``. Returns (exit code, wall seconds)."""
    t0 = time.monotonic()
    with open(stdout_path, "w") as fo, open(stderr_path, "w") as fe:
        proc = subprocess.Popen([sys.executable, "-m", "launcher", "run", spec, "--provider", "local", "--json",
                                 "--no-baseline", "--artifacts", os.path.join(home, "artifacts")],
                                stdout=fo, stderr=fe, env=env, cwd=home, start_new_session=True)
        try:
            proc.wait(timeout=max(1.0, timeout))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=term_grace_s)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    return proc.returncode, time.monotonic() - t0
