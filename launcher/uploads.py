"""Which files an upload sends: gitignore-style patterns plus a `.gpujobignore` file.

Shared by the SSH session and the local host, so a payload uploads the same files to any
machine. Imports nothing heavy (no paramiko)."""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path
from typing import Iterable

IGNORE_FILE = ".gpujobignore"


def _compile_ignore(patterns: Iterable[str]) -> list[tuple[str, bool, bool, bool]]:
    rules = []
    for raw in patterns:
        pat = raw.strip()
        if not pat or pat.startswith("#"):
            continue
        negate = pat.startswith("!")
        pat = pat[1:] if negate else pat
        dir_only = pat.endswith("/")
        pat = pat.rstrip("/")
        if pat.startswith("**/"):
            pat = pat[3:]
        anchored = "/" in pat  # gitignore: a slash (not trailing) anchors to the root
        pat = pat.lstrip("/")
        if pat:
            rules.append((pat, negate, dir_only, anchored))
    return rules


def _is_ignored(rel: str, is_dir: bool, rules: list[tuple[str, bool, bool, bool]]) -> bool:
    name = rel.rsplit("/", 1)[-1]
    ignored = False
    for pat, negate, dir_only, anchored in rules:  # last match wins, as in gitignore
        if dir_only and not is_dir:
            continue
        if fnmatch.fnmatchcase(rel if anchored else name, pat) or fnmatch.fnmatchcase(rel, pat):
            ignored = not negate
    return ignored


def select_files(local_dir: str | os.PathLike, ignore: Iterable[str] = ()) -> list[str]:
    """Relative POSIX paths of the files put_dir would upload (ignored dirs are pruned)."""
    root = Path(local_dir)
    patterns = list(ignore)
    ignore_file = root / IGNORE_FILE
    if ignore_file.is_file():
        patterns += ignore_file.read_text(errors="replace").splitlines()
    rules = _compile_ignore(patterns)
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath).relative_to(root).as_posix()
        prefix = "" if base == "." else base + "/"
        dirnames[:] = sorted(d for d in dirnames if not _is_ignored(prefix + d, True, rules))
        for name in sorted(filenames):
            rel = prefix + name
            if not _is_ignored(rel, False, rules) and (Path(dirpath) / name).is_file():
                files.append(rel)  # is_file() drops broken symlinks and sockets
    return files
