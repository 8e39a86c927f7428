"""Signal handling for the lifecycle: SIGTERM turns into an exception so teardown in `finally` runs."""

from __future__ import annotations

import signal
import threading


class Stop(Exception):
    """Raised in the main thread by our SIGTERM handler so `finally` blocks run."""


class sigterm_raises:
    """SIGTERM -> an exception in the main thread, so teardown in `finally` runs."""

    def __enter__(self):
        self.prev = None
        if threading.current_thread() is threading.main_thread():
            def handler(signum, frame):
                raise Stop()
            self.prev = signal.signal(signal.SIGTERM, handler)
        return self

    def __exit__(self, *exc):
        if self.prev is not None:
            signal.signal(signal.SIGTERM, self.prev)
        return False
