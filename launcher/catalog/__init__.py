"""Price catalog (bundled SkyPilot v8 snapshot, refreshable) and GPU reference tables.

    cat = load_catalog()
    cat.query(gpu="A100", count=8, provider="aws", spot=True)
    cat.provenance.snapshot, cat.provenance.stale
"""

from __future__ import annotations

from launcher.catalog.model import Catalog, Offer, Provenance, STALE_AFTER_DAYS, in_family, normalize_gpu
from launcher.catalog.store import load_catalog, update_catalog, user_catalog_path

__all__ = ["Catalog", "Offer", "Provenance", "STALE_AFTER_DAYS", "SHOW_COLUMNS", "in_family",
           "load_catalog", "normalize_gpu", "show", "update_catalog", "user_catalog_path"]

# What `gpujob catalog show` prints, in order: (header, Offer attribute).
SHOW_COLUMNS = (
    ("PROVIDER", "provider"), ("GPU", "gpu"), ("N", "gpu_count"), ("INSTANCE", "instance_type"),
    ("REGION", "region"), ("VCPUS", "vcpus"), ("MEM_GIB", "memory_gib"),
    ("GPU_MEM_GIB", "gpu_memory_gib"), ("$/H", "price"), ("SPOT $/H", "spot_price"),
    ("ZONES", "zones"),
)


def _price_order(o: Offer) -> tuple:
    return (o.price is None, o.price or 0.0, o.spot_price is None, o.spot_price or 0.0,
            o.provider, o.region, o.instance_type)


def show(gpu: str | None = None, provider: str | None = None, region: str | None = None,
         count: int | None = None, spot: bool | None = None,
         catalog: Catalog | None = None) -> list[Offer]:
    """Offers for `gpujob catalog show`, cheapest on-demand first (unpriced last).

    gpu matches the family ("A100" also lists A100-80GB)."""
    cat = catalog or load_catalog()
    return sorted(cat.query(provider=provider, gpu=gpu, count=count, regions=[region] if region else None,
                            spot=spot, family=True), key=_price_order)
