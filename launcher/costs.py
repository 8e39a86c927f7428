"""`gpujob cost`: what runs cost, from the run records, and how good the estimate was.

Every figure comes from the run database: the estimate stored at launch (never re-priced from
today's catalog), the billed time (launch -> release) at the price recorded with the machine,
billed with the provider's rule (``estimate.billing``). A run still going counts up to now.
Errors are (actual - estimate) / estimate in percent: positive means the run took longer or
cost more than predicted.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from launcher.errors import UsageError

_ALL = 1_000_000  # every run in the database


def _month(ts: float) -> str:
    return time.strftime("%Y-%m", time.gmtime(ts))


def _pct(actual: float | None, predicted: float | None) -> float | None:
    if actual is None or not predicted:
        return None
    return round(100.0 * (actual - predicted) / predicted, 1)


def run_row(rec, now: float) -> dict[str, Any]:
    """One run: estimate vs actual seconds and USD and their errors (%), with provider, GPU, month."""
    from launcher.report import build_report

    rep = build_report(rec)
    est, act = rep["estimate"], rep["actual"]
    seconds, usd = act["total_seconds"], act["usd"]
    if not rec.finished and rec.launched_at is not None:  # still billing: up to now (every attempt)
        seconds = rec.billed_seconds(now)
        usd = rec.billed_usd(now)
    if usd is None and rec.provider in ("local", "ssh"):
        usd = 0.0 if seconds is not None else None
    m = rep["machine"]
    gpu = f"{m['gpu']} x{m.get('gpu_count') or 1}" if m.get("gpu") else "CPU"
    return {"run_id": rec.id, "name": rec.name, "provider": rec.provider, "state": rec.state,
            "finished": rec.finished, "created_at": rec.created_at, "month": _month(rec.created_at), "gpu": gpu,
            "instance_type": m.get("instance_type"), "estimated_seconds": est["total_seconds"],
            "actual_seconds": seconds, "seconds_error_pct": _pct(seconds, est["total_seconds"]) if rec.finished else None,
            "estimated_usd": est["usd"], "actual_usd": usd,
            "usd_error_pct": _pct(usd, est["usd"]) if rec.finished else None}


def _totals(rows: list[dict], key: str) -> list[dict]:
    groups: dict[str, dict] = {}
    for r in rows:
        g = groups.setdefault(r[key], {key: r[key], "runs": 0, "actual_usd": 0.0, "estimated_usd": 0.0,
                                       "actual_seconds": 0.0})
        g["runs"] += 1
        g["actual_usd"] += r["actual_usd"] or 0.0
        g["estimated_usd"] += r["estimated_usd"] or 0.0
        g["actual_seconds"] += r["actual_seconds"] or 0.0
    out = sorted(groups.values(), key=lambda g: (-g["actual_usd"], str(g[key])))
    for g in out:
        g["actual_usd"], g["estimated_usd"] = round(g["actual_usd"], 4), round(g["estimated_usd"], 4)
    return out


def track_record(rows: list[dict]) -> dict[str, Any]:
    """Median absolute and signed time/cost error over finished runs that had an estimate."""
    t = [r["seconds_error_pct"] for r in rows if r["seconds_error_pct"] is not None]
    d = [r["usd_error_pct"] for r in rows if r["usd_error_pct"] is not None]
    out = {"runs": len(t), "median_abs_seconds_error_pct": None, "median_seconds_error_pct": None,
           "cost_runs": len(d), "median_abs_usd_error_pct": None}
    if t:
        out["median_abs_seconds_error_pct"] = round(statistics.median(abs(x) for x in t), 1)
        out["median_seconds_error_pct"] = round(statistics.median(t), 1)
    if d:
        out["median_abs_usd_error_pct"] = round(statistics.median(abs(x) for x in d), 1)
    if not t:
        out["sentence"] = "No finished run with an estimate yet: the estimator has no track record on your runs."
        return out
    lean = out["median_seconds_error_pct"]
    side = "longer" if lean > 0 else "shorter"
    out["sentence"] = (f"The estimate's median error on your {len(t)} finished run{'s' if len(t) != 1 else ''}: "
                       f"time {out['median_abs_seconds_error_pct']:g}%"
                       + (f", cost {out['median_abs_usd_error_pct']:g}% ({len(d)} paid)" if d else "")
                       + (f"; runs took {abs(lean):g}% {side} than estimated (median)" if lean else "") + ".")
    return out


def cost_report(store=None, days: float | None = None, now: float | None = None) -> dict[str, Any]:
    """Runs created in the last ``days`` (None: all), newest first, with totals per provider,
    GPU and month and the estimator's track record. Raises UsageError for days <= 0."""
    if days is not None and days <= 0:
        raise UsageError(f"--days {days:g} is not a number of days", "e.g. --days 30")
    from launcher.store import Store

    store = store or Store()
    now = time.time() if now is None else now
    since = None if days is None else now - days * 86400.0
    rows = [run_row(rec, now) for rec in store.list_runs(_ALL) if since is None or rec.created_at >= since]
    return {"days": days, "runs": rows,
            "totals": {"provider": _totals(rows, "provider"), "gpu": _totals(rows, "gpu"),
                       "month": _totals(rows, "month")},
            "total_usd": round(sum(r["actual_usd"] or 0.0 for r in rows), 4),
            "track_record": track_record(rows)}
