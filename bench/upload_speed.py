"""Upload of a project directory to a real sshd on loopback: one SFTP call per file (how
put_dir worked first) against the single tar stream put_dir uses now, side by side.

Prints JSON with seconds per case (median of --repeats), straight to sshd and through a
loopback proxy that holds every chunk for half of --rtt-ms each way (a WAN's round trip,
bandwidth untouched): per-file SFTP pays round trips per file, the tar stream pays a few.

    python bench/upload_speed.py [--files 1000] [--big-mb 100] [--repeats 3] [--rtt-ms 20]   (root, OpenSSH's sshd)
"""

from __future__ import annotations

import argparse
import stat
import sys
from pathlib import Path, PurePosixPath

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.ssh_bench import side_by_side, write_json  # noqa: E402
from launcher.remote import Session  # noqa: E402
from launcher.uploads import select_files  # noqa: E402


def per_file(session: Session, src: Path, dest: Path) -> None:
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--big-mb", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rtt-ms", type=float, default=20.0)
    ap.add_argument("--out", default=None, help="also write the JSON here")
    a = ap.parse_args()
    write_json(side_by_side(("per_file_sftp_s", per_file), ("tar_stream_s", lambda s, p, q: s.put_dir(p, str(q))),
                            a.files, a.big_mb, a.repeats, a.rtt_ms), a.out)


if __name__ == "__main__":
    main()
