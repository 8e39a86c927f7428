"""What finished runs measured, kept to teach the next estimate (the user's own calibration).

Every finished run on a GPU stores its measured steady samples/s, compile warm-up and start-up
per (model signature, GPU, GPU count, precision, batch) in ``$GPUJOB_HOME/cache/measured_runs.json``.
This file is the user's alone, kept apart from the bundled calibration (bench/results/):

* the next estimate of the same signature on the same GPU shows the measured figure beside
  the model's ("measured in run r1a2b3c, 2 days ago"), and
* ``gpujob calibrate`` refits, per (GPU architecture, precision class), one factor that scales
  the per-operation model's predicted step time to the user's measured runs (the geometric mean
  of measured / predicted); ``gpujob calibrate --reset`` drops the user's runs and that fit.

The model signature hashes what determines the work of a step: the model (a built-in name or a
factory reference, with the factory file's content), its arguments, the input shape and the
number of classes. Files are written atomically; a damaged file reads as empty.
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
import time
from pathlib import Path

from launcher.estimate.paths import age_words, cache_dir, read_json_cached, write_json_atomic

RUNS_FILE = "measured_runs.json"
FIT_FILE = "user_calibration.json"
MAX_RUNS = 2000  # oldest dropped beyond this


def _runs_path() -> Path:
    return cache_dir() / RUNS_FILE


def _fit_path() -> Path:
    return cache_dir() / FIT_FILE


def signature(workload) -> str:
    """12 hex digits naming the work of one training step of this workload."""
    parts = {"model": workload.model, "model_args": dict(getattr(workload, "model_args", {}) or {}),
             "shape": list(getattr(workload, "sample_shape", (workload.in_channels, workload.image_size,
                                                              workload.image_size))),
             "classes": workload.num_classes}
    if getattr(workload, "is_factory", False):  # its file and the project files it imports
        from launcher.payloads.factory import source_digest

        parts["source"] = source_digest(workload.model)
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def load_runs() -> list[dict]:
    doc = read_json_cached(_runs_path(), {})
    runs = doc.get("runs", []) if isinstance(doc, dict) else []
    return [r for r in runs if isinstance(r, dict) and r.get("samples_per_second")]


def record_run(run_id: str, workload, gpu: str, gpu_count: int, samples_per_second: float,
               warmup_s: float | None = None, startup_s: float | None = None, *, now: float | None = None,
               predicted_samples_per_second: float | None = None, compile_s: float | None = None,
               outside_s: float | None = None, host: str | None = None, compile_cache: str | None = None,
               compile_cache_dirs: list[str] | None = None) -> dict:
    """Store one finished run's measurements (a re-recorded run id replaces its entry).
    compile_s, outside_s: the run's time in its loop beyond its steady samples (compile, warm-up)
    and outside its loop (start-up, final writes, the report), as clifit.py splits a CLI run; host:
    the machine it ran on (a local run's; the next local estimate there reuses both);
    compile_cache: "cold" | "warm" | None (unknown: older payloads and rows), what the payload's
    start event said of its compile cache, and compile_cache_dirs the folders it looked at."""
    entry = {"run_id": run_id, "signature": signature(workload), "model": workload.model, "gpu": gpu,
             "gpu_count": int(gpu_count), "precision": workload.precision, "batch_size": workload.batch_size,
             "samples_per_second": float(samples_per_second), "warmup_s": warmup_s, "startup_s": startup_s,
             "predicted_samples_per_second": predicted_samples_per_second, "compile_s": compile_s,
             "outside_s": outside_s, "host": host, "compile_cache": compile_cache,
             "compile_cache_dirs": list(compile_cache_dirs or []), "time": now or time.time()}
    runs = [r for r in load_runs() if r.get("run_id") != run_id] + [entry]
    write_json_atomic(_runs_path(), {"runs": runs[-MAX_RUNS:]})
    return entry


def measured_for(workload, gpu: str, gpu_count: int, *, now: float | None = None) -> dict | None:
    """The newest run of this signature on this GPU and count at this precision and batch, with
    ``age_days`` and a ``label`` like 'measured in run r1a2b3c, 2 days ago: 5,100 samples/s'."""
    runs = load_runs()
    if not runs:  # no run measured yet (the usual case): no signature to hash
        return None
    sig = signature(workload)
    same = [r for r in runs if r["signature"] == sig and str(r["gpu"]).upper() == str(gpu).upper()
            and r["gpu_count"] == gpu_count and r["precision"] == workload.precision
            and r["batch_size"] == workload.batch_size]
    if not same:
        return None
    r = max(same, key=lambda x: x["time"])
    now = now or time.time()
    days, age = max(0.0, (now - r["time"]) / 86400), age_words(r["time"], now)
    unit = "tokens" if getattr(workload, "is_token_model", False) else "samples"  # what the rate counts
    return {**r, "age_days": round(days, 2), "label": f"measured in run {r['run_id']}, {age}: "
                                                     f"{r['samples_per_second']:,.0f} {unit}/s"}


def refit() -> dict:
    """Per (arch, precision class): factor = geometric mean of measured / predicted samples/s over
    the user's runs that recorded a prediction. Written to the user's calibration file."""
    from launcher.catalog.gpus import get_gpu
    from launcher.estimate.opmodel import precision_class

    groups: dict[str, list[float]] = {}
    for r in load_runs():
        pred = r.get("predicted_samples_per_second")
        if not pred or r.get("gpu_count") != 1:
            continue
        try:
            arch = get_gpu(r["gpu"]).arch
        except Exception:
            continue
        groups.setdefault(f"{arch}/{precision_class(r['precision'])}", []).append(r["samples_per_second"] / pred)
    factors = {k: {"factor": round(math.exp(statistics.fmean(math.log(x) for x in v)), 4), "runs": len(v)}
               for k, v in groups.items()}
    doc = {"factors": factors, "time": time.time()}
    write_json_atomic(_fit_path(), doc)
    return doc


def user_factor(arch: str, precision: str) -> float:
    """The user's fitted speed factor for this (arch, precision class); 1.0 without a fit."""
    from launcher.estimate.opmodel import precision_class

    f = read_json_cached(_fit_path(), {}).get("factors", {}).get(f"{arch}/{precision_class(precision)}")
    return float(f["factor"]) if isinstance(f, dict) and f.get("factor") else 1.0


def reset() -> int:
    """Drop the user's measured runs and fit; returns how many runs were dropped."""
    n = len(load_runs())
    for p in (_runs_path(), _fit_path()):
        try:
            p.unlink()
        except FileNotFoundError:
            pass
    return n


def record_finished(rec) -> dict | None:
    """Record a finished run (a store RunRecord) when it trained on a GPU to its end; else None.
    (A local CPU run teaches the CPU row instead: launcher.estimate.baseline.record_finished_cpu.)

    start-up = the payload's ``start`` event minus the job's start; warm-up and steady samples/s
    come from the payload's ``end`` event. A local run also stores, as clifit.py splits a CLI run,
    compile = the loop's time - its samples / steady samples/s and outside = the run's total - the
    loop's time, with this machine's name: what the next local estimate of the signature here reuses.
    With them, whether its compile cache was cold (the start event's ``compile_cache``: payloads/compile_cache.py).
    """
    result = rec.result or {}
    start, end = result.get("start") or {}, result.get("end") or {}
    machine = rec.machine or {}
    gpu = machine.get("gpu") or (rec.estimate or {}).get("gpu")
    if end.get("status") != "ok" or not end.get("samples_per_second") or start.get("device") != "cuda" or not gpu:
        return None
    from launcher.spec import JobSpec

    workload = JobSpec.model_validate(rec.spec).workload
    startup = None
    if start.get("time") and rec.job_started_at:
        startup = max(0.0, float(start["time"]) - float(rec.job_started_at))
    world = int(start.get("world_size") or machine.get("gpu_count") or 1)
    compile_s = outside_s = host = None
    loop, samples = end.get("elapsed"), end.get("samples")
    if rec.provider == "local" and loop and samples:
        compile_s = round(max(0.0, float(loop) - float(samples) / float(end["samples_per_second"])), 3)
        if rec.ended_at and rec.launched_at:
            outside_s = round(max(0.0, rec.billed_seconds() - float(loop)), 3)
        host = this_host()
    cache = start.get("compile_cache") if start.get("compile_cache") in ("cold", "warm") else None
    dirs = [str(d) for d in start.get("compile_cache_dirs") or [] if d] if cache else []
    # The payload reports the global rate; per-GPU-count entries keep it as measured.
    return record_run(rec.id, workload, str(gpu), world, float(end["samples_per_second"]),
                      warmup_s=end.get("warmup_seconds"), startup_s=startup,
                      predicted_samples_per_second=(rec.estimate or {}).get("samples_per_second"),
                      compile_s=compile_s, outside_s=outside_s, host=host, compile_cache=cache,
                      compile_cache_dirs=dirs)


def this_host() -> str:
    """This machine's name, as a local run records it."""
    import socket

    return socket.gethostname()
