"""Upload of a project directory to a real sshd on loopback: one SFTP call per file (how
put_dir worked first) against the single tar stream put_dir uses now, side by side.

Prints JSON with seconds per case (median of --repeats), straight to sshd and through a
loopback proxy that holds every chunk for half of --rtt-ms each way (a WAN's round trip,
bandwidth untouched): per-file SFTP pays round trips per file, the tar stream pays a few.

    python bench/upload_speed.py [--files 1000] [--repeats 3] [--rtt-ms 20]   (root, OpenSSH's sshd)
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import shutil
import socket
import stat
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path, PurePosixPath

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from launcher.keys import generate_ed25519, write_private_key  # noqa: E402
from launcher.remote import Session  # noqa: E402
from launcher.uploads import select_files  # noqa: E402
from tests.sshd import Sshd  # noqa: E402


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
    root.mkdir(parents=True)
    for i in range(files):
        p = root / f"pkg{i % 20}" / f"mod{i}.py"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(os.urandom(512).hex().encode())  # 1 KiB of source-like text
    if big_mb:
        (root / "weights.bin").write_bytes(os.urandom(big_mb << 20))


def per_file(session: Session, src: Path, dest: str) -> None:
    """put_dir as it was: per file an SFTP put and chmod, parent dirs made once (cached)."""
    sftp = session._sftp()
    made: set[str] = set()
    for rel in select_files(src):
        remote = PurePosixPath(dest) / rel
        for parent in reversed(remote.parents):
            p = str(parent)
            if p not in ("/", ".") and p not in made:
                try:
                    sftp.stat(p)
                except FileNotFoundError:
                    sftp.mkdir(p)
                made.add(p)
        sftp.put(str(src / rel), str(remote))
        sftp.chmod(str(remote), stat.S_IMODE((src / rel).stat().st_mode))


def timed(fn, session: Session, src: Path, dest: Path, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        shutil.rmtree(dest, ignore_errors=True)
        t = time.perf_counter()
        fn(session, src, str(dest))
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rtt-ms", type=float, default=20.0)
    a = ap.parse_args()
    why = Sshd.available()
    if why:
        print(json.dumps({"skipped": why}))
        return
    out: dict = {"python": sys.version.split()[0], "cpus": os.cpu_count(), "cases": []}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        pem, pub = generate_ed25519("bench")
        key = write_private_key(tmp / "id_ed25519", pem)
        with Sshd(tmp / "sshd", authorized_keys=[pub]).start() as server:
            trees = []
            for name, files, big in ((f"{a.files} files of 1 KiB", a.files, 0), ("one 100 MiB file", 0, 100)):
                src = tmp / f"src-{files}-{big}"
                make_tree(src, files, big)
                trees.append((name, src))
            proxy = DelayProxy((server.host, server.port), a.rtt_ms / 2000.0)
            try:
                for rtt, port in ((0, server.port), (a.rtt_ms, proxy.port)):
                    session = Session(server.host, port, server.user, key, host_keys=[server.host_public])
                    try:
                        for name, src in trees:
                            sftp = timed(per_file, session, src, tmp / "dest", a.repeats)
                            tar = timed(lambda s, p, q: s.put_dir(p, q), session, src, tmp / "dest", a.repeats)
                            out["cases"].append({"case": name, "rtt_ms": rtt, "per_file_sftp_s": round(sftp, 3),
                                                 "tar_stream_s": round(tar, 3), "speedup": round(sftp / tar, 2)})
                    finally:
                        session.close()
            finally:
                proxy.close()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
