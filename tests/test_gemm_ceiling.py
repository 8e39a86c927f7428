"""The GEMM class's sustained-rate ceiling (opmodel.gemm_utilization's u_max, fitted by
opfit.fit_u_max), the slowdown of misaligned matrix products (opmodel.unaligned_slowdown, measured
by bench/gemm_align.py and read by gemmfit.fit_unaligned) and the per-operation price of activation
checkpointing (table.checkpointing_speed), on cases computed by hand."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from launcher.catalog.gpus import get_gpu
from launcher.estimate import gemmfit, opfit, opmodel
from launcher.estimate.opcount import count


def _meta(factory):
    with torch.device("meta"):
        return factory()


def test_the_ceiling_caps_full_tiles_and_leaves_half_filled_ones():
    # per sample M = 1, N and K fixed; at batch 1024: a 1024 x 1024 x 4096 product fills every
    # 128 x 128 tile (u = 1, capped at 0.78), a 1024 x 64 x 4096 one half of each (u = 0.5, below it)
    full, half = (1.0, 0.0, 0.0, 1024.0, 0.0, 4096.0), (1.0, 0.0, 0.0, 64.0, 0.0, 4096.0)
    assert opmodel.gemm_utilization([full], 1024, 0.0) == pytest.approx(1.0)
    assert opmodel.gemm_utilization([full], 1024, 0.0, 0.78) == pytest.approx(0.78)
    assert opmodel.gemm_utilization([half], 1024, 0.0, 0.78) == pytest.approx(0.5)
    f1, f2 = 2 * 1024 * 1024 * 4096, 2 * 1024 * 64 * 4096
    assert opmodel.gemm_utilization([full, half], 1024, 0.0, 0.78) == pytest.approx((f1 + f2) / (f1 / 0.78 + f2 / 0.5))


def test_misalignment_is_read_from_the_weight_dimensions():
    ratios = {"2": 5.0, "4": 3.0}
    # GPT-2's output head at vocabulary 50,257: forward (tokens x 50257 x 768), input gradient
    # (tokens x 768 x 50257), weight gradient (50257 x 768 x tokens); 50,257 x 2 bytes = 2 mod 16
    for product in ((1, 0, 0, 50257, 0, 768), (1, 0, 0, 768, 0, 50257), (0, 50257, 0, 768, 1, 0)):
        assert opmodel.unaligned_slowdown(product, 2, ratios) == 5.0
    assert opmodel.unaligned_slowdown((1, 0, 0, 30522, 0, 768), 2, ratios) == 3.0  # 61,044 bytes: 4 mod 16
    assert opmodel.unaligned_slowdown((1, 0, 0, 50260, 0, 768), 2, ratios) == 3.0  # 8 bytes: the 4-byte ratio
    assert opmodel.unaligned_slowdown((1, 0, 0, 50304, 0, 768), 2, ratios) == 1.0
    assert opmodel.unaligned_slowdown((1, 3, 0, 768, 0, 768), 2, ratios) == 1.0  # the token dimension is no stride
    assert opmodel.unaligned_slowdown((1, 0, 0, 50257, 0, 768), 2, {}) == 1.0
    assert opmodel.alignment_bytes(50257, 4) == 4 and opmodel.alignment_bytes(50304, 2) == 16


def test_misaligned_products_cost_the_slowdown_in_half_precision_only():
    c = count(_meta(lambda: nn.Linear(1024, 1001)), (1024,), 1001)
    gpu, batch = get_gpu("H200"), 65536  # compute-bound: 1.3e11 FLOPs per product, 0.2 GB moved
    doc = {"gemm_shape": {"unaligned": {"half": {"2": 4.0}}}}
    plain, slow = (opmodel.gemm_roofline(c, gpu, "bf16", batch, d)[0] for d in ({}, doc))
    assert slow == pytest.approx(4.0 * plain)  # every product of the layer has the 1001-wide weight
    assert opmodel.gemm_roofline(c, gpu, "fp32", batch, doc)[0] == pytest.approx(
        opmodel.gemm_roofline(c, gpu, "fp32", batch, {})[0])


def test_fit_unaligned_takes_the_median_ratio_per_FLOP_against_the_padded_twin():
    def row(p, n, s, op="forward", m=8192):
        return {"precision": p, "op": op, "m": m, "k": 768, "n": n, "aligned": n % 8 == 0, "seconds": s}

    doc = {"results": [row("bf16", 64, 1.0), row("bf16", 63, 5.0), row("bf16", 62, 3.0),
                       row("bf16", 64, 1.0, m=4096), row("bf16", 63, 7.0, m=4096), row("bf16", 63, 6.0, m=2048),
                       row("fp32", 64, 2.0), row("fp32", 63, 2.0)]}
    got = gemmfit.fit_unaligned(doc)
    # bf16, 63 wide: 126 bytes, 2-byte aligned; 62 wide: 124 bytes, 4-byte; fp32 63 wide: 252 bytes, 4-byte.
    # The 2048-token row has no padded twin and is left out.
    assert got["half"]["2"] == pytest.approx(round(6.0 * 64 / 63, 3))  # median of 5 and 7, per FLOP
    assert got["half"]["4"] == pytest.approx(round(3.0 * 64 / 62, 3))
    assert got["fp32"]["4"] == pytest.approx(round(64 / 63, 3))
    assert gemmfit.fit_unaligned({}) == {}


def _obs(model: str, ops, batch: int, truth: dict) -> dict:
    """An observation of a bf16 step whose classes took what ``truth`` (an efficiency document) says."""
    gpu = get_gpu("H200")
    st = opmodel.step_time(ops, gpu, "bf16", batch, True, truth)
    roof, kernels, by_cap = {}, {}, {}
    for cls, cost in opmodel.grouped(ops, "bf16", True).items():
        roof[cls] = opmodel.class_roofline(cls, cost, ops, gpu, "bf16", batch, {})[0]
        kernels[cls] = cost.kernels_fused
        if cls == "gemm":
            by_cap = {cap: opmodel.class_roofline(cls, cost, ops, gpu, "bf16", batch,
                                                  {"gemm_shape": {"u_max": {"half": cap}}})[0]
                      for cap in opfit.U_MAX_GRID}
    o = {"model": model, "precision": "bf16", "batch_size": batch, "gpu": "H200", "arch": gpu.arch, "pcls": "half",
         "step_s": st.seconds, "roofline": roof, "class_kernels": kernels, "measured": dict(st.per_class),
         "gap_s": 0.0, "kernels": sum(kernels.values()), "ops": ops, "host_s_per_kernel": None,
         "samples_per_second": batch / st.seconds, "gemm_shape": {}, "gemm_by_u_max": by_cap}
    return opfit.with_kernel_s([o], 0.0)[0]


def test_fit_u_max_recovers_the_ceiling_two_step_shapes_imply():
    # One efficiency (0.9 for the GEMM class) and a ceiling of 0.8: a 4096-wide layer (every tile
    # full: capped) and a 64-wide one (memory-bound: untouched). Only the ceiling 0.8 gives both
    # steps one GEMM efficiency, so only it predicts both exactly.
    truth = {"efficiency": {"*/*/compiled/gemm": 0.9, "*/*/compiled/fused": 0.6, "*/*/compiled/optimizer": 0.7},
             "launch_gap_s": {"*/compiled": 0.0}, "kernel_s": 0.0, "gemm_shape": {"u_max": {"half": 0.8}}}
    obs = [_obs("wide", count(_meta(lambda: nn.Linear(4096, 4096)), (4096,), 4096), 8192, truth),
           _obs("narrow", count(_meta(lambda: nn.Linear(4096, 64)), (4096,), 64), 8192, truth)]
    assert opfit.fit_u_max(obs, get_gpu) == {"half": 0.8}
    doc = opfit.fit_tuned(obs, get_gpu)
    assert doc["gemm_shape"]["u_max"] == {"half": 0.8}
    assert doc["efficiency"]["hopper/half/compiled/gemm"] == pytest.approx(0.9)
    for o in obs:
        assert opfit.predict_step(o, doc, get_gpu) == pytest.approx(o["step_s"])
    # a ceiling of 1 leaves the GEMM class as it was
    assert opfit.with_u_max(obs, {})[0]["roofline"]["gemm"] == pytest.approx(obs[0]["gemm_by_u_max"][1.0])


def test_checkpointing_recomputes_the_blocks_forward_per_operation():
    from launcher.estimate.table import CHECKPOINTING_SPEED, checkpointing_speed
    from launcher.estimate.throughput import Prediction
    from launcher.spec import parse_spec

    w = parse_spec("name: t\nworkload: {model: lm-1b, seq_len: 2048, batch_size: 16}\n", check_catalog=False).workload
    per = {"gemm": 0.30, "attention": 0.06, "fused": 0.09, "optimizer": 0.01}
    p = Prediction(samples_per_second=1.0, step_seconds=0.46, mfu=0.5, fits_memory=True, max_batch=None,
                   memory_gib_needed=1.0, bound="compute", method="per-operation", per_class_seconds=per)
    # lm-1b's matrix weights, counted by hand: 16 blocks x (2048 x 3072 + 2048 x 2048 + 3 x 2048 x 8192)
    # = 973,078,528, and the head 128,256 x 2048 = 262,668,288, which is not recomputed
    blocks = 973_078_528 / (973_078_528 + 262_668_288)
    recompute = (0.30 * blocks + 0.06 + 0.09) / 3
    assert checkpointing_speed(w, p) == pytest.approx(0.46 / (0.46 + recompute))
    from dataclasses import replace

    assert checkpointing_speed(w, replace(p, method="mfu", per_class_seconds=None)) == CHECKPOINTING_SPEED
