"""The GEMM shape terms of the per-operation model: the matrix products the counter records per
operation (opcount.gemm_shapes), the tile and reduction fill (opmodel), and their fit on per-call
profiles (gemmfit), each against numbers computed by hand."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from launcher.catalog.gpus import get_gpu
from launcher.estimate import gemmfit, opmodel
from launcher.estimate.opcount import count


def _meta(factory):
    with torch.device("meta"):
        return factory()


def _at(product: list, batch: int) -> tuple:
    mp, mf, np_, nf, kp, kf = product
    return (mf + batch * mp, nf + batch * np_, kf + batch * kp)


def test_counter_records_each_operations_matrix_products():
    # Conv 8 -> 16, 3x3, padding 1 on 8 x 10 x 10, then Linear(1600 -> 5); the conv's input needs no
    # gradient (it is the data), so its backward runs the weight gradient only.
    c = count(_meta(lambda: nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.Flatten(), nn.Linear(1600, 5))),
              (8, 10, 10), 5)
    b = 6
    products = {(r[0], tuple(_at(p, b) for p in r[8]), r[9]) for r in c.gemm_ops}
    # forward: 6 x 100 output pixels, 16 channels, 8 x 9 long; weight gradient: 16 x 72 outputs, 600 long
    assert ("conv_kxk", ((600, 16, 72),), 1) in products
    assert ("conv_kxk", ((16, 72, 600),), 1) in products
    # linear forward (b x 5 = b x 1600 @ 1600 x 5), input gradient (b x 1600, 5 long), weight gradient
    assert ("matmul", ((6, 5, 1600),), 0) in products
    assert ("matmul", ((6, 1600, 5),), 0) in products
    assert ("matmul", ((5, 1600, 6),), 0) in products
    # every product's 2 M N K is the FLOPs the row counts
    for r in c.gemm_ops:
        assert sum(2 * math.prod(_at(p, b)) for p in r[8]) == pytest.approx(r[1] * b + r[2], rel=1e-5)


def test_strided_input_gradient_keeps_the_forwards_flops():
    # 1x1 conv 8 -> 8, then 3x3 stride 2 (8 -> 16) on 8 x 8 -> 4 x 4: the strided layer's input
    # gradient is b x 64 input pixels x 8 channels, each gathering 16 x 9 taps x 16 / 64 = 36
    c = count(_meta(lambda: nn.Sequential(nn.Conv2d(8, 8, 1), nn.Conv2d(8, 16, 3, stride=2, padding=1),
                                          nn.Flatten())), (8, 8, 8), 256)
    back = next(r for r in c.gemm_ops if len(r[8]) == 2)
    assert [_at(p, 3) for p in back[8]] == [(192, 8, 36), (16, 72, 48)]
    assert 2 * 192 * 8 * 36 == 2 * 48 * 16 * 72  # the forward's FLOPs
    assert sum(2 * math.prod(_at(p, 3)) for p in back[8]) == pytest.approx(back[1] * 3 + back[2], rel=1e-5)


def test_winograd_shape_is_a_dense_3x3_stride_1_convolution():
    # 9x9 -> stride 2 -> 4x4 -> 3x3 stride 1 -> 4x4 -> depthwise 3x3 -> 4 x 4 x 4 = 64 outputs
    c = count(_meta(lambda: nn.Sequential(nn.Conv2d(4, 4, 3, stride=2), nn.Conv2d(4, 4, 3, padding=1),
                                          nn.Conv2d(4, 4, 3, padding=1, groups=4), nn.Flatten())), (4, 9, 9), 64)
    flags = sorted((r[0], r[9], len(r[8])) for r in c.gemm_ops)
    # stride 2 on the data: forward, and its weight gradient only; 3x3 stride 1: forward and both
    # gradients, flagged; depthwise: neither flagged nor a plain product
    assert flags == [("conv_depthwise", 0, 0), ("conv_depthwise", 0, 0), ("conv_kxk", 0, 1), ("conv_kxk", 0, 1),
                     ("conv_kxk", 1, 1), ("conv_kxk", 1, 2)]


def test_tile_and_reduction_fill_by_hand():
    assert opmodel.tile_fill(256, 128) == 1.0
    assert opmodel.tile_fill(200, 64) == pytest.approx(200 / 256 * 0.5)
    assert opmodel.k_fill(64, 64) == 0.5
    assert opmodel.k_fill(192, 64) == 0.75
    assert opmodel.k_fill(100, 0) == 1.0
    # two products at batch 2: (2 x 64, 128, 64) fills 1 x 0.5 (k0 64); (128, 64, 2 x 96) 0.5 x 0.75
    shapes = [[64, 0, 0, 128, 0, 64], [0, 128, 0, 64, 96, 0]]
    f1, f2 = 2 * 128 * 128 * 64, 2 * 128 * 64 * 192
    assert opmodel.gemm_utilization(shapes, 2, 64.0) == pytest.approx((f1 + f2) / (f1 / 0.5 + f2 / 0.375))


def test_winograd_gain_applies_at_fp32_only():
    c = count(_meta(lambda: nn.Sequential(nn.Conv2d(128, 128, 3, padding=1), nn.Flatten())), (128, 16, 16), 16)
    gpu = get_gpu("H200")
    plain = {"gemm_shape": {"k0": 0.0, "winograd_fp32": 1.0}}
    wino = {"gemm_shape": {"k0": 0.0, "winograd_fp32": 2.0}}
    t32 = opmodel.gemm_roofline(c, gpu, "fp32", 64, plain)[0]
    assert opmodel.gemm_roofline(c, gpu, "fp32", 64, wino)[0] == pytest.approx(t32 / 2)
    t16 = opmodel.gemm_roofline(c, gpu, "bf16", 64, plain)[0]
    assert opmodel.gemm_roofline(c, gpu, "bf16", 64, wino)[0] == pytest.approx(t16)


def _record(precision: str, calls: list) -> dict:
    """A profile record with ``shaped`` rows: (name, shapes, device us per call)."""
    return {"model": "m", "precision": precision, "batch_size": 2, "profiled_steps": 2,
            "shaped": [{"name": n, "shapes": s, "count": 2, "device_us": 2 * us} for n, s, us in calls]}


def test_profiled_calls_become_matrix_products():
    x, w, go = [2, 32, 8, 8], [64, 32, 3, 3], [2, 64, 8, 8]
    stem_x, stem_w, stem_go = [2, 3, 16, 16], [32, 3, 3, 3], [2, 32, 8, 8]
    rec = _record("bf16", [("aten::convolution", [x, w, [], [], []], 10.0),
                           ("aten::convolution_backward", [go, x, w, [], []], 30.0),
                           ("aten::convolution_backward", [stem_go, stem_x, stem_w, [], []], 5.0),
                           ("aten::addmm", [[10], [2, 4096], [4096, 10]], 2.0),
                           ("aten::convolution", [[2, 32, 8, 8], [32, 1, 3, 3], [], [], []], 1.0)])  # depthwise
    calls = gemmfit.shaped_calls(rec, "H200")
    assert len(calls) == 4  # the depthwise call has no plain GEMM
    fwd, bwd, stem, mm = calls
    assert fwd["products"] == [(128, 64, 288)] and fwd["winograd"] and fwd["seconds"] == pytest.approx(1e-5)
    assert fwd["bytes"] == (128 * 32 + 128 * 64 + 64 * 288) * 2 and fwd["per_step"] == 1
    assert bwd["products"] == [(128, 32, 576), (64, 288, 128)] and bwd["bytes"] == 2 * fwd["bytes"]
    assert stem["products"] == [(32, 27, 128)] and not stem["winograd"]  # stride 2; no input gradient
    assert mm["products"] == [(2, 10, 4096)]


def test_shape_fit_recovers_the_parameters_its_calls_were_made_with():
    truth = {"k0": 64.0, "winograd_fp32": 1.5}
    shapes = [(8192, 64, 64), (8192, 256, 576), (4096, 512, 2304), (50000, 32, 27), (1024, 1024, 4096)]
    calls = []
    for precision, eff in (("bf16", 0.7), ("fp32", 0.6)):
        for i, (m, n, k) in enumerate(shapes):
            c = {"model": f"m{i % 2}", "precision": precision, "batch_size": 1, "gpu": "H200", "per_step": 1.0,
                 "products": [(m, n, k)], "winograd": i in (1, 2), "bytes": 0.0}
            c["seconds"] = gemmfit.roofline_seconds(c, get_gpu, truth["k0"], truth["winograd_fp32"]) / eff
            calls.append(c)
    got = gemmfit.fit_gemm_shape(calls, get_gpu)
    assert (got["k0"], got["winograd_fp32"]) == (64.0, 1.5)
    assert got["efficiency"] == {"fp32": pytest.approx(0.6, rel=1e-3), "half": pytest.approx(0.7, rel=1e-3)}
    # each model's calls predicted by the other's fit: the same parameters, no error
    errs = gemmfit.call_errors(calls, get_gpu)
    assert errs["fits"] == {"m0": {**truth, "conv_1x1": {}}, "m1": {**truth, "conv_1x1": {}}}  # no 1x1 calls: no factor
    assert errs["max_row"] == pytest.approx(0.0, abs=1e-3)


def test_a_scaled_builtin_size_scales_its_gemm_rows_with_the_area():
    from launcher.estimate.opcosts import builtin_ops

    base, scaled = builtin_ops("resnet18", 224, 1000), builtin_ops("resnet18", 256, 1000)
    assert scaled["scaled_from"] == "resnet18:224:1000:3"
    r = (256 / 224) ** 2
    for b, s in zip(base["gemm_ops"], scaled["gemm_ops"]):
        assert s[1] == pytest.approx(b[1] * r) and s[2] == b[2]  # per-sample FLOPs scale, fixed ones stay
        for pb, ps in zip(b[8], s[8]):
            assert ps[0::2] == pytest.approx([v * r for v in pb[0::2]]) and ps[1::2] == pb[1::2]


def test_fp32_one_by_one_factor_is_fitted_and_applied_on_cuda_cores_only():
    # fp32 1x1 calls made at g = 0.5 in 32-wide channel tiles, 3x3 calls at g = 1: the fit finds 0.5
    shapes = [(8192, 64, 64), (8192, 256, 576), (4096, 512, 2304), (50000, 32, 27), (1024, 1024, 4096)]
    calls = []
    for i, (m, n, k) in enumerate(shapes + shapes[:3]):
        one = i >= len(shapes)
        c = {"model": f"m{i % 2}", "precision": "fp32", "batch_size": 1, "gpu": "H200", "per_step": 1.0,
             "products": [(m, n, k)], "winograd": False, "bytes": 0.0, "kind": "conv_1x1" if one else "conv_kxk"}
        c["seconds"] = gemmfit.roofline_seconds(c, get_gpu, 64.0, 1.0, {"fp32": 0.5 if one else 1.0}) / 0.6
        calls.append(c)
    got = gemmfit.fit_gemm_shape(calls, get_gpu, k0_grid=(64.0,))
    assert got["conv_1x1"] == {"fp32": 0.5} and got["efficiency"]["fp32"] == pytest.approx(0.6, rel=1e-3)
    # the counted step: a 1x1 convolution's fp32 compute time is divided by g, its bf16 one is not
    c = count(_meta(lambda: nn.Sequential(nn.Conv2d(256, 256, 1), nn.Flatten())), (256, 16, 16), 16)
    gpu = get_gpu("H200")
    plain, slow = {"gemm_shape": {"k0": 0.0}}, {"gemm_shape": {"k0": 0.0, "conv_1x1": {"fp32": 0.5}}}
    assert opmodel.gemm_roofline(c, gpu, "fp32", 64, slow)[0] == pytest.approx(2 * opmodel.gemm_roofline(c, gpu, "fp32", 64, plain)[0])
    assert opmodel.gemm_roofline(c, gpu, "bf16", 64, slow)[0] == opmodel.gemm_roofline(c, gpu, "bf16", 64, plain)[0]


def test_fft_helper_kernels_scale_with_32x32_tiles_at_fp32():
    # one 3x3 stride-1 conv on 64 x 64 images: 2 x 2 tiles of 32 x 32 in its forward and its weight-gradient rows
    c = count(_meta(lambda: nn.Sequential(nn.Conv2d(64, 64, 3, padding=1), nn.Flatten())), (64, 64, 64), 16)
    n = sum(r[7] for r in c.gemm_ops if len(r) > 9 and r[9])
    assert n > 0 and opmodel.fft_tiles(c) == pytest.approx(4 * n)
    gpu = get_gpu("H200")
    plain = {"gemm_shape": {"k0": 0.0}}
    fft = {"gemm_shape": {"k0": 0.0, "fft": {"kernels_per_tile": 2.0, "kernel_s": 5e-6}}}
    t32 = opmodel.gemm_roofline(c, gpu, "fp32", 64, plain)[0]
    assert opmodel.gemm_roofline(c, gpu, "fp32", 64, fft)[0] == pytest.approx(t32 + 4 * n * 2.0 * 5e-6)
    assert opmodel.gemm_roofline(c, gpu, "bf16", 64, fft)[0] == opmodel.gemm_roofline(c, gpu, "bf16", 64, plain)[0]


def test_fft_kernels_are_counted_on_the_profiles_kernel_rows():
    from launcher.estimate import opfit

    rows = [{"name": "void fft2d_r2c_32x32<float, false, 0u, false>(float2*, cudnn::reduced_divisor)", "count": 6,
             "device_us": 60.0},
            {"name": "void flip_filter<float, float>(float*, float const*, int)", "count": 2, "device_us": 3.0},  # fused
            {"name": "sm80_xmma_gemm_cf32cf32_f32f32_cf32_nt_n_tilesize64x64x8", "count": 4, "device_us": 40.0},
            {"name": "void cudnn::winograd_nonfused::winogradWgradData4x4<float, float>()", "count": 2, "device_us": 9.0},
            {"name": "sm80_xmma_fprop_implicit_gemm_f32f32_f32f32_f32_nchwkcrs", "count": 8, "device_us": 90.0},
            {"name": "triton_poi_fused_fft_like_name_0", "count": 8, "device_us": 5.0},  # a fused kernel
            {"name": "## Call CompiledFxGraph fft ##", "count": 2, "device_us": 300.0}]  # an annotation
    assert opfit.fft_kernels({"profiled_steps": 2, "rows": rows}) == 6.0
