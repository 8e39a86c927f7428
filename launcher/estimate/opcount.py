"""Per-operation cost of one training step, counted on PyTorch's ``meta`` device (imports torch).

One training step (forward, cross-entropy loss, backward, the payload's SGD-with-momentum
update) of the model runs on the ``meta`` device, where tensors have shapes and dtypes but no
data, under a ``TorchDispatchMode`` that sees every aten operation. For each operation it records

* FLOPs: torch's own formulas (``torch.utils.flop_counter.flop_registry``: 2 x multiply-adds
  for convolution, matmul, attention and their backwards); other operations count one FLOP per
  output element (element-wise arithmetic, normalisation, reductions),
* bytes: what the operation reads (every tensor argument, at most its storage) and writes
  (every tensor result); views (``view``, ``t``, ``permute``...) move nothing and launch nothing,
* one kernel launch per non-view operation (allocations, ``empty*``, launch nothing),

grouped into operation classes (``CLASSES``). ``F.scaled_dot_product_attention`` is counted as
one fused (flash) attention, as it runs on a GPU: FLOPs of ``sdpa_flop_count`` and bytes of
q, k, v and the output, not the s x s score matrix the meta device's math path would build.

Precision: the step is counted in fp32. Under fp16/bf16 autocast, activations and the weight
copies the kernels read are half precision, so every class but the optimizer moves half the
bytes; autocast's casts of each fp32 weight to half (read 4 + write 2 bytes) and of each half
weight gradient back to fp32 (read 2 + write 4) are added as data movement.

Compiled jobs (torch.compile/Inductor) fuse chains of element-wise operations: an element-wise
result is written to memory only if a non-element-wise operation reads it, it is saved for the
backward pass or nobody reads it; element-wise inputs produced inside the chain are not re-read.
``bytes_fused`` and ``kernels_fused`` hold those figures.

Costs are linear in the batch: the step is counted at two batch sizes and each figure is split
into a per-sample part and a fixed part (weights, weight gradients, the optimizer).

Token models (``count_tokens``: the built-in language models of payloads/lm.py and a user's
factory with ``seq_len``/``vocab_size``) are counted as payloads/lm_train.py trains them: int64
token ids (batch, seq) in, logits (batch, seq, vocab) out, ``lm_loss`` (cross-entropy of the
logits cast to fp32), ``clip_grad_norm_`` (foreach) and one fused AdamW update
(``torch._fused_adamw_``: reads weight, gradient and both moments, writes weight and moments,
28 bytes per fp32 parameter). A "sample" is then a token: per-sample figures are per token
at that ``seq_len``. Causal attention (``is_causal=True``) is counted as the flash kernel runs
it: only the 128 x 128 tiles on or below the diagonal, (n + 1) / 2n of the score matrix for
n = ceil(seq / 128) tiles (the MFU convention's model FLOPs keep the full matrix).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

CLASSES = ("conv", "matmul", "attention", "norm", "elementwise", "reduction", "optimizer", "data_movement")
_COUNT_BATCHES = (2, 4)  # >1 so BatchNorm in train mode accepts 1x1 feature maps

_CONV = ("convolution", "conv2d", "conv1d", "conv3d", "conv_transpose", "cudnn_convolution",
         "mkldnn_convolution", "slow_conv", "thnn_conv", "conv_depthwise")
_MATMUL = ("addmm", "mm", "bmm", "baddbmm", "addbmm", "matmul", "linear", "_scaled_mm", "addmv", "mv",
           "dot", "_int_mm", "gemm")
_ATTENTION = ("scaled_dot_product", "flash_attention", "efficient_attention", "cudnn_attention", "_fused_sdp")
_NORM = ("batch_norm", "layer_norm", "group_norm", "instance_norm", "rms_norm", "native_norm", "_batch_norm")
_REDUCTION = ("sum", "mean", "amax", "amin", "max_pool", "avg_pool", "adaptive_avg", "adaptive_max", "softmax",
              "log_softmax", "nll_loss", "cross_entropy", "argmax", "argmin", "var", "std", "norm", "prod",
              "cumsum", "logsumexp", "max", "min", "topk", "sort")
_MOVEMENT = ("copy", "_to_copy", "clone", "cat", "stack", "contiguous", "index", "gather", "scatter", "pad",
             "constant_pad", "slice_backward", "select_backward", "fill", "zero", "empty", "zeros", "ones",
             "new_", "embedding", "repeat", "_unsafe_view", "flip", "roll", "upsample", "col2im", "im2col",
             "narrow_copy", "split_with_sizes_copy", "unbind_copy", "masked_fill", "where", "tril", "triu")


_ALLOCATIONS = ("aten.empty", "aten.new_empty", "aten.empty_like", "aten.empty_strided", "aten.new_empty_strided")


def op_class(name: str) -> str:
    """Operation class of an aten operation (``aten.addmm.default``, ``aten::cudnn_convolution``)."""
    n = name.lower().replace("::", ".")
    base = n.split(".")[1] if n.startswith("aten.") and "." in n[5:] else n.removeprefix("aten.")
    if "_foreach_" in base or "fused_sgd" in base or "fused_adam" in base or "_amp_" in base:
        return "optimizer"
    for cls, keys in (("attention", _ATTENTION), ("conv", _CONV), ("norm", _NORM)):
        if any(k in base for k in keys):
            return cls
    if base.rstrip("_") in _MATMUL or base.startswith(("addmm", "bmm", "baddbmm")):
        return "matmul"
    for cls, keys in (("reduction", _REDUCTION), ("data_movement", _MOVEMENT)):
        if any(base == k or base.startswith(k + "_") or base.startswith("_" + k) or base.startswith(k) for k in keys):
            return cls
    return "elementwise"


GEMM_KINDS = ("conv_kxk", "conv_1x1", "conv_depthwise", "matmul", "attention")
GEMM_FIELDS = ("kind", "flops_per_sample", "flops_fixed", "bytes_per_sample", "bytes_fixed", "dim_n", "dim_k", "count",
               "gemms", "winograd")


def gemm_dims(name: str, cls: str, args: tuple) -> tuple[int, int]:
    """The two batch-independent dimensions of a matrix operation's implicit GEMM (what a tile of
    the kernel spans besides the batch x pixels / tokens dimension): a convolution's output
    channels and input channels per group x kernel area (its weight's shape, the same for the
    forward and both gradients); a matrix product's two smallest dimensions. (0, 0) when unknown."""
    n = name.split(".")[1] if name.startswith("aten.") else name
    if cls == "conv":
        weight = args[2] if n.startswith("convolution_backward") and len(args) > 2 else (args[1] if len(args) > 1 else None)
        shape = tuple(getattr(weight, "shape", ()))
        return (int(shape[0]), int(math.prod(shape[1:]))) if len(shape) >= 3 else (0, 0)
    if cls == "matmul":
        mats = [t for t in args if hasattr(t, "shape") and len(t.shape) >= 2][-2:]
        if len(mats) == 2:
            (m, k), (_, n2) = tuple(mats[0].shape[-2:]), tuple(mats[1].shape[-2:])
            small = sorted((int(m), int(k), int(n2)))
            return small[0], small[1]
    return (0, 0)


def gemm_shapes(name: str, cls: str, args: tuple, out) -> tuple[tuple[int, int, int], ...]:
    """The matrix products (M, N, K) an operation's kernels run, at the counted batch: M x N
    outputs, each a K-long dot product (FLOPs 2 x M x N x K each).

    * convolution (implicit GEMM): forward (B x H_out x W_out, C_out, C_in x kh x kw); its
      backward the input gradient (B x H_in x W_in, C_in, C_out x kh x kw x H_out W_out /
      (H_in W_in): a stride-s layer's input pixel gathers kh kw / s^2 taps) and the weight
      gradient (C_out, C_in x kh x kw, B x H_out x W_out), each only when ``output_mask`` asks;
    * mm / addmm (m, n, k); bmm / baddbmm (batches x m, n, k).

    () when the operation is none of these or not a plain one (grouped or transposed
    convolutions, attention): the time model then falls back to its per-operation roofline
    without tile shapes (``opmodel.gemm_roofline``)."""
    n = name.split(".")[1] if name.startswith("aten.") else name
    shape = lambda t: tuple(getattr(t, "shape", ()))  # noqa: E731
    if cls == "matmul":
        mats = [shape(t) for t in args if len(shape(t)) >= 2][-2:]
        if len(mats) != 2 or n.startswith("_scaled"):
            return ()
        (a, b) = mats
        batches = math.prod(a[:-2]) if len(a) > 2 else 1
        return ((int(batches * a[-2]), int(b[-1]), int(a[-1])),)
    if cls != "conv":
        return ()
    if n.startswith("convolution_backward"):
        if len(args) < 11 or args[7] or _groups(args) != 1:
            return ()
        go, x, w, mask = shape(args[0]), shape(args[1]), shape(args[2]), args[10]
    else:
        if len(args) < 9 or args[6] or args[8] != 1:
            return ()
        x, w, go, mask = shape(args[0]), shape(args[1]), shape(out), None
    if len(w) < 3 or len(x) != len(w) or len(go) != len(w):
        return ()
    area = math.prod(w[2:])
    pix_out, pix_in = x[0] * math.prod(go[2:]), x[0] * math.prod(x[2:])
    c_out, c_in = w[0], w[1]
    if mask is None:
        return ((int(pix_out), int(c_out), int(c_in * area)),)
    rows = []
    if mask[0]:  # a strided layer's input pixel takes area / stride^2 taps: K scaled to keep 2 M N K
        rows.append((int(pix_in), int(c_in), c_out * area * pix_out / pix_in))
    if mask[1]:
        rows.append((int(c_out), int(c_in * area), int(pix_out)))
    return tuple(rows)


def winograd_eligible(name: str, cls: str, args: tuple) -> bool:
    """A dense 3x3 convolution of stride 1 and dilation 1 (forward or backward): the shape for
    which cuDNN's fp32 (CUDA-core) path may run a Winograd or FFT algorithm that does fewer
    multiplications than the direct FLOP count (Lavin & Gray, "Fast Algorithms for Convolutional
    Neural Networks", CVPR 2016: F(2x2, 3x3) does 2.25x fewer)."""
    if cls != "conv":
        return False
    n = name.split(".")[1] if name.startswith("aten.") else name
    back = n.startswith("convolution_backward")
    i = 4 if back else 3  # stride, padding, dilation, transposed, output_padding, groups
    if len(args) < i + 6:
        return False
    w = tuple(getattr(args[2 if back else 1], "shape", ()))
    stride, dilation, transposed, groups = args[i], args[i + 2], args[i + 3], args[i + 5]
    return (w[2:] == (3, 3) and all(s == 1 for s in stride) and all(d == 1 for d in dilation)
            and not transposed and groups == 1)


def gemm_kind(name: str, cls: str, args: tuple) -> str:
    """Kind of a matrix operation: a convolution is ``conv_depthwise`` (groups > 1), ``conv_1x1`` (a
    1x1 kernel: a plain matrix product over pixels) or ``conv_kxk`` (a dense k x k kernel)."""
    if cls != "conv":
        return cls
    n = name.split(".")[1] if name.startswith("aten.") else name
    weight = args[2] if n.startswith("convolution_backward") and len(args) > 2 else (args[1] if len(args) > 1 else None)
    groups = args[-1] if not n.startswith("convolution_backward") else (args[9] if len(args) > 9 else 1)
    if isinstance(groups, int) and groups > 1:
        return "conv_depthwise"
    shape = tuple(getattr(weight, "shape", ()))
    if len(shape) >= 3 and all(k == 1 for k in shape[2:]):
        return "conv_1x1"
    return "conv_kxk"


@dataclass
class ClassCost:
    """One class's cost of one training step at batch b: flops = flops_fixed + b x flops_per_sample."""

    flops_per_sample: float = 0.0
    flops_fixed: float = 0.0
    bytes_per_sample: float = 0.0  # fp32, eager (every operation reads and writes memory)
    bytes_fixed: float = 0.0
    bytes_fused_per_sample: float = 0.0  # fp32, element-wise chains fused (compiled)
    bytes_fused_fixed: float = 0.0
    kernels: float = 0.0  # launches per step, eager
    kernels_fused: float = 0.0  # compiled

    def flops(self, batch: int) -> float:
        return self.flops_fixed + batch * self.flops_per_sample

    def bytes(self, batch: int, fused: bool = False) -> float:
        if fused:
            return self.bytes_fused_fixed + batch * self.bytes_fused_per_sample
        return self.bytes_fixed + batch * self.bytes_per_sample


@dataclass
class OpCost:
    """Per-class cost of one training step, plus the figures the memory planner needs."""

    classes: dict = field(default_factory=dict)  # class -> ClassCost
    params: int = 0
    forward_flops_per_sample: float = 0.0
    train_flops_per_sample: float = 0.0
    activation_bytes_per_sample: float = 0.0  # saved for backward, fp32
    # One row per distinct matrix/convolution/attention operation of the step (``GEMM_FIELDS``):
    # its kind (``gemm_kind``), FLOPs and fp32 bytes split per sample / fixed, its two
    # batch-independent GEMM dimensions (``gemm_dims``), how many of it, the matrix products its
    # kernels run (``gemm_shapes``: per product [M, N, K per sample, then fixed]: M per sample,
    # M fixed, N per sample, N fixed, K per sample, K fixed) and whether it is a 3x3 stride-1
    # convolution (``winograd_eligible``: 1 or 0). Rows counted before the last two had 8 fields.
    gemm_ops: list = field(default_factory=list)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["classes"] = {k: asdict(v) for k, v in self.classes.items()}
        return d

    @staticmethod
    def from_dict(d: dict) -> "OpCost":
        return OpCost(classes={k: ClassCost(**v) for k, v in d.get("classes", {}).items()},
                      params=int(d.get("params", 0)),
                      forward_flops_per_sample=float(d.get("forward_flops_per_sample", 0.0)),
                      train_flops_per_sample=float(d.get("train_flops_per_sample", 0.0)),
                      activation_bytes_per_sample=float(d.get("activation_bytes_per_sample", 0.0)),
                      gemm_ops=[list(r) for r in d.get("gemm_ops", [])])

    def sharded_optimizer(self, world: int) -> "OpCost":
        """This step with the optimizer update (clipping included) over 1 / ``world`` of the
        parameters, as each GPU runs it under FSDP (every rank updates its own shard)."""
        classes = dict(self.classes)
        o = classes.get("optimizer")
        if o is not None and world > 1:
            classes["optimizer"] = ClassCost(o.flops_per_sample, o.flops_fixed / world, o.bytes_per_sample,
                                             o.bytes_fixed / world, o.bytes_fused_per_sample,
                                             o.bytes_fused_fixed / world, o.kernels, o.kernels_fused)
        return OpCost(classes, self.params, self.forward_flops_per_sample, self.train_flops_per_sample,
                      self.activation_bytes_per_sample, self.gemm_ops)

    def at_precision(self, precision: str) -> dict:
        """class -> (flops per sample, flops fixed, bytes/sample, bytes fixed, fused bytes/sample,
        fused bytes fixed, kernels, fused kernels) at this precision (see the module docstring)."""
        half = precision in ("fp16", "bf16")
        out = {}
        for name, c in self.classes.items():
            s = 0.5 if half and name != "optimizer" else 1.0
            out[name] = ClassCost(c.flops_per_sample, c.flops_fixed, c.bytes_per_sample * s, c.bytes_fixed * s,
                                  c.bytes_fused_per_sample * s, c.bytes_fused_fixed * s, c.kernels, c.kernels_fused)
        if half:  # autocast: fp32 weight -> half copy, half weight gradient -> fp32
            dm = out.setdefault("data_movement", ClassCost())
            cast = 12.0 * self.params
            out["data_movement"] = ClassCost(dm.flops_per_sample, dm.flops_fixed, dm.bytes_per_sample,
                                             dm.bytes_fixed + cast, dm.bytes_fused_per_sample,
                                             dm.bytes_fused_fixed + cast, dm.kernels, dm.kernels_fused)
        return out


class _Record:
    """Totals of one counted step (at one batch size)."""

    def __init__(self) -> None:
        self.flops: dict[str, float] = {c: 0.0 for c in CLASSES}
        self.bytes: dict[str, float] = {c: 0.0 for c in CLASSES}
        self.kernels: dict[str, float] = {c: 0.0 for c in CLASSES}
        self.model_flops = 0.0  # torch's formulas only (conv, matmul, attention): the MFU convention
        # (kind, flops, bytes, (dim_n, dim_k), (gemm_shapes, winograd_eligible)) per conv/matmul/attention op
        self.gemm: list[tuple] = []
        # For the fused (compiled) view: each operation's class, inputs and outputs.
        self.ops: list[tuple[str, list[int], list[int], list[float], list[float]]] = []


def _tensors(tree) -> list:
    import torch
    from torch.utils._pytree import tree_leaves

    return [t for t in tree_leaves(tree) if isinstance(t, torch.Tensor)]


def _mutated(func, args, kwargs) -> list:
    """Tensors an operation writes in place (schema arguments marked ``Tensor(a!)``)."""
    out = []
    try:
        schema_args = func._schema.arguments
    except AttributeError:
        return out
    fused_opt = func.__name__.startswith(("_fused_adam", "_fused_sgd")) and kwargs.get("grad_scale") is None
    for i, a in enumerate(schema_args):
        if a.alias_info is None or not a.alias_info.is_write:
            continue
        if fused_opt and a.name == "grads":  # marked written for in-kernel unscaling only
            continue
        value = args[i] if i < len(args) else kwargs.get(a.name)
        out += _tensors(value)
    return out


def _nbytes(t) -> float:
    view = t.numel() * t.element_size()
    try:
        return float(min(view, t.untyped_storage().nbytes()))
    except Exception:  # a tensor without storage (some wrappers): its view size
        return float(view)


def _groups(args: tuple) -> int:
    """``groups`` of an ``aten.convolution_backward`` call (its 10th argument)."""
    g = args[9] if len(args) > 9 else 1
    return g if isinstance(g, int) else 1


def _grouped_conv_backward_flops(args: tuple) -> float:
    mask = args[10] if len(args) > 10 else (True, True, True)
    return grouped_conv_backward_flops(tuple(args[0].shape), tuple(args[2].shape), mask)


def grouped_conv_backward_flops(grad_out_shape: tuple, weight_shape: tuple, output_mask=(True, True, True)) -> float:
    """FLOPs of a grouped (e.g. depthwise) convolution's backward: each gradient asked for (input,
    weight; ``output_mask``) costs what the forward does, 2 x grad_output elements x
    (C_in / groups) x kh x kw. torch's own formula (2.x flop_counter) ignores ``groups`` here and
    counts a depthwise layer's backward ~C times too high."""
    forward = 2.0 * math.prod(grad_out_shape) * math.prod(weight_shape[1:])
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


def conv_backward_flop_mapping() -> dict:
    """``custom_mapping`` for torch's FlopCounterMode with the grouped-convolution backward fixed."""
    import torch
    from torch.utils.flop_counter import conv_backward_flop

    def flops(*args, out_val=None, **kwargs) -> int:
        if _groups(args) > 1:
            return int(_grouped_conv_backward_flops(args))
        return conv_backward_flop(*args, out_val=out_val, **kwargs)

    flops._get_raw = True  # tensors, not shapes: the call above converts them itself
    return {torch.ops.aten.convolution_backward: flops}


def _make_mode(record: _Record, keep: dict):
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import flop_registry

    class CountMode(TorchDispatchMode):
        record = None
        phase: str | None = None  # "optimizer" while the optimizer steps
        quiet = 0  # >0 inside our own attention stand-in

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            if self.quiet or getattr(func, "is_view", False) or func.namespace == "profiler":
                return out
            name = str(func)
            if name.startswith(("aten.detach", "aten.lift", "aten.alias", "aten._unsafe_view", "aten.view")):
                return out
            if name.startswith(_ALLOCATIONS):  # memory handed out, nothing written: no kernel
                return out
            cls = "optimizer" if self.phase == "optimizer" else op_class(name)
            packet = func._overloadpacket
            if packet is torch.ops.aten.convolution_backward and _groups(args) > 1:
                flops = _grouped_conv_backward_flops(args)
                record.model_flops += flops
            elif packet in flop_registry:
                flops = float(flop_registry[packet](*args, **kwargs, out_val=out))
                record.model_flops += flops
            else:
                flops = float(sum(t.numel() for t in _tensors(out) if t.is_floating_point()))
                if cls == "data_movement":
                    flops = 0.0
            ins, outs = _tensors((args, kwargs)), _tensors(out)
            written = _mutated(func, args, kwargs)  # in-place and out= arguments are written too
            seen = {id(t) for t in outs}
            outs += [t for t in written if id(t) not in seen]
            self.add(cls, flops, ins, outs, gemm_kind(name, cls, args), gemm_dims(name, cls, args),
                     (gemm_shapes(name, cls, args, out), winograd_eligible(name, cls, args)))
            return out

        def add(self, cls, flops, ins, outs, kind=None, dims=(0, 0), shapes=((), False)) -> None:
            rb, wb = [_nbytes(t) for t in ins], [_nbytes(t) for t in outs]
            if cls in ("conv", "matmul", "attention") and self.phase != "optimizer":
                record.gemm.append((kind or cls, flops, sum(rb) + sum(wb), dims, shapes))
            record.flops[cls] += flops
            record.bytes[cls] += sum(rb) + sum(wb)
            record.kernels[cls] += 1
            for t in ins + outs:
                keep[id(t)] = t  # keep alive: ids stay unique for the fused analysis
            record.ops.append((cls, [id(t) for t in ins], [id(t) for t in outs], rb, wb))

    mode = CountMode()
    mode.record = record
    return mode


CAUSAL_TILE = 128  # flash attention's query/key block (FlashAttention-2/3, cuDNN: 64-128 on Hopper)


def causal_fraction(seq_q: int, seq_k: int, tile: int = CAUSAL_TILE) -> float:
    """Share of the score matrix a causal flash kernel computes: the tiles on or below the
    diagonal, (n + 1) / 2n of n x n tiles for n = ceil(seq / tile) (1 for a one-tile sequence)."""
    n = max(1, math.ceil(max(seq_q, seq_k) / tile))
    return (n + 1) / (2 * n)


def attention_shape(q, k, share: float = 1.0) -> tuple:
    """(kind, dims, (products, winograd)) of a scaled dot-product attention on q (..., seq_q,
    head_dim) and k (..., seq_k, head_dim) computing ``share`` of its score matrix (causal:
    ``causal_fraction``), as ``CountMode.add`` records a matrix operation: dims (seq_q, seq_k)
    and one product, the score matrix's as computed (M = batch x heads x seq_q, N = the keys
    each query meets, seq_k x share, K = head_dim), which sizes the kernel's tiles and its
    inner loops (``launcher.estimate.opmodel.attention_utilization``)."""
    *lead, seq_q, dim = (int(v) for v in q.shape)
    seq_k = int(k.shape[-2])
    return "attention", (seq_q, seq_k), (((math.prod(lead) * seq_q, seq_k * share, dim),), False)


def _attention_standin(mode):
    """F.scaled_dot_product_attention as one fused kernel (forward and backward), for counting."""
    import torch
    from torch.utils.flop_counter import sdpa_backward_flop_count, sdpa_flop_count

    class FlashCount(torch.autograd.Function):
        @staticmethod
        def forward(ctx, q, k, v, causal):
            mode.quiet += 1
            try:
                o = q.new_empty(*q.shape[:-1], v.shape[-1])
            finally:
                mode.quiet -= 1
            ctx.save_for_backward(q, k, v, o)
            ctx.share = causal_fraction(q.shape[-2], k.shape[-2]) if causal else 1.0
            flops = float(sdpa_flop_count(q.shape, k.shape, v.shape))
            mode.record.model_flops += flops
            mode.add("attention", flops * ctx.share, [q, k, v], [o], *attention_shape(q, k, ctx.share))
            return o

        @staticmethod
        def backward(ctx, go):
            q, k, v, o = ctx.saved_tensors
            mode.quiet += 1
            try:
                grads = (torch.empty_like(q), torch.empty_like(k), torch.empty_like(v))
            finally:
                mode.quiet -= 1
            flops = float(sdpa_backward_flop_count(go.shape, q.shape, k.shape, v.shape))
            mode.record.model_flops += flops
            mode.add("attention", flops * ctx.share, [q, k, v, o, go], list(grads), *attention_shape(q, k, ctx.share))
            return (*grads, None)

    def sdpa(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
        if attn_mask is not None:  # masked attention: the math path's operations are what runs
            return _ORIGINAL_SDPA(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal,
                                  scale=scale, enable_gqa=enable_gqa)
        return FlashCount.apply(q, k, v, bool(is_causal))

    return sdpa


_ORIGINAL_SDPA = None


@dataclass(frozen=True)
class _Step:
    """What one training step feeds the model and how it updates it (image or token model)."""

    inputs: Callable  # batch -> (input, labels) on the meta device
    loss: Callable  # (model output, labels) -> scalar loss
    make_optimizer: Callable  # parameters -> update(), run once to create state, then counted


def _sgd(params: list) -> Callable:
    """The image payload's update on CUDA: SGD with momentum and weight decay as one fused kernel
    (``torch.optim.SGD(fused=True)``, payloads/train.py ``make_optimizer``): ``_fused_sgd_`` reads
    each weight, gradient and momentum and writes the weight and the momentum, 20 bytes per fp32
    parameter, one kernel. torch has no meta kernel for it (``_meta_fused_sgd``), so it is called
    directly, as AdamW is. (The payload on a CPU runs the foreach form; the per-operation model
    prices GPUs only.)"""
    import torch

    _meta_fused_sgd()
    momenta = [torch.zeros_like(p) for p in params]

    def update() -> None:
        live = [i for i, p in enumerate(params) if p.grad is not None]  # as torch.optim skips grad-less ones
        if live:
            torch._fused_sgd_([params[i] for i in live], [params[i].grad for i in live], [momenta[i] for i in live],
                              weight_decay=1e-4, momentum=0.9, lr=0.1, dampening=0.0, nesterov=False, maximize=False,
                              is_first_step=False)

    return update


_FUSED_SGD_LIB: list = []


def _meta_fused_sgd() -> None:
    """Register a meta kernel for ``aten::_fused_sgd_`` (in place, returns nothing: on the meta
    device there is nothing to write), once per process."""
    import torch

    if _FUSED_SGD_LIB:
        return
    lib = torch.library.Library("aten", "IMPL")
    try:
        lib.impl("_fused_sgd_", lambda *args, **kwargs: None, "Meta")
    except RuntimeError:  # a later torch that ships its own meta kernel
        pass
    _FUSED_SGD_LIB.append(lib)  # the registration lives as long as the library object


def _clipped_fused_adamw(params: list) -> Callable:
    """payloads/lm_train.py's update: clip_grad_norm_(1.0, foreach) then fused AdamW, as
    torch.optim.AdamW(fused=True) runs it on CUDA (the step counters' foreach add, then one
    ``_fused_adamw_`` over every parameter). torch refuses foreach clipping and fused=True on
    the meta device, so the operations they run on CUDA are called directly: per-tensor norms
    (``_foreach_norm``), their norm, the clamped scale, ``_foreach_mul_`` of the gradients.)"""
    import torch

    moments = [(torch.zeros_like(p), torch.zeros_like(p)) for p in params]
    steps = [torch.zeros((), device=p.device) for p in params]

    def update() -> None:
        grads = [p.grad for p in params]
        total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads, 2.0)), 2.0)
        torch._foreach_mul_(grads, torch.clamp(1.0 / (total + 1e-6), max=1.0))
        torch._foreach_add_(steps, 1)
        torch._fused_adamw_(params, grads, [m[0] for m in moments], [m[1] for m in moments],
                            [], steps, lr=3e-4, beta1=0.9, beta2=0.95, weight_decay=0.1, eps=1e-8,
                            amsgrad=False, maximize=False)

    return update


def device_of(module):
    """The device the step runs on: the module's (``meta`` as a rule; the CPU for a model whose
    operations need data, see ``launcher.estimate.flops.count_factory``)."""
    import torch

    first = next(iter(module.parameters()), None)
    return first.device if first is not None else torch.device("meta")


def _image_step(sample_shape: tuple, label_shape: tuple, device="meta", vocab: int | None = None) -> _Step:
    import torch
    import torch.nn.functional as F

    def inputs(batch: int) -> tuple:
        x = (torch.randint(0, vocab, (batch, *sample_shape), device=device) if vocab else
             torch.randn(batch, *sample_shape, device=device))
        return x, torch.zeros(batch, *label_shape, dtype=torch.long, device=device)

    return _Step(inputs, F.cross_entropy, _sgd)


def _token_step(seq_len: int) -> _Step:
    import torch
    import torch.nn.functional as F

    from launcher.payloads.factory import output_logits

    def inputs(batch: int) -> tuple:
        return (torch.zeros(batch, seq_len, dtype=torch.long, device="meta"),
                torch.zeros(batch, seq_len, dtype=torch.long, device="meta"))

    def loss(out, targets):  # payloads/lm.py's lm_loss on the logits payloads/lm_train.py takes
        return F.cross_entropy(output_logits(out).flatten(0, 1).float(), targets.flatten())

    return _Step(inputs, loss, _clipped_fused_adamw)


def _count_once(module, step: _Step, batch: int) -> tuple[_Record, float, float, set]:
    """(record, forward model FLOPs, forward+backward model FLOPs, ids of tensors saved for backward)."""
    import torch
    import torch.nn.functional as F

    global _ORIGINAL_SDPA
    record, keep, saved = _Record(), {}, set()
    mode = _make_mode(record, keep)
    params = [p for p in module.parameters() if p.requires_grad]
    param_ids = {id(p) for p in params}

    def pack(t):
        base = t._base if t._base is not None else t
        if id(t) not in param_ids and id(base) not in param_ids:
            saved.add(id(t))
            keep[id(t)] = t
        return t

    x, y = step.inputs(batch)
    module.train()
    _ORIGINAL_SDPA = F.scaled_dot_product_attention
    F.scaled_dot_product_attention = _attention_standin(mode)
    try:
        with mode, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = module(x)
        forward = record.model_flops
        with mode:
            loss = step.loss(out, y)
            loss.backward()
        update = step.make_optimizer(params)
        update()  # the first step creates optimizer state (not steady state): not counted
        with mode:
            mode.phase = "optimizer"
            update()
            mode.phase = None
    finally:
        F.scaled_dot_product_attention = _ORIGINAL_SDPA
    module.zero_grad(set_to_none=True)
    return record, forward, record.model_flops, saved


def _fused(record: _Record, saved: set) -> tuple[dict, dict]:
    """Bytes and kernels per class when element-wise chains are fused (compiled)."""
    producer: dict[int, str] = {}
    consumers: dict[int, set] = {}
    for cls, ins, outs, _, _ in record.ops:
        for i in ins:
            consumers.setdefault(i, set()).add(cls)
        for o in outs:
            producer[o] = cls
    nbytes: dict[str, float] = {c: 0.0 for c in CLASSES}
    kernels: dict[str, float] = {c: 0.0 for c in CLASSES}
    for cls, ins, outs, rb, wb in record.ops:
        if cls != "elementwise":
            nbytes[cls] += sum(rb) + sum(wb)
            kernels[cls] += 1
            continue
        fresh = [b for i, b in zip(ins, rb) if producer.get(i) != "elementwise"]
        written = [b for o, b in zip(outs, wb)
                   if o in saved or not consumers.get(o) or consumers[o] != {"elementwise"}]
        nbytes[cls] += sum(fresh) + sum(written)
        kernels[cls] += 1 if written else 0
    return nbytes, kernels


def count(module, sample_shape: tuple, num_classes: int, label_shape: tuple = (), vocab: int | None = None) -> OpCost:
    """Per-class cost of one training step of ``module`` (built on the meta device, fp32; a
    module on the CPU is counted the same way, on real random data).

    sample_shape: one input sample (e.g. (3, 224, 224)); label_shape: one sample's labels beyond
    the batch (() for a classifier, (H, W) for a segmenter); vocab: the input is int64 token ids
    below it (a classifier of token sequences), not floats.
    """
    return _count(module, _image_step(tuple(sample_shape), tuple(label_shape), device_of(module), vocab), 1)


def count_tokens(module, seq_len: int) -> OpCost:
    """Per-class cost of one training step of a token model (built on the meta device, fp32),
    per trained token: ``module`` maps int64 token ids (batch, seq_len) to logits
    (batch, seq_len, vocab), or to an output holding them (``.logits``, a dict's ``"logits"``,
    a tuple's first item: ``payloads.factory.output_logits``); trained as payloads/lm_train.py does (see the module docstring)."""
    return _count(module, _token_step(int(seq_len)), int(seq_len))


def _count(module, step: _Step, unit: int) -> OpCost:
    """Count ``step`` at two batches and split every figure into per-sample and fixed parts; a
    sample is 1 / ``unit`` of one batch row (a token of a sequence of ``unit`` tokens)."""
    b1, b2 = _COUNT_BATCHES
    r1, fwd1, tot1, saved1 = _count_once(module, step, b1)
    r2, fwd2, tot2, saved2 = _count_once(module, step, b2)
    fb1, fk1 = _fused(r1, saved1)
    fb2, fk2 = _fused(r2, saved2)

    def split(v1: float, v2: float) -> tuple[float, float]:
        per = max(0.0, (v2 - v1) / (b2 - b1))
        return per / unit, max(0.0, v1 - b1 * per)

    classes = {}
    for c in CLASSES:
        fp, ff = split(r1.flops[c], r2.flops[c])
        bp, bf = split(r1.bytes[c], r2.bytes[c])
        fbp, fbf = split(fb1[c], fb2[c])
        if r1.kernels[c] or r2.kernels[c]:
            classes[c] = ClassCost(fp, ff, bp, bf, fbp, fbf, r2.kernels[c], fk2[c])
    gemm_ops = _gemm_rows(r1.gemm, r2.gemm, split)
    act = _saved_bytes(module, step, b2) / (b2 * unit)
    fwd_per, _ = split(fwd1, fwd2)
    tot_per, _ = split(tot1, tot2)
    return OpCost(classes=classes, params=sum(p.numel() for p in module.parameters()),
                  forward_flops_per_sample=fwd_per, train_flops_per_sample=tot_per,
                  activation_bytes_per_sample=act, gemm_ops=gemm_ops)


def _gemm_rows(g1: list, g2: list, split) -> list:
    """Rows of ``GEMM_FIELDS``: the matrix operations of the two counted batches paired in order
    (the same program), each split into per-sample and fixed parts (FLOPs, bytes and every
    dimension of its matrix products); identical rows merged."""
    if len(g1) != len(g2):
        return []
    merged: dict[tuple, int] = {}
    for (kind, f1, b1, dims, (s1, wino)), (_, f2, b2, _, (s2, _)) in zip(g1, g2):
        fp, ff = split(f1, f2)
        bp, bf = split(b1, b2)
        shapes = tuple(tuple(v for d1, d2 in zip(m1, m2) for v in split(d1, d2)) for m1, m2 in zip(s1, s2)) \
            if len(s1) == len(s2) else ()
        key = (kind, float(f"{fp:.6g}"), float(f"{ff:.6g}"), float(f"{bp:.6g}"), float(f"{bf:.6g}"), *dims,
               shapes, int(wino))
        merged[key] = merged.get(key, 0) + 1
    return [[*k[:7], n, [list(m) for m in k[7]], k[8]] for k, n in merged.items()]


def _saved_bytes(module, step: _Step, batch: int) -> float:
    import torch

    params = {id(p) for p in module.parameters()}
    saved: dict[int, object] = {}

    def pack(t):
        base = t._base if t._base is not None else t
        if id(t) not in params and id(base) not in params:
            saved[id(t)] = t
        return t

    x, y = step.inputs(batch)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step.loss(module(x), y)
    module.zero_grad(set_to_none=True)
    return float(sum(t.numel() * t.element_size() for t in saved.values()))


def step_summary(cost: OpCost, precision: str, batch: int) -> dict:
    """class -> {flops, bytes, bytes_fused, kernels, kernels_fused} of one step at this batch."""
    out = {}
    for c, v in cost.at_precision(precision).items():
        out[c] = {"flops": v.flops(batch), "bytes": v.bytes(batch), "bytes_fused": v.bytes(batch, True),
                  "kernels": v.kernels, "kernels_fused": v.kernels_fused}
    return out


def arithmetic_intensity(flops: float, nbytes: float) -> float:
    return flops / nbytes if nbytes else math.inf
