"""The payload's progress protocol: one JSON object per stdout line.

Imports only the standard library, so the launcher can import this module without torch.
Every protocol line is a JSON object with a string ``event`` and a numeric ``time`` (unix
seconds); anything else on stdout is an ordinary log line. The fields of each event are
documented in payloads/README.md.
"""

from __future__ import annotations

import json
import math
import sys
import time
from typing import Any

EVENTS = ("start", "step", "epoch", "checkpoint", "probe", "end", "error")

EXIT_OK = 0
EXIT_TRAINING_ERROR = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 75  # EX_TEMPFAIL: stopped early with a checkpoint; run again with --resume


def _clean(value: Any) -> Any:
    # NaN/inf are not JSON; a diverged loss is reported as null instead of breaking parsers.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def format_event(event: str, **fields: Any) -> str:
    """The protocol line (no newline) for an event."""
    return json.dumps(_clean({"event": event, "time": round(time.time(), 3), **fields}), allow_nan=False)


def emit(event: str, **fields: Any) -> None:
    """Write one event to stdout and flush, so a streaming reader sees it at once."""
    sys.stdout.write(format_event(event, **fields) + "\n")
    sys.stdout.flush()


def parse_line(line: str) -> dict | None:
    """The event dict for a protocol line, None for any other line. Never raises."""
    try:
        if isinstance(line, bytes):
            line = line.decode("utf-8", "replace")
        text = line.strip()
        if not text.startswith("{") or not text.endswith("}"):
            return None
        obj = json.loads(text)
    except Exception:
        return None
    if not isinstance(obj, dict):
        return None
    if not isinstance(obj.get("event"), str):
        return None
    t = obj.get("time")
    if isinstance(t, bool) or not isinstance(t, (int, float)):
        return None
    return obj
