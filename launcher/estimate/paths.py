"""Where the estimator keeps its cache and finds the repository's payloads and bench data."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def gpujob_home() -> Path:
    return Path(os.environ.get("GPUJOB_HOME") or "~/.gpujob").expanduser()


def cache_dir() -> Path:
    return gpujob_home() / "cache"


def repo_root() -> Path:
    # launcher/estimate/paths.py -> repository root (payloads/ and bench/ live beside launcher/)
    return Path(__file__).resolve().parent.parent.parent


def payload_script() -> Path:
    return repo_root() / "payloads" / "train.py"


def results_dir() -> Path:
    return repo_root() / "bench" / "results"


def read_json(path: Path, default):
    """A missing or corrupt cache file is the same as no cache: recompute, never fail."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return default


def write_json_atomic(path: Path, data) -> bool:
    """Write via a temp file + rename so concurrent estimates never read half a file.

    Returns False when the cache cannot be written (read-only home): caching is best effort.
    """
    try:
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
