"""Device time of single convolution and matrix-product calls over a grid of shapes, for the GEMM
shape fit of the estimator (launcher/estimate/gemmfit.py), independent of any model.

    python bench/gemm_calls.py --out gemm_calls.json [--precisions bf16,fp32] [--reps 3] [--device cpu --batch 1]

Each call runs with the payload's backend settings for its precision (``payloads.runtime.
set_precision``: strict fp32 without cuDNN autotuning; bf16 with it) on channels-last tensors,
as the payload's compiled step calls cuDNN/cuBLAS: a convolution's forward, its backward (input
and weight gradient), a matrix product. All shapes run twice (cuDNN's autotuning included),
then ``reps`` times under torch.profiler, timed as ``bench/op_profile.py`` times a model's
calls (``payloads.runtime.profile_steps``: the device time of each call's kernels). Rows are in
that ``shaped`` form (name, input shapes, count, device microseconds), one record per
precision, so ``launcher.estimate.gemmfit.shaped_calls`` reads them alike. Prints a summary line
and writes the document to ``--out`` after every precision.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BATCH = 64
CONVS = [  # (C_in, C_out, H, kernel, stride): layers of the shapes CNNs use, not any one model's
    (c_in, c_out, h, k, s)
    for (c_in, c_out), h, (k, s) in itertools.product(
        [(32, 32), (64, 64), (128, 128), (256, 256), (512, 512), (64, 256), (256, 64), (128, 512), (16, 64)],
        [7, 14, 28, 56, 112], [(3, 1), (1, 1), (3, 2)])
    if c_in * c_out * h * h * k * k <= 512 * 512 * 28 * 28 * 9 and not (h == 7 and s == 2)
]
MATMULS = [(m, n, k) for m, n, k in itertools.product([512, 4096, 32768], [256, 768, 3072, 8192], [64, 768, 4096])]


def measure(precision: str, reps: int, tmp: str, device_name: str = "cuda", batch: int = BATCH) -> dict:
    """One record of ``shaped`` rows for this precision: every shape warmed up twice (cuDNN's
    autotuning included), then ``reps`` passes over all shapes under torch.profiler
    (``payloads.runtime.profile_steps``, the profiles' own method: the device time of the kernels
    each call launched, not the host's launch time)."""
    import torch
    import torch.nn.functional as F

    from payloads.runtime import profile_steps, set_precision

    device = torch.device(device_name)
    set_precision(precision, device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
    calls = []
    for c_in, c_out, h, k, s in CONVS:
        x = torch.randn(batch, c_in, h, h, device=device, dtype=dtype).to(memory_format=torch.channels_last)
        w = torch.randn(c_out, c_in, k, k, device=device, dtype=dtype).to(memory_format=torch.channels_last)
        pad = k // 2
        gy = torch.randn_like(F.conv2d(x, w, stride=s, padding=pad))
        calls.append(lambda x=x, w=w, s=s, pad=pad: F.conv2d(x, w, stride=s, padding=pad))
        calls.append(lambda x=x, w=w, s=s, pad=pad, gy=gy: torch.ops.aten.convolution_backward(
            gy, x, w, None, [s, s], [pad, pad], [1, 1], False, [0, 0], 1, [True, True, False]))
    for m, n, k in MATMULS:
        a = torch.randn(m, k, device=device, dtype=dtype)
        b = torch.randn(k, n, device=device, dtype=dtype)
        calls.append(lambda a=a, b=b: torch.mm(a, b))

    def step() -> None:
        with torch.no_grad():
            for fn in calls:
                fn()

    step(), step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    path = str(Path(tmp) / f"gemm_calls_{precision}.json")
    profile_steps(step, device, path, steps=reps)
    prof = json.loads(Path(path).read_text(encoding="utf-8"))
    return {"model": "gemm_calls", "precision": precision, "batch_size": batch, "profiled_steps": prof["steps"],
            "device_name": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "torch": torch.__version__, "shaped": prof["shaped"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--precisions", default="bf16,fp32")
    ap.add_argument("--reps", type=int, default=3, help="profiled passes over all shapes per precision")
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"), help="cpu: a smoke test of the script")
    ap.add_argument("--batch", type=int, default=BATCH, help="images per convolution call")
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    doc = {"generated_by": "python3 bench/gemm_calls.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "results": []}
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        for p in [p for p in args.precisions.split(",") if p]:
            doc["results"].append(measure(p, args.reps, tmp, args.device, args.batch))
        doc["wall_s"] = round(time.monotonic() - t0, 1)
        Path(args.out).write_text(json.dumps(doc) + "\n", encoding="utf-8")
    print(json.dumps({k: v for k, v in doc.items() if k != "results"}
                     | {"rows": [len(r["shaped"]) for r in doc["results"]]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
