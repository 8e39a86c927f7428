"""Fit the GEMM shape parameters of launcher/estimate/opmodel.py on per-call GPU profiles.

The per-kernel profiles of ``bench/op_profile.py`` keep, per input shapes, every convolution and
matrix-product call of three training steps with the device time of the kernels it launched
(``shaped``: torch.profiler's ``key_averages(group_by_input_shape=True)``). Each call becomes
the matrix products its kernels run (``shaped_calls``, the same (M, N, K) as
``opcount.gemm_shapes``), and its time is predicted as

    t = max(sum_s 2 M_s N_s K_s / (peak x tile_fill(M_s, N_s) x k_fill(K_s, k0) x w), bytes / bandwidth) / e

(``opmodel``: 128 x 128 output tiles, a fixed per-tile cost of k0 reduction steps, w =
``winograd_fp32`` for a 3x3 stride-1 convolution at fp32, 1 otherwise; e one efficiency per
precision class). ``fit_gemm_shape`` picks k0 and w on a grid, each e in closed form (the
time-weighted mean log ratio), minimising the time-weighted squared log error over the calls.
An fp32 1x1 convolution's compute rate is also divided by a fitted factor g (``conv_1x1``), in
128 x 32 tiles (``opmodel.CUDA_TILE``); k0 is fitted first as without them (``SEQUENTIAL_K0``).
Only k0, w and g go into bench/results/op_efficiency.json: the step-level efficiency of the GEMM
class is fitted on whole steps (``opfit.fit``). ``call_errors`` reports the per-call error with
each model's calls predicted by a fit that never saw that model, or by one given fit (the shape
microbenchmark's, ``bench/gemm_calls.py``, whose rows have the same form: every model held out).
"""

from __future__ import annotations

import math
import statistics

from launcher.estimate.opmodel import k_fill, precision_class, tile_fill

K0_GRID = (0.0, 16.0, 32.0, 48.0, 64.0, 96.0, 128.0, 192.0, 256.0, 384.0, 512.0)
W_GRID = tuple(round(1.0 + 0.05 * i, 2) for i in range(41))  # 1.00 .. 3.00
G_GRID = tuple(round(0.3 + 0.05 * i, 2) for i in range(25))  # 0.30 .. 1.50: an fp32 1x1 convolution's rate factor
G_CLASSES = ("fp32",)  # precision classes that get their own 1x1 factor (others: 1)
STEM_CHANNELS = 16  # a convolution reading <= this many channels is a stem: its input needs no gradient


def _conv_products(name: str, shapes: list, out_pixels: dict) -> tuple[list, bool, float, bool] | None:
    """(products, winograd, elements moved, 1x1 kernel) of one profiled convolution call, or None (unknown
    output size, grouped or transposed: no plain GEMM). Elements: the forward reads the input and
    the weight and writes the output; the backward reads the output gradient, the input and the
    weight and writes both gradients (an implicit GEMM never stores its unfolded input)."""
    if name == "aten::convolution":
        x, w = shapes[0], shapes[1]
        go = out_pixels.get((tuple(x), tuple(w)))
    else:
        go, x, w = shapes[0], shapes[1], shapes[2]
    if go is None or len(x) != 4 or len(w) != 4 or x[1] != w[1]:
        return None  # grouped (depthwise) or transposed: the weight's second dimension is not C_in
    area = w[2] * w[3]
    pix_in, pix_out = x[0] * x[2] * x[3], go[0] * go[2] * go[3]
    wino = (w[2], w[3]) == (3, 3) and (x[2], x[3]) == (go[2], go[3])  # 3x3, stride 1 (same size)
    tensors = pix_in * x[1] + pix_out * w[0] + w[0] * w[1] * area
    if name == "aten::convolution":
        return [(pix_out, w[0], w[1] * area)], wino, tensors, area == 1
    prods = [] if x[1] <= STEM_CHANNELS else [(pix_in, w[1], w[0] * area * pix_out / pix_in)]  # strided: fewer taps
    return prods + [(w[0], w[1] * area, pix_out)], wino, 2 * tensors, area == 1


def shaped_calls(rec: dict, gpu: str) -> list[dict]:
    """The convolution and 2-D matrix-product calls of one profile record (``shaped`` rows) taken
    on GPU ``gpu`` (a catalog name), each: model, precision, batch_size, gpu, products [(M, N, K)], winograd (3x3 stride 1), bytes
    (each operand read and the result written once, at the precision's element size), seconds
    (device time per call) and per_step (calls per step). Depthwise, transposed and batched
    products and attention are left out."""
    steps = max(1, int(rec.get("profiled_steps") or 1))
    size = 2 if rec["precision"] in ("fp16", "bf16") else 4
    out_pixels: dict[tuple, list | None] = {}
    for s in rec.get("shaped", []):
        if s["name"] == "aten::convolution_backward":
            key = (tuple(s["shapes"][1]), tuple(s["shapes"][2]))
            # two strides on the same input and weight: the forward rows (grouped by input
            # shapes) merge them, so their output size is unknown
            out_pixels[key] = s["shapes"][0] if out_pixels.get(key, s["shapes"][0]) == s["shapes"][0] else None
    calls = []
    for s in rec.get("shaped", []):
        name, shapes = s["name"], s["shapes"]
        if name in ("aten::convolution", "aten::convolution_backward"):
            got = _conv_products(name, shapes, out_pixels)
            if got is None:
                continue
            prods, wino, elements, one = got
            nbytes = elements * size
            kind = "conv_1x1" if one else "conv_kxk"
        elif name in ("aten::mm", "aten::addmm"):
            a, b = (shapes[0], shapes[1]) if name == "aten::mm" else (shapes[1], shapes[2])
            if len(a) != 2 or len(b) != 2:
                continue
            prods, wino, kind = [(a[0], b[1], a[1])], False, "matmul"
            nbytes = (a[0] * a[1] + b[0] * b[1] + a[0] * b[1]) * size
        else:
            continue
        if not s.get("count") or not s.get("device_us"):
            continue
        calls.append({"model": rec["model"], "precision": rec["precision"], "batch_size": rec["batch_size"], "gpu": gpu,
                      "kind": kind, "products": prods, "winograd": wino, "bytes": float(nbytes),
                      "seconds": s["device_us"] * 1e-6 / s["count"], "per_step": s["count"] / steps})
    return calls


def roofline_seconds(call: dict, get_gpu, k0: float, w: float, g: dict | None = None) -> float:
    """Unscaled seconds of one call (efficiency 1): the module docstring's t x e; ``g``: precision
    class -> the rate factor of a 1x1 convolution (``opmodel.gemm_shape_params``' conv_1x1)."""
    compute, memory, cuda_cores = _parts(call, get_gpu, k0)
    gain = (w if call["winograd"] and cuda_cores else 1.0) * _one_by_one(call, precision_class(call["precision"]), g)
    return max(compute / gain, memory)


G_KINDS = ("conv_1x1",)  # the calls the rate factor g applies to
# k0 (and w) are fitted as without the 1x1 terms first (g 1, no CUDA-core channel tile), then w and
# g at that k0: a free k0 trades against g (0.65 at k0 48 against 0.45 at k0 96 on the same calls).
SEQUENTIAL_K0 = True


def _g_applies(call: dict) -> bool:
    return call.get("kind") in G_KINDS


def _one_by_one(call: dict, pcls: str, g: dict | None) -> float:
    return (g or {}).get(pcls, 1.0) if _g_applies(call) else 1.0


def _parts(call: dict, get_gpu, k0: float) -> tuple[float, float, bool]:
    """(compute seconds without any gain, memory seconds, whether it runs on CUDA cores) of one call."""
    gpu = get_gpu(call["gpu"])
    peak_t = gpu.peak_tflops.get(call["precision"]) or gpu.peak_tflops["fp32"]
    cuda_cores = call["precision"] == "fp32" or not gpu.peak_tflops.get(call["precision"])
    from launcher.estimate import opmodel
    tile = opmodel.CUDA_TILE if cuda_cores and call.get("kind") in opmodel.CUDA_TILE_KINDS and opmodel.CUDA_TILE else (None, None)
    compute = sum(2.0 * m * n * k / (peak_t * 1e12 * tile_fill(m, n, *tile) * k_fill(k, k0))
                  for m, n, k in call["products"])
    return compute, call["bytes"] / (gpu.bandwidth_gbs * 1e9), cuda_cores


def _class_sse(parts: list[tuple], w: float, g: float) -> tuple[float, float]:
    """(efficiency, time-weighted squared log error) of one precision class's calls, given as
    (compute s, memory s, winograd, 1x1, measured s, weight), at Winograd gain w and 1x1 factor g."""
    vals = [(math.log(max(c / ((w if wino else 1.0) * (g if one else 1.0)), m) / t), wt)
            for c, m, wino, one, t, wt in parts]
    total = sum(wt for _, wt in vals)
    mean = sum(v * wt for v, wt in vals) / total
    return math.exp(mean), sum(wt * (v - mean) ** 2 for v, wt in vals)


def fit_gemm_shape(calls: list[dict], get_gpu, k0_grid: tuple = K0_GRID, w_grid: tuple = W_GRID,
                   g_grid: tuple | None = None) -> dict:
    """k0, winograd_fp32 and conv_1x1 (grid search, K0_GRID x W_GRID x G_GRID per precision class
    of G_CLASSES) and the per-call efficiency per precision class that minimise the time-weighted
    squared log error of ``calls`` (``get_gpu``: catalog name -> GPUSpec).
    Without fp32 3x3 stride-1 calls w stays 1, without a class's 1x1 calls its factor is absent (1);
    without calls, the defaults (k0 0, w 1). A grid of one value holds that parameter fixed
    (``python -m launcher.estimate.opfit --forms``)."""
    g_grid = G_GRID if g_grid is None else g_grid
    if SEQUENTIAL_K0 and calls and len(g_grid) > 1 and len(k0_grid) > 1:
        from launcher.estimate import opmodel
        saved = opmodel.CUDA_TILE
        opmodel.CUDA_TILE = None
        try:  # k0 (and w) as without the 1x1 terms, then the 1x1 terms at that k0
            k0_grid = (fit_gemm_shape(calls, get_gpu, k0_grid, w_grid, (1.0,))["k0"],)
        finally:
            opmodel.CUDA_TILE = saved
    if not calls:
        return {"k0": 0.0, "winograd_fp32": 1.0, "conv_1x1": {}, "efficiency": {}, "n_calls": 0}
    best = None
    for k0 in k0_grid:
        groups: dict[str, list[tuple]] = {}
        for c in calls:
            compute, memory, cuda_cores = _parts(c, get_gpu, k0)
            groups.setdefault(precision_class(c["precision"]), []).append((compute, memory, bool(c["winograd"]) and cuda_cores,
                                                _g_applies(c), c["seconds"], c["seconds"] * c["per_step"]))
        sse, w_best, g_best, eff = 0.0, 1.0, {}, {}
        for pcls, parts in sorted(groups.items()):
            ws = w_grid if any(p[2] for p in parts) else (1.0,)
            gs = g_grid if pcls in G_CLASSES and any(p[3] for p in parts) else (1.0,)
            got = None
            for w in ws:
                for g in gs:
                    e, err = _class_sse(parts, w, g)
                    if got is None or err < got[0] - 1e-12:
                        got = (err, w, g, e)
            sse += got[0]
            eff[pcls] = got[3]
            if len(ws) > 1:
                w_best = got[1]
            if len(gs) > 1:
                g_best[pcls] = got[2]
        if best is None or sse < best[0] - 1e-12:
            best = (sse, k0, w_best, g_best, eff)
    _, k0, w, g, eff = best
    return {"k0": k0, "winograd_fp32": w, "conv_1x1": g, "efficiency": {k: round(v, 4) for k, v in sorted(eff.items())},
            "n_calls": len(calls)}


def predict_call(call: dict, get_gpu, fitted: dict) -> float:
    """Predicted device seconds of one call under a ``fit_gemm_shape`` result."""
    e = fitted["efficiency"].get(precision_class(call["precision"]))
    if not e:
        e = statistics.fmean(fitted["efficiency"].values()) if fitted["efficiency"] else 1.0
    return roofline_seconds(call, get_gpu, fitted["k0"], fitted["winograd_fp32"], fitted.get("conv_1x1")) / e


def call_errors(calls: list[dict], get_gpu, fitted: dict | None = None, **grids) -> dict:
    """Leave-one-model-out per call and per profile row: each model's calls predicted by
    ``fit_gemm_shape`` on the other models' calls. ``rows``: per (model, precision, batch) the
    summed GEMM-call seconds per step measured and predicted; ``median_call``: per precision
    class, the time-weighted median |error| over calls; ``fits``: the held-out (k0, w) per model; ``grids``: as
    ``fit_gemm_shape``'s."""
    models = sorted({c["model"] for c in calls})
    held = {m: fitted or fit_gemm_shape([c for c in calls if c["model"] != m], get_gpu, **grids) for m in models}
    rows: dict[tuple, list[float]] = {}
    weighted: dict[str, list] = {}
    for c in calls:
        pred = predict_call(c, get_gpu, held[c["model"]])
        weighted.setdefault(precision_class(c["precision"]), []).append(
            (abs(pred / c["seconds"] - 1), c["seconds"] * c["per_step"]))
        r = rows.setdefault((c["model"], c["precision"], c["batch_size"]), [0.0, 0.0])
        r[0] += c["seconds"] * c["per_step"]
        r[1] += pred * c["per_step"]
    out = [{"model": m, "precision": p, "batch_size": b, "measured_ms": round(v[0] * 1e3, 3),
            "predicted_ms": round(v[1] * 1e3, 3), "error": round(v[1] / v[0] - 1, 4)}
           for (m, p, b), v in sorted(rows.items())]
    return {"rows": out, "median_call": {p: round(_weighted_median(v), 4) for p, v in sorted(weighted.items())},
            "median_row": round(statistics.median(abs(r["error"]) for r in out), 4) if out else None,
            "max_row": round(max(abs(r["error"]) for r in out), 4) if out else None, "n_calls": len(calls),
            "fits": {m: {"k0": f["k0"], "winograd_fp32": f["winograd_fp32"], "conv_1x1": f.get("conv_1x1", {})}
                     for m, f in held.items()}}


def _weighted_median(pairs: list[tuple[float, float]]) -> float:
    pairs = sorted(pairs)
    total, acc = sum(w for _, w in pairs), 0.0
    for v, w in pairs:
        acc += w
        if acc >= total / 2:
            return v
    return pairs[-1][0]


def fit_unaligned(doc: dict) -> dict:
    """Precision class -> alignment in bytes -> how many times longer a matrix product whose
    weight dimension is misaligned by that many bytes runs than its twin padded to a multiple of
    64 elements, per FLOP: the median over the shapes and the three products of a linear layer
    (forward, input gradient, weight gradient) of ``bench/gemm_align.py``'s document (no model's
    profile enters it). Empty without one."""
    rows = doc.get("results", [])
    aligned = {(r["precision"], r["op"], r["m"], r["k"], r["n"]): r for r in rows if r.get("aligned")}
    ratios: dict[str, dict[int, list[float]]] = {}
    for r in rows:
        if r.get("aligned"):
            continue
        n_pad = -(-r["n"] // 64) * 64
        twin = aligned.get((r["precision"], r["op"], r["m"], r["k"], n_pad))
        if twin is None or not twin["seconds"] or not r["seconds"]:
            continue
        element = 2 if r["precision"] in ("fp16", "bf16") else 4
        a = (r["n"] * element) & -(r["n"] * element)
        ratios.setdefault(precision_class(r["precision"]), {}).setdefault(min(a, 16), []).append(
            r["seconds"] / twin["seconds"] * twin["n"] / r["n"])
    return {p: {str(a): round(statistics.median(v), 3) for a, v in sorted(t.items()) if a < 16}
            for p, t in sorted(ratios.items())}


D0_GRID = tuple(float(v) for v in range(0, 257, 8))  # head-dimension steps of softmax work per score element
S0_GRID = tuple(float(v) for v in range(0, 1025, 16))  # keys' worth of fixed work per query block


def attention_keys(seq: int, causal: bool) -> float:
    """Keys a query meets in ``bench/attn_shapes.py``'s configuration: seq x the causal share the
    counter counts (``opcount.attention_shape``)."""
    from launcher.estimate.opcount import causal_fraction

    return seq * (causal_fraction(seq, seq) if causal else 1.0)


def fit_attention_shape(doc: dict) -> dict:
    """Precision class -> {"d0", "s0"} of ``opmodel.attention_utilization``: the pair on
    D0_GRID x S0_GRID that makes the attention rate of ``bench/attn_shapes.py``'s configurations
    (forward + backward FLOPs over their time, no model) most nearly one multiple of the
    utilisation (the smallest spread of log(rate / utilisation); ties: the smaller values). Its
    ``models`` rows (the profiled models' shapes, one layer each) are not fitted. Empty without
    the document."""
    from launcher.estimate.opmodel import attention_utilization

    groups: dict[str, list[tuple]] = {}
    for r in doc.get("results", []):
        if r.get("forward_backward_s"):
            rate = (r["flops_forward"] + r["flops_backward"]) / r["forward_backward_s"]
            groups.setdefault(precision_class(r["precision"]), []).append(
                (math.log(rate), r["seq"], attention_keys(r["seq"], r["causal"]), r["head_dim"]))
    out = {}
    for pcls, rows in sorted(groups.items()):
        def spread(d0: float, s0: float) -> float:
            logs = [lr - math.log(attention_utilization(s, s, keys, d, d0, s0)) for lr, s, keys, d in rows]
            mean = statistics.fmean(logs)
            return round(sum((v - mean) ** 2 for v in logs), 12)

        d0, s0 = min(((d0, s0) for d0 in D0_GRID for s0 in S0_GRID), key=lambda p: (spread(*p), p))
        out[pcls] = {"d0": d0, "s0": s0}
    return out
