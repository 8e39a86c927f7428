"""The per-operation counter (launcher/estimate/opcount.py) on small models, against FLOPs and
bytes computed by hand, and the per-class step-time model built on it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from launcher.catalog.gpus import get_gpu
from launcher.estimate import opmodel
from launcher.estimate.opcount import _fused, _Record, count, op_class

F32 = 4  # bytes per fp32 element


def _meta(factory):
    with torch.device("meta"):
        return factory()


def test_linear_layer_flops_and_bytes_by_hand():
    # Linear(8 -> 4) at batch B, input without grad: forward addmm, backward one mm (weight grad).
    c = count(_meta(lambda: nn.Linear(8, 4)), (8,), 4)
    mm = c.classes["matmul"]
    assert mm.flops_per_sample == 2 * 8 * 4 * 2  # forward + weight gradient, 2 x multiply-adds each
    assert mm.flops_fixed == 0
    # forward reads x (8) + writes y (4); backward reads dy (4) + x (8): per sample 24 floats
    assert mm.bytes_per_sample == 24 * F32
    # forward reads bias (4) + W (32); backward writes dW (32): 68 floats fixed... plus nothing else
    assert mm.bytes_fixed == (4 + 32 + 32) * F32
    assert mm.kernels == 2
    # SGD with momentum and weight decay as the CUDA payload runs it (fused): one kernel reads
    # weight, gradient and momentum and writes weight and momentum, 5 fp32 elements per parameter.
    opt = c.classes["optimizer"]
    assert opt.bytes_fixed == 5 * F32 * (8 * 4 + 4) and opt.bytes_per_sample == 0 and opt.kernels == 1
    assert c.params == 36 and c.train_flops_per_sample == 128 and c.forward_flops_per_sample == 64


def test_convolution_flops_and_bytes_by_hand():
    # Conv 2 -> 3 channels, 3x3, padding 1, on 5x5: 2 x (3*5*5 outputs x 2*3*3 taps) per pass.
    c = count(_meta(lambda: nn.Sequential(nn.Conv2d(2, 3, 3, padding=1, bias=False), nn.Flatten())), (2, 5, 5), 75)
    conv = c.classes["conv"]
    assert conv.flops_per_sample == 2 * (2 * 3 * 25 * 2 * 9)  # forward + weight gradient
    # forward: read x (50) write y (75); backward: read dy (75) + x (50)
    assert conv.bytes_per_sample == (50 + 75 + 75 + 50) * F32
    # forward reads W (54); backward reads W (54) and writes dW (54)
    assert conv.bytes_fixed == 3 * 54 * F32


class _Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.q = nn.Parameter(torch.empty(2, 4, 8))  # heads, sequence, head dim

    def forward(self, x):
        q = x.view(-1, 2, 4, 8) + self.q
        return F.scaled_dot_product_attention(q, q, q).flatten(1)


def test_attention_counts_one_fused_kernel_each_way():
    c = count(_meta(_Attention), (64,), 64)
    a = c.classes["attention"]
    h, s, d = 2, 4, 8
    # forward: QK^T and AV (2 x 2 x h s^2 d); backward: 5 such products (torch's sdpa formulas)
    assert a.flops_per_sample == (2 + 5) * 2 * h * s * s * d
    # forward reads q, k, v and writes o; backward reads q, k, v, o, do and writes dq, dk, dv
    assert a.bytes_per_sample == (4 + 8) * h * s * d * F32
    assert a.kernels == 2  # flash attention: no s x s score matrix in memory
    # each way one row: dims (seq_q, seq_k) and the score matrix's product, M = heads x seq per
    # sample, N = the keys each query meets (all s: not causal), K = head dim
    rows = [r for r in c.gemm_ops if r[0] == "attention"]
    assert len(rows) == 2 and all(tuple(r[5:7]) == (s, s) for r in rows)
    assert all(r[8] == [[h * s, 0, 0, s, 0, d]] for r in rows)


def test_fused_chains_write_only_what_leaves_the_chain():
    n = 100.0
    rec = _Record()
    rec.ops = [("matmul", [1], [2], [n], [n]), ("elementwise", [2], [3], [n], [n]),
               ("elementwise", [3], [4], [n], [n]), ("elementwise", [4], [5], [n], [n]),
               ("reduction", [5], [6], [n], [1.0])]
    nbytes, kernels = _fused(rec, saved=set())
    assert nbytes["elementwise"] == 2 * n and kernels["elementwise"] == 1  # read t2 once, write t5 once
    nbytes, kernels = _fused(rec, saved={4})  # autograd keeps t4: it must be written
    assert nbytes["elementwise"] == 3 * n and kernels["elementwise"] == 2


def test_half_precision_halves_activation_bytes_and_adds_weight_casts():
    c = count(_meta(lambda: nn.Linear(8, 4)), (8,), 4)
    half, full = c.at_precision("bf16"), c.at_precision("fp32")
    assert half["matmul"].bytes_per_sample == full["matmul"].bytes_per_sample / 2
    assert half["optimizer"].bytes_fixed == full["optimizer"].bytes_fixed  # fp32 master weights
    extra = half["data_movement"].bytes_fixed - full["data_movement"].bytes_fixed / 2
    assert extra == 12 * c.params  # fp32 -> half weight (4 + 2), half -> fp32 gradient (2 + 4)


@pytest.mark.parametrize("name, cls", [
    ("aten.convolution.default", "conv"), ("aten::cudnn_convolution", "conv"),
    ("aten.convolution_backward.default", "conv"), ("aten.addmm.default", "matmul"),
    ("aten.bmm.default", "matmul"), ("aten::_scaled_dot_product_flash_attention", "attention"),
    ("aten.native_batch_norm_backward.default", "norm"), ("aten.native_layer_norm.default", "norm"),
    ("aten.relu_.default", "elementwise"), ("aten.threshold_backward.default", "elementwise"),
    ("aten.gelu.default", "elementwise"), ("aten.add.Tensor", "elementwise"),
    ("aten._log_softmax.default", "reduction"), ("aten.sum.dim_IntList", "reduction"),
    ("aten.max_pool2d_with_indices.default", "reduction"), ("aten.clone.default", "data_movement"),
    ("aten.cat.default", "data_movement"), ("aten._foreach_add_.List", "optimizer"),
])
def test_operation_classes(name, cls):
    assert op_class(name) == cls


def test_step_time_is_the_per_class_roofline():
    c = count(_meta(lambda: nn.Linear(1024, 1024)), (1024,), 1024)
    gpu = get_gpu("H100")
    doc = {"efficiency": {"*/*/eager/matmul": 0.5, "*/*/eager/optimizer": 1.0, "*/*/eager/reduction": 1.0,
                          "*/*/eager/data_movement": 1.0, "*/*/eager/elementwise": 1.0},
           "launch_gap_s": {"*/eager": 1e-5}}
    st = opmodel.step_time(c, gpu, "bf16", 4096, compiled=False, doc=doc)
    mm = c.at_precision("bf16")["matmul"]
    want = mm.flops(4096) / (gpu.peak_tflops["bf16"] * 1e12) / 0.5  # compute-bound at this batch
    assert st.bound["matmul"] == "compute"
    assert st.per_class["matmul"] == pytest.approx(want)
    kernels = sum(v.kernels for v in c.classes.values())
    assert st.launch_s == pytest.approx(kernels * 1e-5)
    assert st.seconds == pytest.approx(sum(st.per_class.values()) + st.launch_s)


def _fake_profile(model: str, module_factory, shape, eff: dict, gap: float, batch: int = 256) -> dict:
    """A profile record whose kernel times follow the roofline with known efficiencies."""
    from launcher.estimate.opmodel import class_roofline, grouped

    ops = count(_meta(module_factory), shape, 10)
    gpu = get_gpu("H200")
    names = {"gemm": "sm90_xmma_fprop_implicit_gemm_bf16", "fused":
             "triton_poi_fused_relu_0", "optimizer": "fused_sgd_kernel", "attention": "flash_fwd_kernel"}
    rows, kernels, busy = [], 0.0, 0.0
    for cls, cost in grouped(ops, "bf16", compiled=True).items():
        t = class_roofline(cls, cost, ops, gpu, "bf16", batch)[0] / eff[cls]
        rows.append({"name": names[cls], "count": 2 * cost.kernels_fused, "device_us": 2 * t * 1e6,
                     "device_type": "CUDA"})
        kernels += cost.kernels_fused
        busy += t
    step = busy + kernels * gap
    return {"model": model, "precision": "bf16", "batch_size": batch, "device_name": "NVIDIA H200",
            "samples_per_second": batch / step, "profiled_steps": 2, "rows": rows, "ops": ops.to_dict()}


def test_fit_recovers_known_efficiencies_and_predicts_a_left_out_model():
    from launcher.estimate import opfit

    eff = {"gemm": 0.6, "fused": 0.5, "optimizer": 0.8, "attention": 0.4}
    cnn = lambda: nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),  # noqa: E731
                                nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))
    mlp = lambda: nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 512), nn.ReLU(),  # noqa: E731
                                nn.Linear(512, 10))
    profiles = [_fake_profile("cnn", cnn, (3, 16, 16), eff, 1e-6), _fake_profile("mlp", mlp, (3, 16, 16), eff, 1e-6)]
    obs = opfit.observations(profiles, get_gpu)
    doc = opfit.fit(obs)
    for cls in ("gemm", "fused", "optimizer"):
        assert doc["efficiency"][f"hopper/half/compiled/{cls}"] == pytest.approx(eff[cls], rel=1e-3)
    assert doc["launch_gap_s"]["hopper/compiled"] == pytest.approx(1e-6, rel=1e-3)
    assert doc["host_s_per_kernel"] == {}  # no step waited for the host
    rows = opfit.error_table(obs, get_gpu)
    assert all(abs(r["error_fit"]) < 1e-3 for r in rows)
    # left out, the MLP is predicted by the CNN's fit, which holds every class the MLP runs
    mlp_row = next(r for r in rows if r["model"] == "mlp")
    assert abs(mlp_row["error_lomo"]) < 1e-3


@pytest.mark.parametrize("name, cls", [
    ("sm90_xmma_fprop_implicit_gemm_bf16bf16_bf16f32_f32_nhwckrsc_nhwc", "conv"),
    ("sm80_xmma_wgrad_implicit_gemm_indexed_tf32f32", "conv"), ("nvjet_hsh_256x128_64x4_1x2_h_bz_coopA_NTN", "matmul"),
    ("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64", "matmul"),
    ("triton_poi_fused__native_batch_norm_legit_functional_relu_3", "fused"),
    ("triton_red_fused_native_batch_norm_backward_12", "fused"), ("void at::native::(anonymous namespace)::"
                                                                  "fused_sgd_kernel<float>", "optimizer"),
    ("pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<64, 128>>", "attention"),
    # cuDNN's SDPA backward helpers (profiled in the GPT-2, lm-1b, lm-3b and ViT-B/16 rows)
    ("void cudnn::fusion::compute_dot_do_o_specialized<true, 64>(void const*, void const*)", "attention"),
    ("void cudnn::fusion::convert_dq_to_16bits<true>(void const*, void*, unsigned int)", "attention"),
    ("Memcpy DtoD (Device -> Device)", "fused"),
])
def test_kernel_classes(name, cls):
    from launcher.estimate.opfit import kernel_class

    assert kernel_class(name) == cls


def test_builtin_estimates_need_no_torch(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    code = ("import sys; from launcher.spec import load_spec; from launcher.estimate.api import full_estimate; "
            f"e = full_estimate(load_spec({str(repo / 'jobs' / 'resnet50.yaml')!r}), baseline=False); "
            "assert e['candidates']; print('torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                          env={**__import__("os").environ, "GPUJOB_HOME": str(tmp_path)})
    assert proc.returncode == 0 and proc.stdout.strip() == "False", proc.stdout + proc.stderr


def test_bundled_builtin_costs_match_a_fresh_count():
    from launcher.estimate.opcosts import builtin_ops
    from launcher.estimate.opcount import OpCost
    from payloads.models import build_model

    bundled = OpCost.from_dict(builtin_ops("tinycnn", 32, 10, 1))
    fresh = count(_meta(lambda: build_model("tinycnn", 10, 1, 32)), (1, 32, 32), 10)
    assert bundled.train_flops_per_sample == fresh.train_flops_per_sample
    for cls, c in fresh.classes.items():
        assert bundled.classes[cls].bytes_per_sample == pytest.approx(c.bytes_per_sample)
        assert bundled.classes[cls].kernels == c.kernels


def test_warmup_fit_per_model_and_by_graph_size():
    from launcher.estimate import opfit

    small = count(_meta(lambda: nn.Linear(8, 4)), (8,), 4)
    big = count(_meta(lambda: nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(),
                                            nn.Linear(8, 4))), (8,), 4)

    def rec(model, ops, compile_s, startup):
        step = 0.01  # 100 samples/s at batch 1: the 5 warm-up steps take 0.05 s at the steady rate
        return {"model": model, "batch_size": 1, "samples_per_second": 1 / step, "cache": "cold",
                "warmup_s": compile_s + opfit.WARMUP_STEPS * step, "startup_s": startup, "ops": ops.to_dict()}

    fit = opfit.fit_warmup([rec("small", small, 10.0, 8.0), rec("big", big, 20.0, 10.0),
                            {**rec("big", big, 99.0, 1.0), "cache": "warm"}])
    assert fit["compile_s"] == {"small": pytest.approx(10.0), "big": pytest.approx(20.0)}
    assert fit["startup_s"] == pytest.approx(9.0)
    gs, gb = opfit.graph_ops(small), opfit.graph_ops(big)
    line = fit["line"]
    assert line["a"] + line["b"] * gs == pytest.approx(10.0, abs=1e-2)
    assert line["a"] + line["b"] * gb == pytest.approx(20.0, abs=1e-2)


def test_grouped_convolution_backward_counts_what_its_forward_does():
    """Depthwise 3x3 over 64 channels, 8 x 64 x 32 x 32: forward 2 x 8*64*32*32 x 9 FLOPs; the
    backward computes the input and the weight gradient, each as costly as the forward (torch's
    own formula ignores groups and counts ~65x that)."""
    c = count(_meta(lambda: nn.Sequential(nn.Conv2d(64, 64, 3, padding=1, groups=64, bias=False), nn.Flatten())),
              (64, 32, 32), 64 * 32 * 32)
    fwd = 2 * 64 * 32 * 32 * 9
    conv = c.classes["conv"]
    # forward + the weight gradient (the data needs no input gradient: output_mask leaves it out)
    assert conv.flops_per_sample == pytest.approx(2 * fwd)
    rows = {r[0] for r in c.gemm_ops}
    assert rows == {"conv_depthwise"}


def test_gemm_rows_hold_kind_dims_and_counts():
    c = count(_meta(lambda: nn.Sequential(nn.Conv2d(3, 32, 1), nn.ReLU(), nn.Conv2d(32, 48, 3, padding=1),
                                          nn.Flatten(), nn.Linear(48 * 8 * 8, 10))), (3, 8, 8), 10)
    by_kind: dict = {}
    for kind, fp, ff, bp, bf, dn, dk, n, products, winograd in c.gemm_ops:
        by_kind.setdefault(kind, set()).add((dn, dk))
    assert by_kind["conv_1x1"] == {(32, 3)}  # weight 32 x 3 x 1 x 1
    assert by_kind["conv_kxk"] == {(48, 32 * 9)}
    # the linear layer's products: the two smallest of (batch or 10, 3072, 10) per call
    assert all(min(d) <= 10 for d in by_kind["matmul"])
    # every per-sample FLOP of the convolution class sits in a row
    total = sum(r[1] * r[7] for r in c.gemm_ops if r[0].startswith("conv"))
    assert total == pytest.approx(c.classes["conv"].flops_per_sample, rel=1e-5)  # rows keep 6 digits


def test_tile_utilization_and_host_floor():
    assert opmodel.tile_utilization(128) == 1.0
    assert opmodel.tile_utilization(32) == pytest.approx(0.25)
    assert opmodel.tile_utilization(130) == pytest.approx(130 / 256)
    assert opmodel.tile_utilization(0) == 1.0
    c = count(_meta(lambda: nn.Sequential(nn.Flatten(), nn.Linear(64, 10))), (64,), 10)
    gpu = get_gpu("H200")
    base = {"efficiency": {}, "launch_gap_s": {"*/compiled": 1e-6}}
    fast = opmodel.step_time(c, gpu, "bf16", 8, compiled=True, doc=base)
    slow = opmodel.step_time(c, gpu, "bf16", 8, compiled=True, doc={**base, "host_s_per_kernel": {"compiled": 1e-3}})
    kernels = sum(v.kernels_fused for v in opmodel.grouped(c, "bf16", True).values())
    assert not fast.host_bound
    assert slow.seconds == pytest.approx(kernels * 1e-3) and slow.host_bound


def test_small_step_host_line_and_its_fit():
    """A step of few kernels is priced by the host's fixed time per step (a + kernels x c), one of
    many kernels by kernels x the per-kernel host time, whichever is larger; the line is fitted on
    the CLI's clearly host-bound runs (the bundled h200_local_total rows: TinyCNN and the MLP)."""
    from launcher.estimate import opfit

    c = count(_meta(lambda: nn.Sequential(nn.Flatten(), nn.Linear(64, 10))), (64,), 10)
    gpu = get_gpu("H200")
    kernels = sum(v.kernels_fused for v in opmodel.grouped(c, "bf16", True).values())
    base = {"efficiency": {}, "launch_gap_s": {"*/compiled": 1e-6}, "host_s_per_kernel": {"compiled": 5e-5}}
    line = {"compiled": {"a_s": 1e-3, "s_per_kernel": 4e-5, "n": 2}}
    few = opmodel.step_time(c, gpu, "bf16", 8, compiled=True, doc={**base, "host_small_step": line})
    assert few.host_bound and few.seconds == pytest.approx(1e-3 + kernels * 4e-5)
    many = opmodel.host_small_step({"host_small_step": line}, "compiled", 1000)
    assert many == pytest.approx(1e-3 + 1000 * 4e-5) and many < 1000 * 5e-5  # the per-kernel term wins
    assert opmodel.host_small_step({}, "compiled", 10) == 0.0
    doc = opmodel.efficiencies()
    fitted = opfit.fit_host_step({**doc, "host_small_step": {}}, get_gpu)["compiled"]
    assert fitted["n"] >= 2 and fitted["a_s"] > 0 and 0 < fitted["s_per_kernel"] < doc["host_s_per_kernel"]["compiled"]
    assert doc["host_small_step"]["compiled"]["a_s"] == pytest.approx(fitted["a_s"])  # the bundled fit is current
