"""Bundled per-operation costs of the built-in models, so an estimate needs no torch for them.

    python -m launcher.estimate.opcosts      # regenerate launcher/estimate/op_costs.json (imports torch)

Each entry is ``launcher.estimate.opcount.count`` of the payload's own model (the same path a
user's factory goes through) at one (image size, classes, channels). A size not in the table
is scaled from the nearest entry of the same model: per-sample FLOPs and bytes by the image
area ratio, fixed parts (weights, optimizer) unchanged, flagged by the caller as approximate.

The built-in language models (payloads/lm.py) are counted per trained token by
``opcount.count_tokens`` at the sequence lengths and vocabularies of ``LM_SHAPES`` (key
``model:seq_len:vocab_size:0``); another length, vocabulary or ``model_args`` is counted with torch
when it is installed (cached like a factory's count, ``launcher.estimate.flops.lm_ops``), else
priced without per-operation costs (the LM MFU fit, docs/estimator.md section 10).
"""

from __future__ import annotations

import json
import math
import time
from functools import lru_cache
from pathlib import Path

from launcher.estimate.paths import cost_key, read_json

BUNDLED_OPS = Path(__file__).with_name("op_costs.json")
SIZES = {"vgg16": (32, 64, 128, 224), "vgg11": (32, 224), "resnet50": (32, 64, 128, 224, 256),
         "resnet18": (32, 64, 128, 224), "mobilenetv2": (32, 64, 128, 224), "vit_b16": (32, 64, 128, 224),
         "tinycnn": (28, 32, 64, 224), "mlp": (28, 32, 224)}
CLASSES = (10, 1000)
CHANNELS = (1, 3)
# Built-in language models: (sequence lengths, vocabularies) bundled; each preset's default
# vocabulary, and GPT-2's padded to a multiple of 64 (50304, as nanoGPT and our H200 runs use).
LM_SHAPES = {"gpt2-124m": ((512, 1024), (50257, 50304)), "lm-1b": ((2048, 4096), (128256,)),
             "lm-3b": ((2048, 4096), (128256,)), "lm-8b": ((2048, 4096), (128256,)),
             "lm-13b": ((2048, 4096), (32000,))}


@lru_cache(maxsize=1)
def _table() -> dict:
    return read_json(BUNDLED_OPS, {}).get("entries", {})


@lru_cache(maxsize=1)
def _text() -> str:
    try:
        return BUNDLED_OPS.read_text(encoding="utf-8")
    except OSError:
        return ""


@lru_cache(maxsize=None)
def _entry(key: str) -> dict | None:
    """One entry of the bundled table. main() writes it with indent=0, so each entry's key starts
    a line: found there exactly once, only that entry is decoded (an estimate needs one of ~90
    entries; decoding all 390 kB cost it ~13 ms). Otherwise, or if that fails: the whole table."""
    text, needle = _text(), f'\n"{key}": '
    at = text.find(needle)
    if at >= 0 and text.find(needle, at + 1) < 0:
        try:
            entry = json.JSONDecoder().raw_decode(text, at + len(needle))[0]
            if isinstance(entry, dict):
                return entry
        except ValueError:
            pass
    return _table().get(key)


def builtin_ops(model: str, image_size: int, num_classes: int, in_channels: int = 3) -> dict | None:
    """OpCost dict of a built-in model (bundled or scaled from the nearest bundled size); None if unknown."""

    hit = _entry(cost_key(model, image_size, num_classes, in_channels))
    if hit is not None:
        return hit
    table = _table()
    same = [(k, v) for k, v in table.items() if k.split(":")[0] == model]
    if not same:
        return None

    def distance(item) -> tuple:
        _, size, classes, ch = item[0].split(":")
        return (abs(math.log(int(size) / image_size)), int(ch) != in_channels,
                abs(math.log(int(classes) / num_classes)))

    key, entry = min(same, key=distance)
    r = (image_size / int(key.split(":")[1])) ** 2
    scaled = json.loads(json.dumps(entry))
    for c in scaled["classes"].values():
        for f in ("flops_per_sample", "bytes_per_sample", "bytes_fused_per_sample"):
            c[f] *= r
    for f in ("forward_flops_per_sample", "train_flops_per_sample", "activation_bytes_per_sample"):
        scaled[f] *= r
    for row in scaled.get("gemm_ops", []):  # GEMM_FIELDS: per-sample FLOPs and bytes, and each matrix
        row[1] *= r  # product's per-sample dimension (pixels), scale with the area like the classes
        row[3] *= r
        for product in (row[8] if len(row) > 8 else []):
            product[0], product[2], product[4] = product[0] * r, product[2] * r, product[4] * r
    scaled["scaled_from"] = key
    return scaled


def bundled_lm_ops(model: str, seq_len: int, vocab_size: int) -> dict | None:
    """Bundled OpCost dict (per trained token) of a built-in language model preset; None if absent."""
    from launcher.payloads import lm_shapes

    return _entry(cost_key(lm_shapes.ALIASES.get(model, model), seq_len, vocab_size, 0))


def scaled_lm_ops(model: str, seq_len: int, vocab_size: int) -> dict | None:
    """A built-in language model preset at a sequence length that is not bundled, without torch:
    the bundled count of the same preset and vocabulary at the nearest length, rescaled
    (``to_sequence``), marked ``scaled_from``; None when the preset or vocabulary is not bundled."""
    from launcher.payloads import lm_shapes

    name = lm_shapes.ALIASES.get(model, model)
    same = [k for k in _table() if k.split(":")[0] == name and int(k.split(":")[2]) == vocab_size]
    if not same:
        return None
    key = min(same, key=lambda k: (abs(math.log(int(k.split(":")[1]) / seq_len)), int(k.split(":")[1])))
    return to_sequence(_table()[key], seq_len, key)


def to_sequence(entry: dict, seq_len: int, source: str = "") -> dict:
    """A token model's per-token count (``opcount.count_tokens``) moved to another sequence
    length: per token only attention depends on it, its FLOPs in proportion to the keys each query
    meets (seq_len, times the causal share ``opcount.causal_fraction`` when the count's was below
    1), its bytes per token unchanged, its recorded shape set to the new length. Everything else
    is kept: matrix products, element-wise work and the optimizer are the same per token (their
    fixed parts, the position tables', differ by under 1.1% of their bytes between 1,024 and 2,048
    tokens for lm-1b); ``tests/test_attention_shape.py`` checks it against a count at that length."""
    from launcher.estimate.opcount import causal_fraction

    out = json.loads(json.dumps(entry))
    rows = [r for r in out.get("gemm_ops", []) if r[0] == "attention" and len(r) > 8 and r[8]]
    fwd_bytes = min((r[3] for r in rows), default=0.0)  # the forward reads q, k, v and writes o: the fewest
    added = model_added = model_added_fwd = 0.0
    for row in rows:
        product = row[8][0]
        causal = product[3] < row[6]
        keys = seq_len * (causal_fraction(seq_len, seq_len) if causal else 1.0)
        flops = row[1] * keys / product[3]
        added += row[7] * (flops - row[1])
        # the count's FLOP totals take the full score matrix (torch's formulas: the MFU convention)
        full = row[7] * row[1] * row[6] / product[3] * (seq_len / row[6] - 1.0)
        model_added += full
        model_added_fwd += full if row[3] == fwd_bytes else 0.0
        row[1], row[5], row[6], product[3] = flops, seq_len, seq_len, keys
    if "attention" in out.get("classes", {}):
        out["classes"]["attention"]["flops_per_sample"] += added
    out["train_flops_per_sample"] = out.get("train_flops_per_sample", 0.0) + model_added
    out["forward_flops_per_sample"] = out.get("forward_flops_per_sample", 0.0) + model_added_fwd
    if source:
        out["scaled_from"] = source
    return out


def count_lm(shape, seq_len: int):
    """opcount.count_tokens of payloads/lm.py's model of this shape (imports torch)."""
    import torch

    from launcher.estimate.opcount import count_tokens
    from launcher.payloads.lm import build_lm

    with torch.device("meta"):
        module = build_lm(shape)
    return count_tokens(module, seq_len)


def main() -> None:
    import torch

    from launcher.estimate.opcount import count
    from launcher.payloads import lm_shapes
    from launcher.payloads.models import build_model

    entries, t0 = {}, time.time()
    for model, sizes in SIZES.items():
        for size in sizes:
            for classes in CLASSES:
                for ch in CHANNELS:
                    if ch == 1 and model not in ("tinycnn", "mlp"):
                        continue
                    with torch.device("meta"):
                        module = build_model(model, classes, ch, size)
                    entries[cost_key(model, size, classes, ch)] = count(module, (ch, size, size), classes).to_dict()
    for model, (seqs, vocabs) in LM_SHAPES.items():
        for seq in seqs:
            for vocab in vocabs:
                shape = lm_shapes.resolve(model, {}, vocab, seq)
                entries[cost_key(model, seq, vocab, 0)] = count_lm(shape, seq).to_dict()
    doc = {"about": "per-operation-class cost of one training step of each built-in model (fp32, eager and "
                    "fused bytes, kernels; language models per token), counted on the meta device by launcher/estimate/opcount.py",
           "generated_by": "python -m launcher.estimate.opcosts", "torch": torch.__version__, "entries": entries}
    BUNDLED_OPS.write_text(json.dumps(doc, indent=0, sort_keys=True) + "\n", encoding="utf-8")
    print(f"{len(entries)} entries in {time.time() - t0:.1f}s -> {BUNDLED_OPS}")


if __name__ == "__main__":
    main()
