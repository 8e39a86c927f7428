"""GPU rewrites of layers that compute the same function faster. Parameters, state-dict keys
and results stay those of the plain layers, so checkpoints move freely between the two.

1. Convolution + bias + ReLU as one cuDNN kernel. Why: in VGG every conv is followed by a ReLU. Unfused, the conv writes its output, then a
second kernel reads it back and writes the ReLU'd copy: two extra passes over the largest
activations of the network, which is memory traffic the GPU waits on. cuDNN can apply bias
and ReLU in the conv's epilogue (``torch.cudnn_convolution_relu``), but PyTorch ships that
op for inference only: no autograd formula and no shape function for torch.compile. This
module gives it both, as a custom op, so the backward pass (ReLU mask, then the ordinary
conv backward) is traced and fused by Inductor like any other.

Off CUDA the same op runs ``relu(conv2d(...))``, so the math and the gradients are the same
everywhere and the CPU tests exercise the autograd formula.

2. ResNet's 7x7 stride-2 stem on 3 channels as a 4x4 stride-1 conv on a 2x2 space-to-depth
input of 16 channels. Why: a 3-channel conv cannot use tensor cores well (cuDNN falls back
to an Ampere-era kernel at ~10% of peak); 16 channels can, and the weight is the same 7x7
one, rearranged on the fly, so gradients reach it unchanged.
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _channels_last(t: Tensor) -> bool:
    return t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()


def _out_format(x: Tensor, w: Tensor) -> torch.memory_format:
    # cuDNN returns channels-last when either operand is channels-last; say so up front so
    # the compiler's idea of the layout matches what the kernel writes.
    return torch.channels_last if _channels_last(x) or _channels_last(w) else torch.contiguous_format


# Cleared the first time cuDNN finds no fused kernel for a GPU/dtype (it builds the fused
# kernel at run time; older GPUs may have none): from then on the unfused pair runs.
_cudnn_fused = {"ok": True}


@torch.library.custom_op("gpujob::conv2d_relu", mutates_args=())
def conv2d_relu(x: Tensor, w: Tensor, b: Tensor | None, stride: list[int], padding: list[int],
                dilation: list[int], groups: int) -> Tensor:
    fmt = _out_format(x, w)
    y = None
    if x.is_cuda and torch.backends.cudnn.is_available() and _cudnn_fused["ok"]:
        try:
            y = torch.cudnn_convolution_relu(x.contiguous(memory_format=fmt), w.contiguous(memory_format=fmt), b,
                                             stride, padding, dilation, groups)
        except RuntimeError as e:
            _cudnn_fused["ok"] = False
            print(f"fast layers: cuDNN has no fused conv+ReLU here ({str(e).splitlines()[0][:120]}); "
                  "running conv and ReLU apart", file=sys.stderr, flush=True)
    if y is None:
        y = F.relu(F.conv2d(x, w, b, stride, padding, dilation, groups))
    return y.contiguous(memory_format=fmt)


@conv2d_relu.register_fake
def _conv2d_relu_fake(x, w, b, stride, padding, dilation, groups):
    n, _, h, wd = x.shape
    kh, kw = w.shape[2], w.shape[3]
    oh = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (wd + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    return torch.empty((n, w.shape[0], oh, ow), dtype=x.dtype, device=x.device, memory_format=_out_format(x, w))


def _setup(ctx, inputs, output):
    x, w, b, stride, padding, dilation, groups = inputs
    ctx.save_for_backward(x, w, output)
    ctx.conf = (stride, padding, dilation, groups, b is not None)


def _backward(ctx, gy):
    x, w, y = ctx.saved_tensors
    stride, padding, dilation, groups, has_bias = ctx.conf
    g = torch.where(y > 0, gy, torch.zeros((), dtype=gy.dtype, device=gy.device))
    need = ctx.needs_input_grad
    gx, gw, gb = torch.ops.aten.convolution_backward(
        g, x, w, [w.shape[0]] if has_bias else None, stride, padding, dilation, False, [0, 0], groups,
        [need[0], need[1], has_bias and need[2]])
    return gx, gw, gb, None, None, None, None


conv2d_relu.register_autograd(_backward, setup_context=_setup)


class Conv2dReLU(nn.Conv2d):
    """``relu(conv(x))`` in one kernel on CUDA. Same parameters as nn.Conv2d, so checkpoints
    load into either. ``compute_dtype`` does autocast's job (custom ops are not autocast)."""

    compute_dtype: torch.dtype | None = None

    def forward(self, x: Tensor) -> Tensor:
        if self.padding_mode != "zeros" or isinstance(self.padding, str) or x.device.type == "meta":
            return F.relu(super().forward(x))
        w, b = self.weight, self.bias
        dt = self.compute_dtype if torch.is_autocast_enabled(x.device.type) else None
        if dt is not None:
            x, w, b = x.to(dt), w.to(dt), (b.to(dt) if b is not None else None)
        return conv2d_relu(x, w, b, list(self.stride), list(self.padding), list(self.dilation), self.groups)


class SpaceToDepthConv(nn.Conv2d):
    """A stride-2 conv with an odd square kernel computed as a stride-1 conv on a 2x2
    space-to-depth input. Output pixel (i, j) reads padded input rows 2i + kh, kh < k; with
    the kernel zero-extended to even size 2K and kh = 2a + p, that is row i + a of phase p,
    so the phases become channels (``pixel_unshuffle``) and the kernel a KxK one."""

    def forward(self, x: Tensor) -> Tensor:
        pad, k = self.padding[0], self.kernel_size[0]
        h, w_ = x.shape[-2:]
        if x.device.type == "meta" or (h + 2 * pad) % 2 or (w_ + 2 * pad) % 2:
            return super().forward(x)
        c = x.shape[1]
        c2 = c + c % 2  # 4 * c2 channels: a multiple of 8, what tensor cores want
        cl = _channels_last(x)
        x = F.pixel_unshuffle(F.pad(x, (pad, pad, pad, pad, 0, c2 - c)), 2)
        if cl:
            x = x.contiguous(memory_format=torch.channels_last)
        o = self.weight.shape[0]
        wt = F.pad(self.weight, (0, 1, 0, 1, 0, c2 - c))  # the added taps are zero: same sums
        wt = wt.reshape(o, c2, (k + 1) // 2, 2, (k + 1) // 2, 2).permute(0, 1, 3, 5, 2, 4)
        wt = wt.reshape(o, 4 * c2, (k + 1) // 2, (k + 1) // 2)
        if cl:
            wt = wt.contiguous(memory_format=torch.channels_last)
        return F.conv2d(x, wt, self.bias)


def _is_stem(m: nn.Module) -> bool:
    return (type(m) is nn.Conv2d and m.stride == (2, 2) and m.in_channels <= 4 and m.groups == 1
            and m.dilation == (1, 1) and m.kernel_size[0] == m.kernel_size[1] and m.kernel_size[0] % 2 == 1
            and m.padding[0] == m.padding[1] and m.padding_mode == "zeros" and not isinstance(m.padding, str))


def rewrite(model: nn.Module, compute_dtype: torch.dtype | None) -> dict[str, int]:
    """Apply both rewrites in place; returns how many layers each one changed."""
    stems = 0
    for m in model.modules():
        if _is_stem(m):
            m.__class__ = SpaceToDepthConv
            stems += 1
    return {"conv_relu": fuse_conv_relu(model, compute_dtype), "space_to_depth_stem": stems}


def fuse_conv_relu(model: nn.Module, compute_dtype: torch.dtype | None) -> int:
    """Swap each ``Conv2d, ReLU`` pair inside a Sequential for ``Conv2dReLU, Identity`` in
    place; the state dict keeps its keys. Returns how many pairs were fused."""
    fused = 0
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        for i in range(len(seq) - 1):
            conv, act = seq[i], seq[i + 1]
            if type(conv) is nn.Conv2d and isinstance(act, nn.ReLU):
                conv.__class__ = Conv2dReLU
                conv.compute_dtype = compute_dtype
                seq[i + 1] = nn.Identity()
                fused += 1
    return fused
