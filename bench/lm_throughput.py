#!/usr/bin/env python3
"""Language-model tokens/s, MFU and peak memory of the built-in payload, against the planner.

Each configuration runs ``payloads/train.py --probe-steps N`` in fresh processes (one, or
``torchrun`` for FSDP over several GPUs): the code path a real job takes. Single-GPU runs of a
phase go side by side, one per GPU (``CUDA_VISIBLE_DEVICES``). The probe event carries
tokens/s, TFLOP/s per GPU (lm_shapes.train_flops_per_token: 6 x matmul parameters + attention),
``torch.cuda.max_memory_allocated`` and the memory planner's figure for the same run; this
script adds MFU against the GPU's dense peak (launcher/catalog/gpus.py) and writes one JSON list.
A run that runs out of memory is retried once at half the batch (at batch 1: with activation
checkpointing); one that fails otherwise, once without torch.compile. Runs that would start after
``--deadline-s`` are skipped and listed as such.

    python bench/lm_throughput.py --plan h200 --out $OUT/lm_h200.json      # what docs/benchmarks.md ran
    python bench/lm_throughput.py --plan cpu-tiny --out /tmp/lm_cpu.json    # the same driver on a CPU
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from payloads.protocol import parse_line  # noqa: E402

TINY = {"d_model": 64, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "d_ff": 128}
# phases run one after another; the runs of a phase run at once, each on its own GPUs
PLANS = {
    "h200": [
        [dict(model="gpt2-124m", vocab_size=50304, seq_len=1024, batch_size=32, gpus=[0]),
         dict(model="lm-1b", seq_len=2048, batch_size=16, gpus=[1])],
        # torchtitan's Llama-3-8B length (8192), so its published H100 figures compare directly
        [dict(model="lm-8b", seq_len=8192, batch_size=1, gpus=[0, 1], parallel="fsdp")],
        [dict(model="lm-3b", seq_len=2048, batch_size=8, gpus=[0]),
         dict(model="lm-1b", seq_len=2048, batch_size=32, gpus=[1], activation_checkpointing=True)],
    ],
    "h200-1gpu": [  # when only one GPU is lent: the single-GPU runs of "h200", one after another
        [dict(model="lm-1b", seq_len=2048, batch_size=16, gpus=[0])],
        [dict(model="lm-3b", seq_len=2048, batch_size=8, gpus=[0])],
        [dict(model="gpt2-124m", vocab_size=50304, seq_len=1024, batch_size=32, gpus=[0])],
        [dict(model="lm-1b", seq_len=2048, batch_size=32, gpus=[0], activation_checkpointing=True)],
    ],
    "h200-check": [  # configurations the memory count was not fitted on (second call)
        [dict(model="lm-8b", model_args={"n_layers": 8}, seq_len=2048, batch_size=4, gpus=[0])],
        [dict(model="lm-1b", seq_len=4096, batch_size=8, gpus=[0])],
        [dict(model="lm-3b", seq_len=2048, batch_size=16, gpus=[0], activation_checkpointing=True)],
        [dict(model="gpt2-124m", seq_len=1024, batch_size=64, gpus=[0])],
    ],
    "cpu-tiny": [
        [dict(model="lm", model_args=TINY, vocab_size=256, seq_len=32, batch_size=2, gpus=[]),
         dict(model="gpt2-124m", model_args={"n_layers": 1}, vocab_size=512, seq_len=32, batch_size=2, gpus=[])],
        [dict(model="lm", model_args=TINY, vocab_size=256, seq_len=32, batch_size=2, gpus=[], procs=2,
              parallel="fsdp")],
    ],
}


def command(cfg: dict, steps: int, warmup: int, device: str) -> list[str]:
    procs = max(len(cfg["gpus"]), cfg.get("procs", 1))
    train = os.path.join(ROOT, "payloads", "train.py")
    head = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs), train]
            if procs > 1 else [sys.executable, train])
    args = ["--device", device, "--model", cfg["model"], "--seq-len", str(cfg["seq_len"]),
            "--batch-size", str(cfg["batch_size"]), "--precision", cfg.get("precision", "bf16"),
            "--probe-steps", str(steps), "--warmup-steps", str(warmup), "--dataset", "synthetic",
            "--parallel", cfg.get("parallel", "auto")]
    if cfg.get("vocab_size"):
        args += ["--vocab-size", str(cfg["vocab_size"])]
    if cfg.get("compile") is False:
        args.append("--no-compile")
    if cfg.get("activation_checkpointing") is not None:
        args.append("--activation-checkpointing" if cfg["activation_checkpointing"] else "--no-activation-checkpointing")
    return head + args


def start(cfg: dict, steps: int, warmup: int, device: str, out_dir: str) -> tuple[subprocess.Popen, dict]:
    env = dict(os.environ)
    if cfg["gpus"]:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, cfg["gpus"]))
    else:
        env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = ROOT
    work = os.path.join(out_dir, f"run-{os.getpid()}-{time.monotonic_ns()}")
    os.makedirs(work, exist_ok=True)
    if cfg.get("model_args"):  # model_args travels in the config file, as the launcher sends it
        with open(os.path.join(work, "job.json"), "w", encoding="utf-8") as f:
            json.dump({"model_args": cfg["model_args"]}, f)
    cmd = command(cfg, steps, warmup, device) + (["--config", "job.json"] if cfg.get("model_args") else [])
    proc = subprocess.Popen(cmd, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    return proc, {"cmd": " ".join(cmd[1:]).replace(ROOT + "/", ""), "t0": time.monotonic()}


def finish(proc: subprocess.Popen, info: dict, cfg: dict, timeout: float, peak: float | None) -> dict:
    try:
        stdout, stderr = proc.communicate(timeout=max(1.0, timeout))
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        stdout, stderr = proc.communicate()
        return {**_cfg(cfg), "error": f"timed out after {timeout:.0f}s", "stderr_tail": stderr[-1500:]}
    wall = round(time.monotonic() - info["t0"], 1)
    events = [e for e in map(parse_line, stdout.splitlines()) if e]
    probe = next((e for e in events if e["event"] == "probe"), None)
    start_ev = next((e for e in events if e["event"] == "start"), {})
    if probe is None:
        oom = "out of memory" in stderr.lower() or "OutOfMemoryError" in stderr
        return {**_cfg(cfg), "error": "out of memory" if oom else f"exit {proc.returncode}", "wall_s": wall,
                "command": info["cmd"], "stderr_tail": stderr[-2500:]}
    rec = {**_cfg(cfg), "command": info["cmd"], "wall_s": wall, "device_name": start_ev.get("device_name"),
           "params": start_ev.get("params"), "torch": _torch_version(),
           **{k: probe.get(k) for k in ("tokens_per_second", "tflops_per_gpu", "flops_per_token", "steps", "seconds",
                                        "warmup_steps", "world_size", "parallel", "activation_checkpointing",
                                        "max_memory_allocated_gib", "static_memory_gib", "planned_memory_gib",
                                        "memory_plan_gib", "compile", "loss")}}
    # the calibration's units for language models: a sample is a token
    rec["samples_per_second"] = rec["tokens_per_second"]
    rec["flops_per_sample"] = rec["flops_per_token"]
    rec["batch_tokens"] = cfg["batch_size"] * cfg["seq_len"]
    rec["precision"] = cfg.get("precision", "bf16")
    rec["role"] = ("variant" if cfg.get("activation_checkpointing") or cfg.get("compile") is False
                   or cfg.get("model_args") else "fit")  # the calibration fits defaults
    if peak and rec.get("tflops_per_gpu") is not None:
        rec["mfu"] = round(rec["tflops_per_gpu"] / peak, 4)
    if rec.get("max_memory_allocated_gib") and rec.get("planned_memory_gib"):
        rec["plan_error"] = round(rec["planned_memory_gib"] / rec["max_memory_allocated_gib"] - 1, 4)
    return rec


def _cfg(cfg: dict) -> dict:
    return {k: v for k, v in cfg.items() if k != "gpus"} | {"gpu_count": len(cfg["gpus"]) or None}


def _torch_version() -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return "?"


def peak_tflops(device: str) -> float | None:
    if device != "cuda":
        return None
    out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                         text=True).stdout.splitlines()
    try:
        from launcher.catalog.gpus import get_gpu
        from launcher.estimate.calibration import gpu_from_device_name

        name = gpu_from_device_name(out[0]) if out else None
        return get_gpu(name).peak("bf16") if name else None
    except Exception as exc:  # MFU can be computed afterwards from tflops_per_gpu
        print(f"no peak for {out[:1]}: {exc}", file=sys.stderr)
        return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--plan", choices=sorted(PLANS), default="h200")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--device", choices=("cuda", "cpu"), default=None)
    ap.add_argument("--deadline-s", type=float, default=330.0, help="start no run after this many seconds")
    ap.add_argument("--run-timeout-s", type=float, default=200.0)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    device = args.device or ("cpu" if args.plan.startswith("cpu") else "cuda")
    peak = peak_tflops(device)
    t_begin = time.monotonic()
    work_dir = tempfile.mkdtemp(prefix="lm-bench-")
    results: list[dict] = []

    def save() -> None:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump({"peak_tflops_bf16": peak, "results": results}, f, indent=1)

    for phase in PLANS[args.plan]:
        pending = list(phase)
        retried: set[int] = set()
        while pending:
            left = args.deadline_s - (time.monotonic() - t_begin)
            if left <= 0:
                results += [{**_cfg(c), "error": "skipped: deadline"} for c in pending]
                break
            running = [(c, *start(c, args.steps, args.warmup, device, work_dir)) for c in pending]
            pending = []
            for c, proc, info in running:
                budget = min(args.run_timeout_s, args.deadline_s + 60 - (time.monotonic() - t_begin))
                rec = finish(proc, info, c, budget, peak)
                err = rec.get("error") or ""
                if err and not err.startswith("timed out") and id(c) not in retried:
                    results.append(rec)
                    if err == "out of memory":  # once more: half the batch, or checkpointing at batch 1
                        c = ({**c, "batch_size": c["batch_size"] // 2} if c["batch_size"] > 1 else
                             {**c, "activation_checkpointing": True})
                    else:  # a crash: once more without torch.compile, to have a number at all
                        c = {**c, "compile": False}
                    retried.add(id(c))
                    pending.append(c)
                else:
                    results.append(rec)
                save()
                keep = ("model", "batch_size", "gpu_count", "tokens_per_second", "mfu", "max_memory_allocated_gib",
                        "planned_memory_gib", "plan_error", "error", "wall_s")
                print(json.dumps({k: rec.get(k) for k in keep}), flush=True)
    save()
    print(f"{'model':<10} {'gpus':>4} {'batch':>5} {'tokens/s':>10} {'MFU':>6} {'peak GiB':>9} {'plan GiB':>9}")
    for r in results:
        if r.get("error"):
            print(f"{r['model']:<10} {r.get('gpu_count') or 0:>4} {r['batch_size']:>5} {r['error']}")
            continue
        mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") is not None else "-"
        print(f"{r['model']:<10} {r.get('gpu_count') or 0:>4} {r['batch_size']:>5} {r['tokens_per_second']:>10.0f} "
              f"{mfu:>6} {r.get('max_memory_allocated_gib') or 0:>9.1f} {r['planned_memory_gib']:>9.1f}")


if __name__ == "__main__":
    main()
