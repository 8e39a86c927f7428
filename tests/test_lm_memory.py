"""Memory planning for language models (payloads/lm_shapes.memory_plan, launcher/estimate/memory.py)
against hand-computed cases, and the estimate of the language-model specs in jobs/."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from launcher.estimate.memory import plan_lm, smallest_fit
from launcher.spec import load_spec, parse_spec
from payloads import lm_shapes as S

ROOT = Path(__file__).resolve().parents[1]
GIB = 2**30


def workload(text):
    return parse_spec("name: a\nworkload:\n" + "".join(f"  {line}\n" for line in text.split(";"))).workload


def test_hand_computed_single_gpu_plan():
    # lm-1b (Llama-3.2-1B): N = 1,235,814,400; matmul weights = 16 x 60,817,408 + 128256 x 2048.
    s = S.resolve("lm-1b")
    n, matmul = 1_235_814_400, 16 * (2048 * (2048 + 2 * 512) + 2048 * 2048 + 3 * 2048 * 8192) + 128256 * 2048
    assert S.matmul_params(s) == matmul
    p = S.memory_plan(s, 2048, 4, precision="bf16")
    assert (p["params"], p["grads"], p["optimizer"]) == (4 * n, 4 * n, 8 * n)
    assert p["working_params"] == 2 * matmul  # autocast's bf16 weight copies
    # per token per layer: residual x and h in fp32 (2 x 4 x 2048), both norm outputs in bf16
    # (2 x 2 x 2048), q, k, v, out for flash attention (4 x 2 x 2048), gate|up and SwiGLU output
    # (3 x 2 x 8192)
    per_layer = 2 * 4 * 2048 + 2 * 2 * 2048 + 4 * 2 * 2048 + 3 * 2 * 8192
    assert p["activation_bytes_per_token_layer"] == per_layer
    assert p["activations"] == 4 * 2048 * 16 * per_layer
    assert p["logits"] == 4 * 2048 * 128256 * 4  # compiled: bf16 logits and their bf16 gradient
    static = 4 * n + 8 * n + 2 * matmul
    assert p["total"] == static + p["activations"] + p["logits"]  # gradients come as these go
    eager = S.memory_plan(s, 2048, 4, precision="bf16", compiled=False)
    assert eager["logits"] == 4 * 2048 * 128256 * 10  # bf16 logits, fp32 copy, fp32 gradient
    tiny = S.memory_plan(s, 16, 1, precision="bf16")
    assert tiny["total"] == static + 4 * n  # one short sequence: the gradients are the larger part


def test_hand_computed_fsdp_and_checkpointing():
    s = S.resolve("lm-8b")
    n, layer = 8_030_261_248, S.layer_params(s)
    p = S.memory_plan(s, 2048, 2, world=4, parallel="fsdp", precision="bf16")
    assert p["params"] == 4 * n / 4 and p["optimizer"] == 8 * n / 4
    root = n - 32 * layer  # embeddings + head stay gathered in bf16
    assert p["working_params"] == 2 * root + 2 * 2 * layer + 6 * layer
    ac = S.memory_plan(s, 2048, 2, world=4, parallel="fsdp", checkpointing=True, precision="bf16")
    per_layer = p["activation_bytes_per_token_layer"]
    assert ac["activations"] == 2 * 2048 * 32 * 2 * 4096  # the block inputs, bf16 under FSDP
    assert ac["recomputed_block"] == 2 * 2048 * per_layer  # one block made again in backward
    static = ac["params"] + ac["optimizer"] + ac["working_params"]
    assert ac["total"] == static + max(ac["activations"] + ac["logits"], ac["recomputed_block"] + ac["grads"])
    assert ac["activations"] < p["activations"] / 8
    ddp = S.memory_plan(s, 2048, 2, world=4, parallel="ddp", precision="bf16")
    assert ddp["params"] == 4 * n  # DDP keeps a whole copy per GPU


def test_plan_picks_ddp_then_fsdp_then_checkpointing():
    w = workload("model: lm-8b;batch_size: 2")
    assert not plan_lm(w, 1, 141).fits  # 16 B/param alone is 120 GiB: one H200 is too small
    two = plan_lm(w, 2, 141)
    assert two.fits and two.parallel == "fsdp" and not two.checkpointing
    small = plan_lm(w, 4, 40)
    assert small.parallel == "fsdp" and small.checkpointing
    assert plan_lm(workload("model: gpt2-124m;batch_size: 8"), 2, 16).parallel == "ddp"
    assert smallest_fit(w, 141, [1, 2, 4, 8], checkpointing=False)[:2] == (2, 1)
    count, nodes, plan = smallest_fit(w, 16, [1, 2, 4, 8], checkpointing=True)
    assert count == 8 and nodes > 1 and plan.fits and plan.world == 8 * nodes  # 16 GiB GPUs: several machines
    assert smallest_fit(w, 8, [1], nodes_allowed=False) is None


def test_spec_choices_are_honoured():
    w = workload("model: lm-1b;parallel: ddp;activation_checkpointing: true")
    p = plan_lm(w, 2, 80)
    assert p.parallel == "ddp" and p.checkpointing


def test_language_model_jobs_estimate_without_torch():
    code = ("import sys, json\nfrom launcher.spec import load_spec\nfrom launcher.estimate import estimate\n"
            "out = {}\n"
            "for f in ('jobs/gpt2-124m.yaml', 'jobs/llama-8b-fsdp.yaml'):\n"
            "    d = estimate(load_spec(f)).to_dict(); json.dumps(d); out[f] = d\n"
            "assert 'torch' not in sys.modules, 'estimate imported torch'\n"
            "print(json.dumps(out))\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    small, big = out["jobs/gpt2-124m.yaml"], out["jobs/llama-8b-fsdp.yaml"]
    assert small["job"]["seq_len"] == 1024 and small["job"]["train_flops_per_sample"] == pytest.approx(
        S.train_flops_per_token(S.resolve("gpt2-124m", vocab_size=50304), 1024))
    assert all(c["fits_memory"] for c in small["candidates"])
    plan = {r["gpu"]: r for r in big["memory_plan"]}
    h100 = plan["H100"]["without_checkpointing"]
    assert h100["parallel"] == "fsdp" and h100["gpus"] == 4 and h100["allocated_gib"] < 0.85 * 80
    assert plan["T4"]["without_checkpointing"] is None  # 16 GiB GPUs never hold it
    fits = [c for c in big["candidates"] if c["fits_memory"]]
    assert fits and all(c["memory"]["parallel"] == "fsdp" for c in fits)
    hours = fits[0]["train_seconds"] / 3600
    assert 0.5 < hours < 200  # 1 B tokens of an 8 B model on a machine of 8 GPUs


def test_every_lm_spec_in_jobs_resolves_its_shape():
    for path in sorted((ROOT / "jobs").glob("*.yaml")):
        w = load_spec(path).workload
        if w.is_lm:
            assert S.param_count(w.lm_shape()) > 1e8 and w.effective_seq_len >= 1024


def test_checkpointing_costs_throughput_in_the_estimate():
    from launcher.estimate.table import CHECKPOINTING_SPEED, lm_memory_override
    from launcher.estimate.throughput import Prediction

    base = Prediction(samples_per_second=1000.0, step_seconds=1.0, mfu=0.5, fits_memory=True, max_batch=None,
                      memory_gib_needed=1.0, bound="compute")
    plain = lm_memory_override(workload("model: lm-1b;batch_size: 4"), base, 1, 141)
    assert plain.samples_per_second == 1000.0 and not plain.memory["checkpointing"]
    ac = lm_memory_override(workload("model: lm-1b;batch_size: 4;activation_checkpointing: true"), base, 1, 141)
    assert ac.memory["checkpointing"] and ac.samples_per_second == pytest.approx(1000.0 * CHECKPOINTING_SPEED)
