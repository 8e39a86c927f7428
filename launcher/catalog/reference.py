"""Reference price rows: Azure, Lambda Cloud and Vast.ai ``vms.csv`` -> offers.

These clouds are priced (in ``gpujob gpus``, ``catalog show`` and the estimate) but gpujob
cannot launch on them yet: every offer here is "estimate only, not a launch target yet".
The files use the SkyPilot catalog format (bundled copy: anycloud-sh/catalog@62ff0a9, see
``launcher/catalog/data/README.md``); the column order differs per file, so columns are found
by header name. Rules beyond ``build.py``'s (which this reuses):

* Azure's last column, ``Generation``, is written ``V1,V2`` without quotes: such a row has one
  field more than the header, and the trailing fields are joined back into the last column.
* Only whole NVIDIA GPUs are kept (AMD MI25/MI300X and the fractional A10 slices of Azure
  NVads A10 v5 are dropped), the same rule as AWS and GCP.
* Prices of 0 or blank mean "not offered" (Vast writes ``0.00`` for no interruptible price).
* Azure's GpuInfo carries no memory: per-GPU memory comes from ``launcher.catalog.gpus``.
* Vast's ``Region`` is a free-text location (``"Oregon, US, NA"``); it is kept as written,
  with a leading ", " (unknown city) removed.
"""

from __future__ import annotations

import csv
import io

from launcher.errors import CatalogError
from launcher.catalog.build import GPU_NAMES, _Group, _emit, _gpu_count, _gpu_memory_gib, _price
from launcher.catalog.model import Offer

PROVIDERS = ("azure", "lambda", "vast")
LAUNCH_PROVIDERS = ("aws", "gcp")
NOTE = "estimate only, not a launch target yet"
COLUMNS = ("InstanceType", "AcceleratorName", "AcceleratorCount", "vCPUs", "MemoryGiB", "GpuInfo",
           "Price", "SpotPrice", "Region")

# Spellings these files use beyond GPU_NAMES -> the normalised name (launcher.catalog.gpus).
_EXTRA_NAMES = {
    "RTX4090": "RTX4090", "RTX5090": "RTX5090", "RTX3090": "RTX3090", "RTX3060": "RTX3060",
    "RTX4070": "RTX4070", "RTX4060": "RTX4060", "RTX5070": "RTX5070",
    "A6000": "RTX-A6000", "RTXA6000": "RTX-A6000", "RTXA5000": "RTX-A5000",
    "RTX6000": "RTX6000", "RTX6000-Ada": "RTX6000-Ada", "RTX5880-Ada": "RTX5880-Ada",
    "RTXPRO6000WS": "RTX-PRO-6000-WS", "GH200": "GH200", "M60": "M60",
}
NAMES = {**GPU_NAMES, **_EXTRA_NAMES}


def is_reference(provider: str) -> bool:
    """True for a provider that is priced but cannot be launched on."""
    return provider in PROVIDERS


def _rows(text: str, what: str):
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None) or []
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise CatalogError(f"{what}: not a SkyPilot-format vms.csv, missing column(s) {', '.join(missing)}",
                           "check the file or URL")
    width = len(header)
    for fields in reader:
        if not fields:
            continue
        if len(fields) > width:  # Azure: unquoted "V1,V2" in the last column
            fields = fields[:width - 1] + [",".join(fields[width - 1:])]
        yield dict(zip(header, fields))


def _region(provider: str, text: str) -> str:
    text = " ".join(text.split())
    return text.lstrip(", ").strip() if provider == "vast" else text


def parse_reference(provider: str, text: str) -> list[Offer]:
    """Offers of one reference provider's vms.csv, one per (type, GPU, count, region).

    Raises CatalogError when a required column is missing.
    """
    if provider not in PROVIDERS:
        raise CatalogError(f"no reference catalog for provider {provider!r}", f"use one of {', '.join(PROVIDERS)}")
    groups: dict = {}
    for row in _rows(text, f"{provider} vms.csv"):
        gpu = NAMES.get((row.get("AcceleratorName") or "").strip())
        count = _gpu_count(row.get("AcceleratorCount", ""))
        if not gpu or not count or not row.get("InstanceType"):
            continue
        region = _region(provider, row.get("Region", ""))
        key = (row["InstanceType"], gpu, count, region)
        g = groups.get(key)
        if g is None:
            g = groups[key] = _Group(first={
                "vcpus": float(row.get("vCPUs") or 0), "memory_gib": float(row.get("MemoryGiB") or 0),
                "gpu_memory_gib": _gpu_memory_gib(row.get("GpuInfo", ""))})
        g.add("", _price(row.get("Price", "")), _price(row.get("SpotPrice", "")))
    offers = _emit(groups, provider)
    if provider == "vast":
        offers = [_vast_fix(o) for o in offers]
    return [_with_memory(o) for o in offers]


def _with_memory(o: Offer) -> Offer:
    """Azure's GpuInfo is only a name: per-GPU memory then comes from the GPU table."""
    if o.gpu_memory_gib is not None:
        return o
    from dataclasses import replace

    from launcher.catalog.gpus import GPUS

    spec = GPUS.get(o.gpu)
    return replace(o, gpu_memory_gib=float(spec.memory_gib)) if spec else o


# Vast names a GPU without its memory size; the offer's memory tells the part apart.
_BY_MEMORY = {"A100": (70.0, "A100-80GB"), "V100": (24.0, "V100-32GB")}


def _vast_fix(o: Offer) -> Offer:
    """Vast's GpuInfo holds the memory of all the offer's GPUs: per GPU is 1/count; A100 80 GB
    and V100 32 GB are told apart by that memory."""
    from dataclasses import replace

    mem = o.gpu_memory_gib
    if mem and o.gpu_count > 1:
        mem = round(mem / o.gpu_count, 2)
    gpu = o.gpu
    if o.gpu in _BY_MEMORY and mem and mem >= _BY_MEMORY[o.gpu][0]:
        gpu = _BY_MEMORY[o.gpu][1]
    return replace(o, gpu_memory_gib=mem, gpu=gpu)
