"""Data-parallel scaling: what G GPUs per machine x N machines buy over one GPU.

    step_1    = one GPU's step (throughput.predict: compute/memory roofline + overhead)
    allreduce = 2 (P-1)/P x gradient bytes / bus bandwidth          (NCCL ring, P = G x N)
    exposed   = allreduce - OVERLAP x min(allreduce, backward)       (DDP buckets overlap backward)
    host      = DDP_HOST_SECONDS when the step is host-bound (launches, not GPU work), else 0
    efficiency = step_1 / (step_1 + exposed + host) x E_sync                    (1 when P = 1)

E_sync is what more than one rank loses even when the all-reduce hides: rank synchronisation,
NCCL kernels sharing the GPU with compute, DDP's per-bucket work. On one NVLink machine it is
measured (two H200s, NVLINK_POINTS; fit_nvlink() reproduces the constants); elsewhere it is
calibration.multi_gpu_efficiency (published 8-GPU runs), a documented estimate like the PCIe
and network terms.

Bus bandwidth: NVLink (one direction) or PCIe within a machine; across machines the ring
crosses every machine's network once, so the slower of the two binds. Gradients are fp32
(DDP all-reduces param.grad, whose dtype is the parameter's, fp32 even under autocast).
Every figure and its source is in docs/estimator.md, "Many GPUs and many machines".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

BACKWARD_FRACTION = 2 / 3  # backward ~ 2x forward FLOPs (flops.py): 2/3 of the step's compute
LINK_EFFICIENCY = 0.7  # NCCL all-reduce bus bandwidth / NVLink or PCIe peak (one direction)
NET_EFFICIENCY = 0.9  # ... / network line rate; fitted with OVERLAP on SCALING_POINTS
OVERLAP = 0.9  # share of the all-reduce hidden behind backward; fit_overlap() reproduces it
# PCIe x16, one direction, by generation (the GPU's host interface); NCCL's ring over PCIe P2P.
PCIE_GBS = {3: 12.5, 4: 25.0, 5: 50.0}
PCIE_GEN = {"kepler": 3, "pascal": 3, "volta": 3, "turing": 3, "ampere": 4, "ada": 4, "hopper": 5,
            "blackwell": 5}
# PCIe cards whose NVLink bridge joins pairs only: more than two GPUs ring over PCIe.
NVLINK_BRIDGE_PAIRS = {"H100-PCIE"}
DEFAULT_NETWORK_GBPS = 25.0
# Two H200s over NVLink (NV18), torch 2.11 DDP + torch.compile, bf16 batch 256 per GPU:
# fit_nvlink() on NVLINK_POINTS reproduces both (docs/benchmarks.md, "Two GPUs").
NVLINK_SYNC_EFFICIENCY = 0.94  # E_sync of 2 ranks on one NVLink machine
DDP_HOST_SECONDS = 0.00075  # host time DDP adds to a step (hooks, bucket launches, the stop vote)
# E_sync of the published 8-GPU NVLink runs (calibration.multi_gpu_efficiency) holds from 8 up.
_PUBLISHED_WORLD = 8


@dataclass(frozen=True)
class Network:
    gbps: float  # line rate between machines, Gbit/s
    fabric: str  # "efa" | "gpudirect-tcpx" | "gpudirect-tcpxo" | "rdma" | "tcp"
    source: str
    estimate: bool = False  # True: not read off the provider's page (interpolated or assumed)


_AWS_TYPES = "https://aws.amazon.com/ec2/instance-types/"
_GCP_BW = "https://cloud.google.com/compute/docs/gpus/gpu-network-bandwidth"
_UNKNOWN = "not in gpujob's network table: assumed 25 Gbit/s"


def _aws(gbps: float, page: str, fabric: str = "tcp", estimate: bool = False) -> Network:
    return Network(gbps, fabric, _AWS_TYPES + page, estimate)


def _gcp(gbps: float, fabric: str = "tcp", estimate: bool = False) -> Network:
    return Network(gbps, fabric, _GCP_BW, estimate)


# Per instance type. "up to" figures (burst, smaller sizes) are taken at face value: estimate=True.
NETWORKS: dict[tuple[str, str], Network] = {
    ("aws", "p3.2xlarge"): _aws(10, "p3/", estimate=True),
    ("aws", "p3.8xlarge"): _aws(10, "p3/"),
    ("aws", "p3.16xlarge"): _aws(25, "p3/"),
    ("aws", "p3dn.24xlarge"): _aws(100, "p3/", "efa"),
    ("aws", "p4d.24xlarge"): _aws(400, "p4/", "efa"),
    ("aws", "p4de.24xlarge"): _aws(400, "p4/", "efa"),
    ("aws", "p5.48xlarge"): _aws(3200, "p5/", "efa"),
    ("aws", "p5e.48xlarge"): _aws(3200, "p5/", "efa"),
    ("aws", "p5en.48xlarge"): _aws(3200, "p5/", "efa"),
    ("aws", "p6-b200.48xlarge"): _aws(3200, "p6/", "efa"),
    ("aws", "p6-b300.48xlarge"): _aws(6400, "p6/", "efa", estimate=True),
    ("aws", "g4dn.8xlarge"): _aws(50, "g4/", "efa"),
    ("aws", "g4dn.12xlarge"): _aws(50, "g4/", "efa"),
    ("aws", "g4dn.16xlarge"): _aws(50, "g4/", "efa"),
    ("aws", "g4dn.metal"): _aws(100, "g4/", "efa"),
    ("aws", "g5.8xlarge"): _aws(25, "g5/", "efa"),
    ("aws", "g5.12xlarge"): _aws(40, "g5/", "efa"),
    ("aws", "g5.16xlarge"): _aws(25, "g5/", "efa"),
    ("aws", "g5.24xlarge"): _aws(50, "g5/", "efa"),
    ("aws", "g5.48xlarge"): _aws(100, "g5/", "efa"),
    ("aws", "g5g.16xlarge"): _aws(25, "g5g/"),
    ("aws", "g5g.metal"): _aws(25, "g5g/"),
    ("aws", "g6.8xlarge"): _aws(25, "g6/", "efa"),
    ("aws", "g6.12xlarge"): _aws(40, "g6/", "efa"),
    ("aws", "g6.16xlarge"): _aws(25, "g6/", "efa"),
    ("aws", "g6.24xlarge"): _aws(50, "g6/", "efa"),
    ("aws", "g6.48xlarge"): _aws(100, "g6/", "efa"),
    ("aws", "g6e.8xlarge"): _aws(25, "g6e/", "efa"),
    ("aws", "g6e.12xlarge"): _aws(100, "g6e/", "efa"),
    ("aws", "g6e.16xlarge"): _aws(35, "g6e/", "efa"),
    ("aws", "g6e.24xlarge"): _aws(200, "g6e/", "efa"),
    ("aws", "g6e.48xlarge"): _aws(400, "g6e/", "efa"),
    ("aws", "g7e.12xlarge"): _aws(400, "g7e/", "efa", estimate=True),
    ("aws", "g7e.24xlarge"): _aws(800, "g7e/", "efa", estimate=True),
    ("aws", "g7e.48xlarge"): _aws(1600, "g7e/", "efa", estimate=True),
    ("gcp", "a2-highgpu-1g"): _gcp(24),
    ("gcp", "a2-highgpu-2g"): _gcp(32),
    ("gcp", "a2-highgpu-4g"): _gcp(50),
    ("gcp", "a2-highgpu-8g"): _gcp(100),
    ("gcp", "a2-megagpu-16g"): _gcp(100),
    ("gcp", "a2-ultragpu-1g"): _gcp(24),
    ("gcp", "a2-ultragpu-2g"): _gcp(32),
    ("gcp", "a2-ultragpu-4g"): _gcp(50),
    ("gcp", "a2-ultragpu-8g"): _gcp(100),
    ("gcp", "a3-highgpu-1g"): _gcp(25, estimate=True),
    ("gcp", "a3-highgpu-2g"): _gcp(50, estimate=True),
    ("gcp", "a3-highgpu-4g"): _gcp(100, estimate=True),
    # 200 Gbit/s host NIC + 4 x 200 GPUDirect-TCPX NICs for the GPUs.
    ("gcp", "a3-highgpu-8g"): _gcp(1000, "gpudirect-tcpx"),
    ("gcp", "a3-megagpu-8g"): _gcp(1800, "gpudirect-tcpxo"),
    ("gcp", "a3-ultragpu-8g"): _gcp(3600, "rdma"),
    ("gcp", "a4-highgpu-8g"): _gcp(3600, "rdma"),
    ("gcp", "g2-standard-24"): _gcp(32),
    ("gcp", "g2-standard-48"): _gcp(50),
    ("gcp", "g2-standard-96"): _gcp(100),
}
# Smaller sizes of a family ("up to N Gbit/s" on the provider's page), by instance-type prefix.
FAMILY_NETWORKS: dict[tuple[str, str], Network] = {
    ("aws", "p3."): _aws(10, "p3/", estimate=True),
    ("aws", "g4dn."): _aws(25, "g4/", estimate=True),
    ("aws", "g5."): _aws(10, "g5/", estimate=True),
    ("aws", "g5g."): _aws(10, "g5g/", estimate=True),
    ("aws", "g6."): _aws(10, "g6/", estimate=True),
    ("aws", "g6e."): _aws(20, "g6e/", estimate=True),
    ("aws", "g7e."): _aws(50, "g7e/", estimate=True),
    ("gcp", "g2-"): _gcp(10, estimate=True),
}
# GCP N1 hosts with T4/V100/P100/P4 attached: bandwidth grows with the GPU count.
GCP_N1_BY_GPUS = {1: 24.0, 2: 32.0, 4: 50.0, 8: 100.0}


def network_for(provider: str, instance_type: str | None, gpu_count: int = 1) -> Network:
    """The machine-to-machine line rate of an instance type; 25 Gbit/s (estimate) when unknown."""
    if instance_type:
        hit = NETWORKS.get((provider, instance_type))
        if hit:
            return hit
        if provider == "gcp" and instance_type.startswith("n1-"):
            gbps = GCP_N1_BY_GPUS.get(gpu_count) or GCP_N1_BY_GPUS[min(GCP_N1_BY_GPUS, key=lambda k: abs(k - gpu_count))]
            return _gcp(gbps, estimate=True)
        for (prov, prefix), net in FAMILY_NETWORKS.items():
            if prov == provider and instance_type.startswith(prefix):
                return net
    return Network(DEFAULT_NETWORK_GBPS, "tcp", _UNKNOWN, estimate=True)


def intra_node(gpu, gpus_per_node: int) -> tuple[str, float]:
    """(link name, one-direction GB/s peak) between the GPUs of one machine."""
    if gpu.nvlink_gbs and not (gpu.name in NVLINK_BRIDGE_PAIRS and gpus_per_node > 2):
        # nvlink_gbs is the datasheet's bidirectional total; a ring uses one direction per link.
        return "nvlink", gpu.nvlink_gbs / 2
    gen = PCIE_GEN.get(gpu.arch, 4)
    return f"pcie{gen}", PCIE_GBS[gen]


@dataclass(frozen=True)
class Scaling:
    world_size: int
    num_nodes: int
    gpus_per_node: int
    bus_gbs: float  # achieved all-reduce bus bandwidth, GB/s (0 for one GPU)
    allreduce_seconds: float
    exposed_seconds: float
    efficiency: float  # per-GPU throughput here / on one GPU, 0..1
    interconnect: str  # "single gpu" | "nvlink" | "pcie4" | "nvlink + 400 Gbit/s efa" ...


def allreduce_seconds(grad_bytes: float, world_size: int, bus_gbs: float) -> float:
    """NCCL ring all-reduce: every rank sends and receives 2(P-1)/P of the buffer."""
    if world_size <= 1:
        return 0.0
    return 2 * (world_size - 1) / world_size * grad_bytes / (bus_gbs * 1e9)


def exposed_seconds(allreduce: float, backward: float, overlap: float = OVERLAP) -> float:
    """The part of the all-reduce the step waits for. DDP launches a bucket's all-reduce as
    soon as its gradients are ready, so up to ``overlap`` of the backward pass hides it; the
    last bucket and the kernels' contention for the GPU always show."""
    return allreduce - overlap * min(allreduce, backward)


def nvlink_sync_efficiency(world_size: int, published: float) -> float:
    """E_sync of ``world_size`` ranks on one NVLink machine: measured at 2, the published 8-GPU
    figure from 8 up, linear in log2(ranks) between (an estimate: 4 GPUs were not measured)."""
    if world_size <= 2:
        return NVLINK_SYNC_EFFICIENCY
    if world_size >= _PUBLISHED_WORLD:
        return published
    t = (math.log2(world_size) - 1) / (math.log2(_PUBLISHED_WORLD) - 1)
    return NVLINK_SYNC_EFFICIENCY + t * (published - NVLINK_SYNC_EFFICIENCY)


def scale(step_1: float, compute_seconds: float, grad_bytes: float, gpu, gpus_per_node: int,
          num_nodes: int = 1, network: Network | None = None, sync_efficiency: float = 1.0,
          overlap: float = OVERLAP, host_bound: bool = False) -> Scaling:
    """Scaling of one GPU's step (``step_1`` seconds, of which ``compute_seconds`` is GPU work)
    to gpus_per_node x num_nodes data-parallel ranks with per-GPU batch unchanged.

    ``sync_efficiency`` is E_sync for PCIe and multi-machine rings (calibration's published
    figure); one NVLink machine uses the measured nvlink_sync_efficiency() instead.
    ``host_bound``: the step waits on the host (launches, Python), not the GPU, so the host
    time DDP adds per step (DDP_HOST_SECONDS) shows in full; a GPU-bound step hides it."""
    g, n = max(1, gpus_per_node), max(1, num_nodes)
    world = g * n
    if world == 1:
        return Scaling(1, n, g, 0.0, 0.0, 0.0, 1.0, "single gpu")
    parts, buses = [], []
    if g > 1:
        link, gbs = intra_node(gpu, g)
        if n == 1 and link == "nvlink":
            sync_efficiency = nvlink_sync_efficiency(world, sync_efficiency)
        parts.append(link)
        buses.append(gbs * LINK_EFFICIENCY)
    if n > 1:
        net = network or network_for("", None)
        parts.append(f"{net.gbps:g} Gbit/s {net.fabric}")
        buses.append(net.gbps / 8 * NET_EFFICIENCY)
    bus = min(buses)
    ar = allreduce_seconds(grad_bytes, world, bus)
    exposed = exposed_seconds(ar, BACKWARD_FRACTION * compute_seconds, overlap)
    host = DDP_HOST_SECONDS if host_bound else 0.0
    eff = step_1 / (step_1 + exposed + host) * sync_efficiency
    return Scaling(world, n, g, bus, ar, exposed, min(1.0, eff), " + ".join(parts))


# --- Calibration of OVERLAP on published scaling runs ------------------------------------

@dataclass(frozen=True)
class ScalingPoint:
    label: str
    single_samples_per_second: float  # one GPU, same model and per-GPU batch
    batch_size: int
    params: float
    gpus_per_node: int
    num_nodes: int
    intra_gbs: float  # one-direction peak between GPUs of a machine
    network_gbps: float
    measured_efficiency: float
    source: str
    role: str = "fit"  # fit | check


_HOROVOD = "https://github.com/horovod/horovod/blob/master/docs/benchmarks.rst"
_HOROVOD_128 = "https://github.com/bobohuang/horovod (a copy of the early-2018 Horovod README: 32 servers)"
_TF_BENCH = "https://www.tensorflow.org/performance/benchmarks (DGX-1 P100, May 2017)"
# Horovod: 128 servers x 4 Pascal GPUs, 25 Gbit/s RoCE, tf_cnn_benchmarks fp32 batch 64 per GPU.
# Single-GPU rates are TensorFlow's own P100 figures (DGX-1, batch 64, synthetic); ResNet-101
# is not on that page and is interpolated by multiply-adds between ResNet-50 and ResNet-152.
SCALING_POINTS = (
    ScalingPoint("VGG-16, 512 GPUs, 25 Gbit/s", 154, 64, 138.36e6, 4, 128, 12.5, 25, 0.68, _HOROVOD),
    ScalingPoint("ResNet-101, 512 GPUs, 25 Gbit/s", 125, 64, 44.55e6, 4, 128, 12.5, 25, 0.90, _HOROVOD),
    ScalingPoint("Inception V3, 512 GPUs, 25 Gbit/s", 142, 64, 23.83e6, 4, 128, 12.5, 25, 0.90, _HOROVOD),
    ScalingPoint("VGG-16, 128 GPUs, 25 Gbit/s", 154, 64, 138.36e6, 4, 32, 12.5, 25, 0.79, _HOROVOD_128,
                 "check"),
    # DGX-1 P100 (NVLink 80 GB/s one direction), TF 1.x replicated NCCL, synthetic data.
    ScalingPoint("VGG-16, 8 GPUs NVLink, batch 64", 154, 64, 138.36e6, 8, 1, 80, 0, 1081 / (8 * 154), _TF_BENCH,
                 "check"),
    ScalingPoint("VGG-16, 8 GPUs NVLink, batch 32", 144, 32, 138.36e6, 8, 1, 80, 0, 820 / (8 * 144), _TF_BENCH,
                 "check"),
)


class _Link:
    """Stand-in GPUSpec for a calibration point: only the NVLink/PCIe figure matters."""

    def __init__(self, one_direction_gbs: float):
        self.name, self.arch, self.nvlink_gbs = "calibration", "pascal", one_direction_gbs * 2


def predict_point(p: ScalingPoint, sync_efficiency: float, overlap: float = OVERLAP) -> float:
    step_1 = p.batch_size / p.single_samples_per_second
    net = Network(p.network_gbps, "rdma", p.source) if p.num_nodes > 1 else None
    return scale(step_1, step_1, p.params * 4, _Link(p.intra_gbs), p.gpus_per_node, p.num_nodes, net,
                 sync_efficiency, overlap).efficiency


def fit_overlap(sync_efficiency: float, points=SCALING_POINTS) -> float:
    """OVERLAP minimising squared log error on the fit points (grid of 0.01)."""
    fit = [p for p in points if p.role == "fit"]

    def loss(f: float) -> float:
        return sum(math.log(predict_point(p, sync_efficiency, f) / p.measured_efficiency) ** 2 for p in fit)

    return min((i / 100 for i in range(101)), key=loss)


# --- Calibration of E_sync and DDP_HOST_SECONDS on two NVLink GPUs ---------------------------

@dataclass(frozen=True)
class MeasuredDDP:
    """One model's probe step on 1 and on 2 GPUs of one NVLink machine (same per-GPU batch)."""

    model: str
    step_1: float  # seconds per step, one GPU
    step_2: float  # seconds per step, two GPUs (DDP)
    grad_bytes: float  # fp32 gradients all-reduced per step
    host_bound: bool  # the 1-GPU step waits on the host, not the GPU
    role: str = "fit"  # fit | check

    @property
    def efficiency(self) -> float:
        return self.step_1 / self.step_2


_H200X2 = "bench/results/h200x2_ddp (bench/ddp_scaling.py; two H200 SXM, NV18, torch 2.11)"
# bf16, batch 256 per GPU, 224x224, 1000 classes, the payload's CUDA defaults (compile, channels_last,
# fast layers); plain-layer rows (--no-fast-layers) are checks. mlp's step (1.6 ms) is launch-bound.
NVLINK_POINTS = (
    MeasuredDDP("vgg16", 0.049784, 0.052444, 553.43e6, False),
    MeasuredDDP("vgg11", 0.027052, 0.02877, 531.45e6, False),
    MeasuredDDP("resnet50", 0.036654, 0.038214, 102.23e6, False),
    MeasuredDDP("resnet18", 0.012394, 0.01376, 46.76e6, False),
    MeasuredDDP("tinycnn", 0.011051, 0.011226, 0.89e6, False),
    MeasuredDDP("mlp", 0.00158, 0.002494, 3.44e6, True),
    MeasuredDDP("vgg16 plain layers", 0.052584, 0.055248, 553.43e6, False, "check"),
    MeasuredDDP("resnet50 plain layers", 0.038194, 0.04043, 102.23e6, False, "check"),
)


def _exposed_2(p: MeasuredDDP, gpu) -> float:
    ar = allreduce_seconds(p.grad_bytes, 2, intra_node(gpu, 2)[1] * LINK_EFFICIENCY)
    return exposed_seconds(ar, BACKWARD_FRACTION * p.step_1)


def predict_measured(p: MeasuredDDP, gpu, sync: float = NVLINK_SYNC_EFFICIENCY,
                     host_s: float = DDP_HOST_SECONDS) -> float:
    """Predicted 2-GPU efficiency of a measured point from its measured 1-GPU step."""
    host = host_s if p.host_bound else 0.0
    return min(1.0, p.step_1 / (p.step_1 + _exposed_2(p, gpu) + host) * sync)


def fit_nvlink(gpu, points=NVLINK_POINTS) -> tuple[float, float]:
    """(E_sync, DDP_HOST_SECONDS) from the fit points. E_sync minimises the worst relative error
    over the GPU-bound points (grid of 0.005); the host time is what the host-bound points'
    2-GPU step holds beyond that (mean, rounded to 0.05 ms)."""
    gpu_bound = [p for p in points if p.role == "fit" and not p.host_bound]
    host_bound = [p for p in points if p.role == "fit" and p.host_bound]

    def worst(e: float) -> float:
        return max(abs(math.log(predict_measured(p, gpu, e, 0.0) / p.efficiency)) for p in gpu_bound)

    sync = min((i / 200 for i in range(160, 201)), key=worst)
    extra = [p.step_2 * sync - p.step_1 - _exposed_2(p, gpu) for p in host_bound]
    host = round(sum(extra) / len(extra) / 5e-5) * 5e-5 if extra else DDP_HOST_SECONDS
    return sync, round(host, 6)
