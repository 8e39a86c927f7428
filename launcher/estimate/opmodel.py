"""Step time from per-operation-class costs: a roofline per class, calibrated per GPU architecture.

For one training step at batch b on one GPU, with the per-class FLOPs F_c and bytes B_c of
``launcher.estimate.opcount`` at the job's precision:

    t_c    = (max(F_c / peak_c, B_c / bandwidth) + K_c x tau) / efficiency(arch, precision class, class c)
    t_gemm = (sum over its operations i of max(F_i / (peak x u_i x w_i), B_i / bandwidth) + K_gemm x tau)
             / efficiency
             (compiled; u_i: the share of the work of the operation's matrix products that is real:
             M x N outputs in 128 x 128 tiles, K-long dot products with a fixed per-tile cost of k0
             steps; w_i: the fp32 Winograd/FFT gain of a 3x3 stride-1 convolution, times the fitted
             rate factor g of an fp32 1x1 one; at fp32 plus the FFT/Winograd helper kernels' fixed
             time, ``fft_tiles``; ``gemm_roofline``;
             K_c the class's kernels, tau a fixed time per kernel: ``kernel_seconds``)
    t_attn = sum over its operations i of max(F_i / (peak x a_i), B_i / bandwidth) / efficiency
             (a_i: block padding, head dimension and key loop, ``attention_utilization``; no tau:
             ``NO_KERNEL_TIME``)
    device = sum over classes t_c + kernels x launch gap
    host   = max(kernels x host seconds per kernel, a + kernels x c)
    step   = max(device, host)

peak_c is the tensor-core peak at the job's precision for convolution, matmul and attention and
the fp32 (CUDA-core) peak for everything else; bandwidth is the datasheet HBM/GDDR figure. A
compiled job (torch.compile, the payload's default on CUDA) fuses element-wise chains with
their normalisation and reduction neighbours into generated (Triton) kernels: there the
classes norm, elementwise, reduction and data movement form one class ``fused`` costed on their
fused bytes and fused kernel count, and convolution with matmul form one class ``gemm``
(Inductor lowers 1x1 convolutions to matmuls). An eager job runs every operation as its own kernel.

tau is the part of a kernel's time that neither its FLOPs nor its bytes explain (ramp-up, the last
partial wave, the epilogue): with it, a class's efficiency no longer depends on how its work is
split into kernels (a step of a few large kernels, VGG16's or a language model's, and one of many
small ones, ResNet-50's or MobileNetV2's, share one efficiency).

Efficiencies, tau, the launch gap and the GEMM shape parameters k0 and w come from
``bench/results/op_efficiency.json`` (written by ``python -m launcher.estimate.opfit`` from the
per-kernel profiles in ``bench/results/op_profiles_*.json``; k0 and w from their per-call rows,
``launcher.estimate.gemmfit``); a (arch, class) never profiled falls back to the same class on
any profiled architecture, then to ``DEFAULT_EFFICIENCY``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from launcher.estimate.opcount import CLASSES, ClassCost, OpCost
from launcher.estimate.paths import calibration_dir, read_json

TENSOR_CLASSES = ("conv", "matmul", "attention", "gemm")
# Tile width (elements) of the GEMM kernels along the output-channel and reduction dimensions:
# Hopper's wgmma kernels of cuBLAS/cuDNN run 128-wide tiles (64 x 128 ... 256 x 128), as do the
# Ampere-style fp32 kernels. A fixed constant of the hardware's libraries, not a fitted one
# (``python -m launcher.estimate.opfit --tile-grid`` measures how much the held-out error leans on it).
TILE = 128
TILE_N, TILE_K = TILE, TILE  # output-channel and reduction dimensions (rows counted without shapes)
TILE_M = TILE  # the output tile is TILE_M x TILE_N (rows with matrix-product shapes)
# False: ignore the counted matrix products (the earlier form, kept to measure against: opfit --forms).
USE_PRODUCTS = True
# fp32 (CUDA-core) 1x1 convolutions: cuDNN's fp32 kernels (sm80_xmma_*_f32 ... tilesize 32x32 /
# 128x32 / 256x64) tile the output channels 32 wide, not Hopper's 128 (tile_m x tile_n).
CUDA_TILE = (TILE, 32)
CUDA_TILE_KINDS = ("conv_1x1",)
# Before a per-call fit exists: no per-tile fixed cost, no fp32 Winograd gain; before a step fit
# exists, no sustained-rate ceiling (u_max 1 for every precision class).
DEFAULT_GEMM_SHAPE = {"k0": 0.0, "winograd_fp32": 1.0, "conv_1x1": {}, "u_max": {}, "unaligned": {}, "attention": {},
                      "fft": {}}
# cuDNN's FFT-tiling convolution transforms its input in 32 x 32 tiles (fft2d_r2c_32x32 / c2r_32x32):
# the helper kernels an fp32 3x3 stride-1 convolution launches scale with its output tiles (``fft_tiles``).
FFT_TILE = 32
# Query/key block of the attention kernels (cuDNN's and FlashAttention's Hopper kernels: 64-128;
# the fp32 memory-efficient kernel: 64): a sequence is computed in whole blocks. 128, as the
# counter's causal share (``opcount.CAUSAL_TILE``); 64 pads every sequence seen to the same length.
ATTENTION_TILE = 128
ALIGNED_BYTES = 16  # a row stride cuBLAS's fast (TMA) Hopper kernels take: a multiple of 16 bytes
GEMM_MEMBERS = ("conv", "matmul")
FUSED_MEMBERS = ("norm", "elementwise", "reduction", "data_movement")
# Before any profile is fitted: round figures (cuDNN/cuBLAS reach ~60% of the tensor peak on large
# layers; STREAM-like kernels ~70% of the datasheet bandwidth); replaced by the fit when it exists.
DEFAULT_EFFICIENCY = {"conv": 0.55, "matmul": 0.6, "attention": 0.45, "norm": 0.6, "elementwise": 0.7,
                      "reduction": 0.5, "optimizer": 0.7, "data_movement": 0.6, "fused": 0.6, "gemm": 0.55}
DEFAULT_LAUNCH_GAP_S = {"eager": 4e-6, "compiled": 2e-6}
EFFICIENCY_FILE = "op_efficiency.json"


@dataclass(frozen=True)
class StepTime:
    seconds: float
    per_class: dict  # class -> seconds (incl. nothing for launches)
    launch_s: float
    bound: dict  # class -> "compute" | "memory"
    host_s: float = 0.0  # the host's time for the step's launches; the step is max(device, host)

    @property
    def host_bound(self) -> bool:
        return self.host_s >= self.seconds


def precision_class(precision: str) -> str:
    return {"fp16": "half", "bf16": "half"}.get(precision, precision)


@lru_cache(maxsize=4)
def _load(path: str, mtime: float) -> dict:
    return read_json(Path(path), {})


def efficiencies(directory: Path | None = None) -> dict:
    """The fitted efficiency document (empty when none was fitted)."""
    p = (directory or calibration_dir()) / EFFICIENCY_FILE
    try:
        mtime = p.stat().st_mtime
    except OSError:
        return {}
    return _load(str(p), mtime)


def efficiency(doc: dict, arch: str, pcls: str, cls: str, mode: str) -> float:
    table = doc.get("efficiency", {})
    for key in (f"{arch}/{pcls}/{mode}/{cls}", f"*/{pcls}/{mode}/{cls}", f"{arch}/*/{mode}/{cls}",
                f"*/*/{mode}/{cls}"):
        if key in table:
            return float(table[key])
    return DEFAULT_EFFICIENCY.get(cls, 0.5)


def launch_gap(doc: dict, arch: str, mode: str) -> float:
    gaps = doc.get("launch_gap_s", {})
    return float(gaps.get(f"{arch}/{mode}", gaps.get(f"*/{mode}", DEFAULT_LAUNCH_GAP_S[mode])))


def grouped(ops: OpCost, precision: str, compiled: bool) -> dict:
    """class -> ClassCost at this precision; compiled: the fused members summed into ``fused`` and
    convolution + matmul into ``gemm`` (Inductor lowers 1x1 convolutions to matmuls, so a profile
    cannot tell them apart)."""
    at = ops.at_precision(precision)
    if not compiled:
        return at
    out = {c: v for c, v in at.items() if c not in FUSED_MEMBERS + GEMM_MEMBERS}
    for name, member_names, fused in (("fused", FUSED_MEMBERS, True), ("gemm", GEMM_MEMBERS, False)):
        members = [at[c] for c in member_names if c in at]
        if members:
            out[name] = _summed(members, fused)
    return out


def _summed(members: list, fused: bool) -> ClassCost:
    bps = sum(m.bytes_fused_per_sample if fused else m.bytes_per_sample for m in members)
    bfx = sum(m.bytes_fused_fixed if fused else m.bytes_fixed for m in members)
    k = sum(m.kernels_fused for m in members)
    return ClassCost(flops_per_sample=sum(m.flops_per_sample for m in members),
                     flops_fixed=sum(m.flops_fixed for m in members), bytes_per_sample=bps, bytes_fixed=bfx,
                     bytes_fused_per_sample=bps, bytes_fused_fixed=bfx, kernels=k, kernels_fused=k)


def roofline(cls: str, cost: ClassCost, gpu, precision: str, batch: int) -> tuple[float, str]:
    """Unscaled roofline seconds of one class (efficiency 1) and what bounds it."""
    tensor_peak = gpu.peak_tflops.get(precision) or gpu.peak_tflops["fp32"]
    peak = (tensor_peak if cls in TENSOR_CLASSES else gpu.peak_tflops["fp32"]) * 1e12
    compute = cost.flops(batch) / peak
    memory = cost.bytes(batch) / (gpu.bandwidth_gbs * 1e9)
    return (compute, "compute") if compute >= memory else (memory, "memory")


def tile_utilization(dim: float, tile: int = TILE) -> float:
    """Share of a kernel's tiles that hold real work along one GEMM dimension of size ``dim``:
    dim / (tile x ceil(dim / tile)); 1 when the dimension is unknown (0)."""
    if dim <= 0:
        return 1.0
    return dim / (tile * math.ceil(dim / tile))


def tile_fill(m: float, n: float, tile_m: int | None = None, tile_n: int | None = None) -> float:
    """Share of a GEMM kernel's output tiles that hold real outputs: an M x N result computed in
    tile_m x tile_n tiles fills M x N / (tile_m ceil(M / tile_m) x tile_n ceil(N / tile_n)) of the
    work the GPU does (a 64-channel layer in 128-wide tiles: 0.5). 1 for an unknown dimension (0)."""
    tile_m = TILE_M if tile_m is None else tile_m
    tile_n = TILE_N if tile_n is None else tile_n
    return tile_utilization(m, tile_m) * tile_utilization(n, tile_n)


def k_fill(k: float, k0: float) -> float:
    """Share of a tile's time spent in its K loop, k / (k + k0): every output tile also loads its
    pipeline and writes its result, a fixed cost worth ``k0`` reduction steps (fitted on per-call
    profiles, ``launcher.estimate.opfit.fit_gemm_shape``); 1 when k0 is 0."""
    return k / (k + k0) if k > 0 and k0 > 0 else 1.0


def gemm_shape_params(doc: dict) -> dict:
    """The GEMM shape parameters of a fitted document (``gemm_shape``): k0 (reduction steps, see
    ``k_fill``), winograd_fp32 (how many times fewer multiplications cuDNN's fp32 algorithms do
    on a 3x3 stride-1 convolution than its direct count; 1 = none) and u_max (precision class ->
    the sustained-rate ceiling of ``gemm_utilization``; a class not in it: 1, none). Defaults when
    never fitted."""
    got = doc.get("gemm_shape") or {}
    return {"k0": float(got.get("k0", DEFAULT_GEMM_SHAPE["k0"])),
            "winograd_fp32": float(got.get("winograd_fp32", DEFAULT_GEMM_SHAPE["winograd_fp32"])),
            "conv_1x1": {k: float(v) for k, v in (got.get("conv_1x1") or {}).items()},
            "fft": {k: float(v) for k, v in (got.get("fft") or {}).items()},
            "u_max": {k: float(v) for k, v in (got.get("u_max") or {}).items()},
            "unaligned": {p: {str(a): float(r) for a, r in t.items()} for p, t in (got.get("unaligned") or {}).items()},
            "attention": {p: {k: float(v) for k, v in t.items()} for p, t in (got.get("attention") or {}).items()}}


def alignment_bytes(dim: float, element_bytes: int) -> int:
    """The largest power of two (at most ALIGNED_BYTES) dividing a row of ``dim`` elements in bytes:
    16 for a 50,304-wide bf16 row, 2 for a 50,257-wide one."""
    b = int(round(dim)) * element_bytes
    return ALIGNED_BYTES if b <= 0 or b % ALIGNED_BYTES == 0 else b & -b


def unaligned_slowdown(product: tuple | list, element_bytes: int, ratios: dict) -> float:
    """How many times longer a matrix product runs than its aligned twin (``ratios``: alignment
    in bytes -> measured time-per-FLOP ratio, ``bench/gemm_align.py``), from its batch-free
    dimensions (a weight's rows and columns, which are the operands' row strides: the output
    width of a linear layer in its forward, the reduction of its input gradient, the rows of its
    weight gradient). An alignment never measured takes the ratio of the largest measured one
    below it (8 bytes: the 4-byte ratio). 1 when every batch-free dimension is aligned."""
    if not ratios:
        return 1.0
    mp, mf, np_, nf, kp, kf = product
    worst = 1.0
    for per_sample, fixed in ((mp, mf), (np_, nf), (kp, kf)):
        if per_sample or fixed <= 0:
            continue
        a = alignment_bytes(fixed, element_bytes)
        if a < ALIGNED_BYTES:
            below = [int(k) for k in ratios if int(k) <= a] or [min(int(k) for k in ratios)]
            worst = max(worst, float(ratios[str(max(below))]))
    return worst


def gemm_utilization(shapes: list, batch: int, k0: float, u_max: float = 1.0, element_bytes: int = 2,
                     unaligned: dict | None = None, tile: tuple | None = None) -> float:
    """FLOP-weighted utilisation of an operation's matrix products at batch b: sum F_s / sum
    (F_s / u_s), u_s = min(tile_fill(M, N) x k_fill(K, k0), u_max), F_s = 2 M N K, each dimension
    fixed + b x per sample (``opcount.gemm_shapes``). 1 when there are none.

    u_max is the sustained-rate ceiling: the largest share of the datasheet matrix peak a product
    keeps up inside a training step, however full its tiles (a step of back-to-back large
    products runs the tensor cores at a clock below the one the peak is quoted at; fitted on
    whole steps, ``launcher.estimate.opfit.fit_tuned``). It binds only on large, full-tile
    products (a language model's); smaller ones are already below it. ``unaligned``: alignment
    bytes -> slowdown of a product whose weight dimension is not a multiple of 16 bytes
    (``unaligned_slowdown``; matrix products only: the caller passes it for those)."""
    work = time = 0.0
    for mp, mf, np_, nf, kp, kf in shapes:
        m, n, k = mf + batch * mp, nf + batch * np_, kf + batch * kp
        f = 2.0 * m * n * k
        u = min(tile_fill(m, n, *(tile or (None, None))) * k_fill(k, k0), u_max) / unaligned_slowdown(
            (mp, mf, np_, nf, kp, kf), element_bytes, unaligned or {})
        if f > 0 and u > 0:
            work += f
            time += f / u
    return work / time if time else 1.0


def roofline_sum(terms) -> tuple[float, str]:
    """(seconds, "compute" | "memory") of operations given as (count, compute s, memory s): each
    takes the larger of its two times, and the bound named is the one that took more in all."""
    compute = memory = 0.0
    for n, c, m in terms:
        if c >= m:
            compute += n * c
        else:
            memory += n * m
    return compute + memory, "compute" if compute >= memory else "memory"


def gemm_roofline(ops: OpCost, gpu, precision: str, batch: int, doc: dict | None = None) -> tuple[float, str] | None:
    """Unscaled seconds of the convolution and matrix operations, one roofline per operation:

        t_i = max(F_i / (peak x u_i x w_i), B_i / bandwidth)

    so each operation's own arithmetic intensity decides whether it is compute- or memory-bound.
    u_i (``gemm_utilization``): the share of its kernels' work that is real, from the matrix
    products it runs (M x N outputs in 128 x 128 tiles, K-long dot products with a fixed
    per-tile cost of k0 steps), at most the precision class's sustained-rate ceiling u_max;
    an operation counted without them (a grouped or transposed
    convolution, a count made before they existed) takes the older u(dim_n) x u(dim_k) on its
    two batch-independent dimensions. Depthwise convolutions run on their own kernels: u = 1.
    w_i: ``winograd_fp32`` for a 3x3 stride-1 convolution at fp32 (CUDA cores, where cuDNN
    picks Winograd/FFT algorithms), else 1. None when the count has no per-operation rows."""
    if not ops.gemm_ops:
        return None
    shape = gemm_shape_params(doc or {})
    half = precision in ("fp16", "bf16")
    peak = (gpu.peak_tflops.get(precision) or gpu.peak_tflops["fp32"]) * 1e12
    cuda_cores = precision == "fp32" or not gpu.peak_tflops.get(precision)
    pcls = "fp32" if cuda_cores else precision_class(precision)
    u_max = shape["u_max"].get(pcls, shape["u_max"].get("half", 1.0) if not cuda_cores else 1.0)
    element = 2 if half else 4
    bw = gpu.bandwidth_gbs * 1e9
    terms = []
    for row in ops.gemm_ops:
        kind, fp, ff, bp, bf, dn, dk, n = row[:8]
        shapes = row[8] if len(row) > 8 and USE_PRODUCTS else []
        if kind == "attention":
            continue
        if kind == "conv_depthwise":
            u = 1.0
        elif shapes:
            u = gemm_utilization(shapes, batch, shape["k0"], u_max, element,
                                 shape["unaligned"].get(pcls) if kind == "matmul" else None,
                                 CUDA_TILE if cuda_cores and kind in CUDA_TILE_KINDS else None)
        else:
            u = min(tile_utilization(dn, TILE_N) * tile_utilization(dk, TILE_K), u_max)
        w = shape["winograd_fp32"] if cuda_cores and len(row) > 9 and row[9] else 1.0
        if kind == "conv_1x1":  # fp32: the fitted 1x1 rate factor g (gemmfit.fit_gemm_shape)
            w *= shape["conv_1x1"].get(pcls, 1.0)
        c = (ff + batch * fp) / (peak * u * w)
        m = (bf + batch * bp) * (0.5 if half else 1.0) / bw
        terms.append((n, c, m))
    seconds, bound = roofline_sum(terms)
    fft = shape["fft"]
    if cuda_cores and fft.get("kernels_per_tile") and fft.get("kernel_s"):
        seconds += fft_tiles(ops) * fft["kernels_per_tile"] * fft["kernel_s"]
    return seconds, bound


def fft_tiles(ops: OpCost) -> float:
    """FFT_TILE x FFT_TILE output tiles per sample image of the step's 3x3 stride-1 convolutions (at
    least one per call): the fp32 FFT/Winograd helper kernels (transforms, complex products) that
    cuDNN launches scale with them, not with the batch."""
    total = 0.0
    for row in ops.gemm_ops:
        if row[0] != "attention" and len(row) > 9 and row[9] and row[8]:
            # pixels per sample: M of the forward or input-gradient product, K of a weight gradient
            pixels = max(max(p[0], p[4]) for p in row[8])
            total += row[7] * max(1.0, pixels / FFT_TILE ** 2)
    return total


def attention_utilization(seq_q: float, seq_k: float, keys: float, head_dim: float, d0: float = 0.0,
                          s0: float = 0.0) -> float:
    """Share of an attention kernel's time that its counted FLOPs explain:

        u = tile_utilization(seq_q) x tile_utilization(seq_k) x d / (d + d0) x L / (L + s0)

    The kernel computes whole ATTENTION_TILE-long query and key blocks (ViT-B/16's 197 tokens run
    as 256: 0.59 of the work is real). Per score element it does 2 x d multiply-adds in each
    matrix product (d = head_dim) plus softmax work independent of d (the exponential, the
    running maximum and sum, the rescaling), worth d0 steps of d. Per query block it loads the
    block, then loops over the L keys it meets (``keys``: seq_k, or about half of it causal),
    and normalises and writes its output: a fixed cost worth s0 keys. d0 and s0 are measured on
    attention alone (``bench/attn_shapes.py``, fitted by
    ``launcher.estimate.gemmfit.fit_attention_shape``); 0: no such cost. Unknown dimensions (0) count 1."""
    return (tile_utilization(seq_q, ATTENTION_TILE) * tile_utilization(seq_k, ATTENTION_TILE)
            * k_fill(head_dim, d0) * k_fill(keys, s0))


def attention_roofline(ops: OpCost, gpu, precision: str, batch: int, doc: dict | None = None) -> tuple[float, str] | None:
    """Unscaled seconds of the attention operations, one roofline per operation:

        t_i = max(F_i / (peak x u_i), B_i / bandwidth)

    u_i: ``attention_utilization`` of its score matrix (seq_q, seq_k, the keys a query meets and
    the head dimension, recorded by the counter: ``opcount.attention_shape``) at the precision
    class's d0 and s0 (``attention`` of the fitted GEMM shape parameters; 0 when never fitted).
    None when the count has no attention row with its shape (a count made before they were
    recorded: the class roofline then)."""
    rows = [r for r in ops.gemm_ops if r[0] == "attention" and len(r) > 8 and r[8]]
    if not rows:
        return None
    half = precision in ("fp16", "bf16")
    peak = (gpu.peak_tflops.get(precision) or gpu.peak_tflops["fp32"]) * 1e12
    pcls = "fp32" if precision == "fp32" or not gpu.peak_tflops.get(precision) else precision_class(precision)
    fitted = gemm_shape_params(doc or {})["attention"].get(pcls, {})
    d0, s0 = fitted.get("d0", 0.0), fitted.get("s0", 0.0)
    bw = gpu.bandwidth_gbs * 1e9
    terms = []
    for _kind, fp, ff, bp, bf, seq_q, seq_k, n, products, *_ in rows:
        _mp, _mf, np_, nf, kp, kf = products[0]
        u = attention_utilization(seq_q, seq_k, nf + batch * np_, kf + batch * kp, d0, s0)
        c = (ff + batch * fp) / (peak * u)
        m = (bf + batch * bp) * (0.5 if half else 1.0) / bw
        terms.append((n, c, m))
    return roofline_sum(terms)


def class_roofline(cls: str, cost: ClassCost, ops: OpCost, gpu, precision: str, batch: int,
                   doc: dict | None = None) -> tuple[float, str]:
    """Unscaled seconds of one class of a step: per operation for ``gemm`` (compiled) and
    ``attention`` when the count has per-operation rows (``gemm_roofline``, ``attention_roofline``,
    their shape parameters from ``doc``), else the class's own roofline."""
    per_op = gemm_roofline(ops, gpu, precision, batch, doc) if cls == "gemm" else \
        attention_roofline(ops, gpu, precision, batch, doc) if cls == "attention" else None
    return per_op if per_op is not None else roofline(cls, cost, gpu, precision, batch)


def step_time(ops: OpCost | dict, gpu, precision: str, batch: int, compiled: bool = True,
              doc: dict | None = None) -> StepTime:
    """Predicted seconds of one training step (see the module docstring)."""
    if isinstance(ops, dict):
        ops = OpCost.from_dict(ops)
    doc = efficiencies() if doc is None else doc
    mode = "compiled" if compiled else "eager"
    pcls = precision_class(precision) if gpu.peak_tflops.get(precision) else "fp32"
    tau = kernel_seconds(doc) if compiled else 0.0  # fitted on compiled steps only (opfit.fit)
    per, bound, kernels = {}, {}, 0.0
    for cls, cost in grouped(ops, precision, compiled).items():
        t, b = class_roofline(cls, cost, ops, gpu, precision, batch, doc) if compiled or cls == "attention" \
            else roofline(cls, cost, gpu, precision, batch)
        k = cost.kernels_fused if compiled else cost.kernels
        per[cls] = (t + fixed_kernels(cls, k) * tau) / efficiency(doc, gpu.arch, pcls, cls, mode)
        bound[cls] = b
        kernels += k
    launch = kernels * launch_gap(doc, gpu.arch, mode)
    device = sum(per.values()) + launch
    host = max(kernels * host_per_kernel(doc, mode), host_small_step(doc, mode, kernels))
    return StepTime(max(device, host), per, launch, bound, host)


# Classes whose kernels take no fixed time tau: attention kernels run in proportion to their work
# (GPT-2's, lm-1b's and ViT-B/16's at batch 64 and 128 all at one rate per FLOP, bench/attn_shapes.py).
NO_KERNEL_TIME = ("attention",)


def fixed_kernels(cls: str, kernels: float) -> float:
    """The kernels of a class that each take the fixed time tau (``kernel_seconds``): all of them,
    but none of NO_KERNEL_TIME's classes."""
    return 0.0 if cls in NO_KERNEL_TIME else kernels


def kernel_seconds(doc: dict) -> float:
    """tau: fixed seconds per kernel of a compiled step, in roofline units (before the class's
    efficiency divides it), fitted on whole steps (``launcher.estimate.opfit.fit_kernel_s``); 0 when
    never fitted. Eager steps are priced without it (no eager profile measures it)."""
    return float(doc.get("kernel_s") or 0.0)


def host_small_step(doc: dict, mode: str, kernels: float) -> float:
    """Host (CPU) seconds of a step of few kernels (TinyCNN, an MLP): a + kernels x c, the training
    loop's fixed Python, optimizer and graph-wrapper time plus a launch cost per kernel, fitted on
    the CLI runs whose steps are clearly host-bound (``launcher.estimate.opfit.fit_host_step``).
    Steps of many kernels keep ``host_per_kernel`` alone (the larger of the two); 0 when never
    fitted."""
    line = (doc.get("host_small_step") or {}).get(mode)
    return float(line["a_s"]) + kernels * float(line["s_per_kernel"]) if line else 0.0


def host_per_kernel(doc: dict, mode: str) -> float:
    """Host (CPU) seconds per launched kernel of a step: Python, the compiled graph's wrapper and the
    launch calls; a step cannot be shorter than its kernels x this (0 when never fitted)."""
    return float((doc.get("host_s_per_kernel") or {}).get(mode, 0.0))


__all__ = ["CLASSES", "StepTime", "step_time", "grouped", "roofline", "class_roofline", "gemm_roofline",
           "attention_roofline", "attention_utilization",
           "tile_fill", "k_fill", "gemm_utilization", "gemm_shape_params", "kernel_seconds", "host_small_step",
           "efficiencies"]
