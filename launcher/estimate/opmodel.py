"""Step time from per-operation-class costs: a roofline per class, calibrated per GPU architecture.

For one training step at batch b on one GPU, with the per-class FLOPs F_c and bytes B_c of
``launcher.estimate.opcount`` at the job's precision:

    t_c    = max(F_c / peak_c, B_c / bandwidth) / efficiency(arch, precision class, class c)
    step   = sum over classes t_c + kernels x launch gap

peak_c is the tensor-core peak at the job's precision for convolution, matmul and attention and
the fp32 (CUDA-core) peak for everything else; bandwidth is the datasheet HBM/GDDR figure. A
compiled job (torch.compile, the payload's default on CUDA) fuses element-wise chains with
their normalisation and reduction neighbours into generated (Triton) kernels: there the
classes norm, elementwise, reduction and data movement form one class ``fused`` costed on their
fused bytes and fused kernel count, and convolution with matmul form one class ``gemm``
(Inductor lowers 1x1 convolutions to matmuls). An eager job runs every operation as its own kernel.

Efficiencies and the launch gap come from ``bench/results/op_efficiency.json`` (written by
``python -m launcher.estimate.opfit`` from the per-kernel profiles in
``bench/results/op_profiles_*.json``); a (arch, class) never profiled falls back to the same
class on any profiled architecture, then to ``DEFAULT_EFFICIENCY``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from launcher.estimate.opcount import CLASSES, ClassCost, OpCost
from launcher.estimate.paths import calibration_dir, read_json

TENSOR_CLASSES = ("conv", "matmul", "attention", "gemm")
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


def step_time(ops: OpCost | dict, gpu, precision: str, batch: int, compiled: bool = True,
              doc: dict | None = None) -> StepTime:
    """Predicted seconds of one training step (see the module docstring)."""
    if isinstance(ops, dict):
        ops = OpCost.from_dict(ops)
    doc = efficiencies() if doc is None else doc
    mode = "compiled" if compiled else "eager"
    pcls = precision_class(precision) if gpu.peak_tflops.get(precision) else "fp32"
    per, bound, kernels = {}, {}, 0.0
    for cls, cost in grouped(ops, precision, compiled).items():
        t, b = roofline(cls, cost, gpu, precision, batch)
        per[cls] = t / efficiency(doc, gpu.arch, pcls, cls, mode)
        bound[cls] = b
        kernels += cost.kernels_fused if compiled else cost.kernels
    launch = kernels * launch_gap(doc, gpu.arch, mode)
    return StepTime(sum(per.values()) + launch, per, launch, bound)


__all__ = ["CLASSES", "StepTime", "step_time", "grouped", "roofline", "efficiencies"]
