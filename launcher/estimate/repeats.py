"""Run-to-run spread of the same job on different lent hosts: the band of a measured signature.

    python -m launcher.estimate.repeats            # print the fit (JSON)
    python -m launcher.estimate.repeats --write    # store it in bench/results/host_repeats.json

Reads the cold ``gpujob run --provider local`` rows of bench/results/h200_host/*.json and
bench/results/h200_local_total/*.json (each file one lent H200 host or call; rows run the plain
CLI, rc 0, with the payload's end event; A/B rows, which carry a ``condition`` such as cached
bytecode on or off, are left out). A group is one job: (model, its arguments, input
shape, classes, precision, batch, GPU). For every group with at least two runs, every ordered
pair of its runs (a, b) gives |b / a - 1|, the error of predicting run b from a recorded run a:

* ``samples_per_second``: the end event's steady samples/s, grouped by job;
  split by the group's median step time (samples per step / samples/s, tokens for language
  models) at ``SHORT_STEP_S``: short steps are bound by the host's Python and launches and
  differ between hosts by up to ~15%, long steps by the GPU and by ~2% (no group lies between
  13 and 25 ms);
* ``overhead_seconds``: total minus the samples at the steady samples/s (start-up, cold compile,
  end) per job;
* ``total_seconds``: the run's total wall time (``report.actual.total_seconds``), grouped by job
  *and* sample count (a total depends on how many samples were trained), for the record;
* ``same_host``: ``overhead_seconds`` and ``total_seconds`` grouped as above *and* by file (one
  host): how closely the
  same cold job repeats on one host, the band of a local estimate that reuses a recorded run's
  own start-up and compile (launcher/estimate/bands.py, ``local_total_band``).

The band is the **largest** deviation (not the median): a recorded run is one draw, the next
run lands on another host, and with a handful of groups the largest seen is the honest bound;
the median is stored beside it. Nothing here imports torch.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from launcher.estimate.paths import read_json, results_dir

OUT_FILE = "host_repeats.json"
SHORT_STEP_S = 0.020
SOURCE_DIRS = ("h200_host", "h200_local_total")
JOB_FIELDS = ("model", "model_args", "input_shape", "image_size", "in_channels", "seq_len", "vocab_size",
              "num_classes", "precision", "batch_size")


def runs(root: Path | None = None) -> list[dict]:
    """One dict per cold CLI run: job key, file, samples, samples/s, total seconds."""
    root = root or results_dir()
    out = []
    for d in SOURCE_DIRS:
        for f in sorted((root / d).glob("*.json")):
            doc = read_json(f, {})
            # bench/local_total.py & co. keep runs in "results"; bench/samehost_repeat.py keeps its
            # estimate/run sequence in "steps", the runs with step "run"
            rows = (doc.get("results") or [s for s in doc.get("steps", []) if isinstance(s, dict)
                                           and s.get("step") == "run"]) if isinstance(doc, dict) else []
            for r in rows:
                if not isinstance(r, dict) or r.get("cache") != "cold" or r.get("rc") != 0 or r.get("condition") \
                        or r.get("variant", "cli") != "cli" or not (r.get("end") or {}).get("samples_per_second"):
                    continue  # A/B rows (a ``condition``, e.g. cached bytecode on or off) are not repeats
                gpu = (r.get("start") or {}).get("device_name") or "NVIDIA H200"
                job = json.dumps([r.get(k) for k in JOB_FIELDS] + [gpu], sort_keys=True)
                actual = (r.get("report") or {}).get("actual") or {}
                total = actual.get("total_seconds")
                sps = float(r["end"]["samples_per_second"])
                # start-up + cold compile + end: the total minus the samples at the steady rate (the
                # report's train_seconds is the payload's loop, compile included: not that)
                steady = float(r["samples"]) / sps if r.get("samples") else None
                out.append({"job": job, "file": f"{d}/{f.name}", "samples": r.get("samples"),
                            "condition": r.get("condition"),
                            "samples_per_second": sps,
                            "step_s": float(r["batch_size"]) * (r.get("seq_len") or 1) / sps,
                            "total_seconds": float(total) if total else None,
                            "overhead_seconds": float(total) - steady if total and steady else None})
    return out


def spread(groups: dict[str, list[float]]) -> dict | None:
    """Largest and median |b / a - 1| over every ordered pair (a, b) of runs of one group, groups
    with >= 2 values: the error of predicting run b from a recorded run a, which is what a measured
    signature does (a deviation from the group's median would halve a pair's gap)."""
    devs, n_groups = [], 0
    for vals in groups.values():
        if len(vals) >= 2:
            devs += [abs(b / a - 1) for i, a in enumerate(vals) for j, b in enumerate(vals) if i != j]
            n_groups += 1
    if not devs:
        return None
    return {"max": round(max(devs), 4), "median": round(statistics.median(devs), 4),
            "n_groups": n_groups, "n_runs": sum(len(v) for v in groups.values() if len(v) >= 2)}


def same_host(rows: list[dict]) -> dict:
    """The spread of overhead and total of the same job repeated on one host (one file)."""
    over: dict[str, list[float]] = {}
    tot: dict[str, list[float]] = {}
    for r in rows:
        if r["overhead_seconds"]:
            over.setdefault(f"{r['job']}|{r['file']}", []).append(r["overhead_seconds"])
        if r["total_seconds"]:
            tot.setdefault(f"{r['job']}|{r['file']}|{r['samples']}", []).append(r["total_seconds"])
    return {"overhead_seconds": spread(over), "total_seconds": spread(tot)}


def fit(rows: list[dict]) -> dict:
    sps: dict[str, list[float]] = {}
    steps: dict[str, list[float]] = {}
    over: dict[str, list[float]] = {}
    tot: dict[str, list[float]] = {}
    for r in rows:
        sps.setdefault(r["job"], []).append(r["samples_per_second"])
        steps.setdefault(r["job"], []).append(r["step_s"])
        if r["overhead_seconds"]:
            over.setdefault(r["job"], []).append(r["overhead_seconds"])
        if r["total_seconds"]:
            tot.setdefault(f"{r['job']}|{r['samples']}", []).append(r["total_seconds"])
    short = {k for k, v in steps.items() if statistics.median(v) < SHORT_STEP_S}
    return {"samples_per_second": {"short_step": spread({k: v for k, v in sps.items() if k in short}),
                                   "long_step": spread({k: v for k, v in sps.items() if k not in short}),
                                   "short_step_s": SHORT_STEP_S},
            "overhead_seconds": spread(over), "total_seconds": spread(tot),
            "same_host": same_host(rows),
            "sources": sorted({r["file"] for r in rows}),
            "generated_by": "python -m launcher.estimate.repeats --write"}


def main(argv: list[str]) -> int:
    doc = fit(runs())
    text = json.dumps(doc, indent=1, sort_keys=True) + "\n"
    if "--write" in argv:
        (results_dir() / OUT_FILE).write_text(text, encoding="utf-8")
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
