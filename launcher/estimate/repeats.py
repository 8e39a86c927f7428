"""Run-to-run spread of the same job on different lent hosts: the band of a measured signature.

    python -m launcher.estimate.repeats            # print the fit (JSON)
    python -m launcher.estimate.repeats --write    # store it in bench/results/host_repeats.json

Reads the cold ``gpujob run --provider local`` rows of bench/results/h200_host/*.json,
h200_local_total/*.json and h200_long/*.json (each file one lent H200 host or call; rows run the
plain CLI, rc 0, with the payload's end event; A/B rows, which carry a ``condition`` such as cached
bytecode on or off, are left out of the overhead and total spreads; their steady samples/s, which
the bytecode does not touch, count). A group is one job: (model, its arguments, input
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

The band is the **median** over the pairs (half of the predictions of one run from another landed
inside it, as every band's half of its cases), the largest stored beside it and named in the basis.
(It was the largest until a ninth host ran MobileNetV2, a 30-ms step, 16-17% slower than two others:
the largest samples/s spread of long steps went from 3.4% to 22%, wider than the unmeasured model's
band, and a band that grows when a job has been measured says nothing.)

``cli_samples_per_second`` is the per-operation estimate's error against every finished CLI run
(cold or warm, any condition): |predicted / measured steady samples/s - 1|, median, max, the
median signed error, and each file's (host's) median signed error. The per-operation model is
fitted on kernel profiles (launcher/estimate/opfit.py), never on these runs, so every one is held
out: what a user's run on a lent host gets, the host's own speed included (a band of an
unmeasured H100/H200 estimate, launcher/estimate/bands.py). Computing it counts each workload
(the U-Net factory on the ``meta`` device: torch); the rest imports no torch.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from launcher.estimate.paths import read_json, results_dir

OUT_FILE = "host_repeats.json"
SHORT_STEP_S = 0.020
SOURCE_DIRS = ("h200_host", "h200_local_total", "h200_long")
JOB_FIELDS = ("model", "model_args", "input_shape", "image_size", "in_channels", "seq_len", "vocab_size",
              "num_classes", "precision", "batch_size")


def cli_rows(root: Path | None = None) -> list[tuple[str, dict]]:
    """(file, row) of every finished plain CLI run (rc 0, with the payload's steady samples/s)."""
    root = root or results_dir()
    out = []
    for d in SOURCE_DIRS:
        for f in sorted((root / d).glob("*.json")):
            doc = read_json(f, {})
            # bench/local_total.py & co. keep runs in "results"; bench/samehost_repeat.py keeps its
            # estimate/run sequence in "steps", the runs with step "run"
            rows = (doc.get("results") or [s for s in doc.get("steps", []) if isinstance(s, dict)
                                           and s.get("step") == "run"]) if isinstance(doc, dict) else []
            out += [(f"{d}/{f.name}", r) for r in rows if isinstance(r, dict) and r.get("rc") == 0
                    and r.get("variant", "cli") == "cli" and (r.get("end") or {}).get("samples_per_second")]
    return out


def runs(root: Path | None = None) -> list[dict]:
    """One dict per cold CLI run: job key, file, samples, samples/s, total seconds, condition."""
    out = []
    for name, r in cli_rows(root):
        if r.get("cache") != "cold":
            continue
        gpu = (r.get("start") or {}).get("device_name") or "NVIDIA H200"
        job = json.dumps([r.get(k) for k in JOB_FIELDS] + [gpu], sort_keys=True)
        actual = (r.get("report") or {}).get("actual") or {}
        total = actual.get("total_seconds")
        sps = float(r["end"]["samples_per_second"])
        # start-up + cold compile + end: the total minus the samples at the steady rate (the
        # report's train_seconds is the payload's loop, compile included: not that)
        steady = float(r["samples"]) / sps if r.get("samples") else None
        plain = not r.get("condition")  # A/B rows are no repeats of the overhead
        out.append({"job": job, "file": name, "samples": r.get("samples"), "condition": r.get("condition"),
                    "samples_per_second": sps,
                    "step_s": float(r["batch_size"]) * (r.get("seq_len") or 1) / sps,
                    "total_seconds": float(total) if total and plain else None,
                    "overhead_seconds": float(total) - steady if total and steady and plain else None})
    return out


def local_total_pairs(root: Path | None = None) -> dict | None:
    """The current estimate's signed errors on each cold CLI run of the hosts the overhead fit
    never saw (clifit.HELDOUT_FILES): [overhead error, samples/s error] per run, each
    predicted / measured - 1 (the overhead as a user's machine pays it for a ``condition`` "pyc"
    run, else plus the lent machine's bytecode cost). bands.local_total_band turns them into the
    total's band for any overhead share; None without runs."""
    from launcher.catalog.gpus import get_gpu
    from launcher.estimate import clifit
    from launcher.estimate.api import job_overrides
    from launcher.estimate.bands import LOCAL_TOTAL_QUANTILE, total_error_of, total_error_quantile
    from launcher.estimate.flops import workload_cost
    from launcher.estimate.opmodel import efficiencies
    from launcher.estimate.overheads import overheads_for
    from launcher.estimate.table import predict_job

    lent_s = clifit.bytecode_s((efficiencies().get("warmup") or {}).get("cli") or {})
    pairs, files, shares = [], [], []
    for run in clifit.fit_runs(clifit.HELDOUT_FILES, root):
        w = workload_of_run(run)
        cost = workload_cost(w)
        over = overheads_for("local", w, job_overrides(w, cost), on_gpu=True).total_s
        over += 0.0 if run.get("condition") == "pyc" else lent_s
        sps = predict_job(w, cost, get_gpu("H200"), 1).samples_per_second
        pairs.append([round(over / (run["outside_s"] + run["compile_s"]) - 1, 4),
                      round(sps / (run["samples"] / run["steady_s"]) - 1, 4)])
        files.append(run["source"])
        shares.append(over / (over + run["samples"] / sps))
    if not pairs:
        return None
    # how often a run lies inside the band made of the other calls' runs (its own call left out)
    inside = [total_error_of(shares[i], pairs[i])
              <= total_error_quantile(shares[i], [p for p, f in zip(pairs, files) if f != files[i]])
              for i in range(len(pairs))]
    return {"pairs": pairs, "n_runs": len(pairs), "n_files": len(set(files)), "quantile": LOCAL_TOTAL_QUANTILE,
            "inside_leave_one_call_out": sum(inside)}


def workload_of_run(run: dict):
    """The spec workload of a clifit.runs_of row."""
    from launcher.estimate.clifit import workload_of

    return workload_of({"model": run["model"], **run["workload"]})


def cli_error(root: Path | None = None) -> dict | None:
    """The per-operation estimate of steady samples/s against every finished CLI run (see the
    module docstring): {median, max, bias, n_runs, by_file}; None without runs."""
    from launcher.catalog.gpus import get_gpu
    from launcher.estimate.clifit import workload_of
    from launcher.estimate.flops import workload_cost
    from launcher.estimate.table import predict_job

    per: dict[str, list[float]] = {}
    for name, r in cli_rows(root):
        w = workload_of(r)
        gpu = get_gpu("H200" if "H200" in ((r.get("start") or {}).get("device_name") or "H200") else "H100")
        predicted = predict_job(w, workload_cost(w), gpu, 1).samples_per_second
        per.setdefault(name, []).append(predicted / float(r["end"]["samples_per_second"]) - 1)
    errs = [e for v in per.values() for e in v]
    if not errs:
        return None
    return {"median": round(statistics.median(abs(e) for e in errs), 4), "max": round(max(map(abs, errs)), 4),
            "bias": round(statistics.median(errs), 4), "n_runs": len(errs), "n_files": len(per),
            "by_file": {k: round(statistics.median(v), 4) for k, v in sorted(per.items())}}


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
    doc = {**fit(runs()), "cli_samples_per_second": cli_error(), "local_total": local_total_pairs()}
    text = json.dumps(doc, indent=1, sort_keys=True) + "\n"
    if "--write" in argv:
        (results_dir() / OUT_FILE).write_text(text, encoding="utf-8")
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
