#!/usr/bin/env python3
"""Start-up cost of the INSTALLED gpujob next to bare Python, measured side by side in one run.

    python3 bench/cli_speed.py [--runs 9] [--venv DIR] [--out bench/results/cli_speed.json]

Builds a wheel from the tracked files (git ls-files), installs it without extras into a
fresh venv (or reuses ``--venv``), then times, interleaved so drift in machine load hits all
alike: ``python -c pass`` (the venv's interpreter), ``gpujob --help`` and
``gpujob estimate jobs/vgg16.yaml --no-baseline`` (the table) through the venv's console
script, from a directory outside the checkout. Prints one JSON object: median/min wall time
of each, the deltas to bare Python, and the goals (issue 12): ``--help`` within 0.2 s of bare
Python, the estimate within 0.5 s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "jobs" / "vgg16.yaml"
HELP_GOAL_S, ESTIMATE_GOAL_S = 0.2, 0.5


def install(venv: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        src, dist = Path(tmp) / "src", Path(tmp) / "dist"
        files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
        for rel in filter(None, files.decode().split("\0")):
            if (ROOT / rel).is_file():
                (src / rel).parent.mkdir(parents=True, exist_ok=True)
                (src / rel).write_bytes((ROOT / rel).read_bytes())
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(src)], check=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        wheel = next(dist.glob("gpujob-*.whl"))
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(wheel)], check=True)


def _time(cmd: list[str], cwd: str, env: dict) -> tuple[float, int]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0, proc.returncode


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=9)
    ap.add_argument("--venv", help="an existing venv with gpujob installed (default: build and install one)")
    ap.add_argument("--out", help="also write the JSON here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        venv = Path(args.venv) if args.venv else Path(tmp) / "venv"
        if not args.venv:
            install(venv)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env["GPUJOB_HOME"] = str(Path(tmp) / "home")
        gpujob = str(venv / "bin" / "gpujob")
        cmds = {
            "python -c pass": [str(venv / "bin" / "python"), "-c", "pass"],
            "gpujob --help": [gpujob, "--help"],
            "gpujob estimate jobs/vgg16.yaml --no-baseline": [gpujob, "estimate", str(SPEC), "--no-baseline"],
            "gpujob gpus": [gpujob, "gpus"],  # issue 17
            "gpujob cost": [gpujob, "cost"],
        }
        where = subprocess.run([str(venv / "bin" / "python"), "-c", "import launcher; print(launcher.__file__)"],
                               cwd=tmp, env=env, capture_output=True, text=True, check=True).stdout.strip()
        for cmd in cmds.values():  # warm the page cache, .pyc files and gpujob's caches
            _time(cmd, tmp, env)
        samples: dict[str, list[float]] = {k: [] for k in cmds}
        codes: dict[str, set] = {k: set() for k in cmds}
        for _ in range(args.runs):
            for name, cmd in cmds.items():
                t, rc = _time(cmd, tmp, env)
                samples[name].append(t)
                codes[name].add(rc)
    med = {k: statistics.median(v) for k, v in samples.items()}
    base = med["python -c pass"]
    help_delta = med["gpujob --help"] - base
    est = med["gpujob estimate jobs/vgg16.yaml --no-baseline"]
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "installed_from": where,
        "runs": args.runs,
        "median_s": {k: round(v, 4) for k, v in med.items()},
        "min_s": {k: round(min(v), 4) for k, v in samples.items()},
        "delta_vs_python_s": {k: round(v - base, 4) for k, v in med.items()},
        "exit_codes": {k: sorted(v) for k, v in codes.items()},
        "goals": {
            f"help_within_{HELP_GOAL_S}s_of_python": help_delta <= HELP_GOAL_S,
            f"estimate_within_{ESTIMATE_GOAL_S}s": est <= ESTIMATE_GOAL_S,
            "gpus_within_estimate_goal": med["gpujob gpus"] <= ESTIMATE_GOAL_S,
            "cost_within_estimate_goal": med["gpujob cost"] <= ESTIMATE_GOAL_S,
        },
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
