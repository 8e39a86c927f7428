"""payloads.lm / lm_shapes: published parameter counts, FLOPs against 6N + attention, training."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from payloads import lm_shapes as S
from payloads.lm import build_lm, lm_loss

# Published totals (model cards / config-derived counts of the released checkpoints).
PUBLISHED = {
    "gpt2-124m": 124_439_808,   # GPT-2 small, HF openai-community/gpt2
    "lm-1b": 1_235_814_400,     # Llama-3.2-1B
    "lm-3b": 3_212_749_824,     # Llama-3.2-3B
    "lm-8b": 8_030_261_248,     # Meta-Llama-3-8B
    "lm-13b": 13_015_864_320,   # Llama-2-13b
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_parameter_counts_match_published(name):
    shape = S.resolve(name)
    assert S.param_count(shape) == PUBLISHED[name]
    with torch.device("meta"):
        model = build_lm(shape)
    assert sum(p.numel() for p in model.parameters()) == PUBLISHED[name]


def test_alias_and_overrides():
    assert S.resolve("lm-124m") == S.resolve("gpt2-124m")
    s = S.resolve("lm-1b", {"n_layers": 2}, vocab_size=1000, seq_len=4096)
    assert (s.n_layers, s.vocab_size, s.max_seq_len, s.d_model) == (2, 1000, 4096, 2048)
    assert S.resolve("gpt2-124m", seq_len=2048).max_seq_len == 2048  # position table grows
    assert S.resolve("gpt2-124m", seq_len=256).max_seq_len == 1024  # and never shrinks
    assert S.resolve("lm", {"n_heads": 4}).n_kv_heads == 4


@pytest.mark.parametrize("bad,match", [
    ({"d_modle": 8}, "unknown key"), ({"d_model": 100, "n_heads": 3}, "multiple of n_heads"),
    ({"n_kv_heads": 3}, "multiple of n_kv_heads"), ({"style": "bert"}, "style"), ({"n_layers": 0}, ">= 1"),
])
def test_bad_shapes_are_one_line_value_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        S.resolve("lm", bad)
    with pytest.raises(ValueError, match="choose one of"):
        S.resolve("gpt5")


@pytest.mark.parametrize("name,seq", [("gpt2-124m", 1024), ("lm-1b", 2048), ("lm-8b", 512), ("lm-13b", 256)])
def test_flops_match_6n_plus_attention(name, seq):
    """FlopCounterMode on the meta device counts matmuls and SDPA: it must equal the formula."""
    shape = S.resolve(name, seq_len=seq)
    with torch.device("meta"):
        model = build_lm(shape)
        tokens = torch.zeros(1, seq, dtype=torch.long)
        with FlopCounterMode(display=False) as counter:
            lm_loss(model(tokens), tokens).backward()
    per_token = counter.get_total_flops() / seq
    assert per_token == pytest.approx(S.train_flops_per_token(shape, seq), rel=1e-3)
    # the familiar rule of thumb: ~6 x parameters, attention on top
    assert S.train_flops_per_token(shape, seq) == pytest.approx(6 * S.param_count(shape), rel=0.35)


@pytest.mark.parametrize("style", ["gpt2", "llama"])
def test_tiny_model_learns_and_is_causal(style):
    torch.manual_seed(0)
    shape = S.resolve("lm", {"style": style, "d_model": 32, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2
                             if style == "llama" else 4, "d_ff": 64, "max_seq_len": 16}, vocab_size=50)
    model = build_lm(shape)
    tokens = torch.randint(0, 50, (4, 16))
    out = model(tokens)
    assert out.shape == (4, 16, 50)
    changed = tokens.clone()
    changed[:, 10] = (changed[:, 10] + 1) % 50
    out2 = model(changed)
    assert torch.allclose(out[:, :10], out2[:, :10], atol=1e-5)  # no position sees the future
    assert not torch.allclose(out[:, 10:], out2[:, 10:])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(30):
        loss = lm_loss(model(tokens[:, :-1]), tokens[:, 1:])
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first


def test_meta_build_then_init_matches_shape_and_rope():
    shape = S.resolve("lm", {"d_model": 32, "n_layers": 1, "n_heads": 4, "d_ff": 64, "max_seq_len": 8}, vocab_size=20)
    with torch.device("meta"):
        model = build_lm(shape)
    model.to_empty(device="cpu")
    model.init_weights()
    ref = build_lm(shape)
    assert torch.equal(model.rope_cos, ref.rope_cos)
    assert torch.isfinite(model(torch.zeros(1, 8, dtype=torch.long))).all()
    assert model.blocks[0].norm1.weight.eq(1).all()
