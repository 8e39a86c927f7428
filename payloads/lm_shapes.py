"""Shapes of the built-in decoder-only language models, and their exact counts.

Standard library only: the launcher imports this module to count parameters, FLOPs and
memory without torch, and the payload (payloads/lm.py) builds the model from the same shape.

Presets reproduce published architectures, so their parameter counts can be checked against
the published ones (tests/test_lm_model.py):

| preset | architecture | published parameters |
| --- | --- | --- |
| gpt2-124m (lm-124m) | GPT-2 small | 124,439,808 |
| lm-1b | Llama-3.2-1B | 1,235,814,400 |
| lm-3b | Llama-3.2-3B | 3,212,749,824 |
| lm-8b | Llama-3-8B (Llama-3.1-8B has the same shape) | 8,030,261,248 |
| lm-13b | Llama-2-13B | 13,015,864,320 |

Units: FLOPs are 2 x multiply-adds; "per token" means per trained token (one position of one
sequence), forward and backward.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

STYLES = ("gpt2", "llama")


@dataclass(frozen=True)
class LMShape:
    """A decoder-only transformer.

    gpt2: learned positions (``max_seq_len`` rows), LayerNorm with bias, GELU MLP of ``d_ff``,
    biased projections, tied input/output embeddings. llama: rotary positions, RMSNorm,
    SwiGLU MLP of ``d_ff`` (three matrices), no biases, grouped-query attention with
    ``n_kv_heads`` key/value heads.
    """

    style: str
    vocab_size: int
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_ff: int
    max_seq_len: int  # gpt2: rows of the position table; llama: the default training length
    tie_embeddings: bool
    norm_eps: float = 1e-5
    rope_theta: float = 500000.0

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def kv_dim(self) -> int:
        return self.n_kv_heads * self.head_dim

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


PRESETS: dict[str, LMShape] = {
    # https://huggingface.co/openai-community/gpt2/blob/main/config.json
    "gpt2-124m": LMShape("gpt2", 50257, 768, 12, 12, 12, 3072, 1024, True),
    # https://huggingface.co/meta-llama/Llama-3.2-1B/blob/main/config.json
    "lm-1b": LMShape("llama", 128256, 2048, 16, 32, 8, 8192, 2048, True),
    # https://huggingface.co/meta-llama/Llama-3.2-3B/blob/main/config.json
    "lm-3b": LMShape("llama", 128256, 3072, 28, 24, 8, 8192, 2048, True),
    # https://huggingface.co/meta-llama/Meta-Llama-3-8B/blob/main/config.json
    "lm-8b": LMShape("llama", 128256, 4096, 32, 32, 8, 14336, 2048, False),
    # https://huggingface.co/meta-llama/Llama-2-13b-hf/blob/main/config.json
    "lm-13b": LMShape("llama", 32000, 5120, 40, 40, 40, 13824, 2048, False, 1e-5, 10000.0),
}
ALIASES = {"lm-124m": "gpt2-124m"}
NAMES = tuple(PRESETS) + tuple(ALIASES)
# A base for shapes given entirely as model_args (workload.model: lm): a small Llama.
CUSTOM = "lm"
CUSTOM_BASE = LMShape("llama", 32000, 512, 8, 8, 8, 1376, 1024, True)
ALL_NAMES = NAMES + (CUSTOM,)

_ARG_KEYS = tuple(f.name for f in fields(LMShape))


def is_lm(name: str) -> bool:
    return name in ALL_NAMES


def resolve(name: str, model_args: dict[str, Any] | None = None, vocab_size: int | None = None,
            seq_len: int | None = None) -> LMShape:
    """The shape for a preset (or ``lm``) with ``model_args`` overriding its fields.

    Raises ValueError with a one-line message for an unknown name or key, or a shape that
    cannot be built (heads not dividing the width, ...). ``seq_len`` longer than a gpt2
    position table grows the table (the parameter count then grows too).
    """
    key = ALIASES.get(name, name)
    if key == CUSTOM:
        base = CUSTOM_BASE
    elif key in PRESETS:
        base = PRESETS[key]
    else:
        raise ValueError(f"unknown language model {name!r}; choose one of {', '.join(ALL_NAMES)}")
    args = dict(model_args or {})
    unknown = sorted(set(args) - set(_ARG_KEYS))
    if unknown:
        raise ValueError(f"model_args: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(_ARG_KEYS)}")
    if vocab_size is not None:
        args["vocab_size"] = vocab_size
    if "n_heads" in args and "n_kv_heads" not in args and base.n_kv_heads == base.n_heads:
        args["n_kv_heads"] = args["n_heads"]
    shape = replace(base, **args)
    if seq_len is not None and (shape.style == "llama" or seq_len > shape.max_seq_len):
        shape = replace(shape, max_seq_len=seq_len)  # llama: the rotary table only, no parameters
    _check(shape)
    return shape


def _check(s: LMShape) -> None:
    if s.style not in STYLES:
        raise ValueError(f"model_args.style {s.style!r} is not one of {', '.join(STYLES)}")
    for key in ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "d_ff", "max_seq_len"):
        v = getattr(s, key)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"model_args.{key} must be a whole number >= 1, got {v!r}")
    if s.d_model % s.n_heads:
        raise ValueError(f"model_args: d_model {s.d_model} is not a multiple of n_heads {s.n_heads}")
    if s.n_heads % s.n_kv_heads:
        raise ValueError(f"model_args: n_heads {s.n_heads} is not a multiple of n_kv_heads {s.n_kv_heads}")
    if s.style == "gpt2" and s.n_kv_heads != s.n_heads:
        raise ValueError("model_args: gpt2-style attention has n_kv_heads == n_heads")
    if s.style == "llama" and s.head_dim % 2:
        raise ValueError(f"model_args: rotary embeddings need an even head size, got {s.head_dim}")


def default_seq_len(shape: LMShape) -> int:
    return shape.max_seq_len


# --- counts ---------------------------------------------------------------------------------


def layer_params(s: LMShape) -> int:
    """Parameters of one transformer block."""
    d, kv, f = s.d_model, s.kv_dim, s.d_ff
    if s.style == "gpt2":
        attn = d * (d + 2 * kv) + (d + 2 * kv) + d * d + d
        mlp = d * f + f + f * d + d
        norms = 2 * 2 * d
    else:
        attn = d * (d + 2 * kv) + d * d
        mlp = 3 * d * f
        norms = 2 * d
    return attn + mlp + norms


def embedding_params(s: LMShape) -> int:
    """Token embedding (and gpt2's position table): looked up, not multiplied."""
    return s.vocab_size * s.d_model + (s.max_seq_len * s.d_model if s.style == "gpt2" else 0)


def param_count(s: LMShape) -> int:
    """Every parameter, tied weights once (what ``sum(p.numel())`` over the model gives)."""
    final_norm = 2 * s.d_model if s.style == "gpt2" else s.d_model
    head = 0 if s.tie_embeddings else s.vocab_size * s.d_model
    return embedding_params(s) + s.n_layers * layer_params(s) + final_norm + head


def matmul_params(s: LMShape) -> int:
    """Weights that take part in a matrix product per token: every block's projections and the
    output head (tied or not). Embedding lookups, norms and biases are excluded."""
    d, kv, f = s.d_model, s.kv_dim, s.d_ff
    per_layer = d * (d + 2 * kv) + d * d + (2 if s.style == "gpt2" else 3) * d * f
    return s.n_layers * per_layer + s.vocab_size * d


def attention_flops_per_token(s: LMShape, seq_len: int) -> float:
    """Q.K^T and attention.V, forward and backward: 12 x layers x d_model x seq_len per token.

    The convention of PaLM (Chowdhery et al. 2022, appendix B) and torchtitan: the full
    seq_len x seq_len score matrix, although causal attention kernels skip about half of it.
    """
    return 12.0 * s.n_layers * s.d_model * seq_len


def train_flops_per_token(s: LMShape, seq_len: int) -> float:
    """6 x matmul parameters + attention: the FLOPs MFU is computed from (per trained token)."""
    return 6.0 * matmul_params(s) + attention_flops_per_token(s, seq_len)


# --- memory ---------------------------------------------------------------------------------

HALF = ("bf16", "fp16")
PARALLEL = ("single", "ddp", "fsdp")
# Bytes per parameter of the training state, fp32 master weights (AdamW's two moments are fp32).
WEIGHT_BYTES, GRAD_BYTES, ADAMW_BYTES = 4, 4, 8
# Output logits per token per vocabulary entry around the loss. Compiled (the payload's default
# on GPUs): the logits and their gradient, in the compute dtype (the fused cross-entropy keeps
# no fp32 copy; 4 bytes in bf16 matches the H200 peaks). Eager: half-precision logits (2), their
# fp32 copy for the loss (4), the fp32 gradient (4); fp32 runs 4 + 4 + 4.
LOGIT_BYTES = {("half", True): 4, ("fp32", True): 8, ("half", False): 10, ("fp32", False): 12}
MEMORY_TERMS = ("params", "grads", "optimizer", "working_params", "activations", "logits", "recomputed_block")
# The planned peak may take this share of a GPU's memory; the CUDA context, NCCL's buffers and
# the caching allocator's slack take the rest.
FITS_FRACTION = 0.85


def fits(planned_bytes: float, gpu_bytes: float) -> bool:
    """Whether a memory_plan total fits a GPU of gpu_bytes (payload and estimate share this rule)."""
    return planned_bytes <= FITS_FRACTION * gpu_bytes


def activation_bytes_per_token_layer(s: LMShape, precision: str, fsdp: bool) -> float:
    """Tensors one block keeps for backward, per token, without activation checkpointing.

    The residual stream at the block input and mid-block (r bytes x d_model each: the norms'
    backward reads them); the two norm outputs cast for their matrix products and flash
    attention's q, k, v (k and v after the GQA repeat) and output (a bytes x d_model each);
    the MLP: llama keeps the gate|up product (2 x d_ff) and the SwiGLU output (d_ff), gpt2 the
    GELU input and output (d_ff each), a bytes each. a = 2 in bf16/fp16, 4 in fp32; r = 4
    under autocast (fp32 weights promote the residual adds to fp32) and in fp32, 2 under FSDP's
    bf16 parameters (no autocast). torch.compile keeps the same tensors: measured on an H200
    (docs/benchmarks.md), the peaks match this count within 2%, while a count that assumed the
    compiled backward recomputes the norm outputs and MLP activations was 13-17% low.
    """
    half = precision in HALF
    a = 2 if half else 4
    r = 2 if (half and fsdp) else 4
    d, f = s.d_model, s.d_ff
    mlp = (3 if s.style == "llama" else 2) * a * f
    return 2 * r * d + 2 * a * d + 4 * a * d + mlp


def memory_plan(s: LMShape, seq_len: int, batch: int, *, world: int = 1, parallel: str = "single",
                checkpointing: bool = False, precision: str = "bf16", compiled: bool = True) -> dict[str, Any]:
    """Bytes one GPU allocates at its peak while training with AdamW, term by term.

    ``batch`` is sequences per GPU; ``world`` the number of GPUs; ``parallel`` single, ddp (a
    full copy per GPU) or fsdp (fully_shard per block: weights, gradients and AdamW state
    divided by ``world``; bf16 parameters gathered one block ahead); ``compiled``: blocks and
    loss under torch.compile (the payload's default on GPUs).

    total = weights + AdamW state + working copies
            + max(activations + logits, recomputed block + gradients):
    gradients (set to None after each step) grow during backward while the saved activations
    and the logits are freed, so the peak is at one end of backward; with activation
    checkpointing the saved activations are the block inputs, and each block's own are made
    again in backward, one block at a time. That total is what torch's
    ``max_memory_allocated`` reports; the CUDA context and the allocator's slack are not in it
    (``fits`` leaves room for them).
    """
    if parallel not in PARALLEL:
        raise ValueError(f"parallel must be one of {', '.join(PARALLEL)}")
    half = precision in HALF
    fsdp = parallel == "fsdp"
    shard = world if fsdp else 1
    n = param_count(s)
    layer = layer_params(s)
    root = n - s.n_layers * layer
    tokens = batch * seq_len
    out: dict[str, Any] = {
        "params": WEIGHT_BYTES * n / shard,
        "grads": GRAD_BYTES * n / shard,
        "optimizer": ADAMW_BYTES * n / shard,
    }
    if fsdp:
        # bf16 (or fp32) copies gathered for compute: the root's (embeddings, head) stay gathered;
        # two blocks at a time (the current one, the prefetched next); a block's unsharded
        # gradient plus its fp32 copy for the reduce-scatter.
        p = 2 if half else 4
        out["working_params"] = p * root + 2 * p * layer + (p + 4) * layer
    else:
        # autocast keeps a half-precision copy of every weight it multiplies, alive until backward
        out["working_params"] = 2 * matmul_params(s) if half else 0
    per_layer = activation_bytes_per_token_layer(s, precision, fsdp)
    if checkpointing:
        r = 2 if (half and fsdp) else 4
        out["activations"] = tokens * s.n_layers * r * s.d_model  # block inputs
        out["recomputed_block"] = tokens * per_layer
    else:
        out["activations"] = tokens * s.n_layers * per_layer
        out["recomputed_block"] = 0
    out["logits"] = tokens * s.vocab_size * LOGIT_BYTES[("half" if half else "fp32", compiled)]
    out = {k: float(v) for k, v in out.items()}
    out["total"] = (out["params"] + out["optimizer"] + out["working_params"]
                    + max(out["activations"] + out["logits"], out["recomputed_block"] + out["grads"]))
    out.update(world=world, parallel=parallel, checkpointing=checkpointing, batch=batch, seq_len=seq_len,
               precision=precision, compiled=compiled, activation_bytes_per_token_layer=per_layer)
    return out
