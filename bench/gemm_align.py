"""Two GEMM effects a language model's step shows, measured on matrix products alone (no model):

1. *Alignment.* A linear layer whose output width N is not a multiple of 8 elements (16 bytes in
   bf16; a vocabulary of 50,257) against the same layer padded to a multiple of 64: the forward
   (x @ W^T), the input gradient (dY @ W) and the weight gradient (dY^T @ x), each timed with CUDA
   events (median of ``--reps`` after two warm-up calls), at the payload's backend settings for its
   precision (``payloads.runtime.set_precision``).
2. *Sustained rate.* One large bf16 product (a Llama-shaped MLP projection) run back to back for
   ``--sustain-s`` seconds: its TFLOP/s in the first 0.5 s and in the last second, with the SM
   clock and board power ``nvidia-smi`` reads at each moment (the clock a step of back-to-back
   large products runs at, against the one the datasheet peak is quoted at).

    python bench/gemm_align.py --out gemm_align_h200.json [--reps 5] [--sustain-s 15]

Prints one JSON summary line and writes the document to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# (M tokens, K input width, N output width): N unaligned, each against N padded up to 64.
WIDTHS = (50257, 30522, 32001, 1001, 4097)
SHAPES = [(m, k, n) for m in (8192, 32768) for k in (768, 2048) for n in WIDTHS]
SUSTAIN = (32768, 2048, 8192)  # lm-1b's MLP up projection, tokens x d_model -> d_ff


def padded(n: int, to: int = 64) -> int:
    return -(-n // to) * to


def smi() -> dict:
    """SM clock (MHz) and board power (W) now, from nvidia-smi (empty when it is missing)."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=clocks.sm,clocks.max.sm,power.draw,power.limit",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=10).stdout
        sm, sm_max, power, limit = (float(v) for v in out.strip().splitlines()[0].split(","))
        return {"sm_mhz": sm, "sm_max_mhz": sm_max, "power_w": power, "power_limit_w": limit}
    except Exception as exc:  # noqa: BLE001 - a reading, not a result: say why it is missing
        return {"error": str(exc)[:200]}


def timed(fn, reps: int) -> float:
    """Median seconds of ``fn`` over ``reps`` calls (CUDA events), after two warm-up calls."""
    import torch

    fn(), fn()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e-3)
    return sorted(times)[len(times) // 2]


def alignment(precision: str, reps: int) -> list[dict]:
    import torch

    from payloads.runtime import set_precision

    device = torch.device("cuda")
    set_precision(precision, device)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    rows = []
    for m, k, n_raw in SHAPES:
        for n in (n_raw, padded(n_raw)):
            x = torch.randn(m, k, device=device, dtype=dtype)
            w = torch.randn(n, k, device=device, dtype=dtype)
            dy = torch.randn(m, n, device=device, dtype=dtype)
            for op, fn in (("forward", lambda: x @ w.t()), ("input_grad", lambda: dy @ w),
                           ("weight_grad", lambda: dy.t() @ x)):
                s = timed(fn, reps)
                rows.append({"precision": precision, "op": op, "m": m, "k": k, "n": n, "aligned": n % 8 == 0,
                             "seconds": s, "tflops": round(2.0 * m * n * k / s / 1e12, 2)})
            del x, w, dy
    torch.cuda.empty_cache()
    return rows


def sustained(seconds: float) -> dict:
    import torch

    from payloads.runtime import set_precision

    set_precision("bf16", torch.device("cuda"))
    m, k, n = SUSTAIN
    a = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(k, n, device="cuda", dtype=torch.bfloat16)
    flops = 2.0 * m * n * k
    idle = smi()

    def burst(duration: float) -> tuple[float, dict]:
        calls, t0 = 0, time.monotonic()
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        while time.monotonic() - t0 < duration:
            for _ in range(20):
                a @ b
            calls += 20
            torch.cuda.synchronize()
        end.record()
        end.synchronize()
        reading = smi()
        return flops * calls / (start.elapsed_time(end) * 1e-3) / 1e12, reading

    first, at_first = burst(0.5)
    t0 = time.monotonic()
    while time.monotonic() - t0 < max(0.0, seconds - 1.5):
        burst(1.0)
    last, at_last = burst(1.0)
    return {"shape": {"m": m, "k": k, "n": n}, "idle": idle, "first_0_5s_tflops": round(first, 1),
            "first": at_first, "last_1s_tflops": round(last, 1), "last": at_last, "seconds": seconds}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--precisions", default="bf16,fp32")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--sustain-s", type=float, default=15.0)
    args = ap.parse_args(argv)
    import torch

    t0 = time.monotonic()
    doc = {"generated_by": "python3 bench/gemm_align.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "device_name": torch.cuda.get_device_name(), "torch": torch.__version__, "results": []}
    doc["sustained"] = sustained(args.sustain_s)
    Path(args.out).write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    for p in [p for p in args.precisions.split(",") if p]:
        doc["results"] += alignment(p, args.reps)
        Path(args.out).write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    doc["wall_s"] = round(time.monotonic() - t0, 1)
    Path(args.out).write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    ratios = {}
    for r in doc["results"]:
        if not r["aligned"]:
            pad = next(q for q in doc["results"] if q["precision"] == r["precision"] and q["op"] == r["op"]
                       and (q["m"], q["k"]) == (r["m"], r["k"]) and q["n"] == padded(r["n"]))
            ratios.setdefault(r["precision"], []).append(r["seconds"] / pad["seconds"] * pad["n"] / r["n"])
    print(json.dumps({"wall_s": doc["wall_s"], "sustained": doc["sustained"],
                      "unaligned_over_aligned_median": {p: round(sorted(v)[len(v) // 2], 2) for p, v in ratios.items()}}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
