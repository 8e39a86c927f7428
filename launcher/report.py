"""The run report: estimate vs actual, and GPU vs the local CPU baseline."""

from __future__ import annotations

from typing import Any

from launcher.store import RunRecord


def build_report(rec: RunRecord) -> dict[str, Any]:
    """Estimate vs actual, and GPU vs the local CPU baseline (seconds, samples/s, USD; deltas in %)."""
    est = rec.estimate or {}
    end = (rec.result or {}).get("end") or {}
    actual_total = rec.billed_seconds() if rec.ended_at else None
    job_seconds = (rec.job_ended_at - rec.job_started_at) if rec.job_ended_at and rec.job_started_at else None
    train_seconds = end.get("elapsed") or job_seconds
    actual_usd = None
    if rec.price_per_hour is not None and actual_total is not None:
        actual_usd = rec.billed_usd()  # every attempt, each billed by its own price and minimum

    def delta(actual, predicted):
        if actual is None or not predicted:
            return None
        return 100.0 * (actual - predicted) / predicted

    # The payload's elapsed time includes its compile warm-up; compare it with the estimate's
    # training time plus the warm-up it predicted, not with steady-state training alone.
    est_train = est.get("train_seconds")
    if est_train is not None:
        est_train += est.get("warmup_seconds") or 0.0
    base = est.get("baseline") or {}
    cpu_seconds = base.get("seconds")
    report = {
        "run_id": rec.id, "name": rec.name, "provider": rec.provider, "state": rec.state, "reason": rec.reason,
        "exit_status": rec.exit_status, "artifacts_dir": rec.artifacts_dir,
        "machine": {k: (rec.machine or {}).get(k) for k in ("instance_type", "region", "zone", "gpu", "gpu_count")},
        "price_per_hour": rec.price_per_hour,
        "actual": {"total_seconds": actual_total, "job_seconds": job_seconds, "train_seconds": train_seconds,
                   "samples_per_second": end.get("samples_per_second"), "samples": end.get("samples"),
                   "usd": actual_usd, "final_loss": end.get("final_loss"), "accuracy": end.get("accuracy")},
        "estimate": {"total_seconds": est.get("total_seconds"), "train_seconds": est_train,
                     "samples_per_second": est.get("samples_per_second"), "usd": est.get("total_usd")},
        "delta_pct": {"total_seconds": delta(actual_total, est.get("total_seconds")),
                      "train_seconds": delta(train_seconds, est_train),
                      "samples_per_second": delta(end.get("samples_per_second"), est.get("samples_per_second")),
                      "usd": delta(actual_usd, est.get("total_usd"))},
        "baseline": base or None,
        "attempts": rec.attempt_rows(),
    }
    start = (rec.result or {}).get("start") or {}
    report["unit"] = est.get("unit") or ("token" if start.get("seq_len") else "sample")  # what the rates count
    device = start.get("device", "")
    # a CPU run vs itself says nothing: the payload said so, or (a custom payload says nothing)
    # it ran here on a machine without a GPU
    on_cpu = str(device).startswith("cpu") or (
        not device and rec.provider == "local" and (rec.machine or {}).get("gpu_count") == 0)
    if cpu_seconds and train_seconds and not on_cpu:
        report["vs_cpu"] = {"cpu_seconds": cpu_seconds, "speedup": cpu_seconds / train_seconds,
                            "hours_saved": (cpu_seconds - (actual_total or train_seconds)) / 3600.0}
    return report
