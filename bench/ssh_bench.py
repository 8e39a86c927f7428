"""What bench/upload_speed.py and bench/fetch_speed.py share: a real sshd on loopback, a proxy that
delays every chunk (a WAN's round trip, bandwidth untouched), the test trees, and the side-by-side
timing of an old and a new way to move them, straight and through the proxy."""

from __future__ import annotations

import json
import os
import queue
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

from launcher.keys import generate_ed25519, write_private_key
from launcher.remote import Session
from tests.sshd import Sshd

Mover = Callable[[Session, Path, Path], None]  # (session, source tree, destination) -> None


class DelayProxy:
    """127.0.0.1:port -> target, each chunk delivered ``one_way_s`` after it was read."""

    def __init__(self, target: tuple[str, int], one_way_s: float):
        self.target, self.delay = target, one_way_s
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            for a, b in ((client, upstream), (upstream, client)):
                q: queue.Queue = queue.Queue()
                threading.Thread(target=self._read, args=(a, q), daemon=True).start()
                threading.Thread(target=self._write, args=(b, q), daemon=True).start()

    def _read(self, src: socket.socket, q: queue.Queue) -> None:
        while True:
            try:
                data = src.recv(1 << 16)
            except OSError:
                data = b""
            q.put((time.monotonic() + self.delay, data))
            if not data:
                return

    @staticmethod
    def _write(dst: socket.socket, q: queue.Queue) -> None:
        while True:
            due, data = q.get()
            time.sleep(max(0.0, due - time.monotonic()))
            if not data:
                try:
                    dst.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                return
            try:
                dst.sendall(data)
            except OSError:
                return

    def close(self) -> None:
        self.sock.close()


def make_tree(root: Path, files: int, big_mb: int) -> None:
    """``files`` files of 1 KiB of source-like text in 20 directories, or one ``big_mb`` MiB file."""
    root.mkdir(parents=True)
    for i in range(files):
        p = root / f"pkg{i % 20}" / f"mod{i}.py"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(os.urandom(512).hex().encode())
    if big_mb:
        with open(root / "weights.bin", "wb") as f:
            for _ in range(big_mb):
                f.write(os.urandom(1 << 20))


def _timed(fn: Mover, session: Session, src: Path, dest: Path, repeats: int,
           check: Callable[[Path, Path], bool] | None) -> float:
    times = []
    for _ in range(repeats):
        shutil.rmtree(dest, ignore_errors=True)
        t = time.perf_counter()
        fn(session, src, dest)
        times.append(time.perf_counter() - t)
        if check is not None and not check(src, dest):
            raise SystemExit(f"{getattr(fn, '__name__', fn)} moved a different tree from {src}")
    shutil.rmtree(dest, ignore_errors=True)
    return statistics.median(times)


def side_by_side(old: tuple[str, Mover], new: tuple[str, Mover], files: int, big_mb: int, repeats: int,
                 rtt_ms: float, check: Callable[[Path, Path], bool] | None = None) -> dict:
    """Median seconds of ``old`` and ``new`` (name, mover) for a tree of ``files`` small files and one
    of a ``big_mb`` MiB file, straight to a loopback sshd and through a DelayProxy of ``rtt_ms``.
    Returns {"python", "cpus", "load_avg_1m", "cases": [{case, rtt_ms, <old>, <new>, speedup}]};
    {"skipped": why} without root or sshd. Each case is also written to stderr as it finishes."""
    why = Sshd.available()
    if why:
        return {"skipped": why}
    out: dict = {"python": sys.version.split()[0], "cpus": os.cpu_count(), "load_avg_1m": os.getloadavg()[0],
                 "repeats": repeats, "cases": []}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        pem, pub = generate_ed25519("bench")
        key = write_private_key(tmp / "id_ed25519", pem)
        with Sshd(tmp / "sshd", authorized_keys=[pub]).start() as server:
            trees = []
            for name, n, mb in ((f"{files} files of 1 KiB", files, 0), (f"one {big_mb} MiB file", 0, big_mb)):
                src = tmp / f"src-{n}-{mb}"
                make_tree(src, n, mb)
                trees.append((name, src))
            proxy = DelayProxy((server.host, server.port), rtt_ms / 2000.0)
            try:
                for rtt, port in ((0, server.port), (rtt_ms, proxy.port)):
                    session = Session(server.host, port, server.user, key, host_keys=[server.host_public])
                    try:
                        for name, src in trees:
                            a = _timed(old[1], session, src, tmp / "dest", repeats, check)
                            b = _timed(new[1], session, src, tmp / "dest", repeats, check)
                            out["cases"].append({"case": name, "rtt_ms": rtt, old[0]: round(a, 3), new[0]: round(b, 3),
                                                 "speedup": round(a / b, 2)})
                            print(json.dumps(out["cases"][-1]), file=sys.stderr, flush=True)
                    finally:
                        session.close()
            finally:
                proxy.close()
    return out


def write_json(report: dict, path: str | None) -> None:
    """Print the report as JSON, and write it to ``path`` too when one is given."""
    text = json.dumps(report, indent=2)
    if path:
        Path(path).write_text(text + "\n")
    print(text)
