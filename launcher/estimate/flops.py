"""FLOPs, parameters and activation memory of one training sample, counted from the model.

Counting runs the real model on PyTorch's ``meta`` device (shapes only, no arithmetic) under
``torch.utils.flop_counter.FlopCounterMode``: one forward, a cross-entropy loss and one
backward. FLOPs here are 2 x multiply-adds (what FlopCounterMode reports); torchvision's
"GFLOPS" column (vgg16 15.47, resnet50 4.09) counts multiply-adds, i.e. half of ours.

Lookups go bundled table -> user cache -> count with torch -> scale the nearest bundled
entry, so common specs never import torch (importing it alone costs 1-2 s).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from pathlib import Path

from launcher.errors import EstimateError
from launcher.estimate.paths import cache_dir, read_json, write_json_atomic

BUNDLED = Path(__file__).with_name("model_costs.json")
# Autocast keeps some saved tensors in fp32 (BN statistics, softmax inputs), so half precision
# saves a little more than half the fp32 activation bytes.
_HALF_ACTIVATION_SCALE = 0.55
_COUNT_BATCH = 2  # >1 so BatchNorm in train mode accepts 1x1 feature maps


@dataclass(frozen=True)
class ModelCost:
    model: str
    image_size: int
    num_classes: int
    in_channels: int
    train_flops_per_sample: float
    forward_flops_per_sample: float
    params: int
    activation_bytes_per_sample: float  # saved for backward, in fp32
    param_bytes: int  # fp32 weights
    approximate: bool = False
    source: str = "computed"  # bundled | cache | computed | scaled from <key>

    def activation_bytes(self, precision: str) -> float:
        """Saved-activation bytes per sample at this precision."""
        scale = _HALF_ACTIVATION_SCALE if precision in ("fp16", "bf16") else 1.0
        return self.activation_bytes_per_sample * scale

    def to_dict(self) -> dict:
        return asdict(self)


def cost_key(model: str, image_size: int, num_classes: int, in_channels: int = 3) -> str:
    return f"{model}:{image_size}:{num_classes}:{in_channels}"


def _from_entry(entry: dict, source: str) -> ModelCost:
    fields = {k: entry[k] for k in ModelCost.__dataclass_fields__ if k in entry}
    fields["source"] = source
    return ModelCost(**fields)


@lru_cache(maxsize=1)
def _bundled() -> dict:
    return read_json(BUNDLED, {}).get("entries", {})


def _cache_file() -> Path:
    return cache_dir() / "model_costs.json"


def count_cost(module, image_size: int, num_classes: int, in_channels: int = 3, name: str = "custom") -> ModelCost:
    """Count one training step of ``module`` (already on the meta device) for one sample."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    params = list(module.parameters())
    param_ids = {id(p) for p in params}
    saved: dict[int, object] = {}  # id -> tensor; holding the tensor keeps ids unique

    def pack(t):
        base = t._base if t._base is not None else t
        if id(t) not in param_ids and id(base) not in param_ids:
            saved[id(t)] = t
        return t

    module.train()
    x = torch.empty(_COUNT_BATCH, in_channels, image_size, image_size, device="meta")
    y = torch.zeros(_COUNT_BATCH, dtype=torch.long, device="meta")
    with FlopCounterMode(display=False) as counter:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = module(x)
        forward = counter.get_total_flops()
        torch.nn.functional.cross_entropy(out, y).backward()
        total = counter.get_total_flops()
    act = sum(t.numel() * t.element_size() for t in saved.values())
    n_params = sum(p.numel() for p in params)
    return ModelCost(
        model=name,
        image_size=image_size,
        num_classes=num_classes,
        in_channels=in_channels,
        train_flops_per_sample=total / _COUNT_BATCH,
        forward_flops_per_sample=forward / _COUNT_BATCH,
        params=n_params,
        activation_bytes_per_sample=act / _COUNT_BATCH,
        param_bytes=4 * n_params,
        source="computed",
    )


def compute_with_torch(model: str, image_size: int, num_classes: int, in_channels: int = 3) -> ModelCost:
    """Build the payload's own model on the meta device and count it (imports torch)."""
    import torch

    from payloads.models import build_model

    with torch.device("meta"):
        module = build_model(model, num_classes, in_channels=in_channels, image_size=image_size)
    return count_cost(module, image_size, num_classes, in_channels, name=model)


def _torch_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def _scaled_nearest(model: str, image_size: int, num_classes: int, in_channels: int) -> ModelCost | None:
    """Nearest bundled entry of the same model, FLOPs and activations scaled by area."""
    same = [e for e in _bundled().values() if e["model"] == model]
    if not same:
        return None

    def distance(e: dict) -> tuple:
        return (
            abs(math.log(e["image_size"] / image_size)),
            e["in_channels"] != in_channels,
            abs(math.log(e["num_classes"] / num_classes)),
        )

    best = min(same, key=distance)
    r = (image_size / best["image_size"]) ** 2
    base = _from_entry(best, "bundled")
    return replace(
        base,
        image_size=image_size,
        num_classes=num_classes,
        in_channels=in_channels,
        train_flops_per_sample=base.train_flops_per_sample * r,
        forward_flops_per_sample=base.forward_flops_per_sample * r,
        activation_bytes_per_sample=base.activation_bytes_per_sample * r,
        approximate=True,
        source=f"scaled from {cost_key(best['model'], best['image_size'], best['num_classes'], best['in_channels'])}"
        " by (image size ratio)^2",
    )


def model_cost(
    model: str, image_size: int, num_classes: int, in_channels: int = 3, *, allow_torch: bool = True
) -> ModelCost:
    """Cost of one training sample of a built-in model; see the module docstring for the order."""
    key = cost_key(model, image_size, num_classes, in_channels)
    entry = _bundled().get(key)
    if entry:
        return _from_entry(entry, "bundled")
    cache_path = _cache_file()
    cached = read_json(cache_path, {})
    if key in cached:
        return _from_entry(cached[key], "cache")
    if allow_torch and _torch_available():
        try:
            cost = compute_with_torch(model, image_size, num_classes, in_channels)
        except ImportError:
            cost = None  # payloads/ not importable (installed without the repo): scale instead
        except Exception as exc:  # a model that cannot run at this size (e.g. too small an image)
            raise EstimateError(
                f"cannot count FLOPs of {model} at {image_size}x{image_size}x{in_channels}: {exc}",
                "check workload.image_size and workload.model",
            ) from None
        if cost is not None:
            cached = read_json(cache_path, {})  # re-read: another estimate may have written
            cached[key] = {k: v for k, v in cost.to_dict().items() if k != "source"}
            write_json_atomic(cache_path, cached)
            return cost
    scaled = _scaled_nearest(model, image_size, num_classes, in_channels)
    if scaled is None:
        raise EstimateError(
            f"no FLOP count for model {model!r} and PyTorch is not available to count it",
            "install PyTorch (pip install torch) or use a built-in model",
        )
    return scaled
