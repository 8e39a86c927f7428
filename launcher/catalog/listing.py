"""`gpujob gpus`: the catalog folded to one row per GPU model, or every offer of one GPU.

Prices here are per GPU-hour (an offer's machine price / its GPU count), so an 8-GPU machine
and a 1-GPU machine compare directly; ``gpu_offers`` also gives the machine's own $/h.
Memory and peak bf16 TFLOP/s come from ``launcher.catalog.gpus`` (dense datasheet figures;
None where the GPU has no bf16 tensor path or no figures), memory falling back to the
catalog's GpuInfo for GPUs without figures. Nothing here touches the disk beyond ``load_catalog`` or the network.
"""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass, field

from launcher.errors import UsageError
from launcher.catalog.model import Catalog, Offer, in_family
from launcher.catalog.reference import LAUNCH_PROVIDERS, NOTE, PROVIDERS as REFERENCE_PROVIDERS

ALL_PROVIDERS = LAUNCH_PROVIDERS + REFERENCE_PROVIDERS


@dataclass
class GpuRow:
    gpu: str
    memory_gib: float | None  # per GPU
    bf16_tflops: float | None  # dense peak per GPU; None: no bf16 tensor path or no figures
    # provider -> {"on_demand": cheapest $/GPU-h or None, "spot": cheapest spot $/GPU-h or None}
    prices: dict = field(default_factory=dict)
    regions: int = 0  # distinct (provider, region) pairs that sell it
    offers: int = 0
    launchable: bool = False  # sold by a provider gpujob launches on (aws, gcp)

    def cheapest(self, spot: bool = False) -> float | None:
        key = "spot" if spot else "on_demand"
        values = [p[key] for p in self.prices.values() if p[key] is not None]
        return min(values) if values else None


def _spec(gpu: str):
    from launcher.catalog.gpus import GPUS

    return GPUS.get(gpu)


def _memory(o: Offer) -> float | None:
    spec = _spec(o.gpu)
    return float(spec.memory_gib) if spec else o.gpu_memory_gib


def _per_gpu(price: float | None, count: int) -> float | None:
    return None if price is None else round(price / count, 4)


def _check_provider(provider: str | None) -> None:
    if provider and provider not in ALL_PROVIDERS:
        raise UsageError(f"the catalog has no provider '{provider}'", f"use one of {', '.join(ALL_PROVIDERS)}")


def filter_offers(catalog: Catalog, gpu: str | None = None, provider: str | None = None,
                  region: str | None = None, spot: bool = False, max_price: float | None = None,
                  min_memory: float | None = None) -> list[Offer]:
    """Offers passing every filter. gpu matches the family (A100 -> A100, A100-80GB); region is
    case-insensitive; spot keeps offers with a spot price; max_price is $/GPU-h (the spot price
    with spot=True, else on-demand); min_memory is GiB per GPU. Raises UsageError for an
    unknown provider."""
    _check_provider(provider)
    out = []
    for o in catalog.query(provider=provider, gpu=gpu, regions=[region] if region else None,
                           spot=True if spot else None, family=True):
        price = _per_gpu(o.spot_price if spot else o.price, o.gpu_count)
        if max_price is not None and (price is None or price > max_price):
            continue
        if min_memory is not None and (_memory(o) or 0.0) < min_memory:
            continue
        out.append(o)
    return out


def _no_match(catalog: Catalog, **asked) -> UsageError:
    what = ", ".join(f"--{k.replace('_', '-')}" + ("" if v is True else f" {v}")  # a flag: "--spot", not "--spot True"
                     for k, v in asked.items() if v not in (None, False))
    gpu = asked.get("gpu")
    names = catalog.gpus()
    if gpu and not any(in_family(n, gpu) for n in names):
        close = difflib.get_close_matches(gpu.upper(), [n.upper() for n in names], n=3, cutoff=0.5)
        hint = f"did you mean {' or '.join(n for n in names if n.upper() in close)}?" if close else \
            f"GPUs in the catalog: {', '.join(names)}"
        return UsageError(f"no GPU named {gpu!r} in the price catalog", hint)
    return UsageError(f"no offer matches {what or 'the filters'}", "loosen a filter; `gpujob gpus` lists them all")


def gpu_table(catalog: Catalog, **filters) -> list[GpuRow]:
    """One row per GPU model over the offers passing ``filter_offers(**filters)``, by name.
    Raises UsageError when nothing matches (naming the GPUs there are)."""
    offers = filter_offers(catalog, **filters)
    if not offers:
        raise _no_match(catalog, **filters)
    rows: dict[str, GpuRow] = {}
    regions: dict[str, set] = {}
    for o in offers:
        spec = _spec(o.gpu)
        row = rows.get(o.gpu)
        if row is None:
            row = rows[o.gpu] = GpuRow(gpu=o.gpu, memory_gib=_memory(o),
                                       bf16_tflops=spec.peak_tflops.get("bf16") if spec else None)
            regions[o.gpu] = set()
        row.offers += 1
        row.launchable = row.launchable or o.provider in LAUNCH_PROVIDERS
        regions[o.gpu].add((o.provider, o.region))
        best = row.prices.setdefault(o.provider, {"on_demand": None, "spot": None})
        for key, price in (("on_demand", o.price), ("spot", o.spot_price)):
            p = _per_gpu(price, o.gpu_count)
            if p is not None and (best[key] is None or p < best[key]):
                best[key] = p
    for name, row in rows.items():
        row.regions = len(regions[name])
        row.prices = {p: row.prices[p] for p in ALL_PROVIDERS if p in row.prices}
    return sorted(rows.values(), key=lambda r: r.gpu)


def gpu_offers(catalog: Catalog, gpu: str, **filters) -> list[dict]:
    """Every offer of one GPU family, cheapest $/GPU-h first (spot price with spot=True):
    provider, instance_type, gpu, gpu_count, region, zones, price and spot_price ($/h, whole
    machine), per-GPU $/h, memory, launchable and, for reference clouds, the note."""
    offers = filter_offers(catalog, gpu=gpu, **filters)
    if not offers:
        raise _no_match(catalog, gpu=gpu, **filters)
    spot = filters.get("spot", False)
    out = []
    for o in offers:
        launchable = o.provider in LAUNCH_PROVIDERS
        out.append({"provider": o.provider, "instance_type": o.instance_type, "gpu": o.gpu,
                    "gpu_count": o.gpu_count, "region": o.region, "zones": list(o.zones),
                    "price": o.price, "spot_price": o.spot_price,
                    "price_per_gpu": _per_gpu(o.price, o.gpu_count),
                    "spot_price_per_gpu": _per_gpu(o.spot_price, o.gpu_count),
                    "memory_gib": _memory(o), "vcpus": o.vcpus, "launchable": launchable,
                    "note": "" if launchable else NOTE})
    key = "spot_price_per_gpu" if spot else "price_per_gpu"
    out.sort(key=lambda r: (r[key] is None, r[key] or 0.0, r["provider"], r["instance_type"], r["region"]))
    return out


def gpus_result(catalog: Catalog, gpu: str | None = None, *, one: bool = False, **filters) -> dict:
    """The JSON contract of `gpujob gpus [--json]`: {"provenance", "rows"} (one row per GPU) or,
    with one=True (`gpujob gpus A100`), {"provenance", "gpu", "offers"}."""
    prov = {"source": catalog.provenance.source, "snapshot": catalog.provenance.snapshot,
            "age_days": catalog.provenance.age_days, "stale": catalog.provenance.stale,
            "reference_note": f"{', '.join(REFERENCE_PROVIDERS)}: {NOTE}"}
    if one:
        return {"provenance": prov, "gpu": gpu, "offers": gpu_offers(catalog, gpu, **filters)}
    return {"provenance": prov, "rows": [asdict(r) for r in gpu_table(catalog, gpu=gpu, **filters)]}
