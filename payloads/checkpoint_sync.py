"""On-machine side of ``checkpoint_store: s3://bucket/prefix``: keeps the job's checkpoint in the bucket.

    checkpoint_sync.py check   BUCKET KEY FILE   # boto3 importable and the bucket reachable (exit 3 if not)
    checkpoint_sync.py restore BUCKET KEY FILE   # a resumed attempt: the bucket's copy -> FILE (atomic)
    checkpoint_sync.py watch   BUCKET KEY FILE --every S --pgid PGID
        # upload FILE whenever its size or mtime changed, every S seconds, until the job's
        # process group PGID is gone; then once more (the checkpoint written on the way out)

Uploads read a hard link to the file, so a checkpoint the payload replaces (rename) mid-upload
never mixes two versions; S3 makes an object visible only once it is complete, so the bucket
always holds a whole checkpoint. Credentials: boto3's usual chain on the machine (instance
role, or AWS_* variables passed through the spec's env). Standard library + boto3 only.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import time

EXIT_UNUSABLE = 3


def _client():
    import boto3

    return boto3.client("s3")


def check(bucket: str) -> int:
    try:
        _client().head_bucket(Bucket=bucket)
    except ImportError:
        print("checkpoint_sync: checkpoint_store needs boto3 on the machine (add `pip install boto3` to setup)",
              file=sys.stderr, flush=True)
        return EXIT_UNUSABLE
    except Exception as exc:  # noqa: BLE001 - any failure means the store cannot be used: say which
        print(f"checkpoint_sync: cannot use bucket {bucket}: {exc}", file=sys.stderr, flush=True)
        return EXIT_UNUSABLE
    print(f"checkpoint_sync: bucket {bucket} reachable", flush=True)
    return 0


def restore(bucket: str, key: str, path: str) -> int:
    """The bucket's checkpoint to ``path`` (temp file, then rename); 0 also when there is none."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.restore-{os.getpid()}"
    try:
        _client().download_file(bucket, key, tmp)
    except Exception as exc:  # noqa: BLE001
        if os.path.exists(tmp):
            os.unlink(tmp)
        if "404" in str(exc) or "Not Found" in str(exc) or "NoSuchKey" in str(exc):
            print(f"checkpoint_sync: no checkpoint at s3://{bucket}/{key} yet; the job starts from scratch", flush=True)
            return 0
        print(f"checkpoint_sync: cannot read s3://{bucket}/{key}: {exc}", file=sys.stderr, flush=True)
        return EXIT_UNUSABLE
    os.replace(tmp, path)
    print(f"checkpoint_sync: restored s3://{bucket}/{key} ({os.path.getsize(path)} bytes)", flush=True)
    return 0


def _signature(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_size, st.st_mtime_ns


def upload_if_changed(client, bucket: str, key: str, path: str, last: tuple[int, int] | None) -> tuple[int, int] | None:
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
        client.upload_file(snap, bucket, key)
    finally:
        os.unlink(snap)
    print(f"checkpoint_sync: uploaded {sig[0]} bytes to s3://{bucket}/{key}", flush=True)
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


def watch(bucket: str, key: str, path: str, every: float, pgid: int) -> int:
    client = _client()
    last = None
    while _alive(pgid):
        time.sleep(every)
        try:
            last = upload_if_changed(client, bucket, key, path, last)
        except Exception as exc:  # noqa: BLE001 - a failed upload is retried at the next look
            print(f"checkpoint_sync: upload failed, retrying: {exc}", file=sys.stderr, flush=True)
    upload_if_changed(client, bucket, key, path, last)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="checkpoint_sync.py")
    p.add_argument("action", choices=("check", "restore", "watch"))
    p.add_argument("bucket")
    p.add_argument("key")
    p.add_argument("file")
    p.add_argument("--every", type=float, default=600.0)
    p.add_argument("--pgid", type=int, default=0)
    a = p.parse_args(argv)
    if a.action == "check":
        return check(a.bucket)
    if a.action == "restore":
        return restore(a.bucket, a.key, a.file)
    return watch(a.bucket, a.key, a.file, a.every, a.pgid)


if __name__ == "__main__":
    sys.exit(main())
