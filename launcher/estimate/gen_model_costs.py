"""Regenerate the bundled FLOP/memory table: ``python -m launcher.estimate.gen_model_costs``.

Counts every built-in model at the sizes people commonly train, on the meta device, so that
``gpujob estimate`` never has to import torch for them. Commit the resulting JSON.
"""

from __future__ import annotations

import json
import time

from launcher.estimate.flops import BUNDLED, compute_with_torch, cost_key

SIZES = {
    "vgg16": (32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 384, 448, 512),
    "vgg11": (32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 384, 448, 512),
    "resnet50": (32, 64, 96, 128, 160, 176, 192, 224, 256, 288, 320, 384, 448, 512),
    "resnet18": (32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 384, 448, 512),
    "mobilenetv2": (32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 384, 448, 512),
    "vit_b16": (32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 384, 448, 512),  # multiples of the patch (16)
    "tinycnn": (8, 16, 28, 32, 48, 64, 96, 128, 224),
    "mlp": (8, 16, 28, 32, 64, 96, 128, 224),
}
CLASSES = (10, 100, 1000)
CHANNELS = (1, 3)


def main(argv: list[str] | None = None) -> None:
    """--only m1,m2: count only these models and keep the other entries of the bundled table."""
    import sys

    import torch

    argv = sys.argv[1:] if argv is None else argv
    only = set(argv[argv.index("--only") + 1].split(",")) if "--only" in argv else None
    entries, t0 = {}, time.time()
    if only:
        entries = {k: v for k, v in json.loads(BUNDLED.read_text(encoding="utf-8"))["entries"].items()
                   if v["model"] not in only}
    for model, sizes in SIZES.items():
        if only and model not in only:
            continue
        for size in sizes:
            for classes in CLASSES:
                for ch in CHANNELS:
                    cost = compute_with_torch(model, size, classes, ch)
                    d = cost.to_dict()
                    d.pop("source"), d.pop("approximate")
                    entries[cost_key(model, size, classes, ch)] = d
    doc = {
        "about": "FLOPs (2 x multiply-adds) of one training sample (forward + backward), parameters and "
        "fp32 saved-activation bytes, counted on the meta device by launcher/estimate/flops.py",
        "generated_by": "python -m launcher.estimate.gen_model_costs",
        "torch": torch.__version__,
        "entries": entries,
    }
    BUNDLED.write_text(json.dumps(doc, indent=0, sort_keys=True) + "\n", encoding="utf-8")
    print(f"{len(entries)} entries in {time.time() - t0:.1f}s -> {BUNDLED}")


if __name__ == "__main__":
    main()
