#!/usr/bin/env python3
"""Training throughput and MFU of the built-in payload, through its own probe mode.

Each configuration runs ``payloads/train.py --probe-steps N`` in a fresh process (the same
code path a real job takes: compile, channels_last, fused optimizer) and reads its
``probe`` event. Model FLOPs per sample (forward + backward) are counted here with
torch's FlopCounterMode on the meta device, so no compute is spent on counting.

    python bench/payload_throughput.py --models vgg16,resnet50 --precisions fp32,tf32,bf16 \\
        --batch-sizes 128,256 --out bench/results/h100_payload.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from payloads.protocol import parse_line  # noqa: E402

# Dense peak FLOP/s of an H100 SXM (no sparsity): the MFU denominators.
H100_PEAK = {"bf16": 989.4e12, "fp16": 989.4e12, "tf32": 494.7e12, "fp32": 66.9e12}


def flops_per_sample(model: str, image_size: int, num_classes: int, in_channels: int) -> float:
    """Forward + backward FLOPs of one training sample (input needs no gradient)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from payloads.models import build_model

    with torch.device("meta"):
        m = build_model(model, num_classes, in_channels, image_size)
        x = torch.randn(2, in_channels, image_size, image_size)
    counter = FlopCounterMode(display=False)
    with counter:
        m(x).sum().backward()
    return counter.get_total_flops() / 2


def run_probe(cfg: dict, steps: int, warmup: int, device: str, extra: list[str], timeout: float) -> dict:
    cmd = [sys.executable, os.path.join(ROOT, "payloads", "train.py"), "--device", device,
           "--model", cfg["model"], "--precision", cfg["precision"], "--batch-size", str(cfg["batch_size"]),
           "--image-size", str(cfg["image_size"]), "--num-classes", str(cfg["num_classes"]),
           "--channels-last" if cfg["channels_last"] else "--no-channels-last",
           "--compile" if cfg["compile"] else "--no-compile",
           "--probe-steps", str(steps), "--warmup-steps", str(warmup), *extra]
    t = time.monotonic()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f}s", "wall_s": round(time.monotonic() - t, 1)}
    events = [e for e in map(parse_line, proc.stdout.splitlines()) if e]
    probe = next((e for e in events if e["event"] == "probe"), None)
    start = next((e for e in events if e["event"] == "start"), {})
    if proc.returncode != 0 or probe is None:
        tail = (proc.stderr.strip().splitlines() or ["(no stderr)"])[-1]
        return {"error": f"exit {proc.returncode}: {tail}", "wall_s": round(time.monotonic() - t, 1)}
    return {"samples_per_second": probe["samples_per_second"], "steps": probe["steps"], "seconds": probe["seconds"],
            "device_name": start.get("device_name"), "fast_layers": probe.get("fast_layers"),
            "wall_s": round(time.monotonic() - t, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="vgg16,resnet50")
    ap.add_argument("--precisions", default="fp32,tf32,bf16")
    ap.add_argument("--batch-sizes", default="128,256")
    ap.add_argument("--channels-last", default="1", help="comma list of 0/1")
    ap.add_argument("--compile", default="auto", help="comma list of 0/1; auto = 1 on cuda, 0 on cpu")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--num-classes", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=20, help="timed steps per configuration")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps (default: 10 cuda, 2 cpu)")
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--out", help="write the list of results here (JSON)")
    ap.add_argument("--extra", default="", help="more train.py flags, space-separated; write --extra=--flag "
                                                "when the value itself starts with a dash")
    a = ap.parse_args()

    import torch

    compile_opts = ([1] if a.device == "cuda" else [0]) if a.compile == "auto" else [int(v) for v in a.compile.split(",")]
    warmup = a.warmup if a.warmup is not None else (10 if a.device == "cuda" else 2)
    peak = H100_PEAK
    results = []
    flops_cache: dict[str, float] = {}
    grid = itertools.product(a.models.split(","), a.precisions.split(","), [int(b) for b in a.batch_sizes.split(",")],
                             [bool(int(v)) for v in a.channels_last.split(",")], [bool(v) for v in compile_opts])
    for model, precision, batch, cl, comp in grid:
        if model not in flops_cache:
            flops_cache[model] = flops_per_sample(model, a.image_size, a.num_classes, 3)
        cfg = dict(model=model, precision=precision, batch_size=batch, channels_last=cl, compile=comp,
                   image_size=a.image_size, num_classes=a.num_classes)
        r = run_probe(cfg, a.steps, warmup, a.device, a.extra.split(), a.timeout)
        row = {**{k: cfg[k] for k in ("model", "precision", "batch_size", "channels_last", "compile")},
               "samples_per_second": r.get("samples_per_second"), "flops_per_sample": flops_cache[model],
               "mfu": None, "device_name": r.get("device_name"), "fast_layers": r.get("fast_layers"),
               "torch": torch.__version__,
               "image_size": a.image_size, "steps": a.steps, "warmup_steps": warmup, "wall_s": r.get("wall_s")}
        if a.extra:
            row["extra_args"] = a.extra
        if r.get("samples_per_second") and a.device == "cuda":
            row["mfu"] = round(r["samples_per_second"] * flops_cache[model] / peak[precision], 4)
        if "error" in r:
            row["error"] = r["error"]
        results.append(row)
        print(json.dumps(row), flush=True)
        if a.out:  # after every row: a run cut short keeps what it measured
            os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
            with open(a.out, "w", encoding="utf-8") as f:
                json.dump(results, f, indent=1)
    print(f"{'model':9} {'prec':5} {'batch':>5} {'cl':>2} {'cmp':>3} {'samples/s':>10} {'MFU':>6}", file=sys.stderr)
    for r in results:
        sps = f"{r['samples_per_second']:.1f}" if r["samples_per_second"] else r.get("error", "-")[:40]
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] else "-"
        print(f"{r['model']:9} {r['precision']:5} {r['batch_size']:>5} {int(r['channels_last']):>2} "
              f"{int(r['compile']):>3} {sps:>10} {mfu:>6}", file=sys.stderr)
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
