"""Spot recovery policy: whether a reclaimed run gets another machine, on which market, and the
record of the attempt that ended.

With ``resources.spot: true`` a run whose machine the cloud reclaims is restarted up to
``limits.max_restarts`` times, resuming from its last checkpoint. With
``resources.spot_fallback: on-demand`` the restart after ``max_restarts`` spot failures runs
on-demand (restarts never exceed ``max_restarts``); without it the run gives up
(state spot-interrupted, exit 10).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from launcher.job import DEFAULT_ENTRYPOINT


@dataclass(frozen=True)
class NextAttempt:
    number: int  # 2 for the first restart
    spot: bool  # False: the on-demand fallback
    spec: Any  # the JobSpec the attempt launches and runs (market, --resume)


def plan_next(spec, reclaimed: int) -> tuple[NextAttempt | None, str]:
    """After the ``reclaimed``-th spot reclaim of a run of ``spec``: the next attempt, or None and
    why not (one phrase for the error message)."""
    limit = spec.limits.max_restarts
    if not spec.resources.spot:
        return None, "the machine was not a spot machine"
    if reclaimed > limit:
        return None, f"limits.max_restarts ({limit}) used"
    on_demand = spec.resources.spot_fallback == "on-demand" and reclaimed >= limit
    return NextAttempt(reclaimed + 1, not on_demand, resumed_spec(spec, spot=not on_demand)), ""


NEVER_RECLAIMED = ("local", "ssh")  # providers whose machines are not rented spot capacity


def describe(spec, provider: str) -> str | None:
    """One line for the plan: what happens when the spot machine is reclaimed (None: not spot).
    ``provider``: the run's provider name; local and ssh machines are never spot capacity."""
    if not spec.resources.spot:
        return None
    if provider in NEVER_RECLAIMED:
        return f"does not apply: {provider} machines are never reclaimed (resources.spot is for aws, gcp and auto)"
    from launcher.checkpoints import pull_every

    n = spec.limits.max_restarts
    if n == 0:
        return "a reclaimed machine ends the run (limits.max_restarts: 0)"
    last = " (the last on-demand)" if spec.resources.spot_fallback == "on-demand" else ""
    if spec.checkpoint_store:
        where = f"the checkpoint the machine keeps in {spec.checkpoint_store}"
    else:
        where = f"the checkpoint pulled home every {pull_every(spec) / 60:g} min"
    return f"a reclaimed machine is replaced up to {n} time{'s' if n > 1 else ''}{last}, resuming from {where}"


def resumed_spec(spec, spot: bool):
    """The spec a restart runs: on the given market, the payload told to resume (our trainer gets
    ``--resume``; any payload gets ``GPUJOB_RESUME=1`` in its environment)."""
    resources = spec.resources.model_copy(update={"spot": spot, "spot_fallback": None if not spot else
                                                  spec.resources.spot_fallback})
    payload = spec.payload
    if payload.entrypoint == DEFAULT_ENTRYPOINT and "--resume" not in payload.args:
        payload = payload.model_copy(update={"args": [*payload.args, "--resume"]})
    return spec.model_copy(update={"resources": resources, "payload": payload,
                                   "env": {**spec.env, "GPUJOB_RESUME": "1"}})


def closed_attempt(rec, end: float, reason: str) -> dict[str, Any]:
    """The record of the run's current attempt, ended at ``end`` (its machine released) for ``reason``."""
    from launcher.estimate.billing import bill_usd

    m = rec.machine or {}
    seconds = max(0.0, end - (rec.launched_at or end))
    provider = m.get("provider") or rec.provider
    return {"attempt": len(rec.attempts or ()) + 1, "provider": provider, "region": m.get("region"),
            "zone": m.get("zone"), "instance_id": m.get("id"), "instance_type": m.get("instance_type"),
            "market": "spot" if m.get("spot") else "on-demand", "start": rec.launched_at, "end": end,
            "end_reason": reason, "price_per_hour": rec.price_per_hour, "seconds": seconds,
            "cost_usd": bill_usd(seconds, rec.price_per_hour, provider)}
