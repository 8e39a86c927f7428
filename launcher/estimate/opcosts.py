"""Bundled per-operation costs of the built-in models, so an estimate needs no torch for them.

    python -m launcher.estimate.opcosts      # regenerate launcher/estimate/op_costs.json (imports torch)

Each entry is ``launcher.estimate.opcount.count`` of the payload's own model (the same path a
user's factory goes through) at one (image size, classes, channels). A size not in the table
is scaled from the nearest entry of the same model: per-sample FLOPs and bytes by the image
area ratio, fixed parts (weights, optimizer) unchanged, flagged by the caller as approximate.
"""

from __future__ import annotations

import json
import math
import time
from functools import lru_cache
from pathlib import Path

from launcher.estimate.paths import cost_key, read_json

BUNDLED_OPS = Path(__file__).with_name("op_costs.json")
SIZES = {"vgg16": (32, 64, 128, 224), "vgg11": (32, 224), "resnet50": (32, 64, 128, 224, 256),
         "resnet18": (32, 64, 128, 224), "mobilenetv2": (32, 64, 128, 224), "vit_b16": (32, 64, 128, 224),
         "tinycnn": (28, 32, 64, 224), "mlp": (28, 32, 224)}
CLASSES = (10, 1000)
CHANNELS = (1, 3)


@lru_cache(maxsize=1)
def _table() -> dict:
    return read_json(BUNDLED_OPS, {}).get("entries", {})


def builtin_ops(model: str, image_size: int, num_classes: int, in_channels: int = 3) -> dict | None:
    """OpCost dict of a built-in model (bundled or scaled from the nearest bundled size); None if unknown."""

    table = _table()
    hit = table.get(cost_key(model, image_size, num_classes, in_channels))
    if hit is not None:
        return hit
    same = [(k, v) for k, v in table.items() if k.split(":")[0] == model]
    if not same:
        return None

    def distance(item) -> tuple:
        _, size, classes, ch = item[0].split(":")
        return (abs(math.log(int(size) / image_size)), int(ch) != in_channels,
                abs(math.log(int(classes) / num_classes)))

    key, entry = min(same, key=distance)
    r = (image_size / int(key.split(":")[1])) ** 2
    scaled = json.loads(json.dumps(entry))
    for c in scaled["classes"].values():
        for f in ("flops_per_sample", "bytes_per_sample", "bytes_fused_per_sample"):
            c[f] *= r
    for f in ("forward_flops_per_sample", "train_flops_per_sample", "activation_bytes_per_sample"):
        scaled[f] *= r
    scaled["scaled_from"] = key
    return scaled


def main() -> None:
    import torch

    from launcher.estimate.opcount import count
    from launcher.payloads.models import build_model

    entries, t0 = {}, time.time()
    for model, sizes in SIZES.items():
        for size in sizes:
            for classes in CLASSES:
                for ch in CHANNELS:
                    if ch == 1 and model not in ("tinycnn", "mlp"):
                        continue
                    with torch.device("meta"):
                        module = build_model(model, classes, ch, size)
                    entries[cost_key(model, size, classes, ch)] = count(module, (ch, size, size), classes).to_dict()
    doc = {"about": "per-operation-class cost of one training step of each built-in model (fp32, eager and "
                    "fused bytes, kernels), counted on the meta device by launcher/estimate/opcount.py",
           "generated_by": "python -m launcher.estimate.opcosts", "torch": torch.__version__, "entries": entries}
    BUNDLED_OPS.write_text(json.dumps(doc, indent=0, sort_keys=True) + "\n", encoding="utf-8")
    print(f"{len(entries)} entries in {time.time() - t0:.1f}s -> {BUNDLED_OPS}")


if __name__ == "__main__":
    main()
