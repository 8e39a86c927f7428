"""Training throughput of a model on a GPU: a calibrated roofline.

    step_1  = max(compute, memory) + overhead
    compute = FLOPs per step / (peak[precision] x MFU(arch, precision class, model))
    memory  = bytes moved per step / (bandwidth x 0.8)
    G GPUs x N machines (data parallel, batch per GPU): launcher.estimate.scaling
    step_P  = step_1 + exposed all-reduce (+ DDP host time);  samples/s = P x batch / step_1 x efficiency

MFU comes from launcher.estimate.calibration (fitted on measured and published runs).
The memory term is a floor for low-arithmetic-intensity models (tiny CNNs, MLPs); for
ImageNet-sized CNNs the calibrated compute term is the binding one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from launcher.estimate.calibration import Calibration, current, peak_and_class
from launcher.estimate.bands import band
from launcher.estimate.flops import ModelCost
from launcher.estimate.learned import user_factor
from launcher.estimate.opmodel import efficiencies, step_time
from launcher.estimate.scaling import Network, scale

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
    num_nodes: int = 1
    world_size: int = 1
    scaling_efficiency: float = 1.0  # per-GPU samples/s here / on one GPU
    allreduce_seconds: float = 0.0
    exposed_comm_seconds: float = 0.0
    interconnect: str = "single gpu"
    method: str = "mfu"  # "per-operation" (launcher.estimate.opmodel) | "mfu" (one calibrated MFU)
    per_class_seconds: dict | None = None  # per-operation method: class -> seconds of one step
    error_band: float = 0.0  # median absolute error of estimates of this kind (launcher.estimate.bands)
    band_basis: str = ""
    user_factor: float = 1.0  # `gpujob calibrate`: the user's runs' measured / predicted speed here
    memory: dict | None = None  # language models: launcher/estimate/memory.py's MemoryPlan.to_dict()

    def to_dict(self) -> dict:
        return asdict(self)


def memory_needed_gib(cost: ModelCost, batch_size: int, precision: str, optimizer_states: int = 1) -> float:
    """GiB one GPU needs at ``batch_size`` samples: fp32 weights, gradients and ``optimizer_states``
    fp32 copies (1: SGD's momentum; 2: AdamW's moments), autocast's half weights, activations."""
    state = cost.param_bytes * (OPTIMIZER_STATE_COPIES - 1 + optimizer_states)
    if precision in ("fp16", "bf16"):
        state += cost.param_bytes / 2
    return (state + batch_size * cost.activation_bytes(precision)) / GIB + CUDA_RESERVED_GIB


def max_batch_that_fits(cost: ModelCost, precision: str, memory_gib: float, optimizer_states: int = 1,
                        unit: int = 1) -> int | None:
    """Largest power-of-two batch that fits, counted in units of ``unit`` samples (a token model's
    sequences of ``unit`` tokens); None: not even one."""
    usable = memory_gib * USABLE_FRACTION
    if memory_needed_gib(cost, unit, precision, optimizer_states) > usable:
        return None
    b = 1
    while b * 2 <= MAX_BATCH_CAP and memory_needed_gib(cost, b * 2 * unit, precision, optimizer_states) <= usable:
        b *= 2
    return b


def predict(gpu, count: int, precision: str, cost: ModelCost, batch_size: int, model: str,
            calibration: Calibration | None = None, *, num_nodes: int = 1,
            network: Network | None = None, compiled: bool = True, op_doc: dict | None = None,
            method: str | None = None, optimizer_states: int = 1, batch_unit: int = 1) -> Prediction:
    """Predicted training throughput of ``count`` GPUs of one type per machine on ``num_nodes``
    machines (joined by ``network``), batch_size per GPU (tokens for a language model).

    With per-operation costs (``cost.ops``) and fitted per-class efficiencies
    (bench/results/op_efficiency.json) the step is the per-operation roofline of
    launcher.estimate.opmodel; otherwise one calibrated MFU on the total FLOPs (below).
    ``method`` ("per-operation" | "mfu") overrides the choice by measured error (``_mfu_priced``),
    for the tools that compare the two. ``optimizer_states``: fp32 copies of the weights the
    optimizer keeps (memory_needed_gib); ``batch_unit``: samples per unit of ``max_batch`` (a token
    model's sequence length, so that it counts sequences as the spec's batch_size does).
    """
    cal = calibration or current()
    peak, cls, note = peak_and_class(gpu, precision)
    flops_step = cost.train_flops_per_sample * batch_size
    doc = efficiencies() if op_doc is None else op_doc
    per_class = None
    # The per-operation model prices every model it has counts for, except those whose family the
    # MFU fit has measured runs of and where that fit's error on the profiled rows is the smaller
    # (``method_choice`` of op_efficiency.json; docs/estimator.md, section 12).
    per_op = cost.ops is not None and doc.get("efficiency")
    if per_op and (method == "per-operation" or (method is None and not _mfu_priced(doc, cal, model, cls))):
        st = step_time(cost.ops, gpu, precision, batch_size, compiled, doc)
        busy, per_class, method = st.seconds, {k: round(v, 6) for k, v in st.per_class.items()}, "per-operation"
        step = busy
        host_bound = st.host_bound or st.seconds - st.launch_s < st.launch_s  # the host sets the pace
        bound = max(st.bound.items(), key=lambda kv: st.per_class.get(kv[0], 0.0))[1]
        mfu = flops_step / (peak * 1e12 * step)
    else:
        method = "mfu"
        mfu = cal.efficiency(gpu.arch, cls, model)
        compute = flops_step / (peak * 1e12 * mfu)
        moved = batch_size * cost.activation_bytes(precision) * ACTIVATION_PASSES + cost.param_bytes * PARAM_PASSES
        memory = moved / (gpu.bandwidth_gbs * 1e9 * BANDWIDTH_EFFICIENCY)
        bound = "compute" if compute >= memory else "memory"
        busy = max(compute, memory)
        step = busy + cal.step_overhead_s
        host_bound = busy < cal.step_overhead_s  # GPU work per step under the host's time per step
    factor = user_factor(gpu.arch, precision)
    step, busy = step / factor, busy / factor
    # Host-bound: DDP's own host time per step shows in full (scaling.DDP_HOST_SECONDS).
    sc = scale(step, busy, cost.param_bytes, gpu, count, num_nodes, network, cal.multi_gpu_efficiency,
               host_bound=host_bound)
    sps = sc.world_size * batch_size / step * sc.efficiency
    step /= sc.efficiency  # the effective step: exposed all-reduce and rank synchronisation
    from launcher.payloads.lm_shapes import is_lm

    err, basis = band(gpu.arch, method, lm=is_lm(model))
    need = memory_needed_gib(cost, batch_size, precision, optimizer_states)
    fits = need <= gpu.memory_gib * USABLE_FRACTION
    return Prediction(
        samples_per_second=sps,
        step_seconds=step,
        mfu=mfu,
        fits_memory=fits,
        max_batch=max_batch_that_fits(cost, precision, gpu.memory_gib, optimizer_states, batch_unit),
        memory_gib_needed=need,
        bound=bound,
        peak_tflops=peak,
        note=note,
        num_nodes=sc.num_nodes,
        world_size=sc.world_size,
        scaling_efficiency=sc.efficiency,
        allreduce_seconds=sc.allreduce_seconds,
        exposed_comm_seconds=sc.exposed_seconds,
        interconnect=sc.interconnect,
        method=method,
        per_class_seconds=per_class,
        error_band=round(err, 4),
        band_basis=basis,
        user_factor=factor,
    )


def _mfu_priced(doc: dict, cal: Calibration, model: str, cls: str) -> bool:
    """Price this model with the MFU fit rather than per operation (see predict): a family the
    MFU fit knows whose MFU error measured smaller (``method_choice``); language models by
    ``method_choice.lm`` (the method with the smaller error on LM runs, opfit.lm_choice)."""
    from launcher.estimate.calibration import model_family

    choice = doc.get("method_choice")
    if model_family(model) == "lm" and ":" not in model:  # a built-in LM (its own MFU fit)
        return (choice or {}).get("lm", {}).get("method", "mfu") == "mfu"
    if not cal.knows(model, cls):
        return False
    if choice is None:  # a fit written before the choice was measured: every known family
        return True
    return model_family(model) in choice.get("mfu_families", [])


def predict_cpu(cost: ModelCost, cores: int, calibration: Calibration | None = None, batch: int = 0) -> float:
    """Samples/s of fp32 training on ``cores`` CPU cores from the model only, at ``batch`` samples
    per step (tokens for a token model): per operation class (launcher.estimate.cpufit, the rates
    fitted on measured CPU steps) when the model has per-operation counts, else cores x one
    sustained per-core rate (``Calibration.cpu_gflops_per_core``) on its training FLOPs."""
    from launcher.estimate.cpufit import predict

    if cost.ops and batch:
        sps = predict(cost.ops, batch, cores)
        if sps:
            return sps
    cal = calibration or current()
    return cores * cal.cpu_gflops_per_core * 1e9 / cost.train_flops_per_sample
