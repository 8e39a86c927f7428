#!/usr/bin/env python3
"""Data-parallel scaling of the built-in payload: 1 and 2 processes (one per GPU) under torchrun.

Every cell runs ``torchrun --standalone --nproc_per_node N payloads/train.py --probe-steps S``
in a fresh process group (the payload's own CUDA defaults: channels_last, torch.compile,
fused SGD, DDP with gradient_as_bucket_view) and reads the ``probe`` event rank 0 prints.
One-process cells of two models run at once, one per GPU (``CUDA_VISIBLE_DEVICES``); the
two-process cells run alone. Before the cells, an NCCL all-reduce of gradient-sized fp32
buffers measures the bus bandwidth between the GPUs; after the core cells, an optional
sustained ``gpujob run --provider local`` with ``accelerators: GPU:2`` runs end to end.

Cells run in priority order against a wall-clock budget (``--budget-s``): a cell that no
longer fits is recorded as skipped, so the command always ends with its table. Results go
to ``OUT_DIR/ddp_scaling.json`` after every cell.

    python bench/ddp_scaling.py --out-dir $OUT --budget-s 520 --run-model vgg16
    python bench/ddp_scaling.py --device cpu --image-size 32 --num-classes 10 --batch-size 8 \
        --models tinycnn,mlp --core tinycnn --tf32 "" --steps 3 --tiny-steps 3 --warmup 1 --allreduce-mb 1,2 --out-dir /tmp/d
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.local_cli import run_local_cli  # noqa: E402
from payloads.protocol import parse_line  # noqa: E402

# NVLink multicast stays off (device README: a multicast setup can wedge a shared host's GPUs).
SAFE_ENV = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1",
            "PYTHONUNBUFFERED": "1"}
TINY = ("tinycnn", "mlp")


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {**os.environ, **SAFE_ENV, **(extra or {})}


def _spawn(cmd: list[str], env: dict[str, str], log_path: str) -> subprocess.Popen:
    # Own process group: a cell that overruns dies with all its ranks, nothing lingers.
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=open(log_path, "w"), text=True, env=env,
                            start_new_session=True)


def _finish(proc: subprocess.Popen, timeout: float) -> tuple[str, bool]:
    try:
        out, _ = proc.communicate(timeout=max(1.0, timeout))
        return out, False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        return out or "", True


def _tail(path: str, n: int = 3) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = [ln.strip() for ln in f if ln.strip()]
    except OSError:
        return ""
    return " | ".join(lines[-n:])[-600:]


# --- one probe cell --------------------------------------------------------------------

def cell_command(c: dict, a: argparse.Namespace) -> list[str]:
    steps = a.tiny_steps if c["model"] in TINY else a.steps
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(c["procs"]),
            os.path.join(ROOT, "payloads", "train.py"), "--device", a.device, "--model", c["model"],
            "--precision", c["precision"], "--batch-size", str(a.batch_size), "--image-size", str(a.image_size),
            "--num-classes", str(a.num_classes), "--fast-layers" if c["fast_layers"] else "--no-fast-layers",
            "--probe-steps", str(steps), "--warmup-steps", str(a.warmup), *a.extra.split()]


def start_cell(c: dict, a: argparse.Namespace, gpu: str | None, logdir: str) -> tuple[subprocess.Popen, str, float]:
    extra = {"CUDA_VISIBLE_DEVICES": gpu} if gpu is not None else {}
    if a.device == "cpu":
        extra["OMP_NUM_THREADS"] = "1"
    log = os.path.join(logdir, f"{cell_id(c)}.err")
    return _spawn(cell_command(c, a), _env(extra), log), log, time.monotonic()


def read_cell(c: dict, proc: subprocess.Popen, log: str, t0: float, timeout: float) -> dict:
    out, killed = _finish(proc, timeout - (time.monotonic() - t0))
    wall = round(time.monotonic() - t0, 1)
    events = [e for e in map(parse_line, out.splitlines()) if e]
    probe = next((e for e in events if e["event"] == "probe"), None)
    start = next((e for e in events if e["event"] == "start"), {})
    row = {**c, "wall_s": wall, "device_name": start.get("device_name"), "world_size": start.get("world_size")}
    if probe is None or proc.returncode != 0:
        why = f"timed out after {wall:.0f}s" if killed else f"exit {proc.returncode}"
        row["error"] = f"{why}: {_tail(log)}"
        return row
    row.update(samples_per_second=probe["samples_per_second"], steps=probe["steps"], seconds=probe["seconds"],
               step_seconds=round(probe["seconds"] / probe["steps"], 6), global_batch_size=probe["global_batch_size"],
               fast_layers_rewritten=start.get("fast_layers"), compile=probe.get("compile"))
    return row


def cell_id(c: dict) -> str:
    return f"{c['model']}_{c['precision']}_{'fast' if c['fast_layers'] else 'plain'}_{c['procs']}p"


# --- NCCL bus bandwidth ----------------------------------------------------------------

def allreduce_worker(sizes_mb: list[float], iters: int) -> None:
    """Runs under torchrun: times all_reduce of fp32 buffers; rank 0 prints one JSON line."""
    import torch
    import torch.distributed as dist

    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group("nccl" if cuda else "gloo")
    world = dist.get_world_size()
    dev = torch.device("cuda") if cuda else torch.device("cpu")
    rows = []
    for mb in sizes_mb:
        n = int(mb * 1e6 / 4)
        t = torch.randn(n, device=dev)
        for _ in range(3):
            dist.all_reduce(t)
        if cuda:
            torch.cuda.synchronize()
        dist.barrier()
        t0 = time.perf_counter()
        for _ in range(iters):
            dist.all_reduce(t)
        if cuda:
            torch.cuda.synchronize()
        s = (time.perf_counter() - t0) / iters
        alg = n * 4 / s / 1e9
        rows.append({"megabytes": mb, "seconds": round(s, 6), "algbw_gbs": round(alg, 2),
                     "busbw_gbs": round(alg * 2 * (world - 1) / world, 2)})
    if dist.get_rank() == 0:
        print(json.dumps({"allreduce": rows, "world_size": world, "backend": dist.get_backend()}), flush=True)
    dist.destroy_process_group()


def measure_allreduce(a: argparse.Namespace, logdir: str, timeout: float) -> dict:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           os.path.abspath(__file__), "--allreduce-worker", "--allreduce-mb", a.allreduce_mb]
    log = os.path.join(logdir, "allreduce.err")
    proc = _spawn(cmd, _env({"OMP_NUM_THREADS": "1"}), log)
    out, killed = _finish(proc, timeout)
    for line in out.splitlines():
        if line.startswith("{"):
            return json.loads(line)
    return {"error": f"{'timed out' if killed else f'exit {proc.returncode}'}: {_tail(log)}"}


# --- the sustained end-to-end run ----------------------------------------------------------

def sustained_run(a: argparse.Namespace, out_dir: str, timeout: float) -> dict:
    """`gpujob run --provider local` on a spec asking for GPU:2; events to OUT_DIR/run_<model>.jsonl."""
    m = a.run_model
    samples = a.run_steps * a.batch_size * 2
    home = tempfile.mkdtemp(prefix="gpujob-home-")
    spec = os.path.join(home, f"{m}-2gpu.yaml")
    env_lines = "".join(f"  {k}: \"{v}\"\n" for k, v in SAFE_ENV.items())
    with open(spec, "w", encoding="utf-8") as f:
        f.write(f"name: {m}-{a.run_gpu.lower()}x2-short\n"
                f"workload: {{model: {m}, image_size: {a.image_size}, num_classes: {a.num_classes}, "
                f"dataset: synthetic, samples_per_epoch: {samples}, epochs: 1, batch_size: {a.batch_size}, "
                f"precision: bf16}}\n"
                f"resources: {{accelerators: \"{a.run_gpu}:2\"}}\n"
                f"limits: {{max_duration: 15m}}\n"
                f"env:\n{env_lines}")
    env = _env({"GPUJOB_HOME": home, "PYTHONPATH": os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), ROOT) if p)})
    jsonl = os.path.join(out_dir, f"run_{m}.jsonl")
    err = os.path.join(out_dir, f"run_{m}.err")
    rc, wall = run_local_cli(spec, home, env, jsonl, err, timeout, term_grace_s=30)
    row: dict = {"model": m, "rc": rc, "wall_s": round(wall, 1), "samples": samples}
    report = None
    with open(jsonl, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if ev.get("event") == "report":
                report = ev
            inner = ev.get("event")
            if isinstance(inner, dict) and inner.get("event") == "end":
                row["end"] = inner
    if report:
        row["report"] = {k: report[k] for k in report if k != "event"}
    # What the payload left behind: one checkpoint, written by rank 0 alone.
    listing = []
    for base, _dirs, files in os.walk(os.path.join(home, "artifacts")):
        for fn in files:
            p = os.path.join(base, fn)
            listing.append({"path": os.path.relpath(p, home), "bytes": os.path.getsize(p)})
    row["artifacts"] = sorted(listing, key=lambda r: r["path"])
    if rc != 0:
        row["error"] = f"exit {rc}: {_tail(err)}"
    return row


# --- the plan ------------------------------------------------------------------------------

def plan(a: argparse.Namespace) -> list[tuple[str, list[dict]]]:
    """Groups in priority order: (kind, cells). A group's 1-process cells run side by side."""
    core = [m for m in a.core.split(",") if m]
    others = [m for m in a.models.split(",") if m and m not in core]
    groups: list[tuple[str, list[dict]]] = []

    def cells(models: list[str], precision: str, fast_opts: list[bool]) -> list[dict]:
        return [dict(model=m, precision=precision, fast_layers=f, procs=p)
                for p in (1, 2) for m in models for f in fast_opts]

    for m in core:
        groups.append(("cells", cells([m], "bf16", [True, False])))
    if a.run_model:
        groups.append(("run", []))
    tiny = [m for m in others if m in TINY]
    rest = [m for m in others if m not in TINY]
    for i in range(0, len(tiny), 2):
        groups.append(("cells", cells(tiny[i:i + 2], "bf16", [True])))
    for i in range(0, len(rest), 2):
        groups.append(("cells", cells(rest[i:i + 2], "bf16", [True])))
    tf = [m for m in a.tf32.split(",") if m]
    for i in range(0, len(tf), 2):
        groups.append(("cells", cells(tf[i:i + 2], "tf32", [True])))
    return groups


def run_plan(a: argparse.Namespace) -> dict:
    os.makedirs(a.out_dir, exist_ok=True)
    logdir = a.log_dir or tempfile.mkdtemp(prefix="ddp-logs-")
    os.makedirs(logdir, exist_ok=True)
    t_start = time.monotonic()
    deadline = t_start + a.budget_s
    import torch

    result: dict = {"torch": torch.__version__, "device": a.device, "batch_size_per_gpu": a.batch_size,
                    "image_size": a.image_size, "num_classes": a.num_classes, "steps": a.steps,
                    "tiny_steps": a.tiny_steps, "warmup_steps": a.warmup, "budget_s": a.budget_s,
                    "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
                    if a.device == "cuda" else [], "cells": [], "skipped": []}
    out_json = os.path.join(a.out_dir, "ddp_scaling.json")

    def save() -> None:
        result["elapsed_s"] = round(time.monotonic() - t_start, 1)
        with open(out_json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)

    def left() -> float:
        return deadline - time.monotonic()

    if a.allreduce_mb:
        result["allreduce"] = measure_allreduce(a, logdir, min(90.0, left()))
        print(json.dumps({"allreduce": result["allreduce"]}), flush=True)
        save()
    walls: dict[str, float] = {}  # model -> slowest measured 1-process wall: a guess at the next cell's

    def guess(c: dict) -> float:
        base = walls.get(c["model"], a.default_cell_s)
        return base * (1.3 if c["procs"] > 1 else 1.0)

    for kind, cells in plan(a):
        if kind == "run":
            need = walls.get(a.run_model, a.default_cell_s) * 1.3 + 20
            if left() < need:
                result["skipped"].append({"run": a.run_model, "why": f"{left():.0f}s left, ~{need:.0f}s needed"})
                continue
            row = sustained_run(a, a.out_dir, left() - 5)
            result["run"] = row
            print(json.dumps({"run": {k: row.get(k) for k in ("model", "rc", "wall_s", "error")}}), flush=True)
            save()
            continue
        singles = [c for c in cells if c["procs"] == 1]
        multi = [c for c in cells if c["procs"] > 1]
        # One-process cells side by side, one GPU each (on the CPU: one at a time).
        width = a.gpus if a.device == "cuda" else 1
        for i in range(0, len(singles), width):
            batch = singles[i:i + width]
            need = max(guess(c) for c in batch)
            if left() < need:
                result["skipped"] += [{**c, "why": f"{left():.0f}s left, ~{need:.0f}s needed"} for c in batch]
                continue
            started = [(c, *start_cell(c, a, str(j) if a.device == "cuda" else None, logdir))
                       for j, c in enumerate(batch)]
            for c, proc, log, t0 in started:
                row = read_cell(c, proc, log, t0, min(a.cell_timeout, left()))
                if "error" not in row:
                    walls[c["model"]] = max(walls.get(c["model"], 0.0), row["wall_s"])
                result["cells"].append(row)
                print(json.dumps(row), flush=True)
                save()
        for c in multi:
            need = guess(c)
            if left() < need:
                result["skipped"].append({**c, "why": f"{left():.0f}s left, ~{need:.0f}s needed"})
                continue
            proc, log, t0 = start_cell(c, a, None, logdir)
            row = read_cell(c, proc, log, t0, min(a.cell_timeout, left()))
            result["cells"].append(row)
            print(json.dumps(row), flush=True)
            save()
    save()
    return result


def scaling_rows(result: dict) -> list[dict]:
    """Per (model, precision, fast): 1- and 2-process samples/s and the efficiency."""
    by: dict[tuple, dict] = {}
    for c in result.get("cells", []):
        key = (c["model"], c["precision"], c["fast_layers"])
        by.setdefault(key, {})[c["procs"]] = c
    rows = []
    for (m, p, f), d in by.items():
        one, two = d.get(1, {}).get("samples_per_second"), d.get(2, {}).get("samples_per_second")
        rows.append({"model": m, "precision": p, "fast_layers": f, "sps_1": one, "sps_2": two,
                     "efficiency": round(two / (2 * one), 4) if one and two else None,
                     "step_1": d.get(1, {}).get("step_seconds"), "step_2": d.get(2, {}).get("step_seconds")})
    return rows


def print_table(result: dict) -> None:
    ar = result.get("allreduce") or {}
    for r in ar.get("allreduce", []):
        print(f"all-reduce {r['megabytes']:>7.1f} MB: {r['seconds'] * 1e3:8.2f} ms  busbw {r['busbw_gbs']:7.1f} GB/s")
    if ar.get("error"):
        print(f"all-reduce: {ar['error']}")
    print(f"{'model':9} {'prec':5} {'fast':>4} {'1 GPU/s':>9} {'2 GPU/s':>9} {'eff':>6}")
    for r in scaling_rows(result):
        s1 = f"{r['sps_1']:.0f}" if r["sps_1"] else "-"
        s2 = f"{r['sps_2']:.0f}" if r["sps_2"] else "-"
        eff = f"{100 * r['efficiency']:.1f}%" if r["efficiency"] else "-"
        print(f"{r['model']:9} {r['precision']:5} {('on' if r['fast_layers'] else 'off'):>4} {s1:>9} {s2:>9} {eff:>6}")
    for c in result.get("cells", []):
        if "error" in c:
            print(f"error {cell_id(c)}: {c['error'][:300]}")
    for s in result.get("skipped", []):
        print(f"skipped {s.get('run') or cell_id(s)}: {s['why']}")
    run = result.get("run")
    if run:
        end = run.get("end") or {}
        print(f"gpujob run {run['model']} x2: rc={run['rc']} wall={run['wall_s']}s steady={end.get('samples_per_second')}"
              f" samples/s {run.get('error', '')[:300]}")
    print(f"elapsed {result.get('elapsed_s')} s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-dir", default="ddp-out")
    ap.add_argument("--log-dir", help="per-cell stderr logs (default: a temp folder)")
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    ap.add_argument("--gpus", type=int, default=2, help="one-process cells run this many at a time, one per GPU")
    ap.add_argument("--core", default="vgg16,resnet50", help="models measured with fast layers on and off")
    ap.add_argument("--models", default="vgg16,vgg11,resnet50,resnet18,tinycnn,mlp",
                    help="all models; those not in --core run with fast layers on only")
    ap.add_argument("--tf32", default="vgg16,resnet50", help="models also measured in tf32 (fast layers on)")
    ap.add_argument("--batch-size", type=int, default=256, help="per process (per GPU)")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--num-classes", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=30, help="timed steps per cell")
    ap.add_argument("--tiny-steps", type=int, default=200, help="timed steps for tinycnn and mlp")
    ap.add_argument("--warmup", type=int, default=10, help="untimed steps (compile, autotune, DDP bucket rebuild)")
    ap.add_argument("--extra", default="", help="more train.py flags, space-separated")
    ap.add_argument("--budget-s", type=float, default=520, help="wall-clock budget for everything")
    ap.add_argument("--cell-timeout", type=float, default=240)
    ap.add_argument("--default-cell-s", type=float, default=60, help="guessed wall of a cell not seen yet")
    ap.add_argument("--allreduce-mb", default="25,102.2,553.4",
                    help="fp32 all-reduce sizes in MB (DDP bucket, ResNet-50 and VGG16 gradients); '' skips")
    ap.add_argument("--run-model", default="", help="also run `gpujob run --provider local` on this model, 2 GPUs")
    ap.add_argument("--run-gpu", default="H200", help="the spec's accelerator name for --run-model")
    ap.add_argument("--run-steps", type=int, default=300, help="steps of that run (batch per GPU x 2 per step)")
    ap.add_argument("--allreduce-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--iters", type=int, default=20, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.allreduce_worker:
        allreduce_worker([float(v) for v in a.allreduce_mb.split(",")], a.iters)
        return 0
    result = run_plan(a)
    print_table(result)
    return 0 if all("error" not in c for c in result["cells"]) else 1


if __name__ == "__main__":
    sys.exit(main())
