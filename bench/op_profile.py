"""Per-kernel GPU profiles, cold compile warm-up and start-up of the payload, for the estimator.

    python bench/op_profile.py --out results.json [--gpus 0,1] [--deadline-s 380] [--device cuda]
                               [--configs vgg16:bf16:128,resnet50:fp32:256,...] [--warm resnet50:bf16:256]

Each configuration runs the real payload (``payloads/train.py --probe-seconds``) in a fresh
process with fresh, empty ``TORCHINDUCTOR_CACHE_DIR`` and ``TRITON_CACHE_DIR`` (a cold compile,
as a user's first run gets), one process per GPU at a time; GPUs work through one shared queue.
Per configuration it records

* ``startup_s``: process launch -> the payload's ``start`` event (interpreter, torch import,
  CUDA init, model build and transfer),
* ``first_step_s`` / ``warmup_s``: the first step (torch.compile + cuDNN autotuning) / all
  warm-up steps, from the payload's ``probe`` event,
* ``samples_per_second``: the payload's timed steady steps (unprofiled),
* ``rows``: torch.profiler's per-kernel self device time over 3 further steps (one row per
  kernel name; ``launcher.estimate.opfit.kernel_class`` sorts them into operation classes),
* ``shaped``: the matrix, convolution and attention calls of those steps per input shapes, with
  the device time of the kernels each launched (``payloads/runtime.profile_steps``).

Language models (``gpt2-124m:bf16:16``) run ``payloads/lm_train.py`` on synthetic tokens; their
samples/s are tokens/s.

``--warm`` configurations run a second time on the cache the first run filled (warm compile).
A configuration that would start after ``--deadline-s`` is skipped and listed as such, so the
file always holds whatever finished. Prints one JSON line per finished configuration.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAYLOAD = ROOT / "payloads" / "train.py"
DEFAULT_CONFIGS = (  # most important first: a deadline skips the tail
    "resnet50:bf16:256", "vit_b16:bf16:128", "vgg16:bf16:128", "mobilenetv2:bf16:256", "resnet18:bf16:256",
    "jobs/models/unet.py:build:bf16:32", "resnet50:fp32:128", "vit_b16:fp32:64", "vgg16:fp32:64",
    "mobilenetv2:fp32:128", "resnet18:fp32:256", "tinycnn:bf16:256",
)
# A user model's spec (the same one jobs/unet.yaml trains).
FACTORY_SETTINGS = {"jobs/models/unet.py:build": {"model_args": {"in_channels": 3, "num_classes": 21, "width": 32,
                                                                  "depth": 4},
                                                   "input_shape": [3, 256, 256], "num_classes": 21,
                                                   "image_size": 256}}
SIZES = {"tinycnn": 32}
# Language models (payloads/lm_train.py): synthetic tokens; a "sample" in samples_per_second is a token.
LM_SETTINGS = {"gpt2-124m": {"seq_len": 1024, "vocab_size": 50304}, "lm-1b": {"seq_len": 2048, "vocab_size": 128256},
               "lm-3b": {"seq_len": 2048, "vocab_size": 128256}}


def parse_config(text: str) -> dict:
    """'model:precision:batch' (the model may itself hold a ':' when it is a factory)."""
    model, precision, batch = text.rsplit(":", 2)
    cfg = {"model": model, "precision": precision, "batch_size": int(batch), "image_size": SIZES.get(model, 224),
           "num_classes": 10 if model == "tinycnn" else 1000}
    cfg.update(FACTORY_SETTINGS.get(model, {}))
    if model in LM_SETTINGS:
        cfg.update(LM_SETTINGS[model], num_classes=LM_SETTINGS[model]["vocab_size"])
    return cfg


def run_one(cfg: dict, gpu: str | None, device: str, probe_seconds: float, cache: str, warm: bool,
            timeout: float, cpus: str | None = None) -> dict:
    """One payload process with compile caches under ``cache``; the measured record (``error`` on failure)."""
    work = tempfile.mkdtemp(prefix="opprof-")
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=os.path.join(cache, "inductor"),
               TRITON_CACHE_DIR=os.path.join(cache, "triton"), PYTHONUNBUFFERED="1")
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    job = {**cfg, "dataset": "synthetic", "samples_per_epoch": 10 ** 6, "output_dir": os.path.join(work, "out")}
    cfg_path = os.path.join(work, "job.json")
    Path(cfg_path).write_text(json.dumps(job), encoding="utf-8")
    prof_path = os.path.join(work, "profile.json")
    pin = ["taskset", "-c", cpus] if cpus and shutil.which("taskset") else []
    if cpus:
        env["TORCHINDUCTOR_COMPILE_THREADS"] = str(_count_cpus(cpus))
    cmd = pin + [sys.executable, str(PAYLOAD), "--config", cfg_path, "--device", device, "--probe-seconds",
           str(probe_seconds), "--warmup-steps", "5", "--profile", prof_path]
    launched = time.time()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        out, err, rc = proc.stdout, proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as exc:
        out, err, rc = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or ""), "", 124
        err = f"timed out after {timeout:.0f} s"
    events = {}
    for line in out.splitlines():
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if isinstance(ev, dict) and "event" in ev:
            events[ev["event"]] = ev
    rec = {**{k: cfg[k] for k in ("model", "precision", "batch_size", "image_size", "num_classes")},
           **{k: cfg[k] for k in ("model_args", "input_shape", "seq_len", "vocab_size") if k in cfg},
           "gpu": gpu, "wall_s": round(time.time() - launched, 3), "cache": "warm" if warm else "cold"}
    start, probe = events.get("start"), events.get("probe")
    if rc != 0 or not probe:
        rec["error"] = ((err or "").strip().splitlines() or [f"exit {rc}"])[-1][:300]
        return rec
    rec.update(startup_s=round(start["time"] - launched, 3) if start else None,
               device_name=start.get("device_name") if start else None,
               first_step_s=probe.get("first_step_seconds"), warmup_s=probe.get("warmup_seconds"),
               samples_per_second=probe["samples_per_second"], steps=probe["steps"], seconds=probe["seconds"],
               compile=probe.get("compile"), fast_layers=probe.get("fast_layers"))
    try:
        prof = json.loads(Path(prof_path).read_text(encoding="utf-8"))
        rec["profiled_steps"], rec["rows"], rec["shaped"] = prof["steps"], prof["rows"], prof.get("shaped", [])
    except (OSError, ValueError, KeyError):
        rec["rows"] = []
    return rec


def _count_cpus(spec: str) -> int:
    n = 0
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        n += int(hi or lo) - int(lo) + 1
    return n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--gpus", default="0", help="comma-separated CUDA device indices; one process per GPU")
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    ap.add_argument("--configs", default=",".join(DEFAULT_CONFIGS))
    ap.add_argument("--warm", default="", help="configurations to run again on their warm compile cache")
    ap.add_argument("--probe-seconds", type=float, default=3.0)
    ap.add_argument("--deadline-s", type=float, default=380.0, help="every process ends by this many seconds")
    ap.add_argument("--min-left-s", type=float, default=60.0,
                    help="start a configuration only with at least this many seconds before the deadline")
    ap.add_argument("--cpus-per-gpu", type=int, default=0,
                    help="pin each GPU's process to its own block of this many cores (a one-GPU host's share)")
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    todo: queue.Queue = queue.Queue()
    for c in [c for c in args.configs.split(",") if c]:
        todo.put((c, False))
    warm = {c for c in args.warm.split(",") if c}
    results, lock = [], threading.Lock()
    caches: dict[str, str] = {}

    gpus = [g for g in args.gpus.split(",") if g] if args.device == "cuda" else [None]

    def worker(gpu: str | None) -> None:
        while True:
            try:
                text, is_warm = todo.get_nowait()
            except queue.Empty:
                return
            left = args.deadline_s - (time.monotonic() - t0)
            if left < args.min_left_s:
                with lock:
                    results.append({"config": text, "skipped": "deadline"})
                continue
            cache = caches[text] if is_warm else tempfile.mkdtemp(prefix="inductor-cache-")
            cpus = None
            if args.cpus_per_gpu and gpu is not None:
                first = gpus.index(gpu) * args.cpus_per_gpu
                cpus = f"{first}-{first + args.cpus_per_gpu - 1}"
            rec = run_one(parse_config(text), gpu, args.device, args.probe_seconds, cache, is_warm,
                          timeout=left - 2, cpus=cpus)
            rec["config"] = text
            print(json.dumps({k: v for k, v in rec.items() if k not in ("rows", "shaped")}), flush=True)
            with lock:
                results.append(rec)
                _write(args.out, results, t0)
            if text in warm and not is_warm and "error" not in rec:
                caches[text] = cache
                todo.put((text, True))

    threads = [threading.Thread(target=worker, args=(g,)) for g in gpus]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    _write(args.out, results, t0)
    return 0


def _write(path: str, results: list, t0: float) -> None:
    doc = {"command": "python bench/op_profile.py " + " ".join(sys.argv[1:]), "host_cpu": platform.processor(),
           "host_cores": os.cpu_count(), "python": platform.python_version(), "torch": _torch_version(),
           "elapsed_s": round(time.monotonic() - t0, 1), "results": results}
    tmp = path + ".tmp"
    Path(tmp).write_text(json.dumps(doc, indent=0) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _torch_version() -> str | None:
    try:
        import torch

        return torch.__version__
    except ImportError:
        return None


if __name__ == "__main__":
    raise SystemExit(main())
