#!/usr/bin/env python3
"""A repeat on the same machine: the local estimate before any run, after one run, and the runs.

In ONE ``GPUJOB_HOME`` (so the second estimate can find the first run's record):

    1. the local estimate (``gpujob run SPEC --provider local --dry-run --json --no-baseline``)
    2. a cold ``gpujob run --provider local`` (bench/local_total.run_one: fresh empty
       ``TORCHINDUCTOR_CACHE_DIR`` / ``TRITON_CACHE_DIR``)
    3. the local estimate again (it should say 'measured in run rX')
    4. a second cold run of the same job (fresh caches again)
    5. the local estimate once more (it now takes run 2's figures)

    python3 bench/samehost_repeat.py --out $OUT/samehost_repeat.json --model mlp --seconds 8

The file is rewritten after every step. ``summary`` holds each estimate's total against the total
of the run that followed it (error = estimate / actual - 1).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench import local_total  # noqa: E402

ESTIMATE_KEYS = ("gpu", "samples_per_second", "train_seconds", "overhead_seconds", "warmup_seconds",
                 "total_seconds", "total_error_band", "total_band_basis", "basis", "note")


def estimate(home: str, spec: str) -> dict:
    """The CLI's local estimate of ``spec`` in ``home`` (what `gpujob run` prints before it starts)."""
    env = dict(os.environ, **local_total.SAFE_ENV, GPUJOB_HOME=home,
               PYTHONPATH=os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), ROOT) if p))
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "launcher", "run", spec, "--provider", "local", "--dry-run",
                           "--json", "--no-baseline"], capture_output=True, text=True, env=env, cwd=home)
    row: dict = {"rc": proc.returncode, "wall_s": round(time.monotonic() - t0, 2)}
    try:
        est = json.loads(proc.stdout)["estimate"]
        row["estimate"] = {k: est.get(k) for k in ESTIMATE_KEYS}
    except (ValueError, KeyError, TypeError):
        row["error"] = (proc.stdout[-300:] + " | " + proc.stderr[-300:]).strip()
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--model", default="mlp", choices=sorted(local_total.MODELS))
    ap.add_argument("--seconds", type=float, default=8.0, help="steady training seconds of each run")
    ap.add_argument("--gpu", default="H200")
    ap.add_argument("--run-timeout-s", type=float, default=90.0)
    a = ap.parse_args(argv)
    t0 = time.monotonic()
    home = tempfile.mkdtemp(prefix="gpujob-home-")
    spec = os.path.join(home, "job.yaml")
    fields, rate = local_total.MODELS[a.model]
    per_step = fields["batch_size"] * fields.get("seq_len", 1)
    samples = max(per_step * 20, int(round(a.seconds * rate / per_step)) * per_step)
    with open(spec, "w", encoding="utf-8") as f:  # run_one writes the same text again
        f.write(local_total.spec_text(a.model, fields, samples, a.gpu))
    doc: dict = {"command": "python3 bench/samehost_repeat.py " + " ".join(sys.argv[1:] if argv is None else argv),
                 "model": a.model, "samples": samples, "steps": [], "summary": []}

    def save() -> None:
        doc["elapsed_s"] = round(time.monotonic() - t0, 1)
        with open(a.out + ".tmp", "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1)
        os.replace(a.out + ".tmp", a.out)

    for step in ("estimate", "run", "estimate", "run", "estimate"):
        if step == "estimate":
            row = {"step": "estimate", **estimate(home, spec)}
        else:
            cache = tempfile.mkdtemp(prefix="inductor-cache-")
            row = {"step": "run", **local_total.run_one(a.model, a.gpu, a.seconds, cache, False, a.run_timeout_s,
                                                       home=home)}
            row.pop("first_step_event", None)
            row.pop("last_step_event", None)
        doc["steps"].append(row)
        brief = {k: row.get(k) for k in ("step", "rc", "wall_s", "error")}
        brief["total"] = (((row.get("report") or {}).get("actual") or {}).get("total_seconds")
                          if step == "run" else (row.get("estimate") or {}).get("total_seconds"))
        print(json.dumps(brief), flush=True)
        save()
    steps = doc["steps"]
    for i in range(len(steps) - 1):
        est, run = steps[i], steps[i + 1]
        if est["step"] != "estimate" or run["step"] != "run":
            continue
        predicted = (est.get("estimate") or {}).get("total_seconds")
        actual = ((run.get("report") or {}).get("actual") or {}).get("total_seconds")
        if predicted and actual:
            doc["summary"].append({"estimate_step": i, "run_step": i + 1, "predicted_total_s": round(predicted, 2),
                                   "actual_total_s": round(actual, 2),
                                   "error": round(predicted / actual - 1, 4),
                                   "note": (est.get("estimate") or {}).get("note")})
    save()
    print(json.dumps(doc["summary"]), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
