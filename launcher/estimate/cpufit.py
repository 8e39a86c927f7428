"""The CPU baseline without a probe: per-operation-class CPU rates, fitted on measured steps.

    python -m launcher.estimate.cpufit            # fit + leave-one-model-out error, as JSON
    python -m launcher.estimate.cpufit --write    # ... and write bench/results/cpu_op_rates.json
    python -m launcher.estimate.cpufit --table    # the error table of docs/estimator.md

A training step on a CPU is priced from the same per-operation counts the GPU path uses
(``launcher.estimate.opcount``; bundled for built-in models, so no torch is needed):

    step = sum over classes c of (s_per_flop_c x FLOPs_c + s_per_byte_c x bytes_c) / cores
           + operations x s_per_op                       (autograd engine, dispatch, Python)

``conv_depthwise`` is the grouped-convolution share of the ``conv`` class (``gemm_ops`` rows of
kind ``conv_depthwise``); ``conv`` keeps the dense rest. Compute classes (``COMPUTE_CLASSES``)
have a FLOP term (matmul and attention share one, ``FLOP_GROUP``) and a bytes term; the others a
bytes term only. The terms are fitted (``fit``) on bench/results/cpu_rates.json
(bench/cpu_rates.py: the payload's fp32 step of the built-in models, the U-Net and tokenlm
factories and GPT-2-small, with torch.profiler's self time per class), single-thread rows only
(``FIT_THREADS``): per core, linear in the cores.

Leave-one-model-out (``evaluate``): each model is predicted by a fit on the other models' rows
only. Fitted on one CPU (``host`` in the output): another CPU's rates differ (vector width,
clock, caches), which the error band says (``launcher.estimate.bands.cpu_band``). Pure Python,
no torch.
"""

from __future__ import annotations

import json
import statistics
import sys
from functools import lru_cache

from launcher.estimate.paths import calibration_dir, read_json, results_dir

# Rates per core come from single-thread steps: on this shared 2-core machine a two-thread step
# waits for whichever thread another process preempted, so those rows are checks of the linear
# scaling with cores, never fitted.
FIT_THREADS = 1
RATES_FILE = "cpu_op_rates.json"
RAW_FILE = "cpu_rates.json"
COMPUTE_CLASSES = ("conv", "conv_depthwise", "matmul", "attention")
BYTES_CLASSES = ("norm", "elementwise", "reduction", "data_movement", "optimizer")


def step_counts(ops: dict, batch: int) -> dict:
    """class -> {"flops", "bytes", "kernels"} of one fp32 eager step at ``batch`` from an
    OpCost dict (``opcount.OpCost.to_dict()``), the grouped convolutions apart as ``conv_depthwise``."""
    out = {}
    for name, c in ops.get("classes", {}).items():
        out[name] = {"flops": c["flops_fixed"] + batch * c["flops_per_sample"],
                     "bytes": c["bytes_fixed"] + batch * c["bytes_per_sample"], "kernels": c["kernels"]}
    dw = {"flops": 0.0, "bytes": 0.0, "kernels": 0.0}
    for row in ops.get("gemm_ops", []):
        if row[0] == "conv_depthwise":
            n = row[7]
            dw["flops"] += n * (row[2] + batch * row[1])
            dw["bytes"] += n * (row[4] + batch * row[3])
            dw["kernels"] += n
    if dw["kernels"] and "conv" in out:
        conv = out["conv"]
        out["conv"] = {k: max(0.0, conv[k] - dw[k]) for k in conv}
        out["conv_depthwise"] = dw
    return out


def _class_seconds(row: dict) -> dict:
    """class -> profiled self seconds of one step, scaled to the row's fastest unprofiled step
    (the profiled steps ran slower: the profiler's own cost and the shared machine's load)."""
    prof = row["profile"]
    total = sum(prof["self_us"].values()) / 1e6
    scale = row["step_s"] / total if total > 0 else 1.0
    return {c: us / 1e6 * scale for c, us in prof["self_us"].items()}


# Classes sharing one FLOP rate: matrix products and attention (the same GEMM kernels; attention
# appears in the transformers only). Every other compute class has its own.
FLOP_GROUP = {"matmul": "matrix", "attention": "matrix"}
# The rate a compute class the fit never saw borrows.
NEAREST = {"conv_depthwise": "conv", "attention": "matmul", "matmul": "conv", "conv": "matmul"}


def _solve(a: list, b: list) -> list | None:
    """x of a x = b (Gaussian elimination, partial pivoting); None when singular."""
    n = len(b)
    m = [row[:] + [b[i]] for i, row in enumerate(a)]
    for col in range(n):
        piv = max(range(col, n), key=lambda r: abs(m[r][col]))
        if abs(m[piv][col]) < 1e-12:
            return None
        m[col], m[piv] = m[piv], m[col]
        for r in range(n):
            if r != col:
                f = m[r][col] / m[col][col]
                m[r] = [x - f * y for x, y in zip(m[r], m[col])]
    return [m[i][n] / m[i][i] for i in range(n)]


def nonneg_least_squares(eqs: list, names: list) -> dict:
    """Non-negative weighted least squares: ``eqs`` of ({name: coefficient}, target, weight);
    returns {name: value >= 0}. While the unconstrained solution has a negative value, its most
    negative variable is pinned to 0 and the rest refitted."""
    free = [n for n in names if any(c.get(n) for c, _, _ in eqs)]
    while free:
        ata = [[sum(w * c.get(p, 0.0) * c.get(q, 0.0) for c, _, w in eqs) for q in free] for p in free]
        atb = [sum(w * c.get(p, 0.0) * t for c, t, w in eqs) for p in free]
        scale = [ata[i][i] ** 0.5 or 1.0 for i in range(len(free))]  # columns differ by 1e9 (FLOPs vs bytes)
        x = _solve([[ata[i][j] / (scale[i] * scale[j]) for j in range(len(free))] for i in range(len(free))],
                   [atb[i] / scale[i] for i in range(len(free))])
        if x is not None:
            x = [v / scale[i] for i, v in enumerate(x)]
            if min(x) >= 0:
                return {**{n: 0.0 for n in names}, **dict(zip(free, x))}
            free.pop(min(range(len(free)), key=lambda i: x[i]))
        else:  # collinear columns: keep the first
            free.pop()
    return {n: 0.0 for n in names}


def fit(rows: list) -> dict:
    """Per-class rates of ``rows`` (bench/cpu_rates.py rows): {"classes": {class: {"s_per_flop",
    "s_per_byte"}} (seconds x cores), "s_per_op"}.

    Each (row, class) is one equation, measured seconds x threads = s_per_flop x FLOPs (compute
    classes) + s_per_byte x bytes, weighted by 1 / the row's step squared (a class counts by its
    share of the step). Dense convolutions, matrix products and attention share one s_per_flop
    (the same blocked matrix kernels; only the ViT has large matrix products or attention at all)
    and keep a bytes term each; every other class is fitted on its own. A class's time without
    counts of it, and ``other`` (autograd engine, optimizer bookkeeping, Python), is per-operation
    overhead: s_per_op is the median over rows of those seconds over the step's counted
    operations; it does not shrink with threads."""
    eqs: dict[str, list] = {}
    per_op = []
    for r in (r for r in rows if r["threads"] == FIT_THREADS):
        secs, n = _class_seconds(r), r["threads"]
        loose = 0.0
        for c, t in secs.items():
            k = r["classes"].get(c)
            if k is None or not (k["flops"] or k["bytes"]) or t <= 0:
                loose += t
                continue
            coef = {f"bytes:{c}": k["bytes"]}
            if c in COMPUTE_CLASSES:
                coef["flops:" + FLOP_GROUP.get(c, c)] = k["flops"]
            eqs.setdefault(FLOP_GROUP.get(c, c), []).append((coef, t * n, 1.0 / r["step_s"] ** 2))
        ops = sum(k["kernels"] for k in r["classes"].values())
        if ops:
            per_op.append(loose / ops)
    values: dict[str, float] = {}
    for group in eqs.values():
        values.update(nonneg_least_squares(group, sorted({n for coef, _, _ in group for n in coef})))
    classes = {}
    for c in sorted({n.split(":", 1)[1] for n in values if n.startswith("bytes:")}):
        flop = values.get("flops:" + FLOP_GROUP.get(c, c), 0.0) if c in COMPUTE_CLASSES else 0.0
        classes[c] = {"s_per_flop": flop, "s_per_byte": values.get(f"bytes:{c}", 0.0)}
    return {"classes": classes, "s_per_op": statistics.median(per_op) if per_op else 0.0}


def _median_bytes_rate(fitted: dict) -> float:
    rates = sorted(v["s_per_byte"] for k, v in fitted["classes"].items() if k in BYTES_CLASSES and v["s_per_byte"] > 0)
    return statistics.median(rates) if rates else 0.0


def class_seconds(fitted: dict, c: str, flops: float, nbytes: float, cores: int) -> float:
    """Seconds of one class's work on ``cores`` cores. A class the fit never saw is priced as a
    roofline: a compute class at the larger of its FLOPs at its nearest class's FLOP rate
    (``NEAREST``: a depthwise convolution at the dense one's, attention at matmul's) and its bytes
    at the median rate of the bytes-bound classes (a depthwise convolution does ~2 FLOPs per
    byte: memory-bound), a bytes-bound class at that median rate."""
    coef = fitted["classes"].get(c)
    if coef is not None:
        return (coef["s_per_flop"] * (flops if c in COMPUTE_CLASSES else 0.0) + coef["s_per_byte"] * nbytes) / cores
    memory = _median_bytes_rate(fitted) * nbytes
    if c in COMPUTE_CLASSES:
        near = fitted["classes"].get(NEAREST.get(c, "conv")) or fitted["classes"].get("conv") or {"s_per_flop": 0.0}
        return max(near["s_per_flop"] * flops, memory) / cores
    return memory / cores


def step_seconds(fitted: dict, counts: dict, cores: int) -> tuple[float, dict]:
    """(seconds of one step, class -> seconds) on ``cores`` cores from ``step_counts``."""
    cores = max(1, cores)
    per = {c: class_seconds(fitted, c, k["flops"], k["bytes"], cores) for c, k in counts.items()}
    per["overhead"] = fitted["s_per_op"] * sum(k["kernels"] for k in counts.values())
    return sum(per.values()), per


def _model_key(row: dict) -> str:
    return row["model"]


def evaluate(rows: list, flat_gflops_per_core: float = 30.0) -> dict:
    """Per row: measured samples/s, the flat per-core rate's prediction (before) and the
    per-class prediction of a fit without the row's model (leave-one-model-out), as errors."""
    models = sorted({_model_key(r) for r in rows})
    out = []
    for m in models:
        fitted = fit([r for r in rows if _model_key(r) != m])
        for r in (r for r in rows if _model_key(r) == m):
            secs, _ = step_seconds(fitted, r["classes"], r["threads"])
            before = r["threads"] * flat_gflops_per_core * 1e9 / r["train_flops_per_sample"]
            after = r.get("units", r["batch_size"]) / secs
            out.append({"model": m, "threads": r["threads"], "batch_size": r["batch_size"],
                        "image_size": r["image_size"], "measured": r["samples_per_second"], "load": r["load"],
                        "before": round(before, 4), "after": round(after, 4),
                        "before_error": round(before / r["samples_per_second"] - 1, 4),
                        "after_error": round(after / r["samples_per_second"] - 1, 4)})
    return {"rows": out, "before": _summary([x["before_error"] for x in out]),
            "leave_one_model_out": _summary([x["after_error"] for x in out])}


def _summary(errors: list) -> dict:
    if not errors:
        return {}
    ratios = [max(1 + e, 1 / (1 + e)) for e in errors]
    return {"median": round(statistics.median(abs(e) for e in errors), 4),
            "max": round(max(abs(e) for e in errors), 4), "max_ratio": round(max(ratios), 3), "n": len(errors)}


@lru_cache(maxsize=1)
def fitted_rates() -> dict:
    """The bundled fit (``RATES_FILE`` in the packaged calibration); {} when absent."""
    return read_json(calibration_dir() / RATES_FILE, {})


def predict(ops: dict, batch: int, cores: int, doc: dict | None = None) -> float | None:
    """Samples/s of one fp32 training step at ``batch`` (tokens for a token model) on ``cores``
    cores of a CPU, per operation class; None without a fit."""
    doc = fitted_rates() if doc is None else doc
    if not doc.get("fit") or batch < 1:
        return None
    secs, _ = step_seconds(doc["fit"], step_counts(ops, batch), max(1, cores))
    return batch / secs if secs > 0 else None


def check(fitted: dict, rows: list) -> dict:
    """Token models probed by the CPU baseline's own probe (bench/cpu_rates.py ``--checks``), never
    fitted: measured vs the fit's prediction at the probe's batch in tokens."""
    out = []
    for r in rows:
        secs, _ = step_seconds(fitted, r["classes"], r["threads"])
        after = r.get("units", r["batch_size"]) / secs
        out.append({"model": r["model"], "threads": r["threads"], "batch_size": r["batch_size"],
                    "measured": round(r["samples_per_second"], 4), "load": r["load"], "after": round(after, 4),
                    "after_error": round(after / r["samples_per_second"] - 1, 4)})
    return {"rows": out, "error": _summary([x["after_error"] for x in out])}


def build_doc(raw: dict) -> dict:
    """What --write stores: the fit on every row, its leave-one-model-out error, the host."""
    rows = raw["rows"]
    fitted = fit(rows)
    ev = evaluate(rows)
    if raw.get("checks"):
        ev["checks"] = check(fitted, raw["checks"])
    flat = statistics.median(r["samples_per_second"] * r["train_flops_per_sample"] / r["threads"] / 1e9
                             for r in rows if r["threads"] == FIT_THREADS)
    return {"about": "per-class CPU rates for the no-probe CPU baseline (launcher/estimate/cpufit.py), fitted on "
                     "bench/results/cpu_rates.json; s_per_flop / s_per_byte are seconds x cores",
            "generated_by": "python -m launcher.estimate.cpufit --write", "host": raw.get("host", {}),
            "measured": raw.get("date"), "fit": fitted, "flat_gflops_per_core": round(flat, 2),
            "gflops_per_core": {c: round(1e-9 / v["s_per_flop"], 2) for c, v in fitted["classes"].items()
                                if v["s_per_flop"] > 0},
            "gbytes_per_s_per_core": {c: round(1e-9 / v["s_per_byte"], 2) for c, v in fitted["classes"].items()
                                      if v["s_per_byte"] > 0},
            "error": ev}


def main(argv: list[str]) -> int:
    raw = read_json(results_dir() / RAW_FILE, {})
    if not raw.get("rows"):
        print(f"no rows in {results_dir() / RAW_FILE}: run python3 bench/cpu_rates.py first", file=sys.stderr)
        return 1
    doc = build_doc(raw)
    text = json.dumps(doc, indent=1, sort_keys=True) + "\n"
    if "--write" in argv:
        (results_dir() / RATES_FILE).write_text(text, encoding="utf-8")
    print(markdown(doc) if "--table" in argv else text, end="")
    return 0


def markdown(doc: dict) -> str:
    """docs/estimator.md's table: measured vs the flat rate (before) vs per class, model left out."""
    lines = ["| model (size, batch) | threads | load | measured samples/s | 30 GFLOP/s/core (before) "
             "| per class, model left out |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in doc["error"]["rows"]:
        name = r["model"].split(":")[0].rsplit("/", 1)[-1]
        lines.append(f"| {name} ({r['image_size']}, {r['batch_size']}) | {r['threads']} | {r['load']:.1f} "
                     f"| {r['measured']:,.3g} | {r['before']:,.3g} ({r['before_error']:+.0%}) "
                     f"| {r['after']:,.3g} ({r['after_error']:+.0%}) |")
    for r in doc["error"].get("checks", {}).get("rows", []):
        lines.append(f"| {r['model']} (check, {r['batch_size']} tokens) | {r['threads']} | {r['load']:.1f} "
                     f"| {r['measured']:,.4g} | | {r['after']:,.4g} ({r['after_error']:+.0%}) |")
    b, a = doc["error"]["before"], doc["error"]["leave_one_model_out"]
    lines.append(f"\nmedian |error| {b['median']:.0%} -> {a['median']:.0%}; largest {b['max']:.0%} -> {a['max']:.0%} "
                 f"(worst ratio {b['max_ratio']:.2f}x -> {a['max_ratio']:.2f}x), {a['n']} rows")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
