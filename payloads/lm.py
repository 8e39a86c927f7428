"""The built-in decoder-only language model (GPT-2 and Llama blocks), in plain PyTorch.

    shape = lm_shapes.resolve("lm-1b")
    with torch.device("meta"):
        model = Transformer(shape)          # no memory
    model.to_empty(device="cuda"); model.init_weights()
    logits = model(tokens)                   # tokens: (batch, seq) int64 -> (batch, seq, vocab)

Blocks are pre-norm; attention goes through ``F.scaled_dot_product_attention`` (causal, so
flash/cuDNN kernels on GPUs). Grouped-query attention repeats the key/value heads before the
kernel, as torchtitan does. The blocks sit in ``model.blocks`` so that FSDP can shard and
activation checkpointing can wrap one block at a time (payloads/sharding.py). Imports only
torch and lm_shapes, so the launcher can count it on the meta device.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

if __package__:
    from .lm_shapes import LMShape
else:  # run as a script: the siblings sit next to this file
    from lm_shapes import LMShape  # type: ignore[no-redef]

INIT_STD = 0.02  # GPT-2's initializer_range; residual output projections get 0.02 / sqrt(2 x layers)


def rope_tables(head_dim: int, seq_len: int, theta: float, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of shape (seq_len, head_dim // 2) in fp32."""
    inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim))
    ang = torch.outer(torch.arange(seq_len, device=device, dtype=torch.float32), inv)
    return ang.cos(), ang.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x[2i], x[2i+1]) of x (batch, heads, seq, head_dim) by the position's angle."""
    x1, x2 = x.float().unflatten(-1, (-1, 2)).unbind(-1)
    c, s = cos[: x.shape[-2]], sin[: x.shape[-2]]
    out = torch.stack((x1 * c - x2 * s, x1 * s + x2 * c), dim=-1).flatten(-2)
    return out.to(x.dtype)


class Attention(nn.Module):
    def __init__(self, s: LMShape):
        super().__init__()
        self.n_heads, self.n_kv, self.head_dim = s.n_heads, s.n_kv_heads, s.head_dim
        bias = s.style == "gpt2"
        self.qkv = nn.Linear(s.d_model, s.d_model + 2 * s.kv_dim, bias=bias)
        self.proj = nn.Linear(s.d_model, s.d_model, bias=bias)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        b, t, _ = x.shape
        q, k, v = self.qkv(x).split([self.n_heads * self.head_dim, self.n_kv * self.head_dim,
                                     self.n_kv * self.head_dim], dim=-1)
        q = q.view(b, t, self.n_heads, self.head_dim).transpose(1, 2)
        k = k.view(b, t, self.n_kv, self.head_dim).transpose(1, 2)
        v = v.view(b, t, self.n_kv, self.head_dim).transpose(1, 2)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        if self.n_kv != self.n_heads:
            rep = self.n_heads // self.n_kv
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(b, t, -1))


class MLP(nn.Module):
    """GELU (gpt2) or SwiGLU (llama: down(silu(gate(x)) * up(x)), gate and up as one matrix)."""

    def __init__(self, s: LMShape):
        super().__init__()
        self.swiglu = s.style == "llama"
        bias = not self.swiglu
        self.up = nn.Linear(s.d_model, (2 if self.swiglu else 1) * s.d_ff, bias=bias)
        self.down = nn.Linear(s.d_ff, s.d_model, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.up(x)
        if self.swiglu:
            gate, up = h.chunk(2, dim=-1)
            h = F.silu(gate) * up
        else:
            h = F.gelu(h, approximate="tanh")
        return self.down(h)


def _norm(s: LMShape) -> nn.Module:
    if s.style == "gpt2":
        return nn.LayerNorm(s.d_model, eps=s.norm_eps)
    return nn.RMSNorm(s.d_model, eps=s.norm_eps)


class Block(nn.Module):
    """Pre-norm block. ``checkpoint = True``: keep only the input for backward and recompute the
    rest there (activation checkpointing; parameter names unchanged)."""

    def __init__(self, s: LMShape):
        super().__init__()
        self.norm1, self.attn = _norm(s), Attention(s)
        self.norm2, self.mlp = _norm(s), MLP(s)
        self.checkpoint = False

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        if self.checkpoint and torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(self._forward, x, rope, use_reentrant=False)
        return self._forward(x, rope)

    def _forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), rope)
        return x + self.mlp(self.norm2(x))


class Transformer(nn.Module):
    """tokens (batch, seq) -> logits (batch, seq, vocab_size)."""

    def __init__(self, s: LMShape):
        super().__init__()
        self.shape = s
        self.tok_emb = nn.Embedding(s.vocab_size, s.d_model)
        self.pos_emb = nn.Embedding(s.max_seq_len, s.d_model) if s.style == "gpt2" else None
        self.blocks = nn.ModuleList(Block(s) for _ in range(s.n_layers))
        self.norm = _norm(s)
        self.head = nn.Linear(s.d_model, s.vocab_size, bias=False)
        if s.tie_embeddings:
            self.head.weight = self.tok_emb.weight
        if s.style == "llama":  # rebuilt by init_weights() after to_empty(); not saved
            cos, sin = rope_tables(s.head_dim, s.max_seq_len, s.rope_theta)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """GPT-2's scheme: N(0, 0.02), residual projections scaled by 1/sqrt(2 x layers), zero
        biases, unit norms. Works on real, meta and sharded (DTensor) parameters alike."""
        s = self.shape
        if s.style == "llama" and self.rope_cos.device.type != "meta":
            cos, sin = rope_tables(s.head_dim, s.max_seq_len, s.rope_theta, self.rope_cos.device)
            self.rope_cos.copy_(cos)
            self.rope_sin.copy_(sin)
        resid = INIT_STD / math.sqrt(2 * s.n_layers)
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif "norm" in name:
                nn.init.ones_(p)
            elif name.endswith(("attn.proj.weight", "mlp.down.weight")):
                nn.init.normal_(p, 0.0, resid)
            else:
                nn.init.normal_(p, 0.0, INIT_STD)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        t = tokens.shape[1]
        if t > self.shape.max_seq_len and self.shape.style == "gpt2":
            raise ValueError(f"sequence of {t} tokens is longer than the position table ({self.shape.max_seq_len})")
        h = self.tok_emb(tokens)
        rope = None
        if self.pos_emb is not None:
            h = h + self.pos_emb(torch.arange(t, device=tokens.device))
        else:
            if t > self.rope_cos.shape[0]:
                raise ValueError(f"sequence of {t} tokens is longer than seq_len {self.rope_cos.shape[0]}")
            rope = (self.rope_cos, self.rope_sin)
        for block in self.blocks:
            h = block(h, rope)
        return self.head(self.norm(h))


def lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy in fp32; logits (batch, seq, vocab), targets (batch, seq)."""
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())


def build_lm(shape: LMShape) -> Transformer:
    """A fresh model; works under ``with torch.device("meta"):`` (then call init_weights after
    ``to_empty``)."""
    return Transformer(shape)
