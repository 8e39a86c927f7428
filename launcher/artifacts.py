"""Artifacts: bring a run's outputs and logs home into a fresh directory, never over a user's files."""

from __future__ import annotations

from pathlib import Path

from launcher.job import Paths


def destination(run_id: str, artifacts_dir: str | None) -> Path:
    """A fresh, empty directory for the run's results (default ./gpujob-runs/RUN)."""
    return fresh_dir(Path(artifacts_dir or Path.cwd() / "gpujob-runs" / run_id))


def fresh_dir(dest: Path) -> Path:
    """Never overwrite what a user has: pick dest, dest-2, dest-3, ..."""
    candidate, n = dest, 1
    while candidate.exists() and any(candidate.iterdir()):
        n += 1
        candidate = dest.with_name(f"{dest.name}-{n}")
    candidate.mkdir(parents=True, exist_ok=True)
    return candidate


def fetch(host, paths: Paths, dest: Path, workers=()) -> int:
    """Copy outputs/ and job.log (and each worker's log) from the host into dest; returns the file count."""
    got = host.get_dir(paths.outputs, dest / "outputs")  # rank 0 writes checkpoints and metrics
    log = host.read_file(paths.log)
    if log is not None:
        (dest / "job.log").write_bytes(log)
    for w in workers:
        wlog = w.host.read_file(w.paths.log)
        if wlog is not None:
            (dest / f"job-node{w.rank}.log").write_bytes(wlog)
    return len(got)
