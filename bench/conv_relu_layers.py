#!/usr/bin/env python3
"""Per-layer time of VGG16's convolutions: unfused conv -> bias -> ReLU against the fused
cuDNN conv+bias+ReLU op (payloads/fused.py), forward and forward+backward, on one GPU.

    python bench/conv_relu_layers.py --batch-size 256 --out bench/results/h100_conv_relu_layers.json

Prints JSON: per layer milliseconds for each variant and the largest difference in output.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from payloads.fused import conv2d_relu  # noqa: E402

# (input channels, output channels, side) of VGG16's 13 convs at 224x224; the first input is
# padded to 8 channels as the payload does on CUDA.
VGG16_CONVS = [(8, 64, 224), (64, 64, 224), (64, 128, 112), (128, 128, 112), (128, 256, 56), (256, 256, 56),
               (256, 256, 56), (256, 512, 28), (512, 512, 28), (512, 512, 28), (512, 512, 14), (512, 512, 14),
               (512, 512, 14)]


def timed(fn, reps: int) -> float:
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    for _ in range(reps):
        fn()
    b.record()
    torch.cuda.synchronize()
    return a.elapsed_time(b) / reps


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--out")
    a = ap.parse_args()
    torch.backends.cudnn.benchmark = True
    dev, dt, cl = "cuda", torch.bfloat16, torch.channels_last
    rows = []
    for cin, cout, side in VGG16_CONVS:
        x = torch.randn(a.batch_size, cin, side, side, device=dev, dtype=dt).contiguous(memory_format=cl)
        w = (torch.randn(cout, cin, 3, 3, device=dev, dtype=dt) * 0.05).contiguous(memory_format=cl)
        b = torch.randn(cout, device=dev, dtype=dt) * 0.1
        ref = F.relu(F.conv2d(x, w, b, 1, 1))
        got = conv2d_relu(x, w, b, [1, 1], [1, 1], [1, 1], 1)
        gy = torch.randn_like(ref)
        xr, wr, br = (t.detach().requires_grad_() for t in (x, w, b))

        def unfused_fb():
            F.relu(F.conv2d(xr, wr, br, 1, 1)).backward(gy)

        def fused_fb():
            conv2d_relu(xr, wr, br, [1, 1], [1, 1], [1, 1], 1).backward(gy)

        rows.append({
            "cin": cin, "cout": cout, "side": side,
            "max_abs_diff": float((ref.float() - got.float()).abs().max()),
            "same_layout": got.is_contiguous(memory_format=cl) == ref.is_contiguous(memory_format=cl),
            "conv_only_ms": round(timed(lambda: F.conv2d(x, w, None, 1, 1), a.reps), 3),
            "unfused_fwd_ms": round(timed(lambda: F.relu(F.conv2d(x, w, b, 1, 1)), a.reps), 3),
            "fused_fwd_ms": round(timed(lambda: conv2d_relu(x, w, b, [1, 1], [1, 1], [1, 1], 1), a.reps), 3),
            "unfused_fwd_bwd_ms": round(timed(unfused_fb, a.reps), 3),
            "fused_fwd_bwd_ms": round(timed(fused_fb, a.reps), 3),
        })
        print(json.dumps(rows[-1]), file=sys.stderr)
    tot = {k: round(sum(r[k] for r in rows), 2) for k in rows[0] if k.endswith("_ms")}
    out = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
           "cudnn": torch.backends.cudnn.version(), "batch_size": a.batch_size, "dtype": "bf16",
           "layers": rows, "total_ms": tot}
    text = json.dumps(out, indent=1)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
