"""Client cost of job output of any shape: one huge line without a newline, and tqdm-style `\\r` updates.

The client's whole path after the bytes arrive: the stored log (SQLite, real file), line
splitting and progress (launcher.streaming.Progress), and the screen (render.EventPrinter on
a rich Console writing to /dev/null), fed in the 64 KiB chunks an SSH stream delivers, and
in one piece as LocalHost.stream reads a local log. Prints JSON: seconds per case (median of
--repeats) and bytes per second.

    python bench/huge_output.py [--mib 8 32] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from rich.console import Console  # noqa: E402

from launcher.render import EventPrinter  # noqa: E402
from launcher.spec import parse_spec  # noqa: E402
from launcher.store import Store  # noqa: E402
from launcher.streaming import Progress  # noqa: E402

CHUNK = 65536


def one_pass(text: str, chunk: int | None) -> float:
    with tempfile.TemporaryDirectory() as tmp, open(os.devnull, "w") as null:
        store = Store(Path(tmp) / "runs.db")
        store.create_run("rbench", "bench", "local", spec_path=None, spec_text=None, spec={}, provider_config={})
        printer = EventPrinter(Console(file=null, width=120, highlight=False))  # as the CLI makes it
        progress = Progress(store, printer, time.time, "rbench", parse_spec("name: bench\n"), 0)
        start = time.perf_counter()
        if chunk is None:
            progress.feed(text)
        else:
            for i in range(0, len(text), chunk):
                progress.feed(text[i:i + chunk])
        progress.flush()
        printer.close()
        took = time.perf_counter() - start
        assert len(store.log_text("rbench")) == len(text)
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, nargs="+", default=[8, 32])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    load_before = os.getloadavg()[0]  # the machine is shared: the numbers say how busy it was
    cases = []
    for mib in args.mib:
        n = mib << 20
        shapes = {"one line, no newline": "x" * n,
                  "tqdm \\r updates (80 chars each)": ("step 12345/99999 [=====>    ] 42% loss 0.1234" + " " * 33
                                                     + "\r") * (n // 80)}
        for shape, text in shapes.items():
            for label, chunk in (("64 KiB chunks (ssh)", CHUNK), ("one read (local)", None)):
                times = [one_pass(text, chunk) for _ in range(args.repeats)]
                s = statistics.median(times)
                cases.append({"shape": shape, "mib": mib, "delivery": label, "seconds": round(s, 3),
                              "mib_per_s": round(len(text) / (1 << 20) / s, 1), "runs": [round(t, 3) for t in times]})
    print(json.dumps({"bench": "huge_output", "machine": platform.node(), "cpus": os.cpu_count(),
                      "python": platform.python_version(),
                      "load_average_1min": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
                      "cases": cases}, indent=2))


if __name__ == "__main__":
    main()
