"""The fixed time per kernel of the per-operation model (opmodel.kernel_seconds, fitted by
opfit.fit_kernel_s) and what the fit reads from a profile (opfit.measured_classes), on cases
computed by hand."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from launcher.catalog.gpus import get_gpu
from launcher.estimate import opfit, opmodel
from launcher.estimate.opcount import count


def _meta(factory):
    with torch.device("meta"):
        return factory()


def test_compiled_step_adds_a_fixed_time_per_kernel_and_eager_does_not():
    c = count(_meta(lambda: nn.Linear(8, 4)), (8,), 4)
    gpu = get_gpu("H200")
    eff = {f"*/*/{mode}/{cls}": 0.5 for mode in ("compiled", "eager")
           for cls in ("gemm", "fused", "optimizer", "conv", "matmul", "norm", "elementwise", "reduction",
                       "data_movement")}
    doc = {"efficiency": eff, "launch_gap_s": {"*/compiled": 0.0, "*/eager": 0.0}, "kernel_s": 1e-5}
    st = opmodel.step_time(c, gpu, "fp32", 2, compiled=True, doc=doc)
    # the optimizer: one fused SGD kernel moving 20 bytes per parameter (36 parameters)
    assert st.per_class["optimizer"] == pytest.approx((20 * 36 / (gpu.bandwidth_gbs * 1e9) + 1e-5) / 0.5)
    without = opmodel.step_time(c, gpu, "fp32", 2, compiled=True, doc={**doc, "kernel_s": 0.0})
    kernels = sum(v.kernels_fused for v in opmodel.grouped(c, "fp32", True).values())
    assert st.seconds - without.seconds == pytest.approx(kernels * 1e-5 / 0.5)
    eager = opmodel.step_time(c, gpu, "fp32", 2, compiled=False, doc=doc)
    assert eager.seconds == pytest.approx(opmodel.step_time(c, gpu, "fp32", 2, compiled=False,
                                                            doc={**doc, "kernel_s": 0.0}).seconds)


def _obs(model: str, roofline: float, kernels: float, tau: float, eff: float) -> dict:
    """One observation of a step with one class whose kernels took (roofline + kernels x tau) / eff."""
    from launcher.estimate.opcount import ClassCost, OpCost

    measured = (roofline + kernels * tau) / eff
    # a fused class moving roofline x bandwidth bytes at batch 1: opmodel's roofline is `roofline`
    gpu = get_gpu("H200")
    nbytes = roofline * gpu.bandwidth_gbs * 1e9
    cost = ClassCost(flops_per_sample=0.0, flops_fixed=0.0, bytes_per_sample=nbytes, bytes_fixed=0.0,
                     bytes_fused_per_sample=nbytes, bytes_fused_fixed=0.0, kernels=kernels, kernels_fused=kernels)
    ops = OpCost(classes={"elementwise": cost})
    return {"model": model, "precision": "fp32", "batch_size": 1, "gpu": "H200", "arch": gpu.arch, "pcls": "fp32",
            "step_s": measured, "roofline": {"fused": roofline}, "class_kernels": {"fused": kernels},
            "measured": {"fused": measured}, "gap_s": 0.0, "kernels": kernels, "ops": ops,
            "host_s_per_kernel": None, "samples_per_second": 1 / measured, "gemm_shape": {}}


def test_with_kernel_s_takes_each_efficiency_at_that_fixed_time():
    # 1 ms of roofline in 10 kernels measured at 2 ms: at tau = 0 the efficiency is 0.5; at
    # tau = 20 us the class's unexplained time is 10 x 20 us = 0.2 ms, so (1 + 0.2) / 2 = 0.6.
    o = _obs("a", 1e-3, 10, 0.0, 0.5)
    assert opfit.with_kernel_s([o], 0.0)[0]["efficiency"]["fused"] == pytest.approx(0.5)
    assert opfit.with_kernel_s([o], 20e-6)[0]["efficiency"]["fused"] == pytest.approx(0.6)


def test_fit_kernel_s_recovers_the_fixed_time_two_step_shapes_imply():
    # Two models, one efficiency (0.8) and one fixed time per kernel (10 us): a few large kernels
    # (10 ms of roofline in 10 kernels) and many small ones (1 ms in 400). Only tau = 10 us gives
    # both the same efficiency, so only it predicts both steps exactly.
    obs = [_obs("big", 10e-3, 10, 10e-6, 0.8), _obs("small", 1e-3, 400, 10e-6, 0.8)]
    tau = opfit.fit_kernel_s(obs, get_gpu)
    assert tau == pytest.approx(10e-6)
    doc = opfit.fit(opfit.with_kernel_s(obs, tau))
    assert doc["kernel_s"] == pytest.approx(10e-6)
    assert doc["efficiency"]["hopper/fp32/compiled/fused"] == pytest.approx(0.8)
    # the eager copies are the efficiencies at tau = 0 (eager steps are priced without tau):
    # geometric mean of 10 / 10.1 x 0.8 and 1 / 5 x 0.8
    want = 0.8 * ((10 / 10.1) * (1 / 5)) ** 0.5
    assert doc["efficiency"]["hopper/fp32/eager/elementwise"] == pytest.approx(want, rel=1e-3)


def test_measured_classes_skip_annotation_ranges_around_kernels():
    rec = {"profiled_steps": 2, "rows": [
        {"name": "Optimizer.step#SGD.step", "count": 2, "device_us": 100.0, "device_type": "CUDA"},
        {"name": "void at::native::multi_tensor_apply_kernel<FusedSgdMathFunctor>", "count": 2,
         "device_us": 100.0, "device_type": "CUDA"},
        {"name": "## Call CompiledFxGraph fabc ##", "count": 2, "device_us": 500.0, "device_type": "CUDA"},
        {"name": "triton_poi_fused_relu_0", "count": 4, "device_us": 400.0, "device_type": "CUDA"},
    ]}
    per, kernels = opfit.measured_classes(rec)
    assert per["optimizer"] == pytest.approx(50e-6) and per["fused"] == pytest.approx(200e-6)
    assert kernels == 3  # per step: one optimizer kernel and two fused ones


def test_a_rows_calls_are_used_only_when_they_fit_in_its_gemm_kernels():
    # two mm calls of 10 us each per step (20 us); the row's GEMM kernels took 20 us or 15 us per step
    def record(kernel_us: float) -> dict:
        return {"model": "m", "precision": "bf16", "batch_size": 2, "profiled_steps": 2,
                "device_name": "NVIDIA H200",
                "rows": [{"name": "nvjet_sm90_tst_128x128", "count": 4, "device_us": 2 * kernel_us,
                          "device_type": "CUDA"}],
                "shaped": [{"name": "aten::mm", "shapes": [[256, 512], [512, 256]], "count": 4, "device_us": 40.0}]}

    assert len(opfit.gemm_calls([record(20.0)])) == 1  # 20 us of calls in 20 us of kernels
    assert len(opfit.gemm_calls([record(20.0 / 1.05 + 0.01)])) == 1  # within the 5% allowance
    assert opfit.gemm_calls([record(15.0)]) == []  # 20 us of calls cannot have run in 15 us of kernels
