"""Scaled dot-product attention alone (no model) on a GPU: time per FLOP by head dimension,
sequence length, causality and precision, as the payload's step runs it.

For each configuration q, k, v of shape (batch, heads, seq, head_dim) go through
``F.scaled_dot_product_attention`` (the backend torch picks, as in the payload: cuDNN/flash in
bf16, the memory-efficient kernel in fp32), forward alone and forward + backward
(``torch.autograd.grad``), each timed with CUDA events (median of ``--reps`` after two warm-up
calls) at the payload's backend settings for its precision (``payloads.runtime.set_precision``).
FLOPs are torch's ``sdpa_flop_count`` / ``sdpa_backward_flop_count`` times the causal share the
estimator counts (``launcher.estimate.opcount.causal_fraction``). The ``model`` rows repeat the
attention shapes of the profiled models (GPT-2, lm-1b, lm-3b, ViT-B/16) to check that the
microbenchmark reproduces their in-step kernel times. The kernel names of one call per
(precision, head_dim, causal) are kept (torch.profiler).

    python bench/attn_shapes.py --out attn_shapes_h200.json [--reps 5]

Prints one JSON summary line and writes the document to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.gemm_align import timed  # noqa: E402  (median of CUDA-event timings)

HEAD_DIMS = {"bf16": (64, 80, 96, 128), "fp32": (64, 96, 128)}
SEQS = {"bf16": (197, 512, 1024, 2048, 4096), "fp32": (197, 1024, 2048)}
HEADS = 16
TARGET_FLOPS = {"bf16": 1e12, "fp32": 3e11}  # forward FLOPs per call: a few ms each
# (name, batch, heads, seq, head_dim, causal, precision): the profiled models' attention
MODELS = (("gpt2-124m", 32, 12, 1024, 64, True, "bf16"), ("lm-1b", 16, 32, 2048, 64, True, "bf16"),
          ("lm-3b", 8, 24, 2048, 128, True, "bf16"), ("vit_b16", 128, 12, 197, 64, False, "bf16"),
          ("vit_b16", 64, 12, 197, 64, False, "bf16"), ("gpt2-124m", 16, 12, 1024, 64, True, "fp32"),
          ("vit_b16", 64, 12, 197, 64, False, "fp32"))


def causal_share(seq: int, causal: bool, tile: int = 128) -> float:
    """launcher.estimate.opcount.causal_fraction (written out: the device has no launcher deps)."""
    n = max(1, -(-seq // tile))
    return (n + 1) / (2 * n) if causal else 1.0


def kernels(fn) -> list[str]:
    import torch
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return sorted({e.key[:160] for e in prof.key_averages() if e.device_type.name == "CUDA"})


def measure(batch: int, heads: int, seq: int, dim: int, causal: bool, precision: str, reps: int,
            names: bool = False) -> dict:
    import torch
    import torch.nn.functional as F
    from torch.utils.flop_counter import sdpa_backward_flop_count, sdpa_flop_count

    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    shape = (batch, heads, seq, dim)
    q, k, v = (torch.randn(shape, device="cuda", dtype=dtype, requires_grad=True) for _ in range(3))
    go = torch.randn(shape, device="cuda", dtype=dtype)
    fwd = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal)  # noqa: E731
    both = lambda: torch.autograd.grad(fwd(), (q, k, v), go)  # noqa: E731
    share = causal_share(seq, causal)
    f_fwd = float(sdpa_flop_count(shape, shape, shape)) * share
    f_bwd = float(sdpa_backward_flop_count(shape, shape, shape, shape)) * share
    t_fwd, t_both = timed(fwd, reps), timed(both, reps)
    row = {"precision": precision, "batch": batch, "heads": heads, "seq": seq, "head_dim": dim, "causal": causal,
           "flops_forward": f_fwd, "flops_backward": f_bwd, "forward_s": t_fwd, "forward_backward_s": t_both,
           "forward_tflops": round(f_fwd / t_fwd / 1e12, 2),
           "backward_tflops": round(f_bwd / max(t_both - t_fwd, 1e-9) / 1e12, 2),
           "step_tflops": round((f_fwd + f_bwd) / t_both / 1e12, 2)}
    if names:
        row["kernels"] = kernels(both)
    del q, k, v, go
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args(argv)
    import torch

    from payloads.runtime import set_precision

    t0 = time.monotonic()
    doc = {"generated_by": "python3 bench/attn_shapes.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "device_name": torch.cuda.get_device_name(), "torch": torch.__version__, "results": [], "models": []}
    for precision in ("bf16", "fp32"):
        set_precision(precision, torch.device("cuda"))
        for dim in HEAD_DIMS[precision]:
            for causal in (True, False):
                for seq in SEQS[precision]:
                    per_batch = 4.0 * HEADS * seq * seq * dim * causal_share(seq, causal)
                    batch = max(1, round(TARGET_FLOPS[precision] / per_batch))
                    doc["results"].append(measure(batch, HEADS, seq, dim, causal, precision, args.reps,
                                                  names=seq == 1024))
                    torch.cuda.empty_cache()
    for name, batch, heads, seq, dim, causal, precision in MODELS:
        set_precision(precision, torch.device("cuda"))
        doc["models"].append({"model": name, **measure(batch, heads, seq, dim, causal, precision, args.reps, True)})
        torch.cuda.empty_cache()
    doc["seconds"] = round(time.monotonic() - t0, 1)
    Path(args.out).write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    print(json.dumps({"rows": len(doc["results"]), "models": [(m["model"], m["precision"], m["step_tflops"])
                                                              for m in doc["models"]], "seconds": doc["seconds"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
