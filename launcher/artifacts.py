"""Artifacts: bring a run's outputs and logs home into a fresh directory, never over a user's files.

Where results land (``--artifacts DIR``), decided before anything is created:
- no ``--artifacts``: ``./gpujob-runs/RUN_ID``;
- DIR does not exist, or is an empty directory: DIR itself;
- DIR is a directory with files in it (``.``, ``..``, ``~``, ...): a new ``DIR/gpujob-RUN_ID`` inside it;
- DIR, or a directory on the way to it, is a file: refused (UsageError) before launch.
Nothing already there is overwritten. A fetch that stopped half way resumes in the same
directory: complete files are skipped, partial ones continued (over SFTP, from their length),
the missing ones fetched in one tar of just their names.
"""

from __future__ import annotations

from pathlib import Path

from launcher.errors import UsageError
from launcher.job import Paths


def choose_destination(run_id: str, artifacts_dir: str | None, cwd: Path | None = None) -> Path:
    """The absolute directory the run's results will go to (see the module doc); creates nothing.

    Raises UsageError when the path, or one of its parents, is a file."""
    base = (cwd or Path.cwd())
    if artifacts_dir is None:
        dest = base / "gpujob-runs" / run_id
    else:
        given = Path(artifacts_dir).expanduser()
        dest = (given if given.is_absolute() else base / given).resolve()
        if dest.is_dir() and any(dest.iterdir()):
            dest = dest / f"gpujob-{run_id}"
    for p in [dest, *dest.parents]:
        if p.exists() and not p.is_dir():
            what = "--artifacts" if artifacts_dir else "the default results directory"
            raise UsageError(f"{what} {dest} cannot be created: {p} is a file",
                             "pass --artifacts with a directory (created if missing; an existing one is "
                             "never overwritten: a new gpujob-RUN_ID directory is made inside it)")
    return dest


def prepare(dest: Path) -> Path:
    """Create dest, or a fresh sibling dest-2, dest-3 ... when something else filled it meanwhile."""
    candidate, n = dest, 1
    while candidate.exists() and (not candidate.is_dir() or any(candidate.iterdir())):
        n += 1
        candidate = dest.with_name(f"{dest.name}-{n}")
    candidate.mkdir(parents=True, exist_ok=True)
    return candidate


def fetch(host, paths: Paths, dest: Path, workers=(), on_skip=None) -> int:
    """Copy outputs/ and job.log (and each worker's log) from the host into dest; returns the file count.

    Over SSH outputs/ comes as one streamed tar (``remote.Session.get_dir``); entries that would
    land outside dest (links pointing out, absolute or ``..`` names) and device files are not
    written, each told to ``on_skip("name: why")``. Resumable: files already complete in dest
    are skipped, partial ones continued, the missing ones fetched in one tar."""
    got = host.get_dir(paths.outputs, dest / "outputs", on_skip=on_skip)  # rank 0 writes checkpoints, metrics
    log = host.read_file(paths.log)
    if log is not None:
        (dest / "job.log").write_bytes(log)
    for w in workers:
        wlog = w.host.read_file(w.paths.log)
        if wlog is not None:
            (dest / f"job-node{w.rank}.log").write_bytes(wlog)
    return len(got)
