"""Where the estimator keeps its cache and finds its packaged calibration data."""

from __future__ import annotations

import json
import os
import tempfile
from functools import lru_cache
from pathlib import Path


def cache_dir() -> Path:
    """The estimator's caches (CPU baseline, model costs) in gpujob's state directory."""
    from launcher import state

    return state.cache_dir()


@lru_cache(maxsize=1)
def calibration_dir() -> Path:
    """The packaged calibration points (copies of bench/results files; see bench/package_calibration.py).

    Looked up once per process: an estimate asks ~250 times (importlib.resources each time)."""
    from launcher.packaged import data_path

    return data_path("launcher.estimate", "calibration")


def results_dir() -> Path:
    """The repository's bench/results: raw measurements, for the tools that refit them in a checkout
    (opfit). The estimator itself reads only calibration_dir(), which works installed too."""
    return Path(__file__).resolve().parents[2] / "bench" / "results"


def read_json(path: Path, default):
    """A missing or corrupt cache file is the same as no cache: recompute, never fail."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return default


_READ_CACHE: dict[str, tuple[tuple, object]] = {}


def read_json_cached(path: Path, default):
    """read_json, parsed once per process while the file stays the same (inode, size, mtime):
    an estimate asks for the same small user file once per GPU type (~90 times). The value is
    shared between callers: treat it as read-only."""
    try:
        st = os.stat(path)
    except OSError:
        return default
    stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
    hit = _READ_CACHE.get(str(path))
    if hit is not None and hit[0] == stamp:
        return hit[1]
    doc = read_json(path, None)
    if doc is None:
        return default
    _READ_CACHE[str(path)] = (stamp, doc)
    return doc


def write_json_atomic(path: Path, data) -> bool:
    """Write via a temp file + rename so concurrent estimates never read half a file.

    Returns False when the cache cannot be written (read-only home): caching is best effort.
    """
    try:
        from launcher import state

        state.ensure_home()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1, sort_keys=True)
        os.replace(tmp, path)
        return True
    except OSError:
        return False


def cost_key(model: str, image_size: int, num_classes: int, in_channels: int = 3) -> str:
    """The key of one model shape in the bundled cost tables (model_costs.json, op_costs.json)."""
    return f"{model}:{image_size}:{num_classes}:{in_channels}"


def age_words(then: float, now: float) -> str:
    """How long ago a stored measurement was taken: 'today', '1 day ago', '3 days ago'."""
    days = max(0.0, (now - then) / 86400)
    return "today" if days < 1 else ("1 day ago" if days < 2 else f"{int(days)} days ago")
