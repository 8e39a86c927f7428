"""Streaming and progress: log text into stored chunks, lines, progress events; worker nodes' logs."""

from __future__ import annotations

import threading
from typing import Any, Callable

from launcher.payloads.protocol import parse_line as parse_protocol  # stdlib only: cheap


class WorkerStream(threading.Thread):
    """Streams one worker node's log (rank-prefixed) until its job exits."""

    def __init__(self, emit_text: Callable[[str], None], node):
        super().__init__(daemon=True, name=f"node-{node.rank}")
        self.emit_text, self.rank, self.host, self.paths, self.pid = (emit_text, node.rank, node.host, node.paths,
                                                                      node.pid)
        self.status: int | None = None
        self.error: BaseException | None = None
        self.buf = ""
        self.start()

    def _feed(self, text: str) -> None:
        from launcher.distributed import rank_prefix

        self.buf += text
        *lines, self.buf = self.buf.split("\n")
        for line in lines:
            self.emit_text(rank_prefix(self.rank, line))

    def run(self) -> None:
        try:
            self.status, _ = self.host.stream(self.paths.log, self.paths.exit, self._feed, pid=self.pid)
        except BaseException as exc:  # reported through join_status
            self.error = exc

    def join_status(self, timeout_s: float) -> int:
        self.join(timeout_s)
        if self.is_alive() or self.status is None:
            return -1
        return self.status


class Progress:
    """Turns log text into stored chunks, lines, and protocol events into progress (samples, ETA, dollars)."""

    def __init__(self, store, emit: Callable[..., None], clock: Callable[[], float], run_id: str, spec,
                 offset: int):
        self.store, self.emit, self.clock, self.run_id, self.offset = store, emit, clock, run_id, offset
        self.buf = ""
        self.total = spec.workload.total_samples
        self.rec = store.get_run(run_id)  # price and launch time are fixed by now

    def feed(self, text: str) -> None:
        self.store.append_log(self.run_id, self.offset, text)
        self.offset += len(text.encode())
        self.buf += text
        *lines, self.buf = self.buf.split("\n")
        for line in lines:
            self._line(line)

    def flush(self) -> None:
        if self.buf:
            self._line(self.buf)
            self.buf = ""

    def _line(self, line: str) -> None:
        event = parse_protocol(line)
        if event is None:
            self.emit("log", run_id=self.run_id, text=line)
            return
        kind = event.get("event")
        if kind == "step":
            sps = event.get("samples_per_second") or 0
            samples = event.get("samples") or 0
            eta = (self.total - samples) / sps if sps else None
            self.emit("progress", run_id=self.run_id, samples=samples, total=self.total, samples_per_second=sps,
                      loss=event.get("loss"), eta_s=eta, spent_usd=self.rec.spent_usd(self.clock()),
                      step=event.get("step"))
        else:
            self.emit("payload", run_id=self.run_id, event=event)


def last_event(log_text: str, kind: str) -> dict[str, Any] | None:
    """The last protocol event of `kind` in a log, or None."""
    found = None
    for line in log_text.splitlines():
        ev = parse_protocol(line)
        if ev and ev.get("event") == kind:
            found = ev
    return found
