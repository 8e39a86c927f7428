"""Per-GPU hardware figures for the throughput model.

Peaks are dense (no 2:4 sparsity), in TFLOPS per GPU: "fp32" is the non-tensor rate,
"tf32"/"fp16"/"bf16" the tensor-core rates. None means the GPU has no such tensor path:
``GPUSpec.peak()`` then falls back to the fp32 rate (TF32 math on Volta/Turing/Pascal runs as
plain FP32; bf16 autocast there has no fast path), which is the rate a job actually gets.
Where a datasheet gives sparse figures only, the dense value is half of it.
Memory is GiB as the clouds report it (catalog GpuInfo); bandwidth is GB/s per GPU;
nvlink_gbs is the datasheet's total NVLink bandwidth per GPU (None: PCIe only).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field, replace

from launcher.errors import CatalogError, UnknownGPU
from launcher.catalog.model import normalize_gpu

PRECISIONS = ("fp32", "tf32", "fp16", "bf16")


@dataclass(frozen=True)
class GPUSpec:
    name: str
    arch: str  # "kepler"|"pascal"|"volta"|"turing"|"ampere"|"ada"|"hopper"|"blackwell"
    memory_gib: float
    bandwidth_gbs: float
    peak_tflops: dict = field(hash=False)  # keys PRECISIONS, dense TFLOPS, None = no tensor path
    nvlink_gbs: float | None
    source: str  # public datasheet / spec page
    note: str = ""  # what is estimated rather than read off a datasheet

    def peak(self, precision: str) -> float:
        """Dense peak TFLOPS for a training precision, with the documented fp32 fallback."""
        if precision not in PRECISIONS:
            raise CatalogError(f"unknown precision {precision!r}", f"use one of {', '.join(PRECISIONS)}")
        value = self.peak_tflops.get(precision)
        return value if value is not None else self.peak_tflops["fp32"]


def _p(fp32: float, tf32: float | None, fp16: float | None, bf16: float | None) -> dict:
    return {"fp32": fp32, "tf32": tf32, "fp16": fp16, "bf16": bf16}


_NV = "https://www.nvidia.com"
_SPECS = [
    GPUSpec("K80", "kepler", 12, 240, _p(4.37, None, None, None), None,
            "https://www.nvidia.com/en-gb/data-center/tesla-k80/",
            "one of the two GPUs on a K80 board: half the board's 8.73 TFLOPS boost / 480 GB/s"),
    GPUSpec("P4", "pascal", 8, 192, _p(5.5, None, None, None), None,
            "https://images.nvidia.com/content/pdf/tesla/184457-Tesla-P4-Datasheet-NV-Final-Letter-Web.pdf",
            "GP104 FP16 runs at 1/64 rate, so fp16 is listed as None (fp32 fallback)"),
    GPUSpec("P100", "pascal", 16, 732, _p(9.3, None, 18.7, None), None,
            "https://images.nvidia.com/content/tesla/pdf/nvidia-tesla-p100-PCIe-datasheet.pdf",
            "PCIe 16 GB part (GCP, Kaggle); fp16 is the packed-half rate, no tensor cores"),
    GPUSpec("V100", "volta", 16, 900, _p(15.7, None, 125.0, None), 300,
            "https://images.nvidia.com/content/technologies/volta/pdf/tesla-volta-v100-datasheet-letter-fnl-web.pdf",
            "SXM2 figures (AWS p3, GCP V100)"),
    GPUSpec("T4", "turing", 16, 320, _p(8.1, None, 65.0, None), None,
            "https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/tesla-t4/t4-tensor-core-datasheet-951643.pdf",
            "fp16 is the mixed-precision tensor peak; sustained clocks sit well below it at 70 W"),
    GPUSpec("A10", "ampere", 24, 600, _p(31.2, 62.5, 125.0, 125.0), None,
            "https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/a10/pdf/a10-datasheet.pdf"),
    GPUSpec("A10G", "ampere", 24, 600, _p(31.2, 35.0, 70.0, 70.0), None,
            "https://www.baseten.co/blog/nvidia-a10-vs-a10g-for-ml-model-inference/",
            "estimate: AWS-only part with no NVIDIA datasheet; tensor rates as published by Baseten "
            "(about 56% of the A10's), memory/bandwidth equal to the A10"),
    GPUSpec("A100", "ampere", 40, 1555, _p(19.5, 156.0, 312.0, 312.0), 600,
            "https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/a100/pdf/nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf",
            "A100 40GB SXM (AWS p4d, GCP a2-highgpu)"),
    GPUSpec("A100-80GB", "ampere", 80, 2039, _p(19.5, 156.0, 312.0, 312.0), 600,
            "https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/a100/pdf/nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf",
            "A100 80GB SXM (AWS p4de, GCP a2-ultragpu)"),
    GPUSpec("L4", "ada", 24, 300, _p(30.3, 60.0, 121.0, 121.0), None,
            "https://www.nvidia.com/en-us/data-center/l4/",
            "datasheet tensor figures are with sparsity (120/242); dense is half"),
    GPUSpec("L40S", "ada", 48, 864, _p(91.6, 183.0, 362.05, 362.05), None,
            "https://www.nvidia.com/en-us/data-center/l40s/"),
    GPUSpec("H100", "hopper", 80, 3350, _p(67.0, 494.5, 989.5, 989.5), 900,
            "https://resources.nvidia.com/en-us-tensor-core/nvidia-tensor-core-gpu-datasheet",
            "H100 SXM (AWS p5, GCP a3); datasheet 989/1979 TFLOPS are with sparsity"),
    GPUSpec("H100-PCIE", "hopper", 80, 2000, _p(51.0, 378.0, 756.5, 756.5), 600,
            "https://resources.nvidia.com/en-us-tensor-core/nvidia-tensor-core-gpu-datasheet",
            "not in the AWS/GCP snapshot; for bring-your-own machines"),
    GPUSpec("H200", "hopper", 141, 4800, _p(67.0, 494.5, 989.5, 989.5), 900,
            "https://www.nvidia.com/en-us/data-center/h200/",
            "H200 SXM: H100 SXM compute with 141 GB HBM3e"),
    GPUSpec("B200", "blackwell", 179, 8000, _p(75.0, 1125.0, 2250.0, 2250.0), 1800,
            "https://www.nvidia.com/en-us/data-center/hgx/",
            "HGX B200 per GPU = system figures / 8 (FP32 600 TF, TF32 18 PF and BF16 36 PF sparse); "
            "memory 179 GiB as AWS reports it"),
    GPUSpec("B300", "blackwell", 268, 8000, _p(75.0, 1125.0, 2250.0, 2250.0), 1800,
            "https://www.nvidia.com/en-us/data-center/hgx/",
            "estimate: HGX B300 lists the same FP32/TF32/BF16 system totals as HGX B200; "
            "memory 268 GiB as AWS reports it (288 GB marketed)"),
    GPUSpec("RTX-PRO-6000", "blackwell", 96, 1597, _p(120.0, 250.0, 500.0, 500.0), None,
            "https://www.nvidia.com/en-us/data-center/rtx-pro-6000-blackwell-server-edition/",
            "estimate: datasheet gives FP32 (~120 TF) and 4 PFLOPS FP4 with sparsity; tensor rates "
            "derived by halving per precision step (FP4->FP8->FP16->TF32) and removing sparsity"),
]

# GPUs priced only by the reference clouds (Azure, Lambda, Vast.ai; launcher/catalog/reference.py).
# GeForce/RTX figures are the "with FP32 accumulate" tensor rates (what autocast training gets).
_ADA_WP = "https://images.nvidia.com/aem-dam/Solutions/geforce/ada/nvidia-ada-gpu-architecture.pdf"
_AMPERE_WP = "https://www.nvidia.com/content/PDF/nvidia-ampere-ga-102-gpu-architecture-whitepaper-v2.pdf"
_SPECS += [
    GPUSpec("RTX3090", "ampere", 24, 936, _p(35.6, 35.6, 71.0, 71.0), None, _AMPERE_WP,
            "GeForce: tensor rates with FP32 accumulate (dense); datasheet sparse figures are double"),
    GPUSpec("RTX-A6000", "ampere", 48, 768, _p(38.7, 77.4, 154.8, 154.8), None, _AMPERE_WP,
            "dense = half of the whitepaper's sparse figures"),
    GPUSpec("RTX4090", "ada", 24, 1008, _p(82.6, 82.6, 165.2, 165.2), None, _ADA_WP,
            "GeForce: tensor rates with FP32 accumulate (dense), half of the FP16-accumulate rate"),
    GPUSpec("RTX5090", "blackwell", 32, 1792, _p(104.8, 104.8, 209.5, 209.5), None,
            "https://images.nvidia.com/aem-dam/Solutions/geforce/blackwell/nvidia-rtx-blackwell-gpu-architecture.pdf",
            "GeForce: tensor rates with FP32 accumulate (dense)"),
]

GPUS: dict[str, GPUSpec] = {s.name: s for s in _SPECS}
# Same silicon, different name in the catalogs.
GPUS["V100-32GB"] = replace(GPUS["V100"], name="V100-32GB", memory_gib=32,
                            note="SXM2 32 GB (AWS p3dn); compute as V100")
GPUS["T4g"] = replace(GPUS["T4"], name="T4g", note="a T4 behind an arm64 Graviton2 host (AWS g5g)")
GPUS["GH200"] = replace(GPUS["H100"], name="GH200", memory_gib=96, bandwidth_gbs=4000,
                        source="https://www.nvidia.com/en-us/data-center/grace-hopper-superchip/",
                        note="the Hopper GPU of a GH200 (96 GB HBM3, 4 TB/s): H100 SXM compute")
GPUS["RTX-PRO-6000-WS"] = replace(GPUS["RTX-PRO-6000"], name="RTX-PRO-6000-WS",
                                  note="workstation edition; figures as the server edition (estimate)")
GPUS["H100-MEGA"] = replace(GPUS["H100"], name="H100-MEGA",
                            note="H100 SXM in GCP a3-megagpu-8g (more GPU networking, same GPU)")


def get_gpu(name: str) -> GPUSpec:
    """The spec for a GPU name, case-insensitive, aliases accepted (A100-40GB -> A100)."""
    canonical = normalize_gpu(name)
    by_fold = {k.casefold(): v for k, v in GPUS.items()}
    spec = by_fold.get(canonical.casefold())
    if spec is not None:
        return spec
    close = difflib.get_close_matches(canonical.upper(), [k.upper() for k in GPUS], n=3, cutoff=0.5)
    names = [k for k in GPUS if k.upper() in close]
    hint = f"did you mean {' or '.join(names)}?" if names else f"known GPUs: {', '.join(sorted(GPUS))}"
    raise UnknownGPU(name, hint)
