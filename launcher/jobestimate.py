"""Glue between the estimator and the commands that need one number set per job."""

from __future__ import annotations

from typing import Any

from launcher.errors import EstimateError


def for_machine(spec, provider: str, instance_type: str | None, price_per_hour: float | None, *, spot: bool,
                baseline: bool) -> dict[str, Any]:
    raise EstimateError("estimator not wired yet")


def full_estimate(spec, *, providers=("aws", "gcp"), baseline: bool = True, probe_seconds: float = 15.0,
                  top: int = 25, all_regions: bool = False) -> dict[str, Any]:
    raise EstimateError("estimator not wired yet")
