#!/usr/bin/env python3
"""Time a local job spends outside the payload's training loop, per phase, for two or more
checkouts side by side: did code since a commit add start-up or wind-down to every run?

    python3 bench/outside_phases.py --tree old=/work/wt/outside-old --tree new=. --repeats 7 \
        [--out bench/results/outside_phases.json] [--spec SPEC]

Each run is ``python3 -m launcher run SPEC --provider local --json --no-baseline`` with the
tree on PYTHONPATH, from a fresh GPUJOB_HOME (as bench/local_total.py runs it, so every per-home
cache starts empty), the trees taken in turn (old, new, old, new, ...) so load on a shared machine
falls on both alike. The CLI's stdout is read line by line and each event stamped on arrival;
the payload's own ``start`` and ``end`` events carry the payload's clock (same machine), and a
sitecustomize put first on PYTHONPATH stamps when each Python process (the CLI, the payload) is up
and when it exits (its atexit). Phases:

    spawn_to_run_event     process start -> the CLI's first event (imports, spec, run record)
    run_to_job_started     estimate, machine, upload -> the payload process started
    job_started_to_start   payload start-up: interpreter, imports, model build -> its start event
    loop                   payload start -> end event (its ``elapsed``): inside the loop, not counted
    end_to_exit            payload end event -> CLI exit (payload exit, fetch, teardown, report)
    cli_interpreter        process start -> the CLI's interpreter up (before any import of ours)
    payload_spawn          job-started event -> the payload's interpreter up
    payload_startup        payload interpreter up -> its start event (imports, device, data, model)
    payload_wind_down      payload end event -> its atexit (model file, metrics)
    cli_wind_down          payload atexit -> CLI exit (interpreter teardown, exit noticed, fetch, report)
    cli_cpu, payload_cpu   CPU seconds (user + system) of the CLI's and the payload's own process, up to
                           their atexit: less moved by other processes' load than the wall phases
    outside                wall - loop
    fitted_outside         the report's total (the attempt: from the machine's launch) - the payload's
                           elapsed: what launcher/estimate/clifit.py fits as ``outside``

The default spec is a tiny MLP on CPU, eager (no torch.compile: compile time is inside the loop).
Prints one JSON object: the medians per tree and phase, each run's phases, and the load average
before and after.
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

SPEC = """name: mlp-cpu-outside
workload: {model: mlp, image_size: 28, num_classes: 10, in_channels: 1, batch_size: 64, precision: fp32,
           dataset: synthetic, samples_per_epoch: 640, epochs: 1, compile: false}
limits: {max_duration: 15m}
"""
PHASES = ("spawn_to_run_event", "run_to_job_started", "job_started_to_start", "loop", "end_to_exit", "outside",
          "wall", "fitted_outside", "cli_interpreter", "payload_spawn", "payload_startup", "payload_wind_down", "cli_wind_down",
          "cli_cpu", "payload_cpu")
# Put first on PYTHONPATH: every Python process appends (argv[0], interpreter up, exit) to $OUTSIDE_STAMPS.
STAMPER = """import atexit, json, os, sys, time
_up = time.time()
def _stamp():
    out = os.environ.get("OUTSIDE_STAMPS")
    if out:
        with open(out, "a", encoding="utf-8") as f:
            t = os.times()
            f.write(json.dumps({"argv0": sys.argv[0] if sys.argv else "", "up": _up, "exit": time.time(),
                                "cpu": t.user + t.system}) + "\\n")
atexit.register(_stamp)
"""


def run_once(tree: str, spec_text: str, timeout: float, stamper: str, cold: bool) -> dict:
    home = tempfile.mkdtemp(prefix="gpujob-outside-")
    stamps_path = os.path.join(home, "stamps.jsonl")
    spec = os.path.join(home, "job.yaml")
    with open(spec, "w", encoding="utf-8") as f:
        f.write(spec_text)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(GPUJOB_HOME=home, PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join(p for p in (stamper, tree, os.environ.get("PYTHONPATH")) if p),
               OUTSIDE_STAMPS=stamps_path)
    if cold:  # a cold compile, as a user's first run gets (bench/local_total.py)
        env.update(TORCHINDUCTOR_CACHE_DIR=os.path.join(home, "inductor"), TRITON_CACHE_DIR=os.path.join(home, "triton"))
    stamps: dict[str, float] = {}
    payload: dict[str, dict] = {}
    t0 = time.time()
    proc = subprocess.Popen([sys.executable, "-m", "launcher", "run", spec, "--provider", "local", "--json",
                             "--no-baseline", "--artifacts", os.path.join(home, "artifacts")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=home, env=env)
    assert proc.stdout is not None
    for line in proc.stdout:
        now = time.time()
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        name = ev.get("event")
        if isinstance(name, dict):
            payload.setdefault(name.get("event"), name)
        elif isinstance(name, str):
            stamps.setdefault(name, now)
            if name == "report":
                payload["report"] = ev
    err = proc.stderr.read() if proc.stderr else ""
    rc = proc.wait(timeout=timeout)
    t_exit = time.time()
    row: dict = {"rc": rc, "wall": t_exit - t0}
    if rc != 0 or "start" not in payload or "end" not in payload:
        row["error"] = err.strip().splitlines()[-3:]
        return row
    start, end = payload["start"]["time"], payload["end"]["time"]
    row.update(spawn_to_run_event=stamps["run"] - t0, run_to_job_started=stamps["job-started"] - stamps["run"],
               job_started_to_start=start - stamps["job-started"], loop=end - start, end_to_exit=t_exit - end)
    row["outside"] = row["wall"] - row["loop"]
    total = ((payload.get("report") or {}).get("actual") or {}).get("total_seconds")
    if total and payload["end"].get("elapsed"):  # what launcher/estimate/clifit.py fits
        row["fitted_outside"] = total - payload["end"]["elapsed"]
    procs = [json.loads(line) for line in open(stamps_path, encoding="utf-8")] if os.path.exists(stamps_path) else []
    cli = next((p for p in procs if p["argv0"].endswith(os.path.join("launcher", "__main__.py"))), None)
    pay = next((p for p in procs if p["argv0"].endswith("train.py")), None)
    if cli and pay:
        row.update(cli_interpreter=cli["up"] - t0, payload_spawn=pay["up"] - stamps["job-started"],
                   payload_startup=start - pay["up"], payload_wind_down=pay["exit"] - end,
                   cli_wind_down=t_exit - pay["exit"], cli_cpu=cli["cpu"], payload_cpu=pay["cpu"])
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tree", action="append", required=True, help="NAME=PATH of a checkout (repeatable)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--spec", help="a job spec file (default: a tiny eager MLP on CPU)")
    ap.add_argument("--warmup", type=int, default=1, help="uncounted runs per tree first (.pyc files)")
    ap.add_argument("--cold-cache", action="store_true", help="fresh torch.compile caches for every run")
    ap.add_argument("--out", help="the JSON, also rewritten after every run")
    a = ap.parse_args(argv)
    trees = dict(t.split("=", 1) for t in a.tree)
    trees = {k: os.path.abspath(v) for k, v in trees.items()}
    spec_text = open(a.spec, encoding="utf-8").read() if a.spec else SPEC
    load_before = os.getloadavg()
    runs: dict[str, list[dict]] = {k: [] for k in trees}
    stamper = tempfile.mkdtemp(prefix="outside-stamper-")
    with open(os.path.join(stamper, "sitecustomize.py"), "w", encoding="utf-8") as f:
        f.write(STAMPER)
    def summary() -> str:
        medians = {name: {p: round(statistics.median(r[p] for r in rows if p in r), 3) for p in PHASES
                          if any(p in r for r in rows)} for name, rows in runs.items()}
        doc = {"command": "python3 bench/outside_phases.py " + " ".join(sys.argv[1:] if argv is None else argv),
               "date": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()), "python": platform.python_version(),
               "cpu_count": os.cpu_count(), "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
               "trees": trees, "median_s": medians, "warmup_runs": warm, "runs": runs}
        text = json.dumps(doc, indent=1)
        if a.out:
            with open(a.out + ".tmp", "w", encoding="utf-8") as f:
                f.write(text + "\n")
            os.replace(a.out + ".tmp", a.out)
        return text

    warm: list[dict] = []
    for i in range(a.warmup + a.repeats):
        for name, path in trees.items():
            row = run_once(path, spec_text, 600, stamper, a.cold_cache)
            row["loadavg_1m"] = round(os.getloadavg()[0], 2)
            (runs[name] if i >= a.warmup else warm).append(row if i >= a.warmup else {"tree": name, **row})
            print(json.dumps({"tree": name, "repeat": i - a.warmup, **row}), file=sys.stderr, flush=True)
            summary()
    print(summary())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
