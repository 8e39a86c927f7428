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

from launcher.errors import EstimateError, ModelError
from launcher.estimate.paths import cache_dir, cost_key, read_json, write_json_atomic

BUNDLED = Path(__file__).with_name("model_costs.json")
# Autocast keeps some saved tensors in fp32 (BN statistics, softmax inputs), so half precision
# saves a little more than half the fp32 activation bytes.
_HALF_ACTIVATION_SCALE = 0.55
_COUNT_BATCH = 2  # >1 so BatchNorm in train mode accepts 1x1 feature maps
# How to get PyTorch for counting: the train extra; a bare `pip install torch` pulls the CUDA build
# (gigabytes) on Linux, and counting needs only the CPU one.
TORCH_HINT = ("pip install 'gpujob[train]' with PyTorch's CPU build, enough to count a model "
              "(pip install torch --index-url https://download.pytorch.org/whl/cpu)")


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
    ops: dict | None = None  # per-operation-class costs (launcher.estimate.opcount.OpCost.to_dict())

    def activation_bytes(self, precision: str) -> float:
        """Saved-activation bytes per sample at this precision."""
        scale = _HALF_ACTIVATION_SCALE if precision in ("fp16", "bf16") else 1.0
        return self.activation_bytes_per_sample * scale

    def to_dict(self) -> dict:
        return asdict(self)

    def graph_ops(self) -> float | None:
        """Operations (kernel launches) of one eager training step, when counted per operation."""
        if not self.ops:
            return None
        return float(sum(c.get("kernels", 0.0) for c in self.ops.get("classes", {}).values()))


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
    from launcher.estimate.opcount import conv_backward_flop_mapping

    with FlopCounterMode(display=False, custom_mapping=conv_backward_flop_mapping()) as counter:
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

    from launcher.payloads.models import build_model

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


def lm_cost(workload, *, allow_torch: bool = True) -> ModelCost:
    """Cost of one trained token of a built-in language model (a "sample" is a token for them),
    from payloads/lm_shapes.py's exact formulas: no torch. Activation bytes are fp32-equivalent
    per token over all layers; launcher/estimate/memory.py holds the per-GPU memory account.
    ``ops``: the per-operation count per token (launcher.estimate.opcosts.lm_ops: bundled for the
    presets, counted with torch otherwise when ``allow_torch`` and torch is installed, else None)."""
    from launcher.payloads import lm_shapes

    try:
        shape = workload.lm_shape()
    except ValueError as exc:
        raise ModelError(f"workload.model_args: {exc}", "fix the language model's shape") from None
    seq = workload.effective_seq_len
    n = lm_shapes.param_count(shape)
    per_token = lm_shapes.train_flops_per_token(shape, seq)
    act = shape.n_layers * lm_shapes.activation_bytes_per_token_layer(shape, "fp32", False)
    ops = lm_ops(workload.model, dict(workload.model_args), workload.vocab_size, seq, allow_torch=allow_torch)
    return ModelCost(model=workload.model, image_size=seq, num_classes=shape.vocab_size, in_channels=0,
                     train_flops_per_sample=per_token, forward_flops_per_sample=per_token / 3, params=n,
                     activation_bytes_per_sample=act, param_bytes=4 * n, source="lm_shapes formula", ops=ops)


def lm_ops(model: str, model_args: dict, vocab_size: int | None, seq_len: int, *,
           allow_torch: bool = True) -> dict | None:
    """OpCost dict (per trained token) of a built-in language model at this sequence length:
    bundled (launcher.estimate.opcosts), else counted with torch (cached per shape and counter
    version, like a factory's count), else a preset's bundled count at another length rescaled
    (``opcosts.scaled_lm_ops``), else None (``model_args`` or a vocabulary never bundled, no torch)."""
    import json

    from launcher.estimate.opcosts import bundled_lm_ops, count_lm, scaled_lm_ops
    from launcher.payloads import lm_shapes

    shape = lm_shapes.resolve(model, model_args, vocab_size, seq_len)
    if not model_args:
        hit = bundled_lm_ops(model, seq_len, shape.vocab_size)
        if hit is not None:
            return hit
    if not allow_torch or not _torch_available():
        return None if model_args else scaled_lm_ops(model, seq_len, shape.vocab_size)
    key = "lm:" + json.dumps([shape.to_dict(), seq_len, COUNT_VERSION], sort_keys=True)
    cache = _cache_file()
    hit = read_json(cache, {}).get(key)
    if hit is not None:
        return hit
    ops = count_lm(shape, seq_len).to_dict()
    cached = read_json(cache, {})  # re-read: another estimate may have written
    cached[key] = ops
    write_json_atomic(cache, cached)
    return ops


def model_cost(
    model: str, image_size: int, num_classes: int, in_channels: int = 3, *, allow_torch: bool = True
) -> ModelCost:
    """Cost of one training sample of a built-in model; see the module docstring for the order."""
    from launcher.payloads.lm_shapes import is_lm

    if is_lm(model):
        raise EstimateError(f"{model} is a language model: its cost depends on the sequence length",
                            "use workload_cost(workload)")
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
            cost = None  # torch found but unusable (a partial install): scale instead
        except Exception as exc:  # a model that cannot run at this size (e.g. too small an image)
            raise ModelError(
                f"{model} cannot train on {image_size}x{image_size}x{in_channels} images: "
                f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}",
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
            f"{TORCH_HINT}; or use a built-in model",
        )
    return scaled


# --- any model: built-in names and user factories -------------------------------------------


def workload_cost(w, root: str | Path | None = None, *, allow_torch: bool = True) -> ModelCost:
    """Cost of one training sample of a spec's workload: a built-in model, a built-in language
    model (per trained token: ``lm_cost``) or a user factory.

    Built-ins: ``model_cost`` (bundled table, no torch) with the per-operation costs of
    ``launcher.estimate.opcosts`` attached when known. Factories (``"pkg.mod:fn"`` /
    ``"file.py:fn"``, relative to ``root``, default the current directory): built on the meta
    device and counted by ``launcher.estimate.opcount`` (imports torch; cached per factory source,
    arguments and input shape). Raises ModelError (bad input, exit 2) with one line naming file,
    line and exception when the factory cannot be imported or built or the model cannot train
    one step at the spec's input shape; EstimateError when a factory needs PyTorch, absent here.
    """
    if getattr(w, "is_lm", False):
        return lm_cost(w, allow_torch=allow_torch)
    if getattr(w, "is_token_model", False):  # a factory fed token ids: counted per trained token
        return factory_cost(w.model, dict(w.model_args), (w.seq_len,), w.vocab_size, root, tokens=True)
    if not getattr(w, "is_factory", False):
        cost = model_cost(w.model, w.image_size, w.num_classes, w.in_channels, allow_torch=allow_torch)
        from launcher.estimate.opcosts import builtin_ops

        ops = builtin_ops(w.model, w.image_size, w.num_classes, w.in_channels)
        return replace(cost, ops=ops) if ops is not None else cost
    return factory_cost(w.model, dict(w.model_args), tuple(w.sample_shape), w.num_classes, root,
                        vocab=getattr(w, "input_vocab", None))


def check_model(w, root: str | Path | None = None, *, allow_missing_module: bool = True) -> str | None:
    """Refuse a model that cannot be built or trained one step as the spec describes it (ModelError,
    exit 2): what ``validate`` and a run (``--dry-run`` too) check before anything is created.

    Counting the model is the check (``workload_cost``; cached, so the estimate that follows is
    free). Nothing is refused where it cannot be known here: without PyTorch (a factory is then
    checked by the machine's payload), or for a ``"package.module:fn"`` whose package is not
    installed here (the machine may install it with ``setup:``; the run's estimate says so), unless
    ``allow_missing_module`` is False (a local run without ``setup:``: this is the machine).
    Returns None when the model was checked (counted) here, else why it was not (a clause).
    """
    if getattr(w, "is_factory", False) and not _torch_available():
        return "PyTorch is not installed here"
    try:
        workload_cost(w, root)
    except ModelError as exc:
        if exc.missing_module is None or not allow_missing_module:
            raise
        return f"its package {exc.missing_module} is not installed here"
    except EstimateError as exc:  # not countable here (no PyTorch for an unusual size): the estimate says so
        return exc.message
    return None


# What the counter records: a cached count from an older counter is counted again (2: per-operation
# GEMM rows and the grouped-convolution backward FLOPs of launcher.estimate.opcount; 3: allocations
# move nothing, causal attention counts its computed tiles, token models; 4: a factory's logits
# checked against num_classes and its trainable parameters, so an older count skips no check; 5: each
# GEMM row's matrix products and 3x3 stride-1 flag; 6: an image model's SGD update is the fused kernel
# the CUDA payload runs, 20 bytes per parameter instead of the foreach form's 44; 7: each attention
# row's score-matrix product, seq_q x seq_k x head_dim; 8: a token factory's logits checked against
# vocab_size; 9: and its token embedding's rows).
COUNT_VERSION = 9


def _factory_key(ref: str, args: dict, shape: tuple, num_classes: int, root: Path, tokens: bool = False,
                 vocab: int | None = None) -> str:
    import hashlib
    import json

    from launcher.payloads.factory import source_digest

    digest = hashlib.sha256()
    digest.update(str(source_digest(ref, str(root))).encode())  # a changed model (or file it imports) is a new model
    digest.update(json.dumps([ref, args, list(shape), num_classes, COUNT_VERSION] + (["tokens"] if tokens else [])
                             + ([f"ids<{vocab}"] if vocab else []), sort_keys=True, default=str).encode())
    return "factory:" + digest.hexdigest()[:24]


def factory_cost(ref: str, model_args: dict, sample_shape: tuple, num_classes: int,
                 root: str | Path | None = None, *, tokens: bool = False, vocab: int | None = None) -> ModelCost:
    """Count a user's model factory (see workload_cost); cached in $GPUJOB_HOME/cache/model_costs.json.
    ``tokens``: a token model, ``sample_shape`` = (seq_len,) and ``num_classes`` the vocabulary;
    counted per trained token as payloads/lm_train.py trains it (opcount.count_tokens). ``vocab``:
    a classifier fed int64 token ids 0 .. vocab - 1 of ``sample_shape``."""
    root_path = Path(root or Path.cwd()).resolve()
    key = _factory_key(ref, model_args, sample_shape, num_classes, root_path, tokens, vocab)
    cache_path = _cache_file()
    hit = read_json(cache_path, {}).get(key)
    if hit:
        return _from_entry(hit, "cache")
    if not _torch_available():
        raise EstimateError(f"model {ref!r} is a factory: counting it needs PyTorch, which is not installed here",
                            f"{TORCH_HINT}; or use a built-in model")
    import contextlib
    import sys

    from launcher.payloads.factory import FactoryError, FactoryModuleMissing

    try:  # what the user's code prints goes to stderr: stdout is the command's own (--json)
        with contextlib.redirect_stdout(sys.stderr):
            ops = count_factory(ref, model_args, sample_shape, num_classes, str(root_path), tokens, vocab)
    except FactoryModuleMissing as exc:
        raise ModelError(str(exc), "install it here with pip install -e DIR, or put it in the project directory",
                         missing_module=exc.module) from None
    except FactoryError as exc:
        raise ModelError(str(exc), "fix the model factory or workload.model_args") from None
    except Exception as exc:  # the model builds but cannot run one step at this input shape
        from launcher.payloads.factory import project_frame

        where = project_frame(exc, str(root_path))
        text = " ".join(str(exc).split())
        what = f"sequences of seq_len {sample_shape[0]} tokens" if tokens else f"input_shape {list(sample_shape)}"
        hint = ("gpujob calls forward(x) with the input batch alone: give forward's other arguments defaults"
                if isinstance(exc, TypeError) and "forward()" in text else
                "the model takes token ids: add workload.vocab_size to input_shape, for ids 0 .. vocab_size - 1"
                if "indices" in text and "Long" in text and not vocab and not tokens else
                "check workload.seq_len and workload.vocab_size against the model" if tokens else
                "check workload.input_shape and workload.num_classes against the model")
        raise ModelError(f"{where + ': ' if where else ''}model {ref!r} cannot train on {what}: "
                         f"{type(exc).__name__}: {text[:300]}", hint) from None
    side = sample_shape[0] if tokens else (sample_shape[-1] if len(sample_shape) >= 2 else 1)
    cost = ModelCost(model=ref, image_size=int(side), num_classes=num_classes,
                     in_channels=0 if tokens else (int(sample_shape[0]) if len(sample_shape) == 3 else 1),
                     train_flops_per_sample=ops.train_flops_per_sample,
                     forward_flops_per_sample=ops.forward_flops_per_sample, params=ops.params,
                     activation_bytes_per_sample=ops.activation_bytes_per_sample, param_bytes=4 * ops.params,
                     source="computed", ops=ops.to_dict())
    cached = read_json(cache_path, {})
    cached[key] = {k: v for k, v in cost.to_dict().items() if k != "source"}
    write_json_atomic(cache_path, cached)
    return cost


# A model whose operations need data (no meta kernel: nonzero, masked_select, .item()) is counted
# on the CPU when its weights, gradients and momentum (12 bytes per parameter) take at most this
# share of the RAM.
CPU_COUNT_RAM_SHARE = 0.25


def count_factory(ref: str, model_args: dict, sample_shape: tuple, num_classes: int, root: str,
                  tokens: bool = False, vocab: int | None = None):
    """Build the factory on the meta device and count one training step (OpCost); ``tokens``:
    per trained token of sequences of ``sample_shape[0]`` tokens (``opcount.count_tokens``). Else
    the step the image payload runs: cross-entropy on the model's logits
    (``payloads.factory.output_logits``: a tuple's first tensor, a dict's ``"logits"``).
    FactoryError (one line) for a model with nothing to train or logits with fewer classes than
    num_classes.

    An operation the meta device cannot run (no meta kernel, or a shape that depends on the data:
    ``nonzero``, ``masked_select``, ``.item()``) fails the meta count; the model is then built and
    counted on the CPU, on random data, when it is small enough (``CPU_COUNT_RAM_SHARE``), else
    the meta device's error stands."""
    import warnings

    import torch

    from launcher.estimate import hostram
    from launcher.estimate.opcount import count_tokens
    from launcher.payloads.factory import FactoryError, build_factory_model, check_trainable

    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. load_state_dict into meta parameters: a no-op, said at length
        module = build_factory_model(ref, model_args, root)
    module = module.to("meta")
    check_trainable(module, ref)
    if tokens:
        _check_token_logits(module, ref, int(sample_shape[0]), num_classes)
        return count_tokens(module.train(), int(sample_shape[0]))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _count_module(module, ref, sample_shape, num_classes, vocab)
    except FactoryError:
        raise
    except Exception:
        ram, n = hostram.ram_bytes(), sum(p.numel() for p in module.parameters())
        if not ram or 12 * n > CPU_COUNT_RAM_SHARE * ram:
            raise
    with torch.device("cpu"):
        module = build_factory_model(ref, model_args, root)
    return _count_module(module.to("cpu"), ref, sample_shape, num_classes, vocab)


def _check_token_logits(module, ref: str, seq_len: int, vocab_size: int) -> None:
    """Refuse a token model predicting fewer tokens than ``vocab_size``, or whose embedding of the
    token ids has fewer rows than ``vocab_size`` (FactoryError, one line): the data draws ids up to
    vocab_size - 1, which its embedding or its loss cannot take, and the meta device checks no index.
    An embedding takes the token ids when it is called on the input tensor itself or on a view of it;
    one called on another tensor, even of the ids' shape (positions expanded to [batch, seq_len],
    BERT's token types on ``zeros_like(ids)``), is not checked: its ids are not the vocabulary's."""
    import torch
    from torch import nn

    from launcher.estimate.opcount import device_of
    from launcher.payloads.factory import FactoryError, output_logits

    ids = torch.zeros(2, seq_len, dtype=torch.long, device=device_of(module))
    small: list[tuple[str, int]] = []

    def hook(name: str):
        def pre(mod, args):
            x = args[0] if args else None
            if isinstance(x, torch.Tensor) and (x is ids or x._base is ids) and mod.num_embeddings < vocab_size:
                small.append((name, mod.num_embeddings))
        return pre

    handles = [m.register_forward_pre_hook(hook(name)) for name, m in module.named_modules()
               if isinstance(m, nn.Embedding)]
    try:
        with torch.no_grad():
            out = output_logits(module.eval()(ids))
    finally:
        for h in handles:
            h.remove()
    module.train()
    n = int(out.shape[-1]) if out.dim() else 0
    if n < vocab_size:
        raise FactoryError(f"model {ref!r} predicts {n} entries per token (logits {list(out.shape)}) but "
                           f"workload.vocab_size is {vocab_size}: token ids up to {vocab_size - 1} are out of its "
                           f"range; set vocab_size: {n} or build the model with a vocabulary of {vocab_size}")
    if small:
        name, rows = small[0]
        raise FactoryError(f"model {ref!r} embeds token ids with {name or 'its module'} = Embedding({rows}, ...) "
                           f"but workload.vocab_size is {vocab_size}: token ids up to {vocab_size - 1} are out of "
                           f"its {rows} rows; set vocab_size: {rows} or build the model with an embedding of "
                           f"{vocab_size} rows")


def _count_module(module, ref: str, sample_shape: tuple, num_classes: int, vocab: int | None = None):
    """count() of one step of ``module`` on its own device (meta or CPU), the loss on its logits;
    ``vocab``: the input is int64 token ids below it."""
    import torch

    from launcher.estimate.opcount import count, device_of
    from launcher.payloads.factory import FactoryError, check_classes, output_logits

    class Logits(torch.nn.Module):
        """The user's module, its output reduced to the logits the loss is taken on."""

        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return output_logits(self.inner(x))

    model = Logits(module)
    try:
        with torch.no_grad():
            x = (torch.randint(0, vocab, (2, *sample_shape), device=device_of(module)) if vocab else
                 torch.randn(2, *sample_shape, device=device_of(module)))
            out = model.eval()(x)
        check_classes(tuple(out.shape), num_classes)
    except FactoryError as exc:
        raise FactoryError(f"model {ref!r}: {exc}") from None
    return count(model.train(), tuple(sample_shape), num_classes, tuple(out.shape[2:]), vocab)
