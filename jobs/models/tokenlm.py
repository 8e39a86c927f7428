"""A user's own token model, as a user would write it: a small decoder-only transformer.

gpujob trains it from ``workload.model: "jobs/models/tokenlm.py:build"`` with ``seq_len`` and
``vocab_size`` in the workload (then a sample is a token: ``batch_size`` counts sequences,
``samples_per_epoch`` tokens) and ``model_args`` as keyword arguments. Input int64 token ids
[seq_len]; output [seq_len, vocab_size] logits (the next token at every position). Trained as
the built-in language models are: AdamW, gradient clipping, bf16 autocast.
"""

import torch
import torch.nn.functional as F
from torch import nn


class Block(nn.Module):
    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.qkv, self.proj = nn.Linear(d_model, 3 * d_model), nn.Linear(d_model, d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = (z.view(b, t, self.n_heads, d // self.n_heads).transpose(1, 2)
                   for z in self.qkv(self.norm1(x)).split(d, dim=-1))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, d))
        return x + self.mlp(self.norm2(x))


class TokenLM(nn.Module):
    def __init__(self, vocab_size: int, max_seq_len: int, d_model: int, n_layers: int, n_heads: int):
        super().__init__()
        self.tok = nn.Embedding(vocab_size, d_model)
        self.pos = nn.Embedding(max_seq_len, d_model)
        self.blocks = nn.ModuleList(Block(d_model, n_heads) for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.tok(tokens) + self.pos(torch.arange(tokens.shape[1], device=tokens.device))
        for block in self.blocks:
            h = block(h)
        return self.head(self.norm(h))


def build(vocab_size: int = 8192, max_seq_len: int = 512, d_model: int = 256, n_layers: int = 4,
          n_heads: int = 4) -> TokenLM:
    return TokenLM(vocab_size, max_seq_len, d_model, n_layers, n_heads)
