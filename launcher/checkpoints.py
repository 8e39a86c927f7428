"""Checkpoint safety: the payload's checkpoint outlives its machine (spot reclaims, crashes).

The payload writes ``outputs/checkpoints/last.pt`` in its working directory (payloads/train.py,
atomically). While the job runs the client pulls that file home every ``limits.checkpoint_every``
seconds, only when its size or modification time changed, into ``RUN_DIR/checkpoint/last.pt``:
downloaded to a temporary name beside it, then renamed over the old copy, so a cut download
never replaces the good copy with a partial one. A recovery uploads that copy to the next machine.

With ``checkpoint_store: s3://bucket/prefix`` (boto3 on the machine) or ``gs://bucket/prefix``
(google-cloud-storage on the machine; a GCP VM then gets the storage read-write scope) the
machine keeps the checkpoint in the bucket instead (payloads/checkpoint_sync.py: an uploader
beside the job, a restore before a resumed one; object PREFIX/RUN_ID/last.pt) and nothing is pulled.
A local run leaves the store alone and says so (``store_unused``).
"""

from __future__ import annotations

import os
import re
import shlex
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from launcher.errors import GpujobError

CHECKPOINT_REL = "outputs/checkpoints/last.pt"  # relative to the job's working directory
SPOT_CHECKPOINT_EVERY_S = 600.0  # spot runs pull this often unless limits.checkpoint_every says otherwise

# Bucket names, starting and ending alphanumeric: S3 3-63 of lowercase letters, digits, dots and
# hyphens; Cloud Storage the same plus underscores (up to 222 with dots; 63 is what we accept).
_BUCKETS = {"s3": (re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"), "an S3 bucket name", "'.' and '-'"),
            "gs": (re.compile(r"^[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]$"), "a Cloud Storage bucket name", "'.', '-' and '_'")}


@dataclass(frozen=True)
class StoreURL:
    """A checkpoint store: ``s3://bucket/prefix`` or ``gs://bucket/prefix`` (prefix may be empty; no trailing slash)."""

    scheme: str
    bucket: str
    prefix: str

    @property
    def root(self) -> str:
        """The bucket alone: s3://bucket (what payloads/checkpoint_sync.py takes)."""
        return f"{self.scheme}://{self.bucket}"

    @property
    def url(self) -> str:
        return self.root + (f"/{self.prefix}" if self.prefix else "")

    def key(self, run_id: str, name: str = "last.pt") -> str:
        """The object key of a run's checkpoint: PREFIX/RUN_ID/last.pt."""
        return "/".join(p for p in (self.prefix, run_id, name) if p)


def parse_store(url: str) -> StoreURL:
    """'s3://bucket/prefix' or 'gs://bucket/prefix' -> StoreURL. Raises ValueError with one line saying what to write."""
    m = re.match(r"^([a-z0-9]+)://([^/]*)/?(.*)$", url.strip())
    if not m:
        raise ValueError(f"{url!r} is not a bucket URL; write it like s3://my-bucket/checkpoints")
    scheme, bucket, prefix = m.group(1), m.group(2), m.group(3).strip("/")
    if scheme not in _BUCKETS:
        raise ValueError(f"{scheme}:// is not a checkpoint store; write s3://bucket/prefix or gs://bucket/prefix")
    pattern, what, marks = _BUCKETS[scheme]
    if not pattern.match(bucket) or ".." in bucket:
        raise ValueError(f"{bucket!r} is not {what} (3-63 lowercase letters, digits, {marks})")
    return StoreURL(scheme, bucket, prefix)


SYNC_REL = ".gpujob/checkpoint_sync.py"  # payloads/checkpoint_sync.py on the machine, relative to the workdir


def store_prefix(spec, run_id: str, python: str, resume: bool) -> str:
    """The shell step before the job when a checkpoint_store is set: a resumed attempt restores
    the bucket's checkpoint, a first one checks the bucket is usable (the job then fails fast, exit 3,
    rather than training with nowhere to keep its checkpoint)."""
    store = parse_store(spec.checkpoint_store)
    action = "restore" if resume else "check"
    return " ".join(shlex.quote(a) for a in (python, SYNC_REL, action, store.root, store.key(run_id), CHECKPOINT_REL))


def store_watch(spec, run_id: str, python: str, pgid: int) -> str:
    """The command of the machine's uploader: the checkpoint to the bucket every pull interval while
    the job's process group ``pgid`` lives, once more after."""
    store = parse_store(spec.checkpoint_store)
    every = spec.limits.checkpoint_every or SPOT_CHECKPOINT_EVERY_S
    return " ".join(shlex.quote(str(a)) for a in (python, SYNC_REL, "watch", store.root, store.key(run_id),
                                                   CHECKPOINT_REL, "--every", every, "--pgid", pgid))


def latest_in_store(url: str, run_id: str) -> str | None:
    """The bucket object holding the run's checkpoint (s3://bucket/key or gs://bucket/key), or None
    when there is none. Needs the store's library here (boto3: the aws extra; google-cloud-storage:
    the gcp extra); without it the URL is returned, unchecked, saying so."""
    from launcher.payloads.checkpoint_sync import STORES, open_store

    store = parse_store(url)
    key = store.key(run_id)
    where = f"{store.root}/{key}"
    try:
        found = open_store(store.root).exists(key)
    except ImportError:
        return f"{where} (not checked: {STORES[store.scheme].library} is not installed here)"
    except Exception as exc:  # noqa: BLE001 - the libraries' errors: denied, unreachable, no credentials
        return f"{where} (not checked: {(str(exc).strip().splitlines() or [type(exc).__name__])[0]})"
    return where if found else None


def store_unused(spec, provider: str) -> str | None:
    """Why a run on ``provider`` leaves the spec's checkpoint_store alone (a clause), None when it uses it.

    A local run never uses it: the store exists so that a checkpoint outlives a machine that can
    vanish (a reclaimed spot VM) and reaches its replacement; this machine is not reclaimed and
    its checkpoint is already on its own disk, with the results. Reaching the bucket from here
    would spend the user's own cloud credentials and upload bandwidth on a copy nothing reads,
    and would fail a cloud spec's local rehearsal on a laptop without those credentials."""
    if spec.checkpoint_store and provider == "local":
        return "nothing reclaims this machine; the checkpoint stays with the results, in outputs/checkpoints/"
    return None


def pull_every(spec) -> float | None:
    """Seconds between checkpoint pulls for this spec: limits.checkpoint_every, else 10 min for a
    spot run without a checkpoint_store, else None (no pulls)."""
    if spec.limits.checkpoint_every:
        return spec.limits.checkpoint_every
    if spec.resources.spot and not spec.checkpoint_store:
        return SPOT_CHECKPOINT_EVERY_S
    return None


def local_path(run_dir: Path) -> Path:
    """Where the client keeps a run's last checkpoint."""
    return run_dir / "checkpoint" / "last.pt"


def location(spec, run_id: str, run_dir: Path) -> str | None:
    """Where the run's last checkpoint is safe: the client's copy, the bucket's object, or None."""
    if spec.checkpoint_store:
        return latest_in_store(spec.checkpoint_store, run_id)
    path = local_path(run_dir)
    return str(path) if path.is_file() else None


def upload(host, run_dir: Path, workdir: str) -> int | None:
    """Put the client's copy of the checkpoint at WORKDIR/outputs/checkpoints/last.pt on the host
    (where the payload's --resume looks). Returns the bytes sent, None when there is no copy."""
    local = local_path(run_dir)
    if not local.is_file():
        return None
    folder = f"{workdir}/{CHECKPOINT_REL}".rsplit("/", 1)[0]
    host.run(f"mkdir -p {shlex.quote(folder)}")
    host.put_dir(local.parent, folder, ignore=[".*.partial*"])
    return local.stat().st_size


def start_puller(spec, machine, open_host: Callable[[], Any], workdir: str, run_dir: Path,
                 on_pulled: Callable[[Path, int], None]) -> "Puller | None":
    """Pull the checkpoint home every ``pull_every(spec)`` seconds while the job runs; None when
    the run does not pull (no interval, this machine, or a checkpoint_store keeps it)."""
    every = pull_every(spec)
    if not every or machine.provider == "local" or spec.checkpoint_store:
        return None
    return Puller(open_host, f"{workdir}/{CHECKPOINT_REL}", local_path(run_dir), every, on_pulled).start()


def _remote_signature(host, path: str) -> tuple[int, str] | None:
    """(size, mtime) of a remote file, or None when it does not exist (GNU or BSD stat)."""
    q = shlex.quote(path)
    status, out, _ = host.run(f"stat -c '%s %Y' {q} 2>/dev/null || stat -f '%z %m' {q} 2>/dev/null",
                              timeout=60, check=False)
    parts = out.split()
    if status != 0 or len(parts) != 2 or not parts[0].isdigit():
        return None
    return int(parts[0]), parts[1]


def pull(host, remote: str, local: Path, last: tuple[int, str] | None) -> tuple[int, str] | None:
    """Bring ``remote`` home to ``local`` when its (size, mtime) differs from ``last``.

    Returns the new signature when a copy was made, else None. The download goes to a temporary
    file beside ``local`` and replaces it only once complete (rename), so ``local`` is always a
    whole checkpoint. Raises GpujobError/OSError from the host (the good copy stays)."""
    sig = _remote_signature(host, remote)
    if sig is None or sig == last:
        return None
    local.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = local.with_name(f".{local.name}.partial")
    try:
        host.get_file(remote, tmp)
        if tmp.stat().st_size != sig[0]:  # replaced meanwhile: the next look takes the new one
            sig = (tmp.stat().st_size, sig[1])
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, local)
    finally:
        if tmp.exists():
            tmp.unlink()
    return sig


class Puller:
    """A thread that pulls the checkpoint home every ``every_s`` seconds while the job runs.

    ``open_host()`` gives it its own connection (never shared with the log stream). Each copy is
    reported through ``on_pulled(path, size)``; a failed look is skipped (the next one retries)."""

    def __init__(self, open_host: Callable[[], Any], remote: str, local: Path, every_s: float,
                 on_pulled: Callable[[Path, int], None]):
        self.open_host, self.remote, self.local, self.every_s = open_host, remote, local, every_s
        self.on_pulled = on_pulled
        self.last: tuple[int, str] | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="checkpoint-pull")

    def start(self) -> "Puller":
        self._thread.start()
        return self

    def stop(self, wait_s: float = 5.0) -> None:
        self._done.set()
        self._thread.join(wait_s)

    def _loop(self) -> None:
        host = None
        try:
            while not self._done.wait(self.every_s):
                try:
                    if host is None:
                        host = self.open_host()
                    sig = pull(host, self.remote, self.local, self.last)
                except (GpujobError, OSError):
                    continue  # a dead or busy link: the next look retries
                if sig is not None:
                    self.last = sig
                    self.on_pulled(self.local, sig[0])
        except BaseException:  # noqa: BLE001 - a signal's Stop at a safe point in this thread ends it quietly
            pass
        finally:
            if host is not None:
                try:
                    host.close()
                except Exception:  # noqa: BLE001 - closing a dead link
                    pass
