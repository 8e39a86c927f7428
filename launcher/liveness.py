"""Client leases on runs: which gpujob process is attached to a run, and whether it still lives.

A client attached to a run (``run``, ``logs --follow``, ``fetch``) holds a lease in the run's
record: ``{"pid", "host", "started", "refreshed"}`` (``started`` is the process start time, so a
reused pid is not mistaken for the client). A run that is not over and whose lease holder is
gone is *orphaned*: ``ls`` shows it so and ``gc --yes`` collects it. A detached run holds no
lease and is never orphaned: the user let it run on its own (its machine's watchdog bounds it).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from launcher.states import is_terminal

REFRESH_S = 30.0  # how often an attached client refreshes its lease
REMOTE_STALE_S = 15 * 60.0  # a lease from another host counts as gone after this long unrefreshed


def process_start(pid: int) -> float | None:
    """The process's start time (clock ticks since boot, Linux /proc), or None when unknown or gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    try:
        return float(stat.rsplit(")", 1)[1].split()[19])  # field 22: starttime
    except (IndexError, ValueError):
        return None


def this_client() -> dict[str, Any]:
    """A fresh lease for this process."""
    now = time.time()
    return {"pid": os.getpid(), "host": socket.gethostname(), "started": process_start(os.getpid()),
            "refreshed": now}


def holder_alive(lease: dict[str, Any], now: float | None = None) -> bool:
    """Is the lease's client still running? Same host: its pid (and start time) decide; another
    host: a refresh within REMOTE_STALE_S."""
    now = time.time() if now is None else now
    if lease.get("host") != socket.gethostname():
        return now - float(lease.get("refreshed") or 0) < REMOTE_STALE_S
    pid = int(lease.get("pid") or 0)
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process with that pid: compare start times below
    if _zombie(pid):  # killed, not yet reaped by its parent (a script, a container's init): gone
        return False
    started = lease.get("started")
    return started is None or process_start(pid) == started


def _zombie(pid: int) -> bool:
    """Has the process exited, leaving only its entry for its parent to reap (Linux /proc)?"""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return False


def orphaned(rec, now: float | None = None) -> bool:
    """A run that is not over, was attached to a client, and whose client is gone."""
    return not is_terminal(rec.state) and bool(rec.lease) and not holder_alive(rec.lease, now)


class Lease:
    """Hold a lease on a run while the block runs: taken on entry, refreshed every REFRESH_S, dropped on exit."""

    def __init__(self, store, run_id: str, refresh_s: float = REFRESH_S):
        self.store, self.run_id, self.refresh_s = store, run_id, refresh_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "Lease":
        self.store.update_run(self.run_id, lease=this_client())
        self._thread = threading.Thread(target=self._refresh, daemon=True, name=f"lease-{self.run_id}")
        self._thread.start()
        return self

    def _refresh(self) -> None:
        while not self._stop.wait(self.refresh_s):
            try:
                self.store.update_run(self.run_id, lease={**this_client()})
            except Exception:  # noqa: BLE001 - a busy database must not kill the run; the next refresh retries
                pass

    def __exit__(self, *exc) -> bool:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self.store.update_run(self.run_id, lease=None)
        return False
