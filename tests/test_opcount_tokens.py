"""Token models in the per-operation counter (launcher/estimate/opcount.count_tokens): a tiny
language model (embedding, one attention block, logits over the vocabulary) and the fused AdamW
update against FLOPs and bytes computed by hand; the built-in language models priced per
operation; a user's token-model factory estimated end to end."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from launcher.estimate.opcount import _make_mode, _Record, causal_fraction, count_tokens

F32 = 4  # bytes per fp32 element
V, D, H, S = 16, 8, 2, 4  # vocabulary, width, heads, tokens per sequence


class TinyLM(nn.Module):
    """Embedding -> fused q/k/v projection -> causal attention -> logits (no bias anywhere)."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(V, D)
        self.qkv = nn.Linear(D, 3 * D, bias=False)
        self.head = nn.Linear(D, V, bias=False)

    def forward(self, tokens):
        b, s = tokens.shape
        q, k, v = (t.view(b, s, H, D // H).transpose(1, 2) for t in self.qkv(self.emb(tokens)).split(D, dim=-1))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.head(y.transpose(1, 2).reshape(b, s, D))


def _tiny():
    with torch.device("meta"):
        return TinyLM()


def test_tiny_token_model_flops_and_bytes_by_hand():
    c = count_tokens(_tiny(), S)  # per trained token
    mm = c.classes["matmul"]
    # q/k/v (D -> 3D) and logits (D -> V): forward, input gradient and weight gradient each
    # 2 x multiply-adds per token (the embedding's output needs its gradient: the table trains).
    assert mm.flops_per_sample == 3 * 2 * D * 3 * D + 3 * 2 * D * V and mm.flops_fixed == 0
    # per token: q/k/v forward reads x (D) writes 3D; input gradient reads 3D writes D; weight
    # gradient reads 3D and x (D). Logits: forward D + V; input gradient V + D; weight gradient V + D.
    assert mm.bytes_per_sample == ((D + 3 * D) + (3 * D + D) + (3 * D + D) + 3 * (V + D)) * F32
    # each weight is read twice (forward, input gradient) and its gradient written once
    assert mm.bytes_fixed == 3 * (3 * D * D + V * D) * F32
    assert mm.kernels == 6
    a = c.classes["attention"]
    # one sequence is one 128-token tile: causal computes all of it; per token, forward QK^T and
    # AV (2 x 2 x H x S x head dim), backward five such products (torch's sdpa formulas)
    assert a.flops_per_sample == (2 + 5) * 2 * H * S * (D // H)
    # forward reads q, k, v and writes o; backward reads q, k, v, o, do and writes dq, dk, dv
    assert a.bytes_per_sample == (4 + 8) * D * F32 and a.kernels == 2
    assert c.params == V * D + 3 * D * D + V * D
    # the embedding gathers D floats per token forward and scatters them back into a V x D
    # gradient (written once per step, the fixed part)
    emb_fwd_bwd = c.classes["data_movement"]
    assert emb_fwd_bwd.bytes_fixed >= V * D * F32


def test_fused_adamw_update_bytes_by_hand():
    n = 1000
    p, g, m, v = (torch.empty(n, device="meta") for _ in range(4))
    step = torch.zeros((), device="meta")
    rec = _Record()
    with _make_mode(rec, {}):
        torch._fused_adamw_([p], [g], [m], [v], [], [step], lr=1e-3, beta1=0.9, beta2=0.95, weight_decay=0.1,
                            eps=1e-8, amsgrad=False, maximize=False)
    # reads weight, gradient and both moments (16 bytes) and the step count; writes weight and
    # moments (12 bytes): the gradient is not written (marked so only for in-kernel unscaling)
    assert rec.bytes["optimizer"] == 28 * n + F32 and rec.kernels["optimizer"] == 1


def test_token_step_optimizer_is_clipping_plus_fused_adamw():
    c = count_tokens(_tiny(), S)
    opt = c.classes["optimizer"]
    # clip_grad_norm_: norms read every gradient (4), the scale multiplies them in place (4 + 4);
    # AdamW 28: 40 bytes per parameter, plus a few scalars per tensor (norms, scale, step counts)
    assert 40 * c.params * 1.0 <= opt.bytes_fixed < 40 * c.params + 64 * 3
    assert opt.bytes_per_sample == 0


def test_causal_attention_counts_the_tiles_below_the_diagonal():
    assert causal_fraction(128, 128) == 1.0
    assert causal_fraction(1024, 1024) == pytest.approx(9 / 16)  # 8 tiles: 36 of 64 computed
    assert causal_fraction(4096, 4096) == pytest.approx(33 / 64)


def _workload(text: str):
    from launcher.spec import parse_spec

    return parse_spec(f"name: t\nworkload: {{{text}}}\n", check_catalog=False).workload


def test_builtin_language_model_is_priced_by_the_written_choice_without_torch(tmp_path):
    import os
    import subprocess
    import sys

    code = ("import sys; from launcher.spec import parse_spec; from launcher.catalog.gpus import get_gpu; "
            "from launcher.estimate.flops import workload_cost; from launcher.estimate.table import predict_job; "
            "w = parse_spec('name: t\\nworkload: {model: gpt2-124m, batch_size: 32}\\n', check_catalog=False).workload; "
            "p = predict_job(w, workload_cost(w), get_gpu('H200'), 1); "
            "print(p.method, round(p.samples_per_second), 'torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "GPUJOB_HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    method, tokens_per_s, imported = proc.stdout.split()
    # the method that measured the smaller error on the held-out LM runs (op_efficiency.json)
    from launcher.estimate.opmodel import efficiencies

    assert method == efficiencies()["method_choice"]["lm"]["method"]
    assert method in ("per-operation", "mfu")
    assert int(tokens_per_s) > 0 and imported == "False"


def test_fsdp_shards_the_optimizer_update_of_the_per_operation_step():
    from launcher.catalog.gpus import get_gpu
    from launcher.estimate.flops import workload_cost
    from launcher.estimate.table import predict_job
    from launcher.estimate.throughput import predict

    w = _workload("model: lm-8b, batch_size: 2, seq_len: 2048")
    gpu, cost = get_gpu("H100"), workload_cost(w)
    p = predict_job(w, cost, gpu, 8, method="per-operation")  # whichever method LMs are priced by
    assert p.memory["parallel"] == "fsdp" and p.method == "per-operation"
    whole = predict(gpu, 8, "bf16", cost, 2 * 2048, w.model, method="per-operation")  # every rank, every weight
    # the bytes are sharded; the kernels are not (every rank launches them: a fixed time each)
    from launcher.estimate.opcount import OpCost
    from launcher.estimate.opmodel import efficiencies, efficiency, kernel_seconds

    doc = efficiencies()
    kernels = OpCost.from_dict(cost.ops).classes["optimizer"].kernels_fused
    fixed = kernels * kernel_seconds(doc) / efficiency(doc, gpu.arch, "half", "optimizer", "compiled")
    assert p.per_class_seconds["optimizer"] - fixed == pytest.approx(
        (whole.per_class_seconds["optimizer"] - fixed) / 8, rel=1e-3)
    assert p.samples_per_second > whole.samples_per_second


def test_token_model_factory_is_estimated_probed_and_trained(tmp_path, monkeypatch):
    """A user's token model in a file (jobs/models/tokenlm.py) with seq_len and vocab_size:
    counted per token like the built-in language models, estimated by `gpujob estimate`, probed
    on the CPU and trained a few steps by the payload's language-model loop."""
    import json
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    from typer.testing import CliRunner

    from launcher.cli import app
    from launcher.estimate.baseline import measure_baseline
    from launcher.estimate.flops import workload_cost
    from launcher.spec import parse_spec

    repo = Path(__file__).resolve().parent.parent
    monkeypatch.setenv("GPUJOB_HOME", str(tmp_path / "home"))
    (tmp_path / "models").mkdir()
    shutil.copy(repo / "jobs" / "models" / "tokenlm.py", tmp_path / "models" / "tokenlm.py")
    monkeypatch.chdir(tmp_path)
    text = json.dumps({"name": "tok", "workload": {
        "model": "models/tokenlm.py:build", "seq_len": 32, "vocab_size": 64, "batch_size": 4,
        "model_args": {"vocab_size": 64, "max_seq_len": 32, "d_model": 32, "n_layers": 2, "n_heads": 2},
        "samples_per_epoch": 4096, "precision": "fp32"}, "resources": {"accelerators": "H200:1"}})
    (tmp_path / "job.yaml").write_text(text, encoding="utf-8")
    spec = parse_spec(text)
    w = spec.workload
    assert w.is_token_model and not w.is_lm and w.sample_shape == (32,)
    # 1. counted per trained token, as the built-in language models are
    cost = workload_cost(w)
    assert cost.ops is not None and cost.num_classes == 64
    counted = count_tokens(_meta_module(tmp_path, w.model_args), 32)
    assert cost.ops["train_flops_per_sample"] == counted.train_flops_per_sample
    per_token_matmul = sum(c["flops_per_sample"] for k, c in cost.ops["classes"].items() if k == "matmul")
    d, layers = 32, 2  # 6 x (q/k/v + proj + MLP weights per layer + logits) per token, forward + backward
    assert per_token_matmul == 6 * (layers * (3 * d * d + d * d + 8 * d * d) + d * 64)
    # 2. `gpujob estimate` prices it per operation in tokens/s
    res = CliRunner().invoke(app, ["estimate", "job.yaml", "--no-baseline", "--json"])
    assert res.exit_code == 0, res.output
    est = json.loads(res.output)
    assert est["job"]["seq_len"] == 32 and any("token model" in n for n in est["notes"])
    rows = [r for r in est["candidates"] if r.get("samples_per_second")]
    assert rows and all(r["samples_per_second"] > 0 for r in rows)
    # 3. the CPU probe trains the same factory on tokens
    base = measure_baseline(spec, probe_seconds=2.0)
    assert base.measured and base.samples_per_second > 0, base.note
    # 4. the payload trains it for a few steps (AdamW, clipping: the step the count describes)
    cfg = {**w.model_dump(mode="json"), "samples_per_epoch": 3 * 4 * 32, "output_dir": str(tmp_path / "out")}
    (tmp_path / "job.json").write_text(json.dumps(cfg), encoding="utf-8")
    proc = subprocess.run([sys.executable, str(repo / "payloads" / "train.py"), "--config", "job.json",
                           "--device", "cpu", "--log-every", "1"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    steps = [e for e in events if e["event"] == "step"]
    assert proc.returncode == 0 and len(steps) == 3 and all(e["loss"] > 0 for e in steps), proc.stderr[-2000:]
    assert steps[-1]["samples"] == 3 * 4 * 32  # tokens


def _meta_module(root, args):
    from payloads.factory import build_factory_model

    with torch.device("meta"):
        return build_factory_model("models/tokenlm.py:build", args, str(root))


def test_token_fields_on_a_factory_need_both_and_no_input_shape():
    from launcher.errors import SpecError

    with pytest.raises(SpecError, match="needs vocab_size"):
        _workload("model: 'm.py:build', seq_len: 64")
    with pytest.raises(SpecError, match="not both"):
        _workload("model: 'm.py:build', seq_len: 64, vocab_size: 100, input_shape: [3, 8, 8]")
    with pytest.raises(SpecError, match="seq_len applies to language models"):
        _workload("model: resnet50, seq_len: 64")


def test_language_models_take_the_method_with_the_smaller_held_out_error():
    from launcher.catalog.gpus import get_gpu
    from launcher.estimate import opfit
    from launcher.estimate.flops import workload_cost
    from launcher.estimate.opmodel import efficiencies
    from launcher.estimate.table import predict_job

    def row(per_op, mfu, fitted=False):
        return {"error_per_operation": per_op, "error_mfu": mfu, "mfu_fitted": fitted}

    # the MFU fit's own runs do not count: on the two held-out runs the MFU fit is better
    choice = opfit.lm_choice([row(0.01, 0.5, True), row(0.2, 0.05), row(-0.3, 0.1)])
    assert choice["method"] == "mfu" and choice["n"] == 2 and choice["mfu"]["median"] == pytest.approx(0.075)
    assert opfit.lm_choice([row(0.02, 0.1), row(-0.04, 0.2)])["method"] == "per-operation"
    # the estimate follows the written choice
    doc = dict(efficiencies())
    w = _workload("model: gpt2-124m, batch_size: 32")
    cost, gpu = workload_cost(w), get_gpu("H200")
    mc = doc["method_choice"]
    as_mfu = {**doc, "method_choice": {**mc, "lm": {**mc["lm"], "method": "mfu"}}}
    assert predict_job(w, cost, gpu, 1, op_doc=as_mfu).method == "mfu"
    assert predict_job(w, cost, gpu, 1, op_doc=doc).method == mc["lm"]["method"]


def test_an_unaligned_vocabulary_is_flagged_in_the_estimate():
    from launcher.estimate.table import estimate
    from launcher.spec import parse_spec

    def notes(vocab: int) -> list:
        spec = parse_spec(f"name: t\nworkload: {{model: gpt2-124m, batch_size: 8, vocab_size: {vocab}}}\n",
                          check_catalog=False)
        return estimate(spec, providers=("aws",)).notes

    assert any("vocab_size 50,257 is not a multiple of 8" in n for n in notes(50257))
    assert not any("not a multiple of 8" in n for n in notes(50304))


def test_token_factory_memory_counts_adamw_and_its_batch_in_sequences(tmp_path, monkeypatch):
    import shutil
    from pathlib import Path

    from launcher.catalog.gpus import get_gpu
    from launcher.estimate.flops import workload_cost
    from launcher.estimate.table import predict_job
    from launcher.estimate.throughput import GIB, MAX_BATCH_CAP, USABLE_FRACTION, memory_needed_gib

    monkeypatch.setenv("GPUJOB_HOME", str(tmp_path / "home"))
    (tmp_path / "models").mkdir()
    shutil.copy(Path(__file__).resolve().parent.parent / "jobs" / "models" / "tokenlm.py", tmp_path / "models")
    monkeypatch.chdir(tmp_path)
    w = _workload("model: 'models/tokenlm.py:build', seq_len: 512, vocab_size: 8192, batch_size: 4")
    cost, gpu = workload_cost(w), get_gpu("H200")
    p = predict_job(w, cost, gpu, 1)
    sgd = memory_needed_gib(cost, 4 * 512, "bf16")
    assert p.memory_gib_needed == pytest.approx(sgd + cost.param_bytes / GIB)  # one more fp32 copy: AdamW
    # the largest power-of-two batch of 512-token sequences that fits (not of tokens)
    usable, b = gpu.memory_gib * USABLE_FRACTION, p.max_batch
    assert 1 < b < MAX_BATCH_CAP
    assert memory_needed_gib(cost, b * 512, "bf16", 2) <= usable < memory_needed_gib(cost, 2 * b * 512, "bf16", 2)
