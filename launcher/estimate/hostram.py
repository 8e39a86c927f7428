"""This machine's memory, which bounds what the estimator may build here for real (the CPU
probe, a count on the CPU). Standard library only."""

from __future__ import annotations

import os


def ram_bytes() -> int | None:
    """This machine's physical memory in bytes (sysconf; None where the OS does not say: no check)."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, OSError, ValueError):
        return None
