"""Fetching results from a real sshd on loopback: one SFTP download per file (how get_dir worked
first) against the single streamed tar get_dir uses now, side by side in one run.

Prints JSON with seconds per case (median of --repeats), straight to sshd and through the
delaying proxy of bench/upload_speed.py (bench/delay_proxy.py: every chunk held half of
--rtt-ms each way, bandwidth untouched; shared in bench/ssh_bench.py). Cases: --files small
files (1 KiB each, in 20 directories) and one --big-mb MiB file. Each fetch lands in a fresh
directory and is checked byte for byte.

    python bench/fetch_speed.py [--files 1000] [--big-mb 1024] [--repeats 3] [--rtt-ms 20]
        [--out bench/results/fetch_speed.json]                         (root, OpenSSH's sshd)
"""

from __future__ import annotations

import argparse
import filecmp
import stat
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.ssh_bench import side_by_side, write_json  # noqa: E402
from launcher.remote import Session  # noqa: E402


def per_file(session: Session, remote: Path, local: Path) -> None:
    """get_dir as it was: an SFTP listing per directory and one SFTP get per file."""
    sftp = session._sftp()

    def walk(r: str, l: Path) -> None:
        l.mkdir(parents=True, exist_ok=True)
        for entry in sftp.listdir_attr(r):
            mode = entry.st_mode or 0
            if stat.S_ISDIR(mode):
                walk(f"{r}/{entry.filename}", l / entry.filename)
            elif stat.S_ISREG(mode):
                sftp.get(f"{r}/{entry.filename}", str(l / entry.filename))

    walk(str(remote), local)


def tar_stream(session: Session, remote: Path, local: Path) -> None:
    session.get_dir(str(remote), local)


def same_tree(a: Path, b: Path) -> bool:
    cmp = filecmp.dircmp(a, b)
    if cmp.left_only or cmp.right_only or cmp.funny_files:
        return False
    if filecmp.cmpfiles(a, b, cmp.common_files, shallow=False)[1:] != ([], []):
        return False
    return all(same_tree(a / d, b / d) for d in cmp.common_dirs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--big-mb", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rtt-ms", type=float, default=20.0)
    ap.add_argument("--out", default=None, help="also write the JSON here")
    a = ap.parse_args()
    write_json(side_by_side(("per_file_sftp_s", per_file), ("tar_stream_s", tar_stream), a.files, a.big_mb,
                            a.repeats, a.rtt_ms, check=same_tree), a.out)


if __name__ == "__main__":
    main()
