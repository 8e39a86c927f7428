"""The local CPU alternative, measured: run the real payload here for a short probe.

The payload (payloads/train.py) runs in a subprocess with ``--device cpu --probe-seconds T``:
warm-up steps are untimed, then it trains for about T seconds and prints a ``probe`` event
with samples/s. We extrapolate to the whole job and cache the figure per machine and
workload. Without PyTorch we say so and predict from the model (per-operation-class CPU rates,
launcher.estimate.cpufit).

A local CPU run that trains to its end (``gpujob run --provider local`` on a machine without a
GPU) teaches the same cache: its steady samples/s, at the job's own batch, is stored under this
machine's fingerprint (record_finished_cpu). The CPU row then shows the newer of the probe and
the run ("measured in run r1a2b3c, today"); ``--refresh-baseline`` probes again, and that newer
probe is shown until the next run. ``gpujob calibrate --reset`` drops the runs (drop_cpu_runs)
and keeps the probes.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from launcher.estimate.paths import age_words, cache_dir, read_json, write_json_atomic
from launcher.packaged import payload_script

HARD_TIMEOUT_MARGIN_S = 60.0  # start-up (torch import, model build) + warm-up on top of the probe
CACHE_MAX_AGE_S = 30 * 86400
# The probe batch is chosen so one step takes about this share of the probe: several timed steps.
_STEP_SHARE = 1 / 4
# ...but never below this: at batch 1-2 a CPU runs far below its per-sample speed at batch 8+.
_MIN_PROBE_BATCH = 4
# Language models above this many parameters are not probed: weights + AdamW take 16 B each.
LM_PROBE_MAX_PARAMS = 400e6
_WORKLOAD_KEYS = ("model", "image_size", "num_classes", "in_channels", "dataset", "batch_size",
                  "channels_last")

# (command, timeout seconds) -> (exit status, stdout, stderr); raises subprocess.TimeoutExpired
Runner = Callable[[list, float], tuple]


@dataclass(frozen=True)
class Baseline:
    device: str
    cores: int
    samples_per_second: float | None
    seconds: float | None  # whole job, extrapolated
    measured: bool
    cached: bool
    note: str
    probe_batch_size: int | None = None
    busy: bool = False  # the probe ran while the machine's load exceeded its cores: likely too low
    # How the figure was obtained, in a few words for a sentence: "measured", "measured 2026-11-30,
    # cached", "predicted: PyTorch not installed", plus "on a busy machine" when busy.
    basis: str = ""
    # A figure predicted per operation class (launcher.estimate.cpufit): how far it may be off
    # (a median absolute error, launcher.estimate.bands.cpu_band) and on what that rests.
    error_band: float | None = None
    band_basis: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "CPU"


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))  # what this process may use (containers, taskset)
    except AttributeError:
        return os.cpu_count() or 1


def _torch_version() -> str | None:
    if importlib.util.find_spec("torch") is None:
        return None
    try:
        from importlib.metadata import version

        return version("torch")
    except Exception:
        return "unknown"


def fingerprint() -> str:
    """Same CPU, core count, OS and torch build -> same throughput; anything else re-measures."""
    parts = [cpu_name(), str(cpu_cores()), platform.system(), platform.machine(), _torch_version() or "-"]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def _workload_key(workload, probe_batch: int, precision: str = "fp32") -> str:
    d = {k: getattr(workload, k) for k in _WORKLOAD_KEYS}
    d["probe_batch"] = probe_batch
    if getattr(workload, "is_factory", False):  # a user's model: its arguments, shape and source
        from launcher.payloads.factory import source_digest

        d.update(model_args=workload.model_args, input_shape=list(workload.sample_shape),
                 model_source=source_digest(workload.model))
        if getattr(workload, "input_vocab", None):  # fed token ids
            d["vocab_size"] = workload.input_vocab
    if precision != "fp32":  # keeps fp32 keys as they were, so older cache entries still hit
        d["probe_precision"] = precision
    if workload.is_lm:
        d["lm_shape"] = workload.lm_shape().to_dict()
        d["seq_len"] = workload.effective_seq_len
    elif workload.is_token_model:  # a factory fed tokens
        d["seq_len"], d["vocab_size"] = workload.seq_len, workload.vocab_size
    return json.dumps(d, sort_keys=True)


def cpu_precision(workload, cpuinfo: str | None = None) -> str:
    """The precision the probe measures: the one a CPU run of ``workload`` trains at
    (``payloads/cpu.py``: fp32, unless the job asks for bf16 and this CPU computes bf16 natively,
    AVX512-BF16 or AMX). There bf16 autocast is several times faster (VGG16 on 2 Zen 4 cores: 6.4
    vs 1.8 images/s, docs/benchmarks.md), so fp32 would understate the CPU; elsewhere bf16 is
    emulated and slower, and the local run trains in fp32 too."""
    from launcher.payloads.cpu import cpu_precision as run_precision

    return run_precision(workload.precision, cpuinfo)


def _cache_file() -> Path:
    return cache_dir() / "baseline.json"


# How often the wait on the probe looks for a signal (launcher.signals) that asks the run to stop.
_SIGNAL_POLL_S = 0.1


def _default_runner(cmd: list, timeout: float) -> tuple:
    """Run the probe. A signal stops it at once: under ``gpujob run`` the handler only sets a flag
    (launcher.signals), so the wait polls it and raises Stop; elsewhere Ctrl-C raises
    KeyboardInterrupt. Either way the probe is killed and reaped first (it measures, never saves)."""
    from launcher import signals

    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    end = time.monotonic() + timeout
    try:
        while True:
            signals.check()
            try:
                out, err = proc.communicate(timeout=min(_SIGNAL_POLL_S, max(0.0, end - time.monotonic())))
                return proc.returncode, out, err
            except subprocess.TimeoutExpired:
                if time.monotonic() >= end:
                    raise subprocess.TimeoutExpired(cmd, timeout) from None
    except BaseException:  # Stop, KeyboardInterrupt, the hard timeout
        proc.kill()
        proc.communicate()  # reaps it and closes its pipes
        raise


def _model_prediction(spec, cores: int) -> float | None:
    from launcher.estimate.flops import workload_cost
    from launcher.estimate.throughput import predict_cpu

    w = spec.workload
    try:
        cost = workload_cost(w, allow_torch=False)
    except Exception:
        return None
    return predict_cpu(cost, cores, batch=cpu_batch(w))


def cpu_batch(w) -> int:
    """Units of one training step of a CPU run of ``w``: its batch, in tokens for a token model
    (the unit its per-operation counts are per)."""
    return w.batch_size * (w.effective_seq_len if w.is_token_model else 1)


# The probe trains in fp32 with SGD and momentum: weight, gradient and momentum, 4 bytes each.
_PROBE_BYTES_PER_PARAM = 12
# Share of this machine's RAM the probe's parameters may take (activations and PyTorch need the rest).
_PROBE_RAM_SHARE = 0.5


def _too_big_for_ram(spec) -> str | None:
    """Why a model is not probed on this CPU (None: it fits): its weights, gradients and momentum
    would take more than half of the RAM. Building it would exhaust memory (the kernel's OOM killer
    picks a process) before one step runs."""
    from launcher.estimate import hostram
    from launcher.estimate.flops import workload_cost

    ram = hostram.ram_bytes()
    try:
        n = workload_cost(spec.workload, allow_torch=False).params
    except Exception:
        return None
    need = _PROBE_BYTES_PER_PARAM * n
    if not ram or need <= _PROBE_RAM_SHARE * ram:
        return None
    size = f"{n / 1e9:.1f} B" if n >= 1e9 else f"{n / 1e6:.0f} M"
    return (f"a {size}-parameter model is not probed on this CPU (its weights, gradients and momentum need "
            f"{need / 2**30:.1f} GiB; this machine has {ram / 2**30:.1f} GiB of RAM)")


def probe_batch_size(spec, probe_seconds: float, cores: int) -> int:
    """A power-of-two batch <= the job's for which one CPU step takes ~1/4 of the probe.

    A VGG16 step at batch 128 takes minutes on a laptop CPU; per-sample speed on a CPU barely
    depends on the batch once it is a few samples, so a smaller probe batch measures the same.
    """
    predicted = _model_prediction(spec, cores) or 1.0
    if spec.workload.is_token_model:  # predicted tokens/s; the batch counts sequences
        predicted /= spec.workload.effective_seq_len
    target = max(1.0, predicted * probe_seconds * _STEP_SHARE)
    b = 1
    floor = 1 if spec.workload.is_token_model else _MIN_PROBE_BATCH  # one sequence is already 1,000+ tokens
    while b * 2 <= min(max(target, floor), spec.workload.batch_size):
        b *= 2
    return b


def _from_model(spec, device: str, cores: int, note: str) -> Baseline:
    return predicted_baseline(spec, device, cores, _model_prediction(spec, cores),
                              f"{note}; predicted from the model", f"predicted: {note.split(':')[0]}")


def predicted_baseline(spec, device: str, cores: int, sps: float | None, note: str, basis: str) -> Baseline:
    """The CPU row predicted from the model (not measured): ``note`` gets how it was priced; a
    per-class figure carries its error band."""
    from launcher.estimate.bands import cpu_band
    from launcher.estimate.cpufit import fitted_rates
    from launcher.estimate.flops import workload_cost

    try:
        per_class = bool(workload_cost(spec.workload, allow_torch=False).ops) and bool(fitted_rates().get("fit"))
    except Exception:
        per_class = False
    band, band_basis = cpu_band(device) if per_class else (None, "")
    if per_class:
        how = f"{cores} cores x per-operation-class rates fitted on {fitted_rates().get('host', {}).get('cpu', 'one CPU')}"
    else:
        from launcher.estimate.calibration import current

        how = f"{cores} cores x {current().cpu_gflops_per_core:.0f} GFLOP/s per core"
    total = spec.workload.total_samples
    return Baseline(device, cores, sps, total / sps if sps else None, measured=False, cached=False,
                    note=f"{note} ({how})", basis=basis, error_band=band, band_basis=band_basis)


def _parse_probe(stdout: str) -> tuple[dict | None, dict | None]:
    from launcher.payloads.protocol import parse_line

    probe = error = None
    for line in stdout.splitlines():
        ev = parse_line(line)
        if not ev:
            continue
        if ev.get("event") == "probe":
            probe = ev
        elif ev.get("event") == "error":
            error = ev
    return probe, error


def load_average() -> float | None:
    """1-minute load average (runnable processes), None where the OS has none."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def _busy_note(load: float | None, cores: int) -> str:
    return (f"; the machine was busy during the probe (load {load:.1f} on {cores} cores): the CPU figure is "
            "likely low, re-measure on a quiet machine with --refresh-baseline") if load is not None else ""


def _run_key(workload, precision: str) -> str:
    """The cache key of a finished local CPU run: the workload's key at the job's own batch."""
    return "run:" + _workload_key(workload, workload.batch_size, precision)


def record_cpu_run(run_id: str, workload, samples_per_second: float, *, now: float | None = None) -> dict:
    """Store a finished run's steady samples/s on this machine's CPU in the baseline cache (this
    machine's fingerprint; the workload at its batch and the precision a CPU run trains at)."""
    now = now or time.time()
    entry = {"samples_per_second": float(samples_per_second), "time": now, "run_id": run_id,
             "date": time.strftime("%Y-%m-%d", time.localtime(now)), "batch": workload.batch_size}
    cache = read_json(_cache_file(), {})
    cache.setdefault(fingerprint(), {})[_run_key(workload, cpu_precision(workload))] = entry
    write_json_atomic(_cache_file(), cache)
    return entry


def record_finished_cpu(rec) -> dict | None:
    """Record a finished run (a store RunRecord) that trained to its end on this machine's CPU
    (provider local, payload device cpu); else None. GPU runs: launcher.estimate.learned."""
    result = rec.result or {}
    start, end = result.get("start") or {}, result.get("end") or {}
    if (rec.provider != "local" or start.get("device") != "cpu" or end.get("status") != "ok"
            or not end.get("samples_per_second")):
        return None
    from launcher.spec import JobSpec

    return record_cpu_run(rec.id, JobSpec.model_validate(rec.spec).workload, float(end["samples_per_second"]))


def drop_cpu_runs() -> int:
    """Drop every finished local CPU run recorded in the baseline cache (any machine's fingerprint;
    ``gpujob calibrate --reset``), keeping the probes; returns how many were dropped."""
    cache = read_json(_cache_file(), {})
    n = 0
    for machine, entries in cache.items():
        if isinstance(entries, dict):
            runs = [k for k in entries if k.startswith("run:")]
            n += len(runs)
            cache[machine] = {k: v for k, v in entries.items() if k not in runs}
    if n:
        write_json_atomic(_cache_file(), cache)
    return n


def _fresh(entry: dict | None) -> bool:
    return bool(entry and entry.get("samples_per_second") and time.time() - entry.get("time", 0) < CACHE_MAX_AGE_S)


def _cached_hit(spec, probe_seconds: float, device: str, cores: int) -> Baseline | None:
    """The newer of this workload's cached probe and its last finished local CPU run, if any."""
    cache = read_json(_cache_file(), {})
    if not cache:  # nothing measured yet: no probe batch to size, no torch version to look up
        return None
    precision = cpu_precision(spec.workload)
    mine = cache.get(fingerprint(), {})
    run = mine.get(_run_key(spec.workload, precision))
    batch = probe_batch_size(spec, probe_seconds, cores)
    hit = mine.get(_workload_key(spec.workload, batch, precision))
    if _fresh(run) and (not _fresh(hit) or run["time"] >= hit.get("time", 0)):
        sps = float(run["samples_per_second"])
        when = f"measured in run {run.get('run_id')}, {age_words(run['time'], time.time())}"
        return Baseline(device, cores, sps, spec.workload.total_samples / sps, measured=True, cached=True,
                        note=f"{when} (cached), batch {run.get('batch')}, {precision}", basis=when)
    if not _fresh(hit):
        return None
    sps = float(hit["samples_per_second"])
    busy = bool(hit.get("busy"))
    note = f"measured {hit.get('date', 'earlier')} (cached), batch {batch}, {precision}"
    if busy:
        note += _busy_note(hit.get("load"), cores)
    return Baseline(device, cores, sps, spec.workload.total_samples / sps, measured=True, cached=True, note=note,
                    probe_batch_size=batch, busy=busy,
                    basis=f"measured {hit.get('date', 'earlier')}, cached" + (", on a busy machine" if busy else ""))


def cached_baseline(spec, probe_seconds: float = 15.0) -> Baseline | None:
    """The cached CPU measurement of this workload on this machine (CPU model, cores, OS, torch
    version), without probing; None when there is none. For --no-baseline and --dry-run."""
    return _cached_hit(spec, probe_seconds, cpu_name(), cpu_cores())


def measure_baseline(spec, probe_seconds: float = 15.0, use_cache: bool = True, python: str = sys.executable,
                     runner: Runner | None = None, refresh: bool = False,
                     on_probe: Callable[[float], None] | None = None) -> Baseline:
    """Measure (or recall) this machine's CPU throughput on the spec's workload. Never raises
    for a failed probe: the result says measured=False and why. refresh: probe again even when
    a cached figure exists (the new one replaces it). on_probe(probe_seconds): called just
    before the probe starts, only when one runs (not for a cached figure, nor without PyTorch)."""
    device, cores = cpu_name(), cpu_cores()
    total = spec.workload.total_samples
    if runner is None and _torch_version() is None:
        return _from_model(spec, device, cores, "PyTorch not installed: CPU baseline from the model only")
    script = payload_script()
    if runner is None and not script.exists():
        return _from_model(spec, device, cores, f"payload {script} not found: CPU baseline from the model only")
    if spec.workload.is_lm:
        from launcher.payloads.lm_shapes import param_count

        n = param_count(spec.workload.lm_shape())
        if n > LM_PROBE_MAX_PARAMS:
            return _from_model(spec, device, cores, f"a {n / 1e9:.1f} B-parameter model is not probed on this CPU "
                               f"(its AdamW state alone needs {16 * n / 2**30:.0f} GiB of RAM)")
    else:
        too_big = _too_big_for_ram(spec)
        if too_big:
            return _from_model(spec, device, cores, too_big)
    batch = probe_batch_size(spec, probe_seconds, cores)
    precision = cpu_precision(spec.workload)
    fp, wkey = fingerprint(), _workload_key(spec.workload, batch, precision)
    cache_path = _cache_file()
    if use_cache and not refresh:
        hit = _cached_hit(spec, probe_seconds, device, cores)
        if hit is not None:
            return hit
    load_before = load_average()
    w = spec.workload
    with tempfile.TemporaryDirectory(prefix="gpujob-probe-") as tmp:
        dataset = w.dataset
        if dataset not in ("synthetic", "digits") and not Path(dataset).expanduser().exists():
            dataset = "synthetic"  # the data lives elsewhere; speed on the CPU is the same
        config = {
            "model": w.model, "image_size": w.image_size, "num_classes": w.num_classes,
            "in_channels": w.in_channels, "model_args": w.model_args, "input_shape": w.input_shape,
            "dataset": dataset, "samples_per_epoch": max(w.samples_per_epoch, batch),
            "epochs": 1, "batch_size": batch,
            "precision": precision, "learning_rate": w.learning_rate, "compile": False,
            "channels_last": w.channels_last, "output_dir": str(Path(tmp) / "out"),
        }
        if w.input_vocab:
            config["vocab_size"] = w.input_vocab
        if w.is_token_model:
            config.update(seq_len=w.seq_len, vocab_size=w.vocab_size, model_args=w.model_args,
                          samples_per_epoch=max(w.samples_per_epoch, batch * w.effective_seq_len))
        cfg_path = Path(tmp) / "job.json"
        cfg_path.write_text(json.dumps(config), encoding="utf-8")
        cmd = [python, str(script), "--config", str(cfg_path), "--device", "cpu",
               "--probe-seconds", str(probe_seconds), "--warmup-steps", "1"]
        if on_probe is not None:
            on_probe(probe_seconds)
        try:
            rc, out, err = (runner or _default_runner)(cmd, probe_seconds + HARD_TIMEOUT_MARGIN_S)
        except subprocess.TimeoutExpired:
            return _from_model(spec, device, cores,
                               f"CPU probe did not finish within {probe_seconds + HARD_TIMEOUT_MARGIN_S:.0f} s")
        except OSError as exc:
            return _from_model(spec, device, cores, f"CPU probe could not start ({exc.strerror})")
    probe, error = _parse_probe(out or "")
    if rc != 0 or probe is None or not probe.get("samples_per_second"):
        why = (error or {}).get("message") or ((err or "").strip().splitlines() or [f"exit {rc}"])[-1]
        return _from_model(spec, device, cores, f"CPU probe failed: {why}"[:300])
    if probe.get("interrupted"):  # a Ctrl-C reached the probe too: a step or two, never cached
        return _from_model(spec, device, cores, "CPU probe interrupted: not measured, nothing cached")
    sps = float(probe["samples_per_second"])
    # The load of the minute before the probe (the probe's own threads would count after it).
    load = load_before
    busy = load is not None and load > cores
    if use_cache:
        cache = read_json(cache_path, {})
        cache.setdefault(fp, {})[wkey] = {"samples_per_second": sps, "time": time.time(),
                                          "date": time.strftime("%Y-%m-%d"), "steps": probe.get("steps"),
                                          "seconds": probe.get("seconds"), "busy": busy, "load": load}
        write_json_atomic(cache_path, cache)
    note = f"measured: {probe.get('steps')} steps in {probe.get('seconds')} s at batch {batch}, {precision}"
    return Baseline(device, cores, sps, total / sps, measured=True, cached=False,
                    note=note + (_busy_note(load, cores) if busy else ""), probe_batch_size=batch, busy=busy,
                    basis="measured" + (" on a busy machine" if busy else ""))
