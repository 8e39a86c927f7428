"""SkyPilot v8 ``vms.csv`` (AWS, GCP) -> one offer per (provider, type, GPU, count, region).

Used twice: to build the bundled snapshot (``python -m launcher.catalog.bundle``) and by
``update_catalog`` on freshly downloaded files, so both go through the same rules:

* Columns are found by header name (AWS and GCP order them differently; GpuInfo holds commas).
* Only NVIDIA GPUs are kept: Trainium, Inferentia, Gaudi, FPGAs, TPUs and the AMD Radeon
  Pro V520 (graphics part, no CUDA) are dropped, and so are fractional GPUs (AWS g6f/gr6f,
  AcceleratorCount < 1), which cannot run a training job on a whole device.
* One row per zone becomes one offer per region: zones listed, cheapest on-demand and spot
  price across them, blank prices -> None.
* GCP prices the host VM and the GPUs on separate rows. A GPU VM in a zone is the host row
  plus the accelerator row for the same zone, GPU and count (see ``gcp_hosts``).
"""

from __future__ import annotations

import ast
import csv
import io
from dataclasses import dataclass, field

from launcher.errors import CatalogError
from launcher.catalog.model import Offer

# Catalog spelling -> normalised name. Anything not listed is not a trainable NVIDIA GPU.
GPU_NAMES = {
    "A100": "A100", "A100-80GB": "A100-80GB", "A10G": "A10G", "A10": "A10",
    "B200": "B200", "B300": "B300", "H100": "H100", "H100-MEGA": "H100-MEGA", "H200": "H200",
    "L4": "L4", "L40S": "L40S", "T4": "T4", "T4g": "T4g", "V100": "V100",
    "V100-32GB": "V100-32GB", "P100": "P100", "P4": "P4", "K80": "K80",
    "RTX PRO Server 6000": "RTX-PRO-6000",
}

AWS_COLUMNS = ("InstanceType", "AcceleratorName", "AcceleratorCount", "vCPUs", "MemoryGiB",
               "GpuInfo", "Price", "SpotPrice", "Region", "AvailabilityZone")
GCP_COLUMNS = ("InstanceType", "vCPUs", "MemoryGiB", "AcceleratorName", "AcceleratorCount",
               "GpuInfo", "Region", "AvailabilityZone", "Price", "SpotPrice")

# GCP machine families with the GPUs built in: (gpu, count) -> host machine type.
_FIXED = {
    "A100": {1: "a2-highgpu-1g", 2: "a2-highgpu-2g", 4: "a2-highgpu-4g", 8: "a2-highgpu-8g",
             16: "a2-megagpu-16g"},
    "A100-80GB": {n: f"a2-ultragpu-{n}g" for n in (1, 2, 4, 8)},
    "H100": {n: f"a3-highgpu-{n}g" for n in (1, 2, 4, 8)},
    "H100-MEGA": {8: "a3-megagpu-8g"},
    "H200": {8: "a3-ultragpu-8g"},
    "B200": {8: "a4-highgpu-8g"},
}
# g2 shapes per L4 count (GCP docs, G2 machine types): every shape is a separate offer.
_G2 = {1: ("g2-standard-4", "g2-standard-8", "g2-standard-12", "g2-standard-16", "g2-standard-32"),
       2: ("g2-standard-24",), 4: ("g2-standard-48",), 8: ("g2-standard-96",)}
# GPUs attached to an N1 VM: 8 vCPUs per GPU (n1-standard-8 per GPU, like AWS p3.2xlarge and
# g4dn.2xlarge), which stays inside GCP's per-GPU vCPU caps (V100 x1 allows 12).
_N1_ATTACH = ("T4", "V100", "P100", "P4", "K80")
_N1_VCPUS_PER_GPU = 8


def gcp_hosts(gpu: str, count: int) -> tuple[str, ...]:
    """The GCP host machine types that carry ``count`` x ``gpu`` (empty: not offered)."""
    if gpu in _FIXED:
        host = _FIXED[gpu].get(count)
        return (host,) if host else ()
    if gpu == "L4":
        return _G2.get(count, ())
    if gpu in _N1_ATTACH:
        return (f"n1-standard-{_N1_VCPUS_PER_GPU * count}",)
    return ()


def _price(text: str) -> float | None:
    text = (text or "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value >= 0 else None


def _add(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a + b, 6)


def _positive(p: float | None) -> float | None:
    # A whole machine at $0/h is a catalog gap, not a free GPU (cf. sky#3615).
    return p if p else None


def _gpu_memory_gib(info: str) -> float | None:
    """Per-GPU memory from GpuInfo, a Python-dict string: Gpus[0].MemoryInfo.SizeInMiB."""
    if not info or not info.strip():
        return None
    try:
        data = ast.literal_eval(info)
        mib = data["Gpus"][0]["MemoryInfo"]["SizeInMiB"]
    except (ValueError, SyntaxError, KeyError, IndexError, TypeError):
        return None
    return round(float(mib) / 1024.0, 2)


def _reader(text: str, required: tuple[str, ...], what: str) -> csv.DictReader:
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in required if c not in (reader.fieldnames or [])]
    if missing:
        raise CatalogError(f"{what}: not a SkyPilot v8 vms.csv, missing column(s) {', '.join(missing)}",
                           "check the file or URL")
    return reader


def _gpu_count(text: str) -> int | None:
    """Whole GPU count, or None for blank/fractional counts."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return int(value) if value >= 1 and value == int(value) else None


@dataclass
class _Group:
    """Zone rows of one offer, folded as they stream by."""
    zones: set = field(default_factory=set)
    spot_zones: set = field(default_factory=set)
    best: tuple | None = None  # (total, host, accel) of the cheapest on-demand zone
    spot: float | None = None
    first: dict = field(default_factory=dict)

    def add(self, zone: str, total: float | None, spot: float | None,
            host: float | None = None, accel: float | None = None) -> None:
        if zone:
            self.zones.add(zone)
            if spot is not None:
                self.spot_zones.add(zone)
        if total is not None and (self.best is None or total < self.best[0]):
            self.best = (total, host, accel)
        if spot is not None and (self.spot is None or spot < self.spot):
            self.spot = spot


def _emit(groups: dict, provider: str) -> list[Offer]:
    offers = []
    for (itype, gpu, count, region), g in groups.items():
        total, host, accel = g.best if g.best else (None, None, None)
        offers.append(Offer(
            provider=provider, instance_type=itype, region=region,
            zones=tuple(sorted(g.zones)), gpu=gpu, gpu_count=count,
            vcpus=g.first["vcpus"], memory_gib=g.first["memory_gib"],
            gpu_memory_gib=g.first["gpu_memory_gib"],
            price=_positive(total), spot_price=_positive(g.spot),
            host_price=host, accelerator_price=accel,
            arch=g.first.get("arch", "x86_64"), spot_zones=tuple(sorted(g.spot_zones)),
        ))
    offers.sort(key=lambda o: (o.gpu, o.gpu_count, o.instance_type, o.region))
    return offers


def parse_aws(text: str) -> list[Offer]:
    groups: dict = {}
    for row in _reader(text, AWS_COLUMNS, "aws vms.csv"):
        gpu = GPU_NAMES.get(row["AcceleratorName"].strip())
        count = _gpu_count(row["AcceleratorCount"])
        if not gpu or not count or not row["InstanceType"]:
            continue
        key = (row["InstanceType"], gpu, count, row["Region"])
        g = groups.get(key)
        if g is None:
            g = groups[key] = _Group(first={
                "vcpus": float(row["vCPUs"] or 0), "memory_gib": float(row["MemoryGiB"] or 0),
                "gpu_memory_gib": _gpu_memory_gib(row["GpuInfo"]),
                "arch": (row.get("Arch") or "x86_64").strip() or "x86_64"})
        g.add(row["AvailabilityZone"], _price(row["Price"]), _price(row["SpotPrice"]))
    return _emit(groups, "aws")


def parse_gcp(text: str) -> list[Offer]:
    hosts: dict = {}  # (zone, machine type) -> row
    accels = []  # GPU rows: InstanceType is empty
    for row in _reader(text, GCP_COLUMNS, "gcp vms.csv"):
        if row["InstanceType"]:
            hosts[(row["AvailabilityZone"], row["InstanceType"])] = row
        elif row["AcceleratorName"] in GPU_NAMES:  # TPU rows share this shape; not kept
            accels.append(row)
    groups: dict = {}
    for acc in accels:
        gpu = GPU_NAMES[acc["AcceleratorName"]]
        count = _gpu_count(acc["AcceleratorCount"])
        if not count:
            continue
        zone = acc["AvailabilityZone"]
        for itype in gcp_hosts(gpu, count):
            host = hosts.get((zone, itype))
            if host is None:  # GPU sold in a zone that lacks this host type: no VM there
                continue
            key = (itype, gpu, count, acc["Region"])
            g = groups.get(key)
            if g is None:
                g = groups[key] = _Group(first={
                    "vcpus": float(host["vCPUs"] or 0), "memory_gib": float(host["MemoryGiB"] or 0),
                    "gpu_memory_gib": _gpu_memory_gib(acc["GpuInfo"])})
            hp, ap = _price(host["Price"]), _price(acc["Price"])
            g.add(zone, _add(hp, ap), _add(_price(host["SpotPrice"]), _price(acc["SpotPrice"])), hp, ap)
    return _emit(groups, "gcp")


def build_offers(aws_csv: str, gcp_csv: str) -> list[Offer]:
    offers = parse_aws(aws_csv) + parse_gcp(gcp_csv)
    if not offers:
        raise CatalogError("the downloaded catalogs hold no GPU offers", "the source format may have changed")
    return offers
