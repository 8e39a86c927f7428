#!/usr/bin/env python3
"""Where `gpujob estimate` spends its start-up: CPU time per phase, framework vs gpujob.

    python3 bench/cli_phases.py [--runs 7] [--out bench/results/cli_phases.json]

Each run is a fresh interpreter (this checkout on PYTHONPATH, .pyc files written, a fresh
GPUJOB_HOME) that does, in order, what `gpujob estimate jobs/vgg16.yaml --no-baseline` does,
timing each step with time.process_time() (CPU seconds of the process: less moved by other
processes on a loaded machine than wall time). Phases marked "framework" are third-party
imports or typer's own work; the others are gpujob's. A module imported in an earlier phase is
free in a later one, so the order is the CLI's. Prints one JSON object: the median milliseconds
of each phase over the runs, their sum per owner, and the median total of the estimate's phases
(the last two are not: typer's rich help formatting is what `--help` adds instead, and pydantic's
plugin lookup, timed again on its own, is part of importing launcher.spec).

Since typer's option coercion goes through launcher/typerfast.py, parsing estimate's arguments
imports no pydantic: pydantic is imported for the job spec (its own phase). A checkout before
that change imports it in the parsing phase instead, so compare the sums, not those two phases.
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

CHILD = r"""
import json, sys, time
from pathlib import Path
marks = []
def mark(name, owner):
    marks.append((name, owner, time.process_time()))
t0 = time.process_time()
import typer; mark("import typer", "framework")
import launcher.cli as cli; mark("import launcher.cli (commands declared)", "gpujob")
cmd = typer.main.get_command(cli.app); mark("typer builds the click commands", "framework")
cmd.commands["estimate"].make_context("estimate", [sys.argv[1], "--no-baseline"])
mark("typer parses and coerces estimate's arguments", "framework")
import yaml; mark("import yaml", "framework")
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
mark("import pydantic (what launcher.spec imports from it)", "framework")
import launcher.spec as spec; mark("import launcher.spec (pydantic models built)", "gpujob")
job = spec.load_spec(Path(sys.argv[1])); mark("load_spec (YAML, validation, catalog load)", "gpujob")
import launcher.jobestimate as je; mark("import the estimator (launcher.estimate)", "gpujob")
res = je.full_estimate(job, providers=("aws", "gcp", "azure", "lambda", "vast"), baseline=False)
mark("full_estimate (3,729 rows priced)", "gpujob")
import rich.console, rich.table; mark("import rich console + table", "framework")
import io
import launcher.render as render; mark("import launcher.render", "gpujob")
render.render_estimate(rich.console.Console(file=io.StringIO(), width=180), res, wide=False)
mark("render the table", "gpujob")
import typer.rich_utils; mark("import typer.rich_utils (rich help formatting)", "framework, --help only")
import pydantic.plugin._loader as plugins
plugins._plugins = None  # measured apart: pydantic looks for plugins once, when the spec's first model is built
plugins.get_plugins(); mark("pydantic's plugin lookup (importlib.metadata; in import launcher.spec above)",
                            "framework, included above")
prev, out = t0, []
for name, owner, t in marks:
    out.append([name, owner, (t - prev) * 1000])
    prev = t
print(json.dumps(out))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--out")
    args = ap.parse_args()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = str(ROOT)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        env["GPUJOB_HOME"] = str(Path(tmp) / "home")
        for i in range(args.runs + 1):  # the first writes the .pyc files and caches: not counted
            proc = subprocess.run([sys.executable, "-c", CHILD, str(ROOT / "jobs" / "vgg16.yaml")], cwd=tmp,
                                  env=env, capture_output=True, text=True, check=True)
            if i:
                runs.append(json.loads(proc.stdout))
    phases = [{"phase": name, "owner": owner,
               "median_ms": round(statistics.median(r[k][2] for r in runs), 1)}
              for k, (name, owner, _) in enumerate(runs[0])]
    totals = [sum(p[2] for p in r[:-2]) for r in runs]  # the estimate's phases (not the last two)
    by_owner = {o: round(sum(p["median_ms"] for p in phases if p["owner"] == o), 1)
                for o in dict.fromkeys(p["owner"] for p in phases)}
    result = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "python": platform.python_version(),
              "cpu_count": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2), "runs": args.runs,
              "phases": phases, "sum_of_medians_ms": by_owner, "total_median_ms": round(statistics.median(totals), 1)}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
