"""Training throughput of a model on a GPU: a calibrated roofline.

    step_1  = max(compute, memory) + overhead
    compute = FLOPs per step / (peak[precision] x MFU(arch, precision class, model))
    memory  = bytes moved per step / (bandwidth x 0.8)
    n GPUs (data parallel, batch per GPU):
    step_n  = step_1 + exposed all-reduce;  samples/s = n x batch / step_n x multi-GPU efficiency

MFU comes from launcher.estimate.calibration (fitted on measured and published runs).
The memory term is a floor for low-arithmetic-intensity models (tiny CNNs, MLPs); for
ImageNet-sized CNNs the calibrated compute term is the binding one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from launcher.estimate.calibration import Calibration, current, peak_and_class
from launcher.estimate.flops import ModelCost

GIB = 1024**3
BANDWIDTH_EFFICIENCY = 0.8  # achievable fraction of datasheet HBM/GDDR bandwidth (STREAM-like copies)
# Bytes moved per step beyond the FLOPs: each saved activation is written in the forward pass and
# read back in the backward pass, and its gradient is written once.
ACTIVATION_PASSES = 3
# fp32 weights read in forward and backward, gradient written, SGD-momentum reads and writes
# weight and momentum buffer.
PARAM_PASSES = 6
# Memory: fp32 weights + gradients + one SGD momentum buffer (our payload's optimizer); autocast
# also keeps a half-precision copy of the weights.
OPTIMIZER_STATE_COPIES = 3
CUDA_RESERVED_GIB = 1.0  # CUDA context + cuDNN/cuBLAS workspaces
USABLE_FRACTION = 0.93  # allocator fragmentation and caching headroom
PCIE_GBS = 25.0  # PCIe 4.0 x16, one direction, when a GPU has no NVLink
LINK_EFFICIENCY = 0.7  # NCCL ring all-reduce bus bandwidth vs link peak
MAX_BATCH_CAP = 65536


@dataclass(frozen=True)
class Prediction:
    samples_per_second: float
    step_seconds: float
    mfu: float  # fraction of peak the prediction assumes (compute term)
    fits_memory: bool
    max_batch: int | None  # largest power-of-two batch per GPU that fits; None: not even 1
    memory_gib_needed: float
    bound: str  # "compute" | "memory"
    peak_tflops: float = 0.0
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def memory_needed_gib(cost: ModelCost, batch_size: int, precision: str) -> float:
    state = cost.param_bytes * OPTIMIZER_STATE_COPIES
    if precision in ("fp16", "bf16"):
        state += cost.param_bytes / 2
    return (state + batch_size * cost.activation_bytes(precision)) / GIB + CUDA_RESERVED_GIB


def max_batch_that_fits(cost: ModelCost, precision: str, memory_gib: float) -> int | None:
    usable = memory_gib * USABLE_FRACTION
    if memory_needed_gib(cost, 1, precision) > usable:
        return None
    b = 1
    while b * 2 <= MAX_BATCH_CAP and memory_needed_gib(cost, b * 2, precision) <= usable:
        b *= 2
    return b


def allreduce_seconds(gpu, count: int, cost: ModelCost) -> float:
    """Ring all-reduce of fp32 gradients: each GPU sends and receives 2(n-1)/n of them."""
    if count <= 1:
        return 0.0
    # nvlink_gbs is the datasheet's bidirectional total; a ring uses one direction per link.
    link = (gpu.nvlink_gbs / 2) if gpu.nvlink_gbs else PCIE_GBS
    return 2 * (count - 1) / count * cost.param_bytes / (link * 1e9 * LINK_EFFICIENCY)


def predict(gpu, count: int, precision: str, cost: ModelCost, batch_size: int, model: str,
            calibration: Calibration | None = None) -> Prediction:
    """Predicted training throughput of ``count`` GPUs of one type, batch_size per GPU."""
    cal = calibration or current()
    peak, cls, note = peak_and_class(gpu, precision)
    mfu = cal.efficiency(gpu.arch, cls, model)
    flops_step = cost.train_flops_per_sample * batch_size
    compute = flops_step / (peak * 1e12 * mfu)
    moved = batch_size * cost.activation_bytes(precision) * ACTIVATION_PASSES + cost.param_bytes * PARAM_PASSES
    memory = moved / (gpu.bandwidth_gbs * 1e9 * BANDWIDTH_EFFICIENCY)
    bound = "compute" if compute >= memory else "memory"
    step = max(compute, memory) + cal.step_overhead_s
    sps = batch_size / step
    if count > 1:
        # DDP overlaps the all-reduce with the backward pass (about 2/3 of the compute).
        exposed = max(0.0, allreduce_seconds(gpu, count, cost) - 2 / 3 * compute)
        step += exposed
        sps = count * batch_size / step * cal.multi_gpu_efficiency
    need = memory_needed_gib(cost, batch_size, precision)
    fits = need <= gpu.memory_gib * USABLE_FRACTION
    return Prediction(
        samples_per_second=sps,
        step_seconds=step,
        mfu=mfu,
        fits_memory=fits,
        max_batch=max_batch_that_fits(cost, precision, gpu.memory_gib),
        memory_gib_needed=need,
        bound=bound,
        peak_tflops=peak,
        note=note,
    )


def predict_cpu(cost: ModelCost, cores: int, calibration: Calibration | None = None) -> float:
    """Samples/s on a CPU from the model only: cores x a sustained per-core training rate."""
    cal = calibration or current()
    return cores * cal.cpu_gflops_per_core * 1e9 / cost.train_flops_per_sample
