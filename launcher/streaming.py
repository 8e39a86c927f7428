"""Streaming and progress: log text into stored chunks, lines, progress events; worker nodes' logs."""

from __future__ import annotations

import threading
import time
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


SHOW_MAX = 4096  # characters of one line shown on screen; the stored log keeps every byte
UPDATE_EVERY_S = 0.5  # `\r` progress updates (tqdm) shown at most this often
STORE_EVERY_S, STORE_BYTES = 0.5, 1 << 20  # log text is committed in batches of this age or size
RATE_WINDOW_S = 60.0  # the progress line's rate and ETA: over this much of the run (payload time)


def shown(head: str, length: int) -> str:
    """A line as the screen shows it: its first SHOW_MAX characters, then a note of what was cut."""
    if length <= SHOW_MAX:
        return head
    return (f"{head[:SHOW_MAX]} ... [{length - SHOW_MAX:,} more characters not shown; "
            "the stored log keeps them: `gpujob logs RUN`]")


def display_line(line: str) -> str:
    """A whole stored line for the screen: the latest `\r` update, cut to SHOW_MAX (see shown)."""
    if "\r" in line:
        line = next((seg for seg in reversed(line.split("\r")) if seg.strip()), "")
    return shown(line[:SHOW_MAX], len(line))


class Progress:
    """Turns log text into stored chunks, lines, and protocol events into progress (samples, ETA, dollars).

    Cost is linear in bytes whatever the shape: the line being received keeps only its first
    SHOW_MAX characters (and its length); a `\r` starts it over (tqdm-style updates show the
    latest, at most every UPDATE_EVERY_S). The store gets every chunk as it came."""

    def __init__(self, store, emit: Callable[..., None], clock: Callable[[], float], run_id: str, spec,
                 offset: int):
        self.store, self.emit, self.clock, self.run_id, self.offset = store, emit, clock, run_id, offset
        self.head, self.length = "", 0  # the line being received: first SHOW_MAX chars, total length
        self.total = spec.workload.total_samples
        self.rec = store.get_run(run_id)  # price and launch time are fixed by now
        self._last_update = 0.0
        self._pending: list[str] = []  # text not yet committed, starting at byte self._pending_at
        self._pending_at, self._pending_bytes, self._pending_since = offset, 0, 0.0
        self._recent: list[tuple[float, int]] = []  # (payload's elapsed s, samples) over RATE_WINDOW_S

    def feed(self, text: str) -> None:
        size = len(text.encode())
        if not self._pending:
            self._pending_at, self._pending_since = self.offset, time.monotonic()
        self._pending.append(text)
        self._pending_bytes += size
        self.offset += size
        if self._pending_bytes >= STORE_BYTES or time.monotonic() - self._pending_since >= STORE_EVERY_S:
            self._store()
        start, n = 0, len(text)
        while start < n:
            nl = text.find("\n", start)
            self._take(text, start, n if nl < 0 else nl)
            if nl < 0:
                break
            self._end_line()
            start = nl + 1

    def _take(self, text: str, start: int, end: int) -> None:
        cr = text.rfind("\r", start, end)
        if cr >= 0:  # an update ended here: show it (now and then), start the line over after it
            prev = text.rfind("\r", start, cr)
            if prev >= 0:
                self.head, self.length = text[prev + 1:min(cr, prev + 1 + SHOW_MAX)], cr - prev - 1
            else:
                self._keep(text, start, cr)
            now = time.monotonic()
            if self.head.strip() and now - self._last_update >= UPDATE_EVERY_S:
                self._last_update = now
                self.emit("log", run_id=self.run_id, text=shown(self.head, self.length), update=True)
            self.head, self.length = "", 0
            start = cr + 1
        self._keep(text, start, end)

    def _keep(self, text: str, start: int, end: int) -> None:
        room = SHOW_MAX - len(self.head)
        if room > 0:
            self.head += text[start:min(end, start + room)]
        self.length += end - start

    def _end_line(self) -> None:
        head, length = self.head, self.length
        self.head, self.length = "", 0
        if length > SHOW_MAX:
            self.emit("log", run_id=self.run_id, text=shown(head, length))
        else:
            self._line(head)

    def _store(self) -> None:
        """Commit the pending text as one chunk (a crash loses at most it: a re-attach reads it again)."""
        if self._pending:
            self.store.append_log(self.run_id, self._pending_at, "".join(self._pending))
            self._pending, self._pending_bytes = [], 0

    def flush(self) -> None:
        """At the end of the stream: the last partial line, and every pending byte to the store."""
        self._store()
        if self.length:
            self._end_line()

    def _line(self, line: str) -> None:
        event = parse_protocol(line)
        if event is None:
            self.emit("log", run_id=self.run_id, text=line)
            return
        kind = event.get("event")
        if kind == "start":
            self.total = planned_total(event, self.total)
        if kind == "step":
            samples = event.get("samples") or 0
            sps = self._rate(event.get("elapsed"), samples, event.get("samples_per_second") or 0)
            total = max(self.total, samples)  # a payload that runs past its plan never shows n > total
            eta = max(0.0, (total - samples) / sps) if sps else None
            self.emit("progress", run_id=self.run_id, samples=samples, total=total, samples_per_second=sps,
                      loss=event.get("loss"), eta_s=eta, spent_usd=self.rec.spent_usd(self.clock()),
                      step=event.get("step"))
        else:
            self.emit("payload", run_id=self.run_id, event=event)


    def _rate(self, elapsed: Any, samples: int, interval_rate: float) -> float:
        """Samples/s over the last RATE_WINDOW_S of the run (the payload's rate covers one log
        interval, which swings 10x on a busy machine); the interval's own until two points exist."""
        if not isinstance(elapsed, (int, float)):
            return interval_rate
        if self._recent and elapsed < self._recent[-1][0]:  # a resumed attempt: its own clock
            self._recent.clear()
        self._recent.append((float(elapsed), samples))
        while len(self._recent) > 2 and elapsed - self._recent[1][0] >= RATE_WINDOW_S:
            self._recent.pop(0)
        (t0, n0) = self._recent[0]
        return (samples - n0) / (elapsed - t0) if elapsed > t0 and samples > n0 else interval_rate


def planned_total(start: dict, spec_total: int) -> int:
    """The samples a run will actually train, from the payload's start event: whole steps, so the
    spec's total rounded up to a full (global) batch (1,797 x 8 digits at batch 64: 225 steps,
    14,400 samples, not 14,376). Falls back to the spec's total when the event does not say."""
    steps, per_step = start.get("steps"), start.get("tokens_per_step") or start.get("global_batch_size")
    if isinstance(steps, int) and isinstance(per_step, int) and steps > 0 and per_step > 0:
        return steps * per_step
    return spec_total


def last_event(log_text: str, kind: str) -> dict[str, Any] | None:
    """The last protocol event of `kind` in a log, or None."""
    found = None
    for line in log_text.splitlines():
        ev = parse_protocol(line)
        if ev and ev.get("event") == kind:
            found = ev
    return found
