"""Which files an upload sends, with git's own ignore rules (through ``pathspec``).

Patterns come from, in increasing precedence: the spec's ``payload.ignore``, every
``.gitignore`` in the tree (each relative to its own directory, deeper files winning, as in
git), and ``.gpujobignore`` files (same placement rules; they win over ``.gitignore``). As in
git, the last matching pattern decides, ``!pattern`` re-includes, ``docs/*.md`` matches only
directly under ``docs/`` (not ``docs/sub/deep.md``), ``\\#name`` is a literal name, and a file
inside an ignored directory cannot be re-included (the directory is never entered).

Shared by the SSH session and the local host, so a payload uploads the same files to any
machine. Imports nothing heavy (no paramiko).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

IGNORE_FILE = ".gpujobignore"
GITIGNORE = ".gitignore"
LARGE_UPLOAD_BYTES = 100 * 1000 * 1000  # above this an upload is announced before it is sent


def _spec(lines: Iterable[str]):
    import pathspec

    return pathspec.GitIgnoreSpec.from_lines(list(lines))


def _read(path: Path) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()
    except OSError:
        return []


class _Rules:
    """Ignore specs per directory: (base prefix, spec) in walk order; a layer applies to the
    paths under its base only, so a path sees its ancestors' layers from the root down."""

    def __init__(self, ignore: Iterable[str]):
        patterns = [p for p in ignore if p and p.strip()]
        self.layers: list[tuple[str, object]] = [("", _spec(patterns))] if patterns else []
        self.files: list[str] = []  # ignore files that were read, relative to the root

    def add_dir(self, root: Path, prefix: str) -> None:
        for name in (GITIGNORE, IGNORE_FILE):
            path = root / prefix / name
            if path.is_file():
                self.layers.append((prefix, _spec(_read(path))))
                self.files.append(prefix + name)

    def ignored(self, rel: str, is_dir: bool) -> bool:
        result = False
        for base, spec in self.layers:  # root first: deeper and later layers override
            if base and not rel.startswith(base):
                continue
            sub = rel[len(base):] + ("/" if is_dir else "")
            hit = spec.check_file(sub).include
            if hit is not None:
                result = hit
        return result


def _walk(root: Path, ignore: Iterable[str]) -> tuple[list[str], list[str]]:
    rules = _Rules(ignore)
    files: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath).relative_to(root).as_posix()
        prefix = "" if base == "." else base + "/"
        rules.add_dir(root, prefix)
        dirnames[:] = sorted(d for d in dirnames if not rules.ignored(prefix + d, True))
        for name in sorted(filenames):
            rel = prefix + name
            if not rules.ignored(rel, False) and (Path(dirpath) / name).is_file():
                files.append(rel)  # is_file() drops broken symlinks and sockets
    return files, rules.files


def is_uploaded(local_dir: str | os.PathLike, rel: str, ignore: Iterable[str] = ()) -> bool:
    """Whether an upload from ``local_dir`` sends the file ``rel`` (relative POSIX path): the
    ``select_files`` rules, read only in the folders on its path."""
    root = Path(local_dir)
    rules = _Rules(ignore)
    parts = rel.split("/")
    for depth in range(len(parts)):
        prefix = "".join(p + "/" for p in parts[:depth])
        rules.add_dir(root, prefix)
        if rules.ignored(prefix + parts[depth], depth < len(parts) - 1):
            return False
    return True


def select_files(local_dir: str | os.PathLike, ignore: Iterable[str] = ()) -> list[str]:
    """Relative POSIX paths of the files put_dir would upload, sorted by directory walk
    (ignored directories are pruned, never entered)."""
    return _walk(Path(local_dir), ignore)[0]


@dataclass
class UploadPlan:
    """What an upload will send: ``files`` (relative paths), ``total_bytes``, the ``largest``
    (path, bytes) pairs, and the ignore files that shaped it."""
    root: str
    files: list[str]
    total_bytes: int
    largest: list[tuple[str, int]] = field(default_factory=list)
    ignore_files: list[str] = field(default_factory=list)

    @property
    def large(self) -> bool:
        return self.total_bytes > LARGE_UPLOAD_BYTES

    def describe(self, why: str) -> str:
        """One line for a large upload: what, how big, the biggest files, why it is sent, how to trim it."""
        big = ", ".join(f"{p} ({_mb(n)})" for p, n in self.largest)
        rules = ", ".join(self.ignore_files) or "no .gitignore or .gpujobignore"
        return (f"uploading {_mb(self.total_bytes)} in {len(self.files):,} files from {self.root} ({why}); "
                f"largest: {big}; ignore rules used: {rules}; add patterns to .gpujobignore or payload.ignore "
                "to send less")


def _mb(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def plan_upload(local_dir: str | os.PathLike, ignore: Iterable[str] = (), top: int = 3) -> UploadPlan:
    """The files an upload of ``local_dir`` sends and their total size (bytes, following symlinks)."""
    root = Path(local_dir)
    files, ignore_files = _walk(root, ignore)
    sizes = []
    for rel in files:
        try:
            sizes.append((rel, (root / rel).stat().st_size))
        except OSError:
            sizes.append((rel, 0))
    largest = sorted(sizes, key=lambda x: -x[1])[:top]
    return UploadPlan(str(root), files, sum(n for _, n in sizes), largest, ignore_files)
