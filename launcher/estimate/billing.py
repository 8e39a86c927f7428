"""What a cloud charges for a machine that ran for some seconds.

AWS EC2 (Linux, on-demand and spot) and Google Compute Engine (VMs and attached GPUs) bill
per second with a one-minute minimum; sources in docs/estimator.md. Local and SSH machines
cost nothing to us.
"""

from __future__ import annotations

import math

MINIMUM_SECONDS = {"aws": 60, "gcp": 60}
FREE_PROVIDERS = ("local", "ssh", "free")


def billable_seconds(seconds: float, provider: str) -> int:
    """Whole seconds billed: rounded up, at least the provider's minimum."""
    if provider in FREE_PROVIDERS:
        return 0
    if seconds < 0:
        raise ValueError("seconds must be >= 0")
    return max(math.ceil(seconds), MINIMUM_SECONDS.get(provider, 60))


def bill_usd(seconds: float, price_per_hour: float | None, provider: str) -> float | None:
    """Dollars for one machine running ``seconds`` at ``price_per_hour``; None if unpriced."""
    if provider in FREE_PROVIDERS:
        return 0.0
    if price_per_hour is None:
        return None
    return billable_seconds(seconds, provider) * price_per_hour / 3600.0
