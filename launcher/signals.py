"""Signal handling in one place: SIGINT, SIGTERM and SIGHUP set one flag that the lifecycle checks at safe points.

The handler itself never raises, so no signal lands in the middle of a SQLite commit, an SFTP
packet or an SSH write. Code that may wait long calls :func:`check` (raises :class:`Stop` once a
signal arrived) or :func:`sleep` (the same, while sleeping) between operations. A stage that must
finish what it does (bringing results home, releasing resources) runs inside :func:`shielded`:
the first ``n`` signals only shorten its waits (:func:`nap`), they never abort it.
"""

from __future__ import annotations

import signal
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator

HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Stop(BaseException):
    """A signal asked the run to stop; raised at a safe point, never from the handler.

    A BaseException, like KeyboardInterrupt: no ``except Exception`` on the way may swallow it.
    """

    def __init__(self, signum: int | None = None):
        self.signum = signum
        super().__init__(signal.Signals(signum).name if signum else "stop")


class _Flag:
    def __init__(self) -> None:
        self.count = 0  # signals received since the handlers were installed
        self.signum: int | None = None
        self.shield = 0  # signals a shielded section absorbs before check() raises
        self.notice = None  # called once at a safe point when a shielded section absorbs a signal
        self.noticed = 0
        self.event = threading.Event()  # set by every signal: wakes naps

    def reset(self) -> None:
        self.count, self.signum, self.shield, self.notice, self.noticed = 0, None, 0, None, 0
        self.event.clear()


_flag = _Flag()


def _handler(signum, frame) -> None:  # noqa: ARG001 - the signal API's signature
    _flag.count += 1
    _flag.signum = signum
    _flag.event.set()


def received() -> int:
    """How many signals arrived since :func:`handled` began (0: none)."""
    return _flag.count


def signal_name() -> str | None:
    """The last signal's name (SIGINT, SIGTERM, SIGHUP), or None."""
    return signal.Signals(_flag.signum).name if _flag.signum else None


def check() -> None:
    """A safe point: raise Stop if a signal arrived that no shielded section absorbs."""
    if _flag.count > _flag.shield:
        raise Stop(_flag.signum)
    if _flag.count > _flag.noticed and _flag.notice is not None:
        _flag.noticed = _flag.count
        _flag.notice()


def sleep(seconds: float) -> None:
    """time.sleep that raises Stop at once when a signal arrives (a drop-in for providers' waits)."""
    check()
    end = time.monotonic() + max(0.0, seconds)
    while True:
        left = end - time.monotonic()
        if left <= 0:
            return
        if _flag.event.is_set():  # a shielded section absorbed a signal: sleep plainly, don't spin
            time.sleep(min(left, 0.2))
        else:
            _flag.event.wait(min(left, 0.2))
        check()


def nap(seconds: float) -> bool:
    """Sleep up to ``seconds``; return True early (never raise) when a new signal arrives."""
    seen = _flag.count
    end = time.monotonic() + max(0.0, seconds)
    while _flag.count == seen:
        left = end - time.monotonic()
        if left <= 0:
            return False
        _flag.event.wait(min(left, 0.2))
        _flag.event.clear()
    return True


@contextmanager
def shielded(extra: float = float("inf"), notice: Callable[[], None] | None = None) -> Iterator[None]:
    """Inside, check() raises only after ``extra`` more signals than have arrived so far
    (default: never). The release always runs fully shielded; a fetch absorbs one more signal
    and, through ``notice`` (called at the next safe point), says what a further one would lose."""
    prev = (_flag.shield, _flag.notice, _flag.noticed)
    _flag.shield = max(prev[0], _flag.count + extra)
    _flag.notice, _flag.noticed = notice, _flag.count
    try:
        yield
    finally:
        _flag.shield, _flag.notice, _flag.noticed = prev


def ignore_from_now() -> None:
    """Ignore SIGINT, SIGTERM and SIGHUP for the rest of the process (main thread only): for a
    process whose run was interrupted and released and that only has to say so and exit, so that
    more Ctrl-C's can neither kill it mid-message nor print a KeyboardInterrupt traceback."""
    if threading.current_thread() is threading.main_thread():
        for s in HANDLED:
            signal.signal(s, signal.SIG_IGN)


@contextmanager
def handled() -> Iterator[None]:
    """Install the flag-setting handlers for SIGINT, SIGTERM and SIGHUP (main thread only) for the block.

    Nested use keeps the outer handlers and count. Off the main thread nothing is installed
    (Python delivers signals to the main thread only)."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is _handler:
        yield
        return
    _flag.reset()
    previous = {s: signal.signal(s, _handler) for s in HANDLED}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        _flag.reset()
