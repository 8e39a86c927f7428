"""Fit the per-class efficiencies of launcher/estimate/opmodel.py on per-kernel GPU profiles.

    python -m launcher.estimate.opfit [--json] [--write]    # reads bench/results/op_profiles_*.json
    python -m launcher.estimate.opfit --tile-grid           # held-out error per GEMM output tile
    python -m launcher.estimate.opfit --forms               # held-out error of each GEMM form tried

A profile (``bench/op_profile.py``) holds, per (model, precision, batch) on one GPU, the
payload's steady samples/s and torch.profiler's device time per kernel name. ``kernel_class``
sorts kernels into the classes a compiled step runs (gemm: convolution and matmul, attention, optimizer and
``fused``: the generated Triton kernels with whatever element-wise, normalisation, reduction or
copy kernels remain). For each profile and class:

    efficiency = roofline seconds of the class (opmodel.roofline, from the counted FLOPs/bytes)
                 / measured kernel seconds of the class per step

and the launch gap = (measured step - summed kernel time) / kernels per step. An efficiency of
(arch, precision class, class) is the geometric mean over the profiled models; the gap the
median. The GEMM class's roofline takes the shape parameters k0 and winograd_fp32 that
``launcher.estimate.gemmfit`` fits on the profiles' per-call rows (``shaped``). Error is
reported leave-one-model-out: each model's step is predicted by a fit that never saw that
model, neither its steps nor its calls. ``--write`` stores the fit (all models) in bench/results/op_efficiency.json.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from functools import lru_cache
from pathlib import Path

from launcher.estimate import clifit
from launcher.estimate.gemmfit import call_errors, fit_attention_shape, fit_gemm_shape, fit_unaligned, shaped_calls
from launcher.estimate.opcount import OpCost
from launcher.estimate.opmodel import EFFICIENCY_FILE, class_roofline, fixed_kernels, grouped, precision_class, step_time
from launcher.estimate.paths import read_json, results_dir

_KERNEL_RULES = (  # (class, substrings of the lower-cased kernel name); first match wins
    ("optimizer", ("fused_sgd", "sgd", "multi_tensor_apply", "foreach", "adam")),
    # cuDNN's SDPA backward also runs two helper kernels (dot(dO, O) per row, dQ cast to 16 bits),
    # named cudnn::fusion::...: attention's, not a convolution's
    ("attention", ("flash", "fmha", "attention", "sdpa", "_attn", "compute_dot_do_o", "convert_dq_to_16bits")),
    ("conv", ("fprop", "dgrad", "wgrad", "implicit_gemm", "conv", "nchwtonhwc", "nhwctonchw", "winograd",
              "cudnn", "xmma_cudnn", "implicit_convolve", "precomputed_convolve", "scudnn", "depthwise")),
    ("matmul", ("gemm", "nvjet", "cutlass", "cublas", "gemv", "sm90_xmma", "sm80_xmma", "ampere_", "hopper_",
                "splitkreduce", "dot_kernel")),
    ("data_movement", ("memcpy", "memset", "copy", "cat_", "catarray")),
)


def kernel_class(name: str) -> str:
    """Operation class of a CUDA kernel name, as a compiled step groups them (else ``fused``)."""
    n = name.lower()
    if n.startswith("triton_"):
        return "fused"
    for cls, keys in _KERNEL_RULES:
        if any(k in n for k in keys):
            return "fused" if cls == "data_movement" else cls
    return "fused"


# Profiler rows that are ranges around kernels, not kernels: their device time is their kernels'.
ANNOTATIONS = ("## ", "ProfilerStep", "Optimizer.")


def measured_classes(rec: dict) -> tuple[dict, float]:
    """(class -> device seconds per step, kernel launches per step) from a profile record."""
    steps = max(1, int(rec.get("profiled_steps") or 1))
    per: dict[str, float] = {}
    kernels = 0.0
    for row in rec.get("rows", []):
        if row.get("device_type", "CUDA") != "CUDA" or not row.get("device_us"):
            continue
        if row["name"].startswith(ANNOTATIONS):  # annotation ranges (Inductor's "## Call CompiledFxGraph
            continue  # ... ##", the optimizer's "Optimizer.step#SGD.step") span kernels counted on their own
        cls = kernel_class(row["name"])
        cls = "gemm" if cls in ("conv", "matmul") else cls  # as opmodel.grouped(compiled=True)
        per[cls] = per.get(cls, 0.0) + row["device_us"] * 1e-6 / steps
        kernels += row.get("count", 0) / steps
    return per, kernels


def load_profiles(directory: Path | None = None) -> list[dict]:
    d = directory or results_dir()
    out = []
    for path in sorted(d.glob("op_profiles_*.json")):
        doc = read_json(path, {})
        for r in doc.get("results", []):
            if r.get("samples_per_second") and r.get("rows") and r.get("cache") != "warm":
                out.append({**r, "source": path.name})
    return out


_FACTORY_OPS: dict[str, dict] = {}  # factory reference + arguments -> counted ops (torch counts once)


def _ops_for(rec: dict) -> OpCost | None:
    """The per-operation count of a profile's model (per token for a language model's row)."""
    from launcher.estimate.flops import cost_key

    ops = rec.get("ops")
    if ops is None and rec.get("seq_len"):  # a language model: counted per trained token
        from launcher.estimate.flops import lm_ops

        ops = lm_ops(rec["model"], rec.get("model_args") or {}, rec.get("vocab_size"), int(rec["seq_len"]))
    if ops is None and ":" in rec["model"]:  # a factory: count it (imports torch; offline only)
        from launcher.estimate.flops import factory_cost
        key = json.dumps([rec["model"], rec.get("model_args") or {}, rec["input_shape"], rec["num_classes"]])
        if key not in _FACTORY_OPS:
            _FACTORY_OPS[key] = factory_cost(rec["model"], rec.get("model_args") or {}, tuple(rec["input_shape"]),
                                             rec["num_classes"], results_dir().parents[1]).ops
        ops = _FACTORY_OPS[key]
    if ops is None:
        from launcher.estimate.opcosts import _table

        ops = _table().get(cost_key(rec["model"], rec.get("image_size", 224), rec.get("num_classes", 1000), 3))
    return OpCost.from_dict(ops) if ops else None


def observations(profiles: list[dict], get_gpu, shape: dict | None = None, kernel_s: float = 0.0) -> list[dict]:
    """Per profile: implied efficiency per class and the launch gap; ``shape``: the GEMM shape
    parameters (``opmodel.gemm_shape_params``) the GEMM class's roofline is computed with;
    ``kernel_s``: the fixed time per kernel the efficiencies are taken at (``with_kernel_s``)."""
    from launcher.estimate.calibration import gpu_from_device_name

    obs = []
    for rec in profiles:
        ops = _ops_for(rec)
        gpu_name = gpu_from_device_name(rec.get("device_name") or "") or rec.get("gpu_name")
        if ops is None or gpu_name is None:
            continue
        gpu = get_gpu(gpu_name)
        # A language model's sample is a token: its step trains batch x seq_len of them.
        batch, precision = int(rec["batch_size"]) * int(rec.get("seq_len") or 1), rec["precision"]
        measured, kernels = measured_classes(rec)
        step = batch / float(rec["samples_per_second"])
        roof, class_kernels, gemm_by_u_max = {}, {}, {}
        counted_kernels = 0.0
        pcls = precision_class(precision) if gpu.peak_tflops.get(precision) else "fp32"
        for cls, cost in grouped(ops, precision, compiled=True).items():
            t, _ = class_roofline(cls, cost, ops, gpu, precision, batch, {"gemm_shape": shape or {}})
            counted_kernels += cost.kernels_fused
            if measured.get(cls, 0.0) > 0 and t > 0:
                roof[cls], class_kernels[cls] = t, fixed_kernels(cls, cost.kernels_fused)
                if cls == "gemm":  # the class at each sustained-rate ceiling tried (fit_u_max)
                    for cap in U_MAX_GRID:
                        gemm_by_u_max[cap] = class_roofline(
                            cls, cost, ops, gpu, precision, batch,
                            {"gemm_shape": {**(shape or {}), "u_max": {pcls: cap}}})[0]
        idle = max(0.0, step - sum(measured.values()))
        # The launch gap per counted kernel: the estimate multiplies it by the kernels it counts
        # (opmodel.step_time), fewer than the profile's (GPT-2: 393 counted, 896 run).
        gap = idle / max(counted_kernels, 1.0)
        # Host-bound: the device idles more per kernel run than a launch gap (HOST_BOUND_GAP_S) and
        # the step outlasts its kernels by HOST_BOUND_MARGIN; then the step is the host's time, per
        # kernel the estimator counts (opmodel.host_per_kernel).
        waits = idle / max(kernels, 1.0) > HOST_BOUND_GAP_S and step > HOST_BOUND_MARGIN * sum(measured.values())
        host = step / counted_kernels if counted_kernels and waits else None
        obs.append({"model": rec["model"], "precision": precision, "batch_size": batch, "gpu": gpu_name,
                    "arch": gpu.arch, "pcls": precision_class(precision), "step_s": step,
                    "roofline": roof, "class_kernels": class_kernels,
                    "gap_s": gap, "kernels": kernels, "measured": measured, "ops": ops, "host_s_per_kernel": host,
                    "samples_per_second": float(rec["samples_per_second"]), "source": rec.get("source", ""),
                    "seq_len": rec.get("seq_len"), "gemm_shape": shape or {}, "gemm_by_u_max": gemm_by_u_max})
    return with_kernel_s(obs, kernel_s)


# Sustained-rate ceilings tried (opmodel.gemm_utilization's u_max): 0.60 to 1.00 of the peak.
U_MAX_GRID = tuple(round(0.6 + 0.02 * i, 2) for i in range(21))


def with_u_max(obs: list[dict], u_max: dict) -> list[dict]:
    """The observations with the GEMM class's roofline at the sustained-rate ceiling ``u_max``
    (precision class -> share of the peak; a class not in it: 1) and their efficiencies retaken
    at their fixed time per kernel."""
    out = []
    for o in obs:
        cap = u_max.get(o["pcls"], 1.0)
        roof = dict(o["roofline"])
        if "gemm" in roof and cap in o.get("gemm_by_u_max", {}):
            roof["gemm"] = o["gemm_by_u_max"][cap]
        shape = {**o["gemm_shape"], "u_max": {p: c for p, c in u_max.items() if c < 1.0}}
        out.append({**o, "roofline": roof, "gemm_shape": shape})
    return with_kernel_s(out, obs[0].get("kernel_s", 0.0)) if out else out


def fit_u_max(obs: list[dict], get_gpu, grid: tuple | None = None) -> dict:
    """The sustained-rate ceiling of each precision class (``opmodel.gemm_utilization``'s u_max):
    the value on U_MAX_GRID whose fit (``fit`` at the fixed time per kernel ``fit_kernel_s``
    picks there; ``grid``: its grid) predicts that class's observed steps best (the smallest sum
    of squared log errors; ties: the larger ceiling). Only classes below 1 are returned."""
    if not obs or not any(o.get("gemm_by_u_max") for o in obs):
        return {}
    classes = sorted({o["pcls"] for o in obs})
    err: dict[tuple, float] = {}
    for cap in U_MAX_GRID:
        capped = with_u_max(obs, {p: cap for p in classes})
        doc = fit(with_kernel_s(capped, fit_kernel_s(capped, get_gpu, grid)))
        for o in capped:
            key = (o["pcls"], cap)
            err[key] = err.get(key, 0.0) + math.log(predict_step(o, doc, get_gpu) / o["step_s"]) ** 2
    best = {p: min(U_MAX_GRID, key=lambda c, p=p: (round(err[(p, c)], 12), -c)) for p in classes}
    return {p: c for p, c in best.items() if c < 1.0}


def with_kernel_s(obs: list[dict], tau: float) -> list[dict]:
    """The observations with each class's efficiency at a fixed time per kernel ``tau`` (seconds,
    ``opmodel.kernel_seconds``): (roofline + kernels x tau) / measured seconds of the class."""
    return [{**o, "kernel_s": tau, "efficiency": {c: (t + o["class_kernels"][c] * tau) / o["measured"][c]
                                                  for c, t in o["roofline"].items()}} for o in obs]


# Fixed time per kernel tried (seconds, roofline units): 0 to 30 us.
KERNEL_S_GRID = tuple(i * 1e-6 for i in (0, 1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30))


def fit_kernel_s(obs: list[dict], get_gpu=None, grid: tuple | None = None) -> float:
    """The fixed time per kernel (``opmodel.kernel_seconds``) on ``grid`` that makes each class's
    efficiency most nearly one number across the observed steps, the model's own premise: the
    smallest sum over (precision class, class) of squared deviations of log efficiency from their
    mean, every observed class of every step counting once (ties: the smaller tau). Each class's
    time is (roofline + kernels x tau) / efficiency, so a tau that is right leaves no trace of how
    a step splits its work into kernels. (``get_gpu`` is unused: kept for callers' symmetry.)"""
    best = None
    for tau in KERNEL_S_GRID if grid is None else grid:
        groups: dict[tuple, list[float]] = {}
        for o in with_kernel_s(obs, tau):
            for cls, e in o["efficiency"].items():
                groups.setdefault((o["pcls"], cls), []).append(math.log(e))
        sse = sum(sum((v - statistics.fmean(vs)) ** 2 for v in vs) for vs in groups.values())
        if best is None or sse < best[0] - 1e-12:
            best = (sse, tau)
    return best[1] if best else 0.0


def fit_tuned(obs: list[dict], get_gpu, grid: tuple | None = None) -> dict:
    """``fit`` at the sustained-rate ceilings ``fit_u_max`` picks and the fixed time per kernel
    ``fit_kernel_s`` picks there, on these observations."""
    capped = with_u_max(obs, fit_u_max(obs, get_gpu, grid))
    return fit(with_kernel_s(capped, fit_kernel_s(capped, get_gpu, grid)))


def _geomean_efficiency(obs: list[dict]) -> dict:
    groups: dict[str, list[float]] = {}
    for o in obs:
        for cls, e in o["efficiency"].items():
            for key in (f"{o['arch']}/{o['pcls']}/compiled/{cls}", f"*/{o['pcls']}/compiled/{cls}",
                        f"*/*/compiled/{cls}"):
                groups.setdefault(key, []).append(e)
    return {k: round(math.exp(statistics.fmean(math.log(v) for v in vs)), 4) for k, vs in groups.items()}


def fit(obs: list[dict]) -> dict:
    """The efficiency document (see the module docstring) from observations."""
    eff = _geomean_efficiency(obs)
    # Eager jobs run the same library kernels; their element-wise classes take the fused efficiency
    # (no eager profile was taken: an assumption, documented in docs/estimator.md). No eager profile
    # measures a fixed time per kernel either (an eager step launches 3-5 times the kernels): eager
    # jobs are priced without it (opmodel.step_time), at the efficiencies it leaves (tau = 0).
    tau = obs[0].get("kernel_s", 0.0) if obs else 0.0
    eager_from = _geomean_efficiency(with_kernel_s(obs, 0.0)) if tau else eff
    for key, value in list(eager_from.items()):
        arch, pcls, _, cls = key.split("/")
        targets = {"fused": ("norm", "elementwise", "reduction", "data_movement"),
                   "gemm": ("conv", "matmul")}.get(cls, (cls,))
        for t in targets:
            eff.setdefault(f"{arch}/{pcls}/eager/{t}", value)
    gaps: dict[str, list[float]] = {}
    for o in obs:
        if o.get("host_s_per_kernel") is not None:
            continue  # a host-bound step's idle time is the host's, not a launch gap
        for key in (f"{o['arch']}/compiled", "*/compiled"):
            gaps.setdefault(key, []).append(o["gap_s"])
    gap = {k: round(statistics.median(v), 9) for k, v in gaps.items()}
    hosts = [o["host_s_per_kernel"] for o in obs if o.get("host_s_per_kernel") is not None]
    doc = {"efficiency": eff, "launch_gap_s": gap, "models": sorted({o["model"] for o in obs}),
           "gemm_shape": obs[0]["gemm_shape"] if obs else {}, "kernel_s": obs[0].get("kernel_s", 0.0) if obs else 0.0,
           "host_s_per_kernel": {"compiled": round(statistics.median(hosts), 9)} if hosts else {},
           "n_profiles": len(obs)}
    if hosts:  # the step's own host time, on the CLI's host-bound runs (fixed: no profile row enters it)
        from launcher.catalog.gpus import get_gpu

        doc["host_small_step"] = fit_host_step(doc, get_gpu) or {}
    return doc


def graph_ops(ops: OpCost) -> float:
    """Operations of one eager training step: what torch.compile traces, lowers and compiles."""
    return float(sum(c.kernels for c in ops.classes.values()))


def fit_warmup(profiles: list[dict]) -> dict:
    """Cold-cache compile warm-up and process start-up, measured per model, and a line
    compile_s = a + b x graph operations (least squares over the measured models) for models
    never measured. compile_s = the probe's warm-up time minus its steps at the steady rate."""
    per_model: dict[str, list[float]] = {}
    startups: list[float] = []
    points: list[tuple[float, float]] = []
    for rec in profiles:
        if rec.get("cache") == "warm" or not rec.get("warmup_s") or not rec.get("samples_per_second"):
            continue
        step = rec["batch_size"] * (rec.get("seq_len") or 1) / rec["samples_per_second"]
        compile_s = max(0.0, rec["warmup_s"] - WARMUP_STEPS * step)
        per_model.setdefault(rec["model"], []).append(compile_s)
        if rec.get("startup_s"):
            startups.append(rec["startup_s"])
        # A language model compiles one block's graph for all its blocks: not a point of the line.
        ops = None if rec.get("seq_len") else _ops_for(rec)
        if ops is not None:
            points.append((graph_ops(ops), compile_s))
    line = None
    if len(points) >= 2:
        a, b = clifit.least_squares_line(points)
        line = {"a": round(a, 3), "b": round(b, 6), "n": len(points)}
    return {"compile_s": {m: round(statistics.median(v), 2) for m, v in per_model.items()},
            "line": line, "startup_s": round(statistics.median(startups), 2) if startups else None}


HOST_BOUND_SHARE = 0.5  # a run is clearly host-bound when its predicted device time is under half its step


def fit_host_step(doc: dict, get_gpu) -> dict | None:
    """The host time of a step of few kernels (``opmodel.host_small_step``), compiled: a + kernels x c,
    least squares over the cold, single-GPU image-model runs of bench/results/h200_local_total/*.json
    (the CLI's own training loop, what users get; files named heldout_*.json stay out: they check
    it) whose predicted device time is under ``HOST_BOUND_SHARE`` of the measured step. None with
    fewer than two such runs of different kernel counts."""
    from launcher.estimate.opcosts import builtin_ops
    from launcher.estimate.opmodel import host_per_kernel

    per_kernel = host_per_kernel(doc, "compiled")
    points = []
    for path in sorted((results_dir() / "h200_local_total").glob("*.json")):
        if path.name.startswith("heldout") or not per_kernel:
            continue
        for r in read_json(path, {}).get("results", []):
            actual = (r.get("report") or {}).get("actual") or {}
            if r.get("rc") != 0 or r.get("cache") != "cold" or r.get("seq_len") or ":" in r["model"] \
                    or not actual.get("samples_per_second"):
                continue
            ops = builtin_ops(r["model"], r["image_size"], r["num_classes"], r.get("in_channels", 3))
            if ops is None:
                continue
            st = step_time(ops, get_gpu("H200"), r["precision"], r["batch_size"], True,
                           {**doc, "host_small_step": {}})
            step = r["batch_size"] / actual["samples_per_second"]
            if sum(st.per_class.values()) + st.launch_s < HOST_BOUND_SHARE * step:
                points.append((st.host_s / per_kernel, step))
    if len({k for k, _ in points}) < 2:
        return None
    mk, ms = statistics.fmean(k for k, _ in points), statistics.fmean(t for _, t in points)
    c = sum((k - mk) * (t - ms) for k, t in points) / sum((k - mk) ** 2 for k, _ in points)
    return {"compiled": {"a_s": round(ms - c * mk, 6), "s_per_kernel": round(c, 9), "n": len(points)}}


def cross_gpu_rows(doc: dict, get_gpu) -> list[dict]:
    """Published single-GPU figures of one program on several GPUs (calibration_public.json), used
    for ratios only: for each pair of GPUs in one source, model and precision, the predicted
    speed ratio (per-operation model, eager: those programs do not use torch.compile) against the
    published one. Absolute levels of other frameworks never enter the fit."""
    from itertools import combinations

    from launcher.estimate.calibration import load_points
    from launcher.estimate.opcosts import builtin_ops

    groups: dict[tuple, list] = {}
    for p in load_points():
        if p.count == 1 and not p.source.startswith("h100_payload"):
            groups.setdefault((p.source, p.model, p.precision), []).append(p)
    rows = []
    for (source, model, precision), pts in sorted(groups.items()):
        ops = builtin_ops(model, 224, 1000, 3)
        if ops is None:
            continue
        pred = {}
        for p in pts:
            try:
                pred[p.gpu] = p.batch_size / step_time(ops, get_gpu(p.gpu), precision, p.batch_size, False, doc).seconds
            except Exception:
                continue
        for a, b in combinations([p for p in pts if p.gpu in pred], 2):
            ga, gb = get_gpu(a.gpu), get_gpu(b.gpu)
            if (ga.peak_tflops, ga.bandwidth_gbs) == (gb.peak_tflops, gb.bandwidth_gbs):
                continue  # the same chip (V100 16/32 GB): its ratio says nothing about the model
            measured = a.samples_per_second / b.samples_per_second
            predicted = pred[a.gpu] / pred[b.gpu]
            rows.append({"source": source, "model": model, "precision": precision, "gpus": f"{a.gpu}/{b.gpu}",
                         "measured_ratio": round(measured, 3), "predicted_ratio": round(predicted, 3),
                         "error": round(predicted / measured - 1, 4)})
    return rows


def own_gpu_rows(doc: dict, get_gpu, profiled: set) -> list[dict]:
    """Our payload measured earlier on another GPU (bench/results/h100_payload.json, default
    configuration rows), predicted by the fit of the profiles: never fitted, a held-out check."""
    from launcher.estimate.calibration import load_points
    from launcher.estimate.opcosts import builtin_ops

    rows = []
    for p in load_points():
        if not p.source.startswith("h100_payload") or p.role != "fit" or p.count != 1 or p.gpu in profiled:
            continue
        ops = builtin_ops(p.model, p.image_size, p.num_classes, p.in_channels)
        if ops is None:
            continue
        pred = p.batch_size / step_time(ops, get_gpu(p.gpu), p.precision, p.batch_size, True, doc).seconds
        rows.append({"gpu": p.gpu, "model": p.model, "precision": p.precision, "batch_size": p.batch_size,
                     "measured": round(p.samples_per_second, 1), "predicted": round(pred, 1),
                     "error": round(pred / p.samples_per_second - 1, 4)})
    return rows


WARMUP_STEPS = 5  # bench/op_profile.py runs the probe with --warmup-steps 5
# Back-to-back kernels of one stream start ~1-2 us apart on Hopper (the fitted gaps of GPU-bound
# steps: 0.3-1.5 us); a device idle for more than this per kernel is waiting for the host.
HOST_BOUND_GAP_S = 3e-6
HOST_BOUND_MARGIN = 1.1


def predict_step(o: dict, doc: dict, get_gpu) -> float:
    return step_time(o["ops"], get_gpu(o["gpu"]), o["precision"], o["batch_size"], True, doc).seconds


# A row's calls may not outlast the GEMM kernels they launched (a 5% allowance for kernels the
# classifier puts elsewhere): the profiler attributed more device time to the lm-1b and lm-3b rows'
# forward matrix products than all their GEMM kernels took (425.8 ms of calls, 340.7 ms of kernels).
CALLS_OVER_KERNELS_MAX = 1.05


def gemm_calls(profiles: list[dict]) -> list[dict]:
    """Every profiled convolution/matrix-product call with its shapes (``gemmfit.shaped_calls``),
    from the rows whose calls sum to at most CALLS_OVER_KERNELS_MAX x their GEMM kernels' time."""
    from launcher.estimate.calibration import gpu_from_device_name

    out = []
    for rec in profiles:
        gpu = gpu_from_device_name(rec.get("device_name") or "") or rec.get("gpu_name")
        if gpu and rec.get("shaped"):
            calls = shaped_calls(rec, gpu)
            kernels = measured_classes(rec)[0].get("gemm", 0.0)
            if sum(c["seconds"] * c["per_step"] for c in calls) <= CALLS_OVER_KERNELS_MAX * kernels:
                out += calls
    return out


ALIGN_FILE = "gemm_align_h200.json"  # bench/gemm_align.py: misaligned linear layers against padded ones
USE_ALIGNMENT = True  # False: no misalignment slowdown (the form before it; opfit --forms)
MICROBENCH_FILE = "gemm_calls_h200.json"  # bench/gemm_calls.py: single calls over a grid of shapes
ATTENTION_FILE = "attn_shapes_h200.json"  # bench/attn_shapes.py: attention alone by head dim, length, causality
USE_ATTENTION_SHAPE = True  # False: no head-dimension or key-loop term (the form before it; opfit --forms)


def microbench_calls(directory: Path | None = None) -> list[dict]:
    """The calls of the shape microbenchmark (bench/results/gemm_calls_h200.json), model ``gemm_calls``."""
    from launcher.estimate.calibration import gpu_from_device_name

    doc = read_json((directory or results_dir()) / MICROBENCH_FILE, {})
    out = []
    for rec in doc.get("results", []):
        gpu = gpu_from_device_name(rec.get("device_name") or "")
        if gpu:
            out += shaped_calls(rec, gpu)
    return out


@lru_cache(maxsize=1)
def _attention_shape() -> dict:
    """``gemmfit.fit_attention_shape`` of bench/results/ATTENTION_FILE (fitted once per process)."""
    return fit_attention_shape(read_json(results_dir() / ATTENTION_FILE, {}))


def shape_params(calls: list[dict], get_gpu, without: str | None = None, **grids) -> dict:
    """The GEMM shape parameters (k0, winograd_fp32) fitted on the calls of every model but
    ``without`` (``grids``: as ``gemmfit.fit_gemm_shape``'s), with the misalignment slowdown and
    the attention shape terms, both measured without a model (``gemmfit.fit_unaligned``,
    ``gemmfit.fit_attention_shape``)."""
    got = fit_gemm_shape([c for c in calls if c["model"] != without], get_gpu, **grids)
    out = {"k0": got["k0"], "winograd_fp32": got["winograd_fp32"],
           **({"conv_1x1": got["conv_1x1"]} if got.get("conv_1x1") else {})}
    unaligned = fit_unaligned(read_json(results_dir() / ALIGN_FILE, {})) if USE_ALIGNMENT else {}
    attention = _attention_shape() if USE_ATTENTION_SHAPE else {}
    return {**out, **({"unaligned": unaligned} if unaligned else {}), **({"attention": attention} if attention else {})}


# Kernels of cuDNN's fp32 FFT and Winograd convolution algorithms besides the product itself: the
# tile transforms (fft2d_r2c/c2r, the filter flip), the complex products between them, the
# Winograd data/delta/output transforms.
FFT_KERNEL_KEYS = ("fft", "flip_filter", "cf32", "cgemm", "winograd")
# How their fixed time per kernel is picked: "free" (its own, on FFT_KERNEL_S_GRID, by tau's criterion:
# the class efficiencies most nearly one number, ``fit_kernel_s``); "shared" (tau itself); "step" (the
# training rows' squared log step error); "off" (no such term, the form before it).
FFT_MODE = "free"
FFT_KERNEL_S_GRID = tuple(i * 1e-6 for i in (0, 1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30))


def fft_kernels(rec: dict) -> float:
    """FFT/Winograd helper kernels per step of a profile (FFT_KERNEL_KEYS)."""
    steps = max(1, int(rec.get("profiled_steps") or 1))
    return sum(r.get("count", 0) for r in rec.get("rows", []) if r.get("device_type", "CUDA") == "CUDA"
               and r.get("device_us") and not r["name"].startswith(ANNOTATIONS)
               and kernel_class(r["name"]) in ("conv", "matmul")
               and any(k in r["name"].lower() for k in FFT_KERNEL_KEYS)) / steps


def fft_kernels_per_tile(profiles: list[dict], without: str | None = None) -> float:
    """Helper kernels per 32 x 32 tile of a 3x3 stride-1 convolution (``opmodel.fft_tiles``), pooled
    over the fp32 profiles (every model but ``without``) that have such convolutions."""
    from launcher.estimate.opmodel import fft_tiles

    kernels = tiles = 0.0
    for rec in profiles:
        if rec["model"] == without or rec["precision"] != "fp32" or rec.get("seq_len"):
            continue
        ops = _ops_for(rec)
        t = fft_tiles(ops) if ops is not None else 0.0
        if t > 0:
            kernels, tiles = kernels + fft_kernels(rec), tiles + t
    return kernels / tiles if tiles else 0.0


def _spread(obs: list[dict]) -> float:
    groups: dict[tuple, list[float]] = {}
    for o in obs:
        for cls, e in o["efficiency"].items():
            groups.setdefault((o["pcls"], cls), []).append(math.log(e))
    return sum(sum((v - statistics.fmean(vs)) ** 2 for v in vs) for vs in groups.values())


def fft_shape(profiles: list[dict], get_gpu, shape: dict, without: str | None = None, mode: str | None = None) -> dict:
    """``shape`` with the FFT/Winograd helper-kernel term (``opmodel.gemm_roofline``'s fft): kernels per
    tile counted on the profiles' kernel rows, their fixed time picked on FFT_KERNEL_S_GRID by
    FFT_MODE, all without the model ``without``."""
    mode = FFT_MODE if mode is None else mode
    if mode == "off":
        return shape
    n_x = fft_kernels_per_tile(profiles, without)
    train = [p for p in profiles if p["model"] != without]
    best = None
    for tau_x in FFT_KERNEL_S_GRID:
        sh = {**shape, "fft": {"kernels_per_tile": n_x, "kernel_s": tau_x}}
        obs = observations(train, get_gpu, sh)
        capped = with_u_max(obs, fit_u_max(obs, get_gpu))
        if mode == "shared":
            if tau_x not in KERNEL_S_GRID:
                continue
            err = _spread(with_kernel_s(capped, tau_x))
        elif mode == "free":
            err = _spread(with_kernel_s(capped, fit_kernel_s(capped, get_gpu)))
        else:  # step: the training rows' own squared log step error
            doc = fit(with_kernel_s(capped, fit_kernel_s(capped, get_gpu)))
            err = sum(math.log(predict_step(o, doc, get_gpu) / o["step_s"]) ** 2 for o in capped)
        if best is None or err < best[0] - 1e-12:
            best = (err, tau_x)
    return {**shape, "fft": {"kernels_per_tile": round(n_x, 4), "kernel_s": round(best[1], 9)}}


def held_out_observations(profiles: list[dict], get_gpu, calls: list[dict], **grids) -> dict:
    """model -> observations whose GEMM shape parameters were fitted without that model's calls."""
    models = sorted({p["model"] for p in profiles})
    return {m: observations(profiles, get_gpu, fft_shape(profiles, get_gpu, shape_params(calls, get_gpu, m, **grids), m))
            for m in models}


def error_table(obs: list[dict], get_gpu, held_obs: dict | None = None) -> list[dict]:
    """Predicted vs measured samples/s: fitted on all, and leave-one-model-out (with ``held_obs``
    the GEMM shape parameters are left out too: ``held_out_observations``)."""
    full = fit_tuned(obs, get_gpu)
    rows, held_fits = [], {}
    for o in obs:
        if o["model"] not in held_fits:
            pool = (held_obs or {}).get(o["model"], obs)
            held_fits[o["model"]] = fit_tuned([p for p in pool if p["model"] != o["model"]], get_gpu)
        held = held_fits[o["model"]]
        pf, ph = predict_step(o, full, get_gpu), predict_step(o, held, get_gpu)
        measured = o["samples_per_second"]
        rows.append({"gpu": o["gpu"], "model": o["model"], "precision": o["precision"],
                     "batch_size": o["batch_size"] // (o.get("seq_len") or 1), "seq_len": o.get("seq_len"),
                     "measured": round(measured, 1),
                     "predicted_fit": round(o["batch_size"] / pf, 1),
                     "predicted_lomo": round(o["batch_size"] / ph, 1),
                     "error_fit": round(o["batch_size"] / pf / measured - 1, 4),
                     "error_lomo": round(o["batch_size"] / ph / measured - 1, 4),
                     "measured_class_ms": {k: round(v * 1e3, 3) for k, v in o["measured"].items()},
                     "efficiency": {k: round(v, 3) for k, v in with_kernel_s(
                         with_u_max([o], full["gemm_shape"].get("u_max") or {}), full["kernel_s"])[0]["efficiency"].items()},
                     "step_ms": round(o["step_s"] * 1e3, 3)})
    return rows


def summary(rows: list[dict]) -> dict:
    def stats(key: str) -> dict:
        errs = [abs(r[key]) for r in rows]
        return {"median": round(statistics.median(errs), 4) if errs else None,
                "max": round(max(errs), 4) if errs else None, "n": len(errs)}

    return {"fit": stats("error_fit"), "leave_one_model_out": stats("error_lomo")}


def markdown(rows: list[dict]) -> str:
    out = ["| GPU | model | precision | batch | measured samples/s | predicted (fit) | error | "
           "predicted (model left out) | error |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        model = f"{r['model']} (tokens/s, seq {r['seq_len']})" if r.get("seq_len") else r["model"]
        out.append(f"| {r['gpu']} | {model} | {r['precision']} | {r['batch_size']} | {r['measured']:,.0f} | "
                   f"{r['predicted_fit']:,.0f} | {r['error_fit']:+.1%} | {r['predicted_lomo']:,.0f} | "
                   f"{r['error_lomo']:+.1%} |")
    s = summary(rows)
    if rows:
        out += ["", f"Absolute error over {s['fit']['n']} profiles: fitted median {s['fit']['median']:.1%} "
                    f"(max {s['fit']['max']:.1%}); leave-one-model-out median "
                    f"{s['leave_one_model_out']['median']:.1%} (max {s['leave_one_model_out']['max']:.1%})."]
    return "\n".join(out)


def own_markdown(rows: list[dict]) -> str:
    out = ["| GPU | model | precision | batch | measured samples/s | predicted | error |", "|---|---|---|---|---|---|---|"]
    out += [f"| {r['gpu']} | {r['model']} | {r['precision']} | {r['batch_size']} | {r['measured']:,.0f} | "
            f"{r['predicted']:,.0f} | {r['error']:+.1%} |" for r in rows]
    if rows:
        errs = [abs(r["error"]) for r in rows]
        out += ["", f"Our payload on another GPU, never fitted: median {statistics.median(errs):.1%}, "
                    f"max {max(errs):.1%} over {len(rows)} runs."]
    return "\n".join(out)


def cross_markdown(rows: list[dict]) -> str:
    out = ["| source | model | precision | GPUs | published ratio | predicted ratio | error |",
           "|---|---|---|---|---|---|---|"]
    out += [f"| {r['source']} | {r['model']} | {r['precision']} | {r['gpus']} | {r['measured_ratio']:.2f} | "
            f"{r['predicted_ratio']:.2f} | {r['error']:+.1%} |" for r in rows]
    if rows:
        errs = [abs(r["error"]) for r in rows]
        out += ["", f"Cross-GPU ratio error over {len(rows)} pairs: median {statistics.median(errs):.1%}, "
                    f"max {max(errs):.1%}."]
    return "\n".join(out)


def method_choice(rows: list[dict], get_gpu) -> dict:
    """Per model family that the MFU fit (section 2 of docs/estimator.md) has runs of: the median
    |error| on the profiled rows of the per-operation model (leave-one-model-out) and of the MFU
    fit; ``mfu_families`` lists those where the MFU fit's is the smaller (the estimate prices them
    with it: launcher.estimate.throughput.predict)."""
    from launcher.estimate.calibration import model_family
    from launcher.estimate.flops import model_cost
    from launcher.estimate.throughput import predict

    per: dict[str, dict[str, list[float]]] = {}
    for r in rows:
        fam = model_family(r["model"])
        if fam in ("other", "lm") or ":" in r["model"]:
            continue
        cost = model_cost(r["model"], 224, 1000, 3, allow_torch=False)
        p = predict(get_gpu(r["gpu"]), 1, r["precision"], cost, r["batch_size"], r["model"], op_doc={})
        d = per.setdefault(fam, {"per_operation": [], "mfu": []})
        d["per_operation"].append(abs(r["error_lomo"]))
        d["mfu"].append(abs(p.samples_per_second / r["measured"] - 1))
    out = {fam: {k: round(statistics.median(v), 4) for k, v in d.items()} | {"n": len(d["mfu"])}
           for fam, d in sorted(per.items())}
    return {"per_family": out, "mfu_families": sorted(f for f, d in out.items() if d["mfu"] < d["per_operation"])}


def lm_runs(profiles: list[dict]) -> list[dict]:
    """Every measured single-GPU language-model run: bench/results/h200_lm.json (the LM MFU fit's
    own runs), h200_lm_check.json, h200_gpt2_vocab_batch.json (GPT-2 with the vocabulary and the
    batch changed one at a time), the language-model rows of the per-kernel profiles and the
    language-model runs of h200_local_total/*.json (steady tokens/s of `gpujob run --provider
    local`). ``mfu_fitted``: the LM MFU fit (section 10 of docs/estimator.md) was fitted on it."""
    from launcher.estimate.calibration import gpu_from_device_name

    runs = []
    for name in ("h200_lm.json", "h200_lm_check.json", "h200_gpt2_vocab_batch.json"):
        for r in read_json(results_dir() / name, {}).get("results", []):
            if r.get("tokens_per_second") and r.get("gpu_count", 1) == 1:
                runs.append({**r, "source": name, "mfu_fitted": name == "h200_lm.json"})
    fitted = {(r["model"], r["seq_len"], r["batch_size"], r.get("precision", "bf16")) for r in runs if r["mfu_fitted"]}
    for r in profiles:
        if r.get("seq_len"):
            key = (r["model"], r["seq_len"], r["batch_size"], r["precision"])
            runs.append({**r, "tokens_per_second": r["samples_per_second"], "source": r.get("source", ""),
                         "mfu_fitted": key in fitted, "profiled": True})
    for path in sorted((results_dir() / "h200_local_total").glob("*.json")):
        for r in read_json(path, {}).get("results", []):
            end = r.get("end") or {}
            if r.get("seq_len") and r.get("rc") == 0 and end.get("tokens_per_second") \
                    and gpu_from_device_name((r.get("start") or {}).get("device_name") or "") == "H200":
                runs.append({**r, "tokens_per_second": end["tokens_per_second"], "mfu_fitted": False,
                             "source": f"h200_local_total/{path.name}"})
    return runs


def _lm_predict(r: dict, method: str, doc: dict, get_gpu) -> float:
    """tokens/s the estimator predicts for one LM run (one H200) by one method."""
    from launcher.estimate.flops import lm_cost
    from launcher.estimate.table import predict_job
    from launcher.spec import parse_spec

    args = r.get("model_args") or {}
    text = (f"name: lm-check\nworkload: {{model: {r['model']}, seq_len: {r['seq_len']}, batch_size: {r['batch_size']}, "
            f"precision: {r.get('precision', 'bf16')}, dataset: synthetic, samples_per_epoch: 1000000"
            + (f", model_args: {json.dumps(args)}" if args else "")
            + (f", vocab_size: {r['vocab_size']}" if r.get("vocab_size") else "")
            + (", activation_checkpointing: true" if r.get("activation_checkpointing") else "") + "}\n")
    w = parse_spec(text, check_catalog=False).workload
    return predict_job(w, lm_cost(w), get_gpu("H200"), 1, op_doc=doc, method=method).samples_per_second


def lm_rows(profiles: list[dict], obs: list[dict], get_gpu, held_obs: dict | None = None) -> list[dict]:
    """Each measured LM run (``lm_runs``) predicted by the LM MFU fit and by the per-operation
    model, the latter fitted without that model's profile rows (leave-one-model-out: the rows of
    a language model never profiled are predicted by the full fit, which saw none of them)."""
    from launcher.payloads import lm_shapes

    out = []
    full, held = fit_tuned(obs, get_gpu), {}
    for r in lm_runs(profiles):
        if r["model"] not in held:
            pool = (held_obs or {}).get(r["model"], obs)  # GEMM shape parameters without its calls too
            held[r["model"]] = fit_tuned([o for o in pool if o["model"] != r["model"]], get_gpu)
        measured = float(r["tokens_per_second"])
        mfu = _lm_predict(r, "mfu", full, get_gpu)
        per_op = _lm_predict(r, "per-operation", held[r["model"]], get_gpu)
        out.append({"model": r["model"], "seq_len": r["seq_len"], "batch_size": r["batch_size"],
                    "vocab_size": lm_shapes.resolve(r["model"], r.get("model_args") or {}, r.get("vocab_size")).vocab_size,
                    "precision": r.get("precision", "bf16"), "source": r["source"],
                    "activation_checkpointing": bool(r.get("activation_checkpointing")),
                    "model_args": r.get("model_args") or {}, "measured": round(measured, 1),
                    "mfu": round(mfu, 1), "error_mfu": round(mfu / measured - 1, 4), "mfu_fitted": r["mfu_fitted"],
                    "per_operation": round(per_op, 1), "error_per_operation": round(per_op / measured - 1, 4)})
    return out


def lm_choice(rows: list[dict]) -> dict:
    """The method that prices language models: the one with the smaller median |error| on the LM
    runs neither saw (every run but the MFU fit's own; the per-operation errors are
    leave-one-model-out), with both medians and maxima."""
    held = [r for r in rows if not r["mfu_fitted"]]
    stats = {}
    for m in ("per_operation", "mfu"):
        errs = [abs(r[f"error_{m}"]) for r in held]
        stats[m] = {"median": round(statistics.median(errs), 4), "max": round(max(errs), 4)} if errs else None
    if not held:
        return {"method": "mfu", "n": 0}
    method = "per-operation" if stats["per_operation"]["median"] < stats["mfu"]["median"] else "mfu"
    return {"method": method, "n": len(held), **stats}


def lm_markdown(rows: list[dict], choice: dict) -> str:
    out = ["| model | seq | batch | vocabulary | precision | source | measured tokens/s | LM MFU fit | error | "
           "per-operation (model left out) | error |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        model = r["model"] + (f" {json.dumps(r['model_args'])}" if r["model_args"] else "") \
            + (" (checkpointing)" if r["activation_checkpointing"] else "")
        out.append(f"| {model} | {r['seq_len']} | {r['batch_size']} | {r['vocab_size']} | {r['precision']} | {r['source']}"
                   f"{' (MFU fitted)' if r['mfu_fitted'] else ''} | {r['measured']:,.0f} | {r['mfu']:,.0f} | "
                   f"{r['error_mfu']:+.1%} | {r['per_operation']:,.0f} | {r['error_per_operation']:+.1%} |")
    if choice.get("n"):
        po, mf = choice["per_operation"], choice["mfu"]
        out += ["", f"On the {choice['n']} LM runs the MFU fit never saw: per-operation median {po['median']:.1%} "
                    f"(max {po['max']:.1%}), LM MFU fit median {mf['median']:.1%} (max {mf['max']:.1%}); "
                    f"language models are priced {choice['method']}."]
    return "\n".join(out)


def load_lm_profiles() -> list[dict]:
    """The language-model rows of the profiles."""
    return [r for r in load_profiles() if r.get("seq_len")]


def evaluate(profiles: list[dict], get_gpu, calls: list[dict], **grids) -> tuple[list[dict], list[dict], dict]:
    """(observations, error_table rows, held-out observations per model): the GEMM shape
    parameters fitted on every call, and for each model left out, on the other models' calls only
    (``grids``: as ``gemmfit.fit_gemm_shape``'s)."""
    obs = observations(profiles, get_gpu, fft_shape(profiles, get_gpu, shape_params(calls, get_gpu, **grids)))
    held = held_out_observations(profiles, get_gpu, calls, **grids)
    return obs, error_table(obs, get_gpu, held), held


FORMS = (  # (name, opmodel.USE_PRODUCTS, grids for gemmfit.fit_gemm_shape): python -m ... --forms
    ("u(C_out) x u(C_in k k), 128-wide tiles on the two batch-free dimensions (the earlier form)", False,
     {"k0_grid": (0.0,), "w_grid": (1.0,)}),
    ("128 x 128 output tiles on (M, N) of each matrix product", True, {"k0_grid": (0.0,), "w_grid": (1.0,)}),
    ("+ per-tile fixed cost k0 (fitted)", True, {"w_grid": (1.0,)}),
    ("+ fp32 3x3 stride-1 Winograd gain w (fitted), no k0", True, {"k0_grid": (0.0,)}),
    ("+ k0 and w (fitted), no fixed time per kernel (tau = 0)", True, {"tau_grid": (0.0,)}),
    ("+ k0 and w (fitted) + fixed time per kernel tau (fitted): the form kept", True, {}),
    ("k0 and w fitted on the shape microbenchmark alone (every model held out)", True, {"microbench": True}),
)


def forms(profiles: list[dict], get_gpu) -> list[dict]:
    """Every form of ``FORMS``: per-call leave-one-model-out error (gemmfit.call_errors), the
    whole-step leave-one-model-out error, our H100 runs (never fitted) and the cross-GPU ratios."""
    from launcher.estimate import opmodel

    calls = gemm_calls(profiles)
    bench = microbench_calls()
    global KERNEL_S_GRID
    saved, saved_tau = opmodel.USE_PRODUCTS, KERNEL_S_GRID
    out = []
    try:
        for name, products, grids in FORMS:
            opmodel.USE_PRODUCTS = products
            grids = dict(grids)
            KERNEL_S_GRID = grids.pop("tau_grid", saved_tau)
            if grids.get("microbench"):
                if not bench:
                    continue
                shape = shape_params(bench, get_gpu)
                obs = observations(profiles, get_gpu, shape)
                rows = error_table(obs, get_gpu)
                per_call = call_errors(calls, get_gpu, fitted=fit_gemm_shape(bench, get_gpu))
            else:
                obs, rows, _ = evaluate(profiles, get_gpu, calls, **grids)
                per_call = call_errors(calls, get_gpu, **grids) if products else None
            s = summary(rows)["leave_one_model_out"]
            doc = fit_tuned(obs, get_gpu)
            own = [abs(r["error"]) for r in own_gpu_rows(doc, get_gpu, {o["gpu"] for o in obs})]
            cross = [abs(r["error"]) for r in cross_gpu_rows(doc, get_gpu)]
            out.append({"form": name, "k0": doc["gemm_shape"].get("k0", 0.0), "kernel_s": doc.get("kernel_s", 0.0),
                        "winograd_fp32": doc["gemm_shape"].get("winograd_fp32", 1.0),
                        "call_median": per_call and per_call["median_call"],
                        "call_row_median": per_call and per_call["median_row"],
                        "call_row_max": per_call and per_call["max_row"],
                        "lomo_median": s["median"], "lomo_max": s["max"],
                        "h100_median": round(statistics.median(own), 4) if own else None,
                        "cross_gpu_median": round(statistics.median(cross), 4) if cross else None})
    finally:
        opmodel.USE_PRODUCTS, KERNEL_S_GRID = saved, saved_tau
    return out


def forms_markdown(rows: list[dict]) -> str:
    pct = lambda v: "-" if v is None else f"{v:.1%}"  # noqa: E731
    calls = lambda v: "-" if v is None else " / ".join(pct(v.get(p)) for p in ("half", "fp32"))  # noqa: E731
    out = ["| form | k0 | w | tau (us) | per call, half / fp32 (time-weighted median) | GEMM time per row, median / max | "
           "whole step, median / max | H100, never fitted | cross-GPU ratios |", "|---|---|---|---|---|---|---|---|---|"]
    out += [f"| {r['form']} | {r['k0']:g} | {r['winograd_fp32']:g} | {r['kernel_s'] * 1e6:.0f} | {calls(r['call_median'])} | "
            f"{pct(r['call_row_median'])} / {pct(r['call_row_max'])} | {pct(r['lomo_median'])} / {pct(r['lomo_max'])} | "
            f"{pct(r['h100_median'])} | {pct(r['cross_gpu_median'])} |" for r in rows]
    return "\n".join(out)


def tile_grid(profiles: list[dict], get_gpu, widths=(64, 128, 256)) -> list:
    """Leave-one-model-out and fitted error for each output tile (tile_m x tile_n, opmodel.TILE_M/N),
    the shape parameters refitted per tile."""
    from launcher.estimate import opmodel

    saved = opmodel.TILE_M, opmodel.TILE_N
    calls = gemm_calls(profiles)
    out = []
    try:
        for m in widths:
            for n in widths:
                opmodel.TILE_M, opmodel.TILE_N = m, n
                s = summary(evaluate(profiles, get_gpu, calls)[1])
                out.append({"tile_m": m, "tile_n": n, "fit_median": s["fit"]["median"],
                            "lomo_median": s["leave_one_model_out"]["median"],
                            "lomo_max": s["leave_one_model_out"]["max"]})
    finally:
        opmodel.TILE_M, opmodel.TILE_N = saved
    return out


def main(argv: list[str] | None = None) -> int:
    from launcher.catalog.gpus import get_gpu

    argv = sys.argv[1:] if argv is None else argv
    profiles = load_profiles()
    if "--tile-grid" in argv:  # how the held-out error depends on the output tile (opmodel.TILE_M/N)
        sys.stdout.write(json.dumps(tile_grid(profiles, get_gpu), indent=1) + "\n")
        return 0
    if "--forms" in argv:  # the GEMM forms tried, each held out by model (docs/estimator.md section 12)
        sys.stdout.write(forms_markdown(forms(profiles, get_gpu)) + "\n")
        return 0
    calls = gemm_calls(profiles)
    obs, rows, held_obs = evaluate(profiles, get_gpu, calls)
    doc = fit_tuned(obs, get_gpu)
    per_call = call_errors(calls, get_gpu)
    doc["gemm_call_error"] = {k: per_call[k] for k in ("median_call", "median_row", "max_row", "n_calls")}
    doc["warmup"] = fit_warmup(profiles)
    cli = clifit.fit(clifit.fit_runs(), doc["warmup"]["compile_s"])
    if cli:
        # the bytecode cost first: held-out runs made as a user's machine makes them are checked
        # against the user figures, which subtract it
        bytecode = clifit.bytecode_cost(clifit.read_json(clifit.results_dir() / clifit.BYTECODE_FILE, {}))
        if bytecode:
            cli["bytecode"] = bytecode
        held = clifit.host_error(cli, clifit.fit_runs(clifit.HELDOUT_FILES), doc["warmup"]["compile_s"])
        doc["warmup"]["cli"] = {**cli, "host_error": held} if held else cli
    cross = cross_gpu_rows(doc, get_gpu)
    from launcher.estimate import calibrate as mfu

    doc["mfu_error"] = mfu.summary(mfu.error_table())["held_out"]
    doc["method_choice"] = method_choice(rows, get_gpu)
    lm = lm_rows(load_lm_profiles(), obs, get_gpu, held_obs)
    if lm:
        choice = lm_choice(lm)
        doc["method_choice"]["lm"] = choice
        key = "per_operation" if choice["method"] == "per-operation" else "mfu"
        if choice.get(key):  # the band of a language model: the chosen method's held-out error
            doc["lm_error"] = {**choice[key], "n": choice["n"], "method": choice["method"]}
    own = own_gpu_rows(doc, get_gpu, {o["gpu"] for o in obs})
    if own:
        doc["own_other_gpu"] = {"median": round(statistics.median(abs(r["error"]) for r in own), 4),
                                "max": round(max(abs(r["error"]) for r in own), 4), "n": len(own)}
    if cross:
        doc["cross_gpu"] = {"median": round(statistics.median(abs(r["error"]) for r in cross), 4),
                            "max": round(max(abs(r["error"]) for r in cross), 4), "n": len(cross),
                            "gpus": sorted({g for r in cross for g in r["gpus"].split("/")})}
    if "--write" in argv and obs:
        doc["generated_by"] = "python -m launcher.estimate.opfit --write"
        doc["error"] = summary(rows)
        (results_dir() / EFFICIENCY_FILE).write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n",
                                                     encoding="utf-8")
    if "--json" in argv:
        sys.stdout.write(json.dumps({"rows": rows, "summary": summary(rows), "fit": doc, "cross_gpu": cross,
                                     "own_other_gpu": own, "lm": lm, "gemm_calls": per_call}, indent=1) + "\n")
    else:
        sys.stdout.write(markdown(rows) + "\n\n" + own_markdown(own) + "\n\n" + cross_markdown(cross) + "\n\n"
                         + lm_markdown(lm, doc["method_choice"].get("lm", {})) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
