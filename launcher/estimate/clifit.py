"""The time a `gpujob run --provider local` GPU job spends outside steady training, fitted on
what users get: the CLI's own cold-cache runs (bench/local_total.py rows), not the probe's.

Each run splits into
    outside = CLI total - the payload's loop time (spawn, interpreter, torch + CUDA start, model
              build, final checkpoint + model write, the CLI's report)
    compile = loop time - samples / steady samples/s (torch.compile, autotuning, the slow first
              steps: the payload's warm-up minus its warm-up steps at the steady rate)
and the fit is
    outside = a + s_per_gb x (checkpoint + model bytes) / 1e9     least squares over the runs
    compile = the model's median over its CLI runs; a model never run through the CLI: its probe
              compile (bench/op_profile.py) x the median CLI / probe ratio; else a + b x graph
              operations, least squares over the per-model medians.
``spread`` is the run-to-run spread of the overhead (outside + compile) of the same model
(median and max |run - model median| / model median), the noise any estimate of one run carries.
Only the files in FIT_FILES are fitted; later calls check the fit (docs/estimator.md, section 13).
``host_error`` is the fit's overhead error on the runs of HELDOUT_FILES, hosts it never saw, for
the record (docs/estimator.md section 13); the band of a local total is made from the same runs by
launcher/estimate/repeats.py (``local_total_pairs``: the estimate's overhead and samples/s error of
each run together).

Every run fitted (and held out) ran on a lent machine whose Python had PYTHONDONTWRITEBYTECODE=1 and
a torch without cached bytecode, so each payload compiled torch's (and sympy's, triton's) Python
source again; a user's pip-installed torch has its bytecode. ``bytecode`` (from BYTECODE_FILE,
bench/bytecode_ab.py: the same cold runs with and without cached bytecode, alternating) is the
median per-run difference of outside and of compile, and ``user_outside_s`` / ``user_compile_s``
price a job as a user's machine runs it: the fitted figure minus that cost. ``outside_s`` /
``compile_s`` stay the lent machines' figures, what the fit and its held-out checks compare.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from launcher.estimate.paths import read_json, results_dir

# Calls 2-6 (docs/benchmarks.md): the CLI runs the overhead is fitted on. Anything else is held out.
FIT_FILES = ("h200_local_total/call2.json", "h200_local_total/call3.json", "h200_local_total/heldout_call4.json",
             "h200_host/heldout_call5.json", "h200_host/compile_launch_call6.json")
# Calls on lent hosts the fit never saw (docs/benchmarks.md): how far the fitted overhead misses on a
# new host. Cold compiles differ by 20-35% between hosts, one host all faster, another all slower.
# h200_long: a ninth host, 75-100 s of training per model, run as a user's machine runs them (cached
# bytecode, ``condition`` "pyc"): checked against the user figures (user_outside_s, user_compile_s).
HELDOUT_FILES = ("h200_host/heldout_call7.json", "h200_host/heldout_call7b.json",
                 "h200_host/host_compile_host6.json", "h200_host/host_compile_host7.json",
                 "h200_long/long_a.json", "h200_long/long_b.json", "h200_long/long_c.json")
# Cold CLI runs of the same models with and without cached bytecode on one lent host (docs/benchmarks.md).
BYTECODE_FILE = "h200_host/bytecode_ab_h200.json"
_WORKLOAD_KEYS = ("image_size", "num_classes", "in_channels", "input_shape", "model_args", "seq_len",
                  "vocab_size", "batch_size", "precision")


def checkpoint_bytes(w, cost) -> float:
    """Bytes the payload writes when a job ends: the checkpoint (fp32 weights and optimizer state:
    SGD momentum, or AdamW's two moments for token models) and the fp32 model file."""
    optimizer_states = 2 if getattr(w, "is_token_model", False) else 1
    return float(cost.params) * 4 * (2 + optimizer_states)


def workload_of(row: dict):
    """The spec workload of a recorded CLI run (its model and the _WORKLOAD_KEYS it carries); a
    factory's path is relative to the current directory (the repository root)."""
    from launcher.spec import parse_spec

    work = {"model": row["model"], **{k: row[k] for k in _WORKLOAD_KEYS if k in row}}
    inner = ", ".join(f"{k}: {json.dumps(v)}" for k, v in work.items())
    return parse_spec(f"name: x\nworkload: {{{inner}}}\n", check_catalog=False).workload


def _costs(row: dict) -> tuple[float | None, float]:
    """(graph operations or None for a language model, checkpoint + model bytes) of a run's workload."""
    from launcher.estimate.flops import workload_cost

    w = workload_of(row)
    cost = workload_cost(w)
    return (None if w.is_lm else cost.graph_ops()), checkpoint_bytes(w, cost)


def runs_of(doc: dict, source: str = "") -> list[dict]:
    """The cold, finished CLI runs of one bench/local_total.py (or compile_launch.py) file, split."""
    out = []
    for r in doc.get("results", []):
        actual = (r.get("report") or {}).get("actual") or {}
        end = r.get("end") or {}
        if r.get("rc") != 0 or r.get("cache") != "cold" or not actual.get("total_seconds") \
                or not actual.get("samples_per_second") or not end.get("elapsed"):
            continue
        steady = actual["samples"] / actual["samples_per_second"]
        ops, ckpt = _costs(r)
        out.append({"model": r["model"], "batch_size": r.get("batch_size"), "source": source,
                    "condition": r.get("condition"),
                    "samples": r.get("samples"), "workload": {k: r[k] for k in _WORKLOAD_KEYS if k in r},
                    "total_s": actual["total_seconds"], "steady_s": steady,
                    "outside_s": actual["total_seconds"] - end["elapsed"], "compile_s": end["elapsed"] - steady,
                    "graph_ops": ops, "checkpoint_gb": ckpt / 1e9})
    return out


def fit_runs(files: tuple[str, ...] = FIT_FILES, directory: Path | None = None) -> list[dict]:
    base = directory or results_dir()
    runs: list[dict] = []
    for name in files:
        runs += runs_of(read_json(base / name, {}), name)
    return runs


def least_squares_line(points: list[tuple[float, float]]) -> tuple[float, float]:
    """(intercept a, slope b) of y = a + b x fitted by least squares on (x, y) points; b = 0
    when every x is the same (the line is then the mean of y)."""
    mx = statistics.fmean(x for x, _ in points)
    my = statistics.fmean(y for _, y in points)
    sxx = sum((x - mx) ** 2 for x, _ in points)
    b = sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else 0.0
    return my - b * mx, b


def fit(runs: list[dict], probe_compile: dict | None = None) -> dict | None:
    """The overhead fit over ``runs`` (runs_of rows); probe_compile: model -> the probe's compile s."""
    if not runs:
        return None
    a, s_per_gb = least_squares_line([(r["checkpoint_gb"], r["outside_s"]) for r in runs])
    per: dict[str, list[float]] = {}
    overheads: dict[str, list[float]] = {}
    ops: dict[str, float | None] = {}
    for r in runs:
        per.setdefault(r["model"], []).append(r["compile_s"])
        overheads.setdefault(r["model"], []).append(r["outside_s"] + r["compile_s"])
        ops[r["model"]] = r["graph_ops"]
    compile_s = {m: round(statistics.median(v), 2) for m, v in per.items()}
    doc = {"outside": {"a": round(a, 3), "s_per_gb": round(s_per_gb, 3)}, "compile_s": compile_s,
           "n_runs": len(runs), "calls": sorted({r["source"] for r in runs})}
    points = [(ops[m], c) for m, c in compile_s.items() if ops[m]]
    if len(points) >= 2:
        la, lb = least_squares_line(points)
        doc["line"] = {"a": round(la, 3), "b": round(lb, 6), "n": len(points)}
    ratios = [compile_s[m] / p for m, p in (probe_compile or {}).items() if m in compile_s and p]
    if ratios:
        doc["probe_ratio"] = round(statistics.median(ratios), 4)
    dev = [abs(x / statistics.median(v) - 1) for v in overheads.values() if len(v) > 1 for x in v]
    if dev:
        doc["spread"] = {"median": round(statistics.median(dev), 4), "max": round(max(dev), 4),
                         "n_models": sum(len(v) > 1 for v in overheads.values())}
    return doc


def compile_s(cli: dict, model: str, graph_ops: float | None, probe_compile: dict | None = None) -> float | None:
    """A model's cold compile in a CLI run by the fit ``cli`` (None when it has nothing for it)."""
    if model in cli.get("compile_s", {}):
        return float(cli["compile_s"][model])
    if model in (probe_compile or {}):
        return float(probe_compile[model]) * float(cli.get("probe_ratio", 1.0))
    line = cli.get("line")
    if line and graph_ops:
        return max(0.0, float(line["a"]) + float(line["b"]) * graph_ops)
    return None


def host_error(cli: dict, runs: list[dict], probe_compile: dict | None = None) -> dict | None:
    """The fit ``cli``'s overhead (outside + compile) error on ``runs`` of hosts it never saw:
    median and max |predicted / measured - 1|, and each call's median signed error (a host tends
    to run every model faster, or every model slower, than the fit). A run made as a user's machine
    makes it (``condition`` "pyc": cached bytecode) is checked against the user figures."""
    per: dict[str, list[float]] = {}
    for r in runs:
        user = r.get("condition") == "pyc"
        comp = (user_compile_s if user else compile_s)(cli, r["model"], r["graph_ops"], probe_compile)
        if comp is None:
            continue
        pred = (user_outside_s if user else outside_s)(cli, r["checkpoint_gb"] * 1e9) + comp
        per.setdefault(r["source"], []).append(pred / (r["outside_s"] + r["compile_s"]) - 1)
    errs = [abs(e) for v in per.values() for e in v]
    if not errs:
        return None
    return {"median": round(statistics.median(errs), 4), "max": round(max(errs), 4), "n_runs": len(errs),
            "by_call": {src: round(statistics.median(v), 4) for src, v in sorted(per.items())}}


def outside_s(cli: dict, checkpoint_bytes: float | None) -> float:
    o = cli["outside"]
    return float(o["a"]) + float(o["s_per_gb"]) * (checkpoint_bytes or 0.0) / 1e9


def bytecode_cost(doc: dict) -> dict | None:
    """What compiling Python source in every process added to a run (bench/bytecode_ab.py rows):
    each model's k-th ``nopyc`` run paired with its k-th ``pyc`` run, the median difference of
    outside and of compile over the pairs."""
    by: dict[tuple[str, str], list[dict]] = {}
    for row in doc.get("results", []):
        if row.get("condition") in ("nopyc", "pyc"):
            for r in runs_of({"results": [row]}):
                by.setdefault((r["model"], row["condition"]), []).append(r)
    pairs = [(a, b) for (m, c), rows in sorted(by.items()) if c == "nopyc" for a, b in zip(rows, by.get((m, "pyc"), []))]
    if not pairs:
        return None
    return {"outside_s": round(statistics.median(a["outside_s"] - b["outside_s"] for a, b in pairs), 2),
            "compile_s": round(statistics.median(a["compile_s"] - b["compile_s"] for a, b in pairs), 2),
            "n_pairs": len(pairs), "models": sorted({a["model"] for a, _ in pairs})}


def bytecode_s(cli: dict) -> float:
    """Seconds a run on the lent machines paid for compiling Python source (outside + compile,
    ``bytecode`` of the fit ``cli``), which a user's machine does not: 0 without the A/B."""
    bytecode = cli.get("bytecode") or {}
    return float(bytecode.get("outside_s", 0.0)) + float(bytecode.get("compile_s", 0.0))


def user_outside_s(cli: dict, checkpoint_bytes: float | None) -> float:
    """outside_s as a user's machine (torch with its bytecode) runs the job."""
    return max(0.0, outside_s(cli, checkpoint_bytes) - float((cli.get("bytecode") or {}).get("outside_s", 0.0)))


def user_compile_s(cli: dict, model: str, graph_ops: float | None, probe_compile: dict | None = None) -> float | None:
    """compile_s as a user's machine (torch with its bytecode) runs the job."""
    fitted = compile_s(cli, model, graph_ops, probe_compile)
    if fitted is None:
        return None
    return max(0.0, fitted - float((cli.get("bytecode") or {}).get("compile_s", 0.0)))


def held_out(runs: list[dict], train_s: list[float], probe_compile: dict | None, by: str) -> list[dict]:
    """Each run's total predicted by a fit without it (by="run") or without its whole call
    (by="call"): train_s[i] (the estimator's training seconds for run i) + outside + compile."""
    rows = []
    for i, r in enumerate(runs):
        rest = [q for j, q in enumerate(runs) if (j != i if by == "run" else q["source"] != r["source"])]
        cli = fit(rest, probe_compile)
        comp = compile_s(cli, r["model"], r["graph_ops"], probe_compile) or 0.0
        pred = train_s[i] + outside_s(cli, r["checkpoint_gb"] * 1e9) + comp
        rows.append({"model": r["model"], "batch_size": r["batch_size"], "source": r["source"],
                     "measured_total_s": round(r["total_s"], 1), "predicted_total_s": round(pred, 1),
                     "total_error": round(pred / r["total_s"] - 1, 4),
                     "measured_overhead_s": round(r["outside_s"] + r["compile_s"], 1),
                     "predicted_overhead_s": round(pred - train_s[i], 1)})
    return rows
