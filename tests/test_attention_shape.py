"""Attention priced per operation (opmodel.attention_utilization / attention_roofline, the shape
terms fitted on bench/attn_shapes.py by gemmfit.fit_attention_shape), attention's kernels without the
fixed time per kernel, and the launch gap fitted per counted kernel, on cases computed by hand."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from launcher.catalog.gpus import get_gpu
from launcher.estimate import gemmfit, opfit, opmodel
from launcher.estimate.opcount import ClassCost, OpCost, count_tokens


def test_utilization_pads_short_sequences_and_charges_the_softmax_and_the_query_block():
    # ViT-B/16: 197 tokens run as two 128-token blocks each way; head dim 64 with d0 = 64: half the
    # time is softmax; 197 keys per query with s0 = 176 keys' worth of fixed work per query block
    u = opmodel.attention_utilization(197, 197, 197, 64, 64.0, 176.0)
    assert u == pytest.approx((197 / 256) ** 2 * (64 / 128) * (197 / 373))
    # full blocks, no fitted terms: every counted FLOP is the kernel's work
    assert opmodel.attention_utilization(1024, 1024, 576, 128) == 1.0
    assert opmodel.attention_utilization(1024, 1024, 576, 128, 64.0) == pytest.approx(128 / 192)


class _Causal(nn.Module):
    """Token ids -> embedding (2 heads of 64) -> causal attention -> logits over 32 tokens."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(32, 128)
        self.head = nn.Linear(128, 32, bias=False)

    def forward(self, x):
        b, s = x.shape
        q = self.emb(x).view(b, s, 2, 64).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, q, q, is_causal=True)
        return self.head(y.transpose(1, 2).reshape(b, s, 128))


def test_the_counter_records_the_score_matrix_the_kernel_computes():
    with torch.device("meta"):
        c = count_tokens(_Causal(), 256)
    rows = [r for r in c.gemm_ops if r[0] == "attention"]
    assert len(rows) == 2  # forward and backward
    # 256 tokens: two 128-blocks, 3 of 4 on or below the diagonal; per token 2 heads x 1 query,
    # each meeting 256 x 3/4 = 192 keys, head dim 64; dims: the two sequence lengths
    for r in rows:
        assert tuple(r[5:7]) == (256, 256)
        assert r[8] == [[2.0, 0.0, 0.0, 192.0, 0.0, 64.0]]  # M, N, K: per token and fixed
    fwd = min(rows, key=lambda r: r[1])
    assert fwd[1] == pytest.approx(4 * 2 * 256 * 64 * 0.75)  # 2 products x 2 FLOPs x heads x seq x dim x share


def test_attention_roofline_by_hand():
    # one forward row per token: 1,000 FLOPs, 10 bytes (fp32), seq 197 both ways, 3 heads x 197
    # queries, 197 keys each, head dim 64; 4 such operations per step
    row = ["attention", 1000.0, 0.0, 10.0, 0.0, 197, 197, 4, [[591.0, 0.0, 0.0, 197.0, 0.0, 64.0]], 0]
    ops = OpCost(classes={"attention": ClassCost(4000.0, 0.0, 40.0, 0.0, 40.0, 0.0, 4, 4)}, gemm_ops=[row])
    gpu = get_gpu("H200")
    doc = {"gemm_shape": {"attention": {"half": {"d0": 64.0, "s0": 176.0}}}}
    u = (197 / 256) ** 2 * 0.5 * 197 / 373
    want = 4 * 1000.0 * 4096 / (gpu.peak_tflops["bf16"] * 1e12 * u)
    assert opmodel.attention_roofline(ops, gpu, "bf16", 4096, doc) == (pytest.approx(want), "compute")
    # fp32 was fitted without terms here: only the block padding, at the fp32 peak
    want32 = 4 * 1000.0 * 4096 / (gpu.peak_tflops["fp32"] * 1e12 * (197 / 256) ** 2)
    assert opmodel.attention_roofline(ops, gpu, "fp32", 4096, doc)[0] == pytest.approx(want32)
    # the step: attention's kernels take no fixed time per kernel, the class's efficiency divides
    full = {**doc, "kernel_s": 20e-6, "efficiency": {"*/half/compiled/attention": 0.5}}
    st = opmodel.step_time(ops, gpu, "bf16", 4096, True, full)
    assert st.per_class["attention"] == pytest.approx(want / 0.5)
    # a count without the attention shapes keeps the class roofline
    bare = OpCost(classes=ops.classes, gemm_ops=[row[:8]])
    assert opmodel.attention_roofline(bare, gpu, "bf16", 4096, doc) is None


def test_fit_attention_shape_recovers_the_terms_it_was_generated_with():
    rows = []
    for p, rate in (("bf16", 800e12), ("fp32", 40e12)):
        d0, s0 = (64.0, 176.0) if p == "bf16" else (8.0, 0.0)
        for dim in (64, 128):
            for seq in (197, 1024, 4096):
                for causal in (True, False):
                    keys = gemmfit.attention_keys(seq, causal)
                    f = 1e12
                    t = f / (rate * opmodel.attention_utilization(seq, seq, keys, dim, d0, s0))
                    rows.append({"precision": p, "seq": seq, "head_dim": dim, "causal": causal,
                                 "flops_forward": f / 3.5, "flops_backward": f * 2.5 / 3.5, "forward_backward_s": t})
    assert gemmfit.attention_keys(1024, True) == 1024 * 9 / 16
    assert gemmfit.fit_attention_shape({"results": rows}) == {"fp32": {"d0": 8.0, "s0": 0.0},
                                                            "half": {"d0": 64.0, "s0": 176.0}}
    assert gemmfit.fit_attention_shape({}) == {}


def test_the_launch_gap_is_fitted_per_counted_kernel():
    from tests.test_opcount import _fake_profile

    mlp = lambda: nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 512), nn.ReLU(), nn.Linear(512, 10))  # noqa: E731
    eff = {"gemm": 0.6, "fused": 0.5, "optimizer": 0.8}
    rec = _fake_profile("mlp", mlp, (3, 16, 16), eff, 2e-6)  # step = kernels' time + counted kernels x 2 us
    for row in rec["rows"]:  # the GPU ran three kernels for each one counted: the gap stays per counted kernel
        row["count"] *= 3
    obs = opfit.observations([rec], get_gpu)
    counted = sum(c.kernels_fused for c in obs[0]["ops"].classes.values())
    assert obs[0]["kernels"] == pytest.approx(3 * counted)
    assert obs[0]["gap_s"] == pytest.approx(2e-6)  # not 2/3 us: per counted kernel
    assert math.isclose(opfit.fit(obs)["launch_gap_s"]["*/compiled"], 2e-6, rel_tol=1e-6)


@pytest.mark.parametrize("model, seq, vocab", [("gpt2-124m", 256, 50304), ("gpt2-124m", 2048, 50257),
                                               ("lm-1b", 1024, 128256)])
def test_a_preset_at_another_length_is_its_bundled_count_rescaled(model, seq, vocab):
    from launcher.estimate.opcosts import count_lm, scaled_lm_ops
    from launcher.payloads import lm_shapes

    scaled = scaled_lm_ops(model, seq, vocab)
    counted = count_lm(lm_shapes.resolve(model, {}, vocab, seq), seq).to_dict()
    assert scaled["scaled_from"].startswith(model + ":") and scaled["scaled_from"] != f"{model}:{seq}:{vocab}:0"
    # attention, the only per-token figure that depends on the length, is what a count at it gives
    att = lambda d: [r for r in d["gemm_ops"] if r[0] == "attention"]  # noqa: E731
    for a, b in zip(att(scaled), att(counted)):
        assert a[1] == pytest.approx(b[1], rel=1e-5) and tuple(a[5:7]) == tuple(b[5:7]) == (seq, seq)
        assert a[8][0] == pytest.approx(b[8][0])
    assert scaled["classes"]["attention"]["flops_per_sample"] == pytest.approx(
        counted["classes"]["attention"]["flops_per_sample"], rel=1e-5)
    for total in ("train_flops_per_sample", "forward_flops_per_sample"):
        assert scaled[total] == pytest.approx(counted[total], rel=1e-4)
    # and the step it prices is the counted one's to 0.2% (the position tables' fixed bytes)
    gpu = get_gpu("H200")
    doc = opmodel.efficiencies()
    t = [opmodel.step_time(d, gpu, "bf16", 16 * seq, True, doc).seconds for d in (scaled, counted)]
    assert t[0] == pytest.approx(t[1], rel=2e-3)


def test_a_preset_at_another_length_is_priced_per_operation_without_torch(monkeypatch):
    from launcher.estimate import flops
    from launcher.estimate.table import predict_job
    from launcher.spec import parse_spec

    monkeypatch.setattr(flops, "_torch_available", lambda: False)
    w = parse_spec("name: t\nworkload: {model: lm-1b, seq_len: 8192, batch_size: 2}\n", check_catalog=False).workload
    cost = flops.lm_cost(w)
    assert cost.ops["scaled_from"] == "lm-1b:4096:128256:0"
    # 8,192 tokens: 64 blocks, 65/128 of the score matrix; lm-1b's forward attention, 4 x 32 heads x 64 per key
    fwd = min((r for r in cost.ops["gemm_ops"] if r[0] == "attention"), key=lambda r: r[1])
    assert fwd[1] == pytest.approx(4 * 32 * 64 * 8192 * 65 / 128, rel=1e-5)
    assert predict_job(w, cost, get_gpu("H200"), 1).method == "per-operation"
    # a shape with model_args cannot be rescaled: no count without torch
    w2 = parse_spec("name: t\nworkload: {model: lm-8b, model_args: {n_layers: 8}, seq_len: 8192, batch_size: 2}\n",
                    check_catalog=False).workload
    assert flops.lm_cost(w2).ops is None
