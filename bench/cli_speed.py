#!/usr/bin/env python3
"""Start-up cost of the CLI next to bare Python, measured side by side in one run.

    python bench/cli_speed.py [--runs 7] [--out bench/results/cli_speed.json]

Each command runs ``--runs`` times, interleaved (so drift in machine load hits all alike);
the JSON gives the median wall time of each and the deltas/ratios to ``python -c pass``.
Targets (issue 3): ``--help`` within 0.3 s of bare Python, an estimate without baseline
within 1.5 s. Commands use this interpreter (``python -m launcher``), not a shell shim.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEC = "jobs/vgg16.yaml"
LIBRARY_ESTIMATE = ("import json; from launcher.spec import load_spec; from launcher.estimate import estimate; "
                    f"print(json.dumps(estimate(load_spec('{SPEC}')).to_dict()))")


def _time(cmd: list[str]) -> tuple[float, int]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0, proc.returncode


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--out", help="also write the JSON here")
    args = ap.parse_args()
    py = sys.executable
    cmds = {
        "python -c pass": [py, "-c", "pass"],
        "gpujob --help": [py, "-m", "launcher", "--help"],
        "gpujob estimate --no-baseline --json": [py, "-m", "launcher", "estimate", SPEC, "--no-baseline", "--json"],
    }
    # Until the CLI's estimate command is wired, time the library call it makes instead.
    _, rc = _time(cmds["gpujob estimate --no-baseline --json"])
    estimate_mode = "cli"
    if rc != 0:
        cmds["gpujob estimate --no-baseline --json"] = [py, "-c", LIBRARY_ESTIMATE]
        estimate_mode = "library (CLI estimate exited non-zero)"
    for cmd in cmds.values():  # warm the page cache and .pyc files
        _time(cmd)
    samples: dict[str, list[float]] = {k: [] for k in cmds}
    codes: dict[str, set] = {k: set() for k in cmds}
    for _ in range(args.runs):
        for name, cmd in cmds.items():
            t, rc = _time(cmd)
            samples[name].append(t)
            codes[name].add(rc)
    med = {k: statistics.median(v) for k, v in samples.items()}
    base = med["python -c pass"]
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "runs": args.runs,
        "estimate_mode": estimate_mode,
        "median_s": {k: round(v, 4) for k, v in med.items()},
        "min_s": {k: round(min(v), 4) for k, v in samples.items()},
        "delta_vs_python_s": {k: round(v - base, 4) for k, v in med.items()},
        "ratio_vs_python": {k: round(v / base, 2) for k, v in med.items()},
        "exit_codes": {k: sorted(v) for k, v in codes.items()},
        "targets": {
            "help_within_0.3s_of_python": med["gpujob --help"] - base <= 0.3,
            "estimate_no_baseline_within_1.5s": med["gpujob estimate --no-baseline --json"] <= 1.5,
        },
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
