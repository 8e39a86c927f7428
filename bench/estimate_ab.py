#!/usr/bin/env python3
"""CPU time of one full_estimate (what `gpujob estimate SPEC --no-baseline` prices), this checkout
against another commit, in alternating fresh interpreters.

    python3 bench/estimate_ab.py --ref COMMIT [--runs 15] [--spec jobs/vgg16.yaml] [--out FILE.json]

The whole CLI (bench/cli_speed.py) spends most of its time importing typer, pydantic and rich;
on a loaded machine their noise hides a change of a few tens of milliseconds in the estimate
itself. This times only the call: each run is a fresh interpreter (this checkout, or
``git archive COMMIT`` extracted to a temporary directory, on PYTHONPATH; a fresh GPUJOB_HOME)
that imports the estimator, loads the spec, then takes time.process_time() around
``full_estimate(spec, providers=(every provider), baseline=False)``, as the CLI calls it with
--no-baseline. Runs alternate between the two builds so load drift hits both alike. Prints one
JSON object: median and min milliseconds of each build, every run, and whether both builds
returned the same estimate (as JSON, the catalog's age aside).
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

CHILD = r'''
import json, sys, time
from launcher.catalog.listing import ALL_PROVIDERS
from launcher.jobestimate import full_estimate
from launcher.spec import load_spec
spec = load_spec(sys.argv[1])
t = time.process_time()
out = full_estimate(spec, providers=tuple(ALL_PROVIDERS), baseline=False)
ms = (time.process_time() - t) * 1000
out["catalog"].pop("age_days", None)  # moves with the clock, not with the code
print(json.dumps({"ms": ms, "estimate": out}, default=str))
'''


def _once(src: Path, spec: Path) -> tuple[float, str]:
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "PYTHONPATH": str(src), "GPUJOB_HOME": home}
        proc = subprocess.run([sys.executable, "-c", CHILD, str(spec)], cwd=src, env=env, capture_output=True,
                              text=True, check=True)
    doc = json.loads(proc.stdout.strip().splitlines()[-1])
    return doc["ms"], json.dumps(doc["estimate"], sort_keys=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ref", required=True, help="the commit to compare with, e.g. main")
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--spec", default="jobs/vgg16.yaml", help="relative to the repository root")
    ap.add_argument("--out", help="also write the JSON here")
    args = ap.parse_args()
    commit = subprocess.run(["git", "rev-parse", args.ref], cwd=ROOT, capture_output=True, text=True,
                            check=True).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        ref_src = Path(tmp) / "ref"
        ref_src.mkdir()
        tar = subprocess.run(["git", "archive", commit], cwd=ROOT, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(ref_src)], input=tar, check=True)
        builds = {"ref": ref_src, "this": ROOT}
        runs: dict[str, list[float]] = {b: [] for b in builds}
        outputs = {b: _once(src, src / args.spec)[1] for b, src in builds.items()}  # warm .pyc files
        for _ in range(args.runs):
            for b, src in builds.items():
                runs[b].append(_once(src, src / args.spec)[0])
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "spec": args.spec,
        "ref_commit": commit,
        "runs": args.runs,
        **{b: {"median_ms": round(statistics.median(v), 1), "min_ms": round(min(v), 1),
               "runs_ms": [round(x, 1) for x in v]} for b, v in runs.items()},
        "same_estimate": outputs["ref"] == outputs["this"],
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
