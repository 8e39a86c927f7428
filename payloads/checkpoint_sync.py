"""On-machine side of ``checkpoint_store``: keeps the job's checkpoint in an S3 or Cloud Storage bucket.

    checkpoint_sync.py check   STORE KEY FILE   # the library importable and the bucket reachable (exit 3 if not)
    checkpoint_sync.py restore STORE KEY FILE   # a resumed attempt: the bucket's copy -> FILE (atomic)
    checkpoint_sync.py watch   STORE KEY FILE --every S --pgid PGID
        # upload FILE whenever its size or mtime changed, every S seconds, until the job's
        # process group PGID is gone; then once more (the checkpoint written on the way out)

STORE is ``s3://BUCKET`` (boto3) or ``gs://BUCKET`` (google-cloud-storage). Uploads read a hard
link to the file, so a checkpoint the payload replaces (rename) mid-upload never mixes two
versions; S3 and Cloud Storage make an object visible only once it is complete, so the bucket
always holds a whole checkpoint. A restore downloads to a temporary file, then renames it.
Credentials: the library's usual chain on the machine (S3: instance role or AWS_* variables
passed through the spec's env; Cloud Storage: the VM's service account, which gpujob gives the
storage read-write scope when the store is gs://). Standard library + that library only.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import time

EXIT_UNUSABLE = 3


class S3Store:
    """A bucket through boto3. Object keys are the bucket's keys."""

    library = "boto3"

    def __init__(self, bucket: str):
        import boto3

        self.bucket, self.client = bucket, boto3.client("s3")

    def check(self) -> None:
        self.client.head_bucket(Bucket=self.bucket)

    def exists(self, key: str) -> bool:
        return self._found(lambda: self.client.head_object(Bucket=self.bucket, Key=key))

    def download(self, key: str, path: str) -> bool:
        """The object to ``path``; False when there is none."""
        return self._found(lambda: self.client.download_file(self.bucket, key, path))

    @staticmethod
    def _found(call) -> bool:
        """True when ``call()`` succeeds, False when it fails because the object is missing."""
        try:
            call()
        except Exception as exc:  # noqa: BLE001 - botocore's ClientError says 404 in its text
            if "404" in str(exc) or "Not Found" in str(exc) or "NoSuchKey" in str(exc):
                return False
            raise
        return True

    def upload(self, path: str, key: str) -> None:
        self.client.upload_file(path, self.bucket, key)


class GcsStore:
    """A bucket through google-cloud-storage (JSON API; STORAGE_EMULATOR_HOST is honoured by the library)."""

    library = "google-cloud-storage"

    def __init__(self, bucket: str):
        from google.cloud.storage import Client

        self.client = Client()
        self.bucket = self.client.bucket(bucket)

    def check(self) -> None:
        self.client.get_bucket(self.bucket.name)

    def exists(self, key: str) -> bool:
        return self.bucket.get_blob(key) is not None

    def download(self, key: str, path: str) -> bool:
        """The object to ``path``; False when there is none."""
        blob = self.bucket.get_blob(key)
        if blob is None:
            return False
        blob.download_to_filename(path)
        return True

    def upload(self, path: str, key: str) -> None:
        self.bucket.blob(key).upload_from_filename(path)  # multipart, or resumable above 8 MiB


STORES = {"s3": S3Store, "gs": GcsStore}


def open_store(store: str):
    """'s3://bucket' or 'gs://bucket' -> its store. Raises ImportError without the library."""
    scheme, _, bucket = store.partition("://")
    return STORES[scheme](bucket)


def check(store: str) -> int:
    scheme = store.partition("://")[0]
    try:
        open_store(store).check()
    except ImportError:
        lib = STORES[scheme].library
        print(f"checkpoint_sync: checkpoint_store {scheme}:// needs {lib} on the machine (add `pip install {lib}` "
              "to setup)", file=sys.stderr, flush=True)
        return EXIT_UNUSABLE
    except Exception as exc:  # noqa: BLE001 - any failure means the store cannot be used: say which
        print(f"checkpoint_sync: cannot use bucket {store}: {_line(exc)}", file=sys.stderr, flush=True)
        return EXIT_UNUSABLE
    print(f"checkpoint_sync: bucket {store.partition('://')[2]} reachable", flush=True)
    return 0


def _line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def restore(store: str, key: str, path: str) -> int:
    """The bucket's checkpoint to ``path`` (temp file, then rename); 0 also when there is none."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.restore-{os.getpid()}"
    where = f"{store}/{key}"
    try:
        found = open_store(store).download(key, tmp)
    except Exception as exc:  # noqa: BLE001
        if os.path.exists(tmp):
            os.unlink(tmp)
        print(f"checkpoint_sync: cannot read {where}: {_line(exc)}", file=sys.stderr, flush=True)
        return EXIT_UNUSABLE
    if not found:
        if os.path.exists(tmp):
            os.unlink(tmp)
        print(f"checkpoint_sync: no checkpoint at {where} yet; the job starts from scratch", flush=True)
        return 0
    os.replace(tmp, path)
    print(f"checkpoint_sync: restored {where} ({os.path.getsize(path)} bytes)", flush=True)
    return 0


def _signature(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_size, st.st_mtime_ns


def upload_if_changed(store, url: str, key: str, path: str, last: tuple[int, int] | None) -> tuple[int, int] | None:
    """Upload ``path`` when its signature differs from ``last``; returns the uploaded signature or ``last``."""
    sig = _signature(path)
    if sig is None or sig == last:
        return last
    snap = f"{path}.upload-{os.getpid()}"
    try:
        os.link(path, snap)  # pins this version: a rename by the payload does not touch it
    except FileNotFoundError:
        return last
    try:
        store.upload(snap, key)
    finally:
        os.unlink(snap)
    print(f"checkpoint_sync: uploaded {sig[0]} bytes to {url}/{key}", flush=True)
    return sig


def _live_groups() -> set[int] | None:
    """Process groups holding a non-zombie process, read from /proc; None without /proc."""
    if not os.path.isdir("/proc"):
        return None
    groups = set()
    for stat_path in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(stat_path) as f:
                state, _ppid, pgrp = f.read().rsplit(")", 1)[1].split()[:3]
        except (OSError, ValueError):
            continue  # the process ended meanwhile
        if state != "Z":
            groups.add(int(pgrp))
    return groups


def _alive(pgid: int) -> bool:
    """Does the job's process group hold a live process? Zombies count as gone (an init that
    does not reap would keep them forever); without /proc, kill(0) decides."""
    groups = _live_groups()
    if groups is not None:
        return pgid in groups
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


ALIVE_POLL_S = 2.0  # how often the uploader looks whether the job still runs


def watch(url: str, key: str, path: str, every: float, pgid: int) -> int:
    """Upload the checkpoint every ``every`` seconds while the job's process group lives, and once
    more as soon as it is gone (looked at every ALIVE_POLL_S: the last checkpoint goes up before
    the machine is released, and no uploader lingers on an ssh host for a whole interval)."""
    store = open_store(url)
    last = None
    next_upload = time.monotonic() + every
    while _alive(pgid):
        time.sleep(max(0.0, min(ALIVE_POLL_S, next_upload - time.monotonic())))
        if time.monotonic() < next_upload:
            continue
        next_upload = time.monotonic() + every
        try:
            last = upload_if_changed(store, url, key, path, last)
        except Exception as exc:  # noqa: BLE001 - a failed upload is retried at the next look
            print(f"checkpoint_sync: upload failed, retrying: {exc}", file=sys.stderr, flush=True)
    upload_if_changed(store, url, key, path, last)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="checkpoint_sync.py")
    p.add_argument("action", choices=("check", "restore", "watch"))
    p.add_argument("store", help="s3://BUCKET or gs://BUCKET")
    p.add_argument("key")
    p.add_argument("file")
    p.add_argument("--every", type=float, default=600.0)
    p.add_argument("--pgid", type=int, default=0)
    a = p.parse_args(argv)
    if a.store.partition("://")[0] not in STORES:
        p.error(f"{a.store} is not s3://BUCKET or gs://BUCKET")
    if a.action == "check":
        return check(a.store)
    if a.action == "restore":
        return restore(a.store, a.key, a.file)
    return watch(a.store, a.key, a.file, a.every, a.pgid)


if __name__ == "__main__":
    sys.exit(main())
