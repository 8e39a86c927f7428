"""Helpers shared by the lifecycle tests."""

from __future__ import annotations

import os
import signal
import threading
import time

SLOW_JOB = "import time\nfor i in range(600):\n    print(i, flush=True)\n    time.sleep(0.1)\n"


def sigint_after_first_log(events: list, timeout_s: float = 30) -> threading.Thread:
    """Send this process SIGINT once the runner has streamed a log line (i.e. mid-stream)."""

    def interrupt():
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            if any(k == "log" for k, _ in events):
                os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.05)

    t = threading.Thread(target=interrupt, daemon=True)
    t.start()
    return t
