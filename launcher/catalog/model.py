"""Offers, provenance and the in-memory catalog with its query."""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from typing import Iterable

STALE_AFTER_DAYS = 30.0

# Spellings users (and other catalogs) use -> the one name the snapshot stores.
# Keys are casefolded. "A100" on its own stays the 40 GB part, as in SkyPilot.
_ALIASES = {
    "a100-40gb": "A100",
    "a100 40gb": "A100",
    "a100-80g": "A100-80GB",
    "a100 80gb": "A100-80GB",
    "h100-80gb": "H100",
    "h100-sxm": "H100",
    "v100-16gb": "V100",
    "v100 32gb": "V100-32GB",
    "rtx pro server 6000": "RTX-PRO-6000",
    "rtx pro 6000": "RTX-PRO-6000",
    "rtxpro6000": "RTX-PRO-6000",
}


def normalize_gpu(name: str) -> str:
    """Canonical GPU name for a user or catalog spelling (unknown names pass through)."""
    key = " ".join(name.strip().split()).casefold()
    return _ALIASES.get(key, name.strip())


def in_family(name: str, query: str) -> bool:
    """True when GPU ``name`` belongs to the family a user typed: the same normalised name, or
    that name plus a variant suffix ("A100" -> A100, A100-80GB; "H100" -> H100-MEGA). Case-insensitive.
    An alias naming one part ("A100-40GB") matches that part only."""
    want = normalize_gpu(query).casefold()
    have = name.casefold()
    typed = " ".join(query.split()).casefold()
    return have == want or (typed == want and have.startswith(want + "-"))


@dataclass(frozen=True)
class Offer:
    provider: str  # "aws" | "gcp"
    instance_type: str  # AWS type, or GCP host machine type
    region: str
    zones: tuple[str, ...]  # sorted; AWS gives zone IDs (use1-az1), not names (us-east-1a)
    gpu: str  # normalised name, e.g. "A100-80GB"
    gpu_count: int
    vcpus: float
    memory_gib: float
    gpu_memory_gib: float | None  # per GPU
    price: float | None  # on-demand USD/h, whole machine (GCP: host + accelerators)
    spot_price: float | None
    host_price: float | None = None  # GCP only: the host part
    accelerator_price: float | None = None  # GCP only
    arch: str = "x86_64"  # host CPU; "arm64" for AWS g5g (T4g)
    spot_zones: tuple[str, ...] = ()  # zones that list a spot price (a spot launch elsewhere fails)

    @property
    def key(self) -> tuple[str, str, str, int, str]:
        return (self.provider, self.instance_type, self.gpu, self.gpu_count, self.region)


@dataclass(frozen=True)
class Provenance:
    source: str  # one line: where the prices come from
    snapshot: str  # ISO date of the prices
    age_days: float
    stale: bool  # older than STALE_AFTER_DAYS
    details: dict = field(default_factory=dict, hash=False, compare=False)


def make_provenance(source: str, snapshot: str, details: dict | None = None,
                    now: _dt.datetime | None = None) -> Provenance:
    """Age is measured from the snapshot date (midnight UTC) to ``now``."""
    now = now or _dt.datetime.now(_dt.timezone.utc)
    taken = _dt.datetime.fromisoformat(snapshot[:10]).replace(tzinfo=_dt.timezone.utc)
    age = (now - taken).total_seconds() / 86400.0
    return Provenance(source, snapshot[:10], round(age, 2), age > STALE_AFTER_DAYS, dict(details or {}))


class Catalog:
    """A list of offers plus where they came from. Queries never touch the disk."""

    def __init__(self, offers: Iterable[Offer], provenance: Provenance):
        self.offers: list[Offer] = list(offers)
        self.provenance = provenance

    def __len__(self) -> int:
        return len(self.offers)

    def query(self, provider: str | None = None, gpu: str | None = None, count: int | None = None,
              regions: Iterable[str] | str | None = None, spot: bool | None = None,
              family: bool = False) -> list[Offer]:
        """Offers matching every given filter, in catalog order.

        gpu matches the normalised name exactly, ignoring case ("A100" is not "A100-80GB");
        with family=True it matches the family (``in_family``: "A100" is A100 and A100-80GB).
        spot=True keeps offers with a spot price, spot=False those with an on-demand price.
        """
        want_gpu = normalize_gpu(gpu).casefold() if gpu else None
        want_provider = provider.casefold() if provider else None
        if isinstance(regions, str):
            regions = [regions]
        want_regions = {r.casefold() for r in regions} if regions else None
        out = []
        for o in self.offers:
            if want_provider and o.provider != want_provider:
                continue
            if want_gpu and o.gpu.casefold() != want_gpu and not (family and in_family(o.gpu, gpu)):
                continue
            if count is not None and o.gpu_count != count:
                continue
            if want_regions and o.region.casefold() not in want_regions:
                continue
            if spot is True and o.spot_price is None:
                continue
            if spot is False and o.price is None:
                continue
            out.append(o)
        return out

    def gpus(self) -> list[str]:
        return sorted({o.gpu for o in self.offers})

    def regions(self, provider: str | None = None) -> list[str]:
        return sorted({o.region for o in self.offers if provider is None or o.provider == provider})
