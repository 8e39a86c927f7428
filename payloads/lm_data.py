"""Token streams for the language model: synthetic, a uint16 token file, or bytes of a text file.

    data = open_tokens("corpus.bin", vocab_size=50257)     # None for "synthetic"
    x, y = data.batch(step, rank, world, batch=8, seq_len=1024, seed=0)   # int64 (8, 1024) each

* ``synthetic``: random tokens made on the device (throughput runs; nothing to read).
* ``PATH.bin``: a flat array of little-endian uint16 token ids (nanoGPT's ``train.bin``), or
  llm.c's format (a 256 x int32 header: magic 20240520, version, token count; then uint16).
* ``PATH.txt`` (any other file): its bytes are the tokens (byte-level, vocabulary 256), so a
  plain text file trains with no tokenizer and no download.

Batches are windows at offsets drawn from (seed, step); rank r of N takes the r-th slice of the
step's global batch. The same step always reads the same tokens, so a resumed run continues
the uninterrupted run's stream, and N processes of batch B train on what one process of batch
N x B does.
"""

from __future__ import annotations

import os

import numpy as np
import torch

LLMC_MAGIC = 20240520
LLMC_HEADER_INTS = 256


class DataError(Exception):
    """The token file is missing or malformed; the payload exits 2 with this one-line message."""


class TokenData:
    def __init__(self, tokens: np.ndarray, name: str):
        self.tokens, self.name = tokens, name

    def __len__(self) -> int:
        return len(self.tokens)

    def batch(self, step: int, rank: int, world: int, batch: int, seq_len: int,
              seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, next-token targets), each (batch, seq_len) int64 on the CPU: this rank's slice
        of the step's global batch, so N processes of batch B read what one process of N x B does."""
        span = len(self.tokens) - seq_len - 1
        if span < 0:
            raise DataError(f"{self.name}: {len(self.tokens)} tokens are fewer than seq_len + 1 = {seq_len + 1}")
        rng = np.random.default_rng([seed, step])
        starts = rng.integers(0, span + 1, size=batch * world)[rank * batch:(rank + 1) * batch]
        windows = np.stack([self.tokens[s:s + seq_len + 1] for s in starts]).astype(np.int64)
        t = torch.from_numpy(windows)
        return t[:, :-1], t[:, 1:]


def _bin(path: str) -> np.ndarray:
    size = os.path.getsize(path)
    head = np.zeros(0, dtype="<i4")
    if size >= LLMC_HEADER_INTS * 4:
        with open(path, "rb") as f:
            head = np.frombuffer(f.read(LLMC_HEADER_INTS * 4), dtype="<i4")
    if len(head) == LLMC_HEADER_INTS and head[0] == LLMC_MAGIC:
        n = int(head[2])
        if LLMC_HEADER_INTS * 4 + 2 * n > size:
            raise DataError(f"{path}: llm.c header says {n} tokens but the file holds fewer")
        return np.memmap(path, dtype="<u2", mode="r", offset=LLMC_HEADER_INTS * 4, shape=(n,))
    if size % 2:
        raise DataError(f"{path}: {size} bytes is not a whole number of uint16 tokens")
    return np.memmap(path, dtype="<u2", mode="r")


def open_tokens(spec: str, vocab_size: int) -> TokenData | None:
    """None for synthetic data; raises DataError with a one-line message on any problem."""
    if spec == "synthetic":
        return None
    path = os.path.expanduser(spec)
    if not os.path.isfile(path):
        raise DataError(f"{spec}: no such file (a language model's dataset is synthetic, a uint16 .bin "
                        "token file or a text file)")
    if path.lower().endswith(".bin"):
        tokens = _bin(path)
        if len(tokens) == 0:
            raise DataError(f"{path}: holds no tokens")
        top = int(tokens[: 1 << 22].max())  # a prefix: reading a multi-GB file whole takes minutes
        if top >= vocab_size:
            raise DataError(f"{path}: token id {top} is outside the vocabulary of {vocab_size}; set vocab_size")
    else:
        if vocab_size < 256:
            raise DataError(f"{path}: byte-level text needs vocab_size >= 256, got {vocab_size}")
        tokens = np.fromfile(path, dtype=np.uint8)
        if len(tokens) == 0:
            raise DataError(f"{path}: is empty")
    return TokenData(tokens, os.path.basename(path))


def synthetic_batch(step: int, rank: int, world: int, batch: int, seq_len: int, vocab_size: int, seed: int,
                    device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Random tokens made on the device (no host copy): this rank's slice of the global batch
    drawn from (seed, step)."""
    g = torch.Generator(device=device).manual_seed(seed * 1_000_003 + step)
    t = torch.randint(0, vocab_size, (batch * world, seq_len + 1), device=device, generator=g)
    t = t[rank * batch:(rank + 1) * batch]
    return t[:, :-1], t[:, 1:]
