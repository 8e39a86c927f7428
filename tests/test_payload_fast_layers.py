"""payloads.fast_layers: the GPU rewrites compute the same function, with the same
gradients and the same state dict, as the plain layers (checked on CPU in float64, where
the fused op runs its reference path through the very same autograd formula)."""

import copy

import pytest
import torch
from torch import nn

from payloads import fast_layers
from payloads.models import build_model


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("name,counts", [("vgg16", {"conv_relu": 13, "space_to_depth_stem": 0}),
                                         ("resnet50", {"conv_relu": 0, "space_to_depth_stem": 1}),
                                         ("tinycnn", {"conv_relu": 0, "space_to_depth_stem": 0})])
def test_rewrite_finds_the_layers_and_keeps_the_state_dict(name, counts):
    with torch.device("meta"):
        plain = build_model(name, num_classes=1000)
        fast = copy.deepcopy(plain)
        assert fast_layers.rewrite(fast, torch.bfloat16) == counts
        assert fast(torch.randn(1, 3, 224, 224)).shape == (1, 1000)
    assert list(fast.state_dict()) == list(plain.state_dict())


def _small_vgg():
    # VGG's pattern (conv, ReLU, pool) without its 100M-parameter classifier: float64 stays quick.
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
                         nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(8, 4, 3, 2, 1),
                         nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 5))


@pytest.mark.parametrize("make", [_small_vgg, lambda: build_model("resnet18", 5, 3, 32)], ids=["vgg-like", "resnet18"])
def test_rewrite_keeps_function_and_gradients(make):
    torch.manual_seed(0)
    plain = make().double().eval()
    fast = copy.deepcopy(plain)
    assert sum(fast_layers.rewrite(fast, None).values()) >= 1
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    out_plain, out_fast = plain(x), fast(x)
    torch.testing.assert_close(out_fast, out_plain, rtol=1e-10, atol=1e-10)
    out_plain.square().sum().backward()
    out_fast.square().sum().backward()
    gp, gf = _grads(plain), _grads(fast)
    for n in gp:
        torch.testing.assert_close(gf[n], gp[n], rtol=1e-9, atol=1e-9, msg=n)


@pytest.mark.parametrize("cin,k,pad,side", [(3, 7, 3, 32), (1, 7, 3, 30), (4, 5, 2, 16), (2, 3, 1, 20), (3, 7, 3, 31)])
def test_space_to_depth_conv_matches_strided_conv(cin, k, pad, side):
    torch.manual_seed(1)
    conv = nn.Conv2d(cin, 16, k, 2, pad, bias=True).double()
    s2d = copy.deepcopy(conv)
    s2d.__class__ = fast_layers.SpaceToDepthConv
    for fmt in (torch.contiguous_format, torch.channels_last):
        x = torch.randn(2, cin, side, side, dtype=torch.float64).contiguous(memory_format=fmt)
        torch.testing.assert_close(s2d(x), conv(x), rtol=1e-10, atol=1e-10)


def test_fused_op_passes_torch_library_checks():
    # Schema, fake (shape-only) kernel, autograd registration and AOT tracing: what
    # torch.compile relies on when it meets the op on a GPU.
    x = torch.randn(2, 4, 9, 9, requires_grad=True)
    w = torch.randn(6, 4, 3, 3, requires_grad=True)
    b = torch.randn(6, requires_grad=True)
    torch.library.opcheck(fast_layers.conv2d_relu, (x, w, b, [1, 1], [1, 1], [1, 1], 1))
    torch.library.opcheck(fast_layers.conv2d_relu, (x.detach(), w, None, [2, 2], [0, 0], [1, 1], 1))


def test_input_gradient_skipped_when_not_needed_and_autocast_dtype_used():
    conv = fast_layers.Conv2dReLU(3, 4, 3, padding=1)
    conv.compute_dtype = torch.bfloat16
    x = torch.randn(1, 3, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = conv(x)
    assert y.dtype == torch.bfloat16 and bool((y >= 0).all())
    y.float().sum().backward()
    assert conv.weight.grad is not None and conv.weight.grad.dtype == torch.float32
    assert conv.bias.grad is not None


def test_falls_back_to_conv_then_relu_when_cudnn_has_no_fused_kernel(monkeypatch, capsys):
    # Stand-in for a GPU where cuDNN builds no fused kernel: the op must still give relu(conv).
    monkeypatch.setattr(fast_layers, "_cudnn_fused", {"ok": True})

    def refuse(*a, **k):
        raise RuntimeError("CUDNN_STATUS_NOT_SUPPORTED: no engine")

    monkeypatch.setattr(torch, "cudnn_convolution_relu", refuse)
    monkeypatch.setattr(torch.Tensor, "is_cuda", property(lambda self: True))
    monkeypatch.setattr(torch.backends.cudnn, "is_available", lambda: True)
    x, w, b = torch.randn(1, 2, 5, 5), torch.randn(3, 2, 3, 3), torch.randn(3)
    y = fast_layers.conv2d_relu(x, w, b, [1, 1], [1, 1], [1, 1], 1)
    torch.testing.assert_close(y, torch.relu(torch.nn.functional.conv2d(x, w, b, 1, 1)))
    assert fast_layers._cudnn_fused["ok"] is False
    assert "running conv and ReLU apart" in capsys.readouterr().err
