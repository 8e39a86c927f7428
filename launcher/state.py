"""gpujob's one state directory: runs database, per-run keys, caches, the refreshed catalog.

Where: ``$GPUJOB_HOME`` when set, else platformdirs' user state directory for "gpujob"
(Linux ``~/.local/state/gpujob`` or ``$XDG_STATE_HOME/gpujob``; macOS
``~/Library/Application Support/gpujob``; Windows ``%LOCALAPPDATA%\\gpujob``). Layout::

    runs.db            run records (SQLite, 0600)
    runs/RUN_ID/       per-run SSH keys and files (0700; keys 0600)
    cache/             CPU baseline, model costs, calibration from runs
    catalog/           the price snapshot `gpujob catalog update` downloaded

The directory is created 0700 (it holds private keys) and tightened to 0700 if it is wider.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

ENV = "GPUJOB_HOME"


def home() -> Path:
    """The state directory (not created; see ``ensure_home``)."""
    if os.environ.get(ENV):
        return Path(os.environ[ENV]).expanduser()
    from platformdirs import user_state_path

    return user_state_path("gpujob", appauthor=False)


def ensure_home() -> Path:
    """The state directory, created 0700 if missing and tightened to 0700 if group/other can read it.

    Raises OSError when it cannot be created (the caller names the fix: set GPUJOB_HOME)."""
    d = home()
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    if os.name == "posix" and stat.S_IMODE(d.stat().st_mode) & 0o077:
        os.chmod(d, 0o700)
    return d


def cache_dir() -> Path:
    """Caches that are safe to delete: CPU baseline, model costs, calibration from runs."""
    return home() / "cache"


def catalog_dir() -> Path:
    """Where `gpujob catalog update` writes the refreshed price snapshot."""
    return home() / "catalog"


def db_path() -> Path:
    return home() / "runs.db"


def create_private_file(path: Path) -> None:
    """Create ``path`` as an empty 0600 file if it does not exist; tighten it to 0600 if it does."""
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
    try:
        if os.name == "posix":
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
