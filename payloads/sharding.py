"""Sharded data parallel (PyTorch FSDP2) and sharded checkpoints for the language model.

    apply_fsdp(model, param_dtype)      fully_shard each block, then the root (embeddings, head)
    save_checkpoint(folder, model, opt, meta)   torch.distributed.checkpoint, one file per rank
    load_checkpoint(folder, model, opt)          reads it back on any number of processes

Checkpoints go through ``torch.distributed.checkpoint.state_dict``, whose keys are the plain
module names whether the model is sharded (FSDP2), replicated (DDP) or alone: a checkpoint
written by 2 FSDP processes loads into 1 process or 4, and the other way round. Imports only
torch and the standard library.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

POINTER = "last.json"  # names the newest complete checkpoint folder

# What dcp.save/dcp.load say on every call in one process, even with no_dist=True (torch 2.3 to
# 2.13 at least): "torch.distributed is [disabled, ]unavailable or uninitialized, assuming the
# intent is to save|load in a single process". One process is intended here, and the warning
# would land in the middle of the user's run output; every other warning still shows.
_SINGLE_PROCESS_WARNING = r"torch\.distributed is (disabled, )?unavailable or uninitialized"


@contextmanager
def _dcp_call():
    """(no_dist for dcp.save/dcp.load), with their single-process warning silenced when there
    is no process group: that is this payload's intent, not something for the user to act on."""
    if dist.is_initialized():
        yield False
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_SINGLE_PROCESS_WARNING, category=UserWarning)
        yield True


def apply_fsdp(model: nn.Module, param_dtype: torch.dtype | None, device_type: str) -> nn.Module:
    """Shard ``model.blocks[i]`` one by one, then the root, over the default process group.

    ``param_dtype``: the dtype blocks compute in (bf16 for mixed precision: gathered weights
    are cast once per all-gather, gradients are reduced in fp32); None keeps fp32. The last
    block is not resharded after forward: backward needs it at once.
    """
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
    kw: dict[str, Any] = {"mp_policy": mp}
    if device_type == "cpu":
        from torch.distributed.device_mesh import init_device_mesh

        kw["mesh"] = init_device_mesh("cpu", (dist.get_world_size(),))
    n = len(model.blocks)
    for i, block in enumerate(model.blocks):
        fully_shard(block, reshard_after_forward=i < n - 1, **kw)
    fully_shard(model, **kw)
    return model


def _state(model: nn.Module, opt: torch.optim.Optimizer) -> dict[str, Any]:
    msd, osd = get_state_dict(model, opt, options=StateDictOptions())
    return {"model": msd, "optimizer": osd}


def save_checkpoint(root: str, step: int, model: nn.Module, opt: torch.optim.Optimizer, meta: dict[str, Any],
                    main: bool) -> str:
    """Write ``root/step-NNNNNNNN/`` (every rank its shards), then point ``root/last.json`` at it
    and remove older step folders. A crash mid-write leaves the previous checkpoint in force."""
    folder = os.path.join(root, f"step-{step:08d}")
    if main and os.path.isdir(folder):
        shutil.rmtree(folder)  # a half-written folder of this very step (the pointer never named it)
    if dist.is_initialized():
        dist.barrier()
    with _dcp_call() as no_dist:
        dcp.save(_state(model, opt), checkpoint_id=folder, no_dist=no_dist)
    if dist.is_initialized():
        dist.barrier()
    if main:
        tmp = os.path.join(root, f".{POINTER}.tmp-{os.getpid()}")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({**meta, "step": step, "folder": os.path.basename(folder)}, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, os.path.join(root, POINTER))
        for name in os.listdir(root):
            if name.startswith("step-") and name != os.path.basename(folder):
                shutil.rmtree(os.path.join(root, name), ignore_errors=True)
    return folder


def read_pointer(root: str) -> dict[str, Any] | None:
    """The newest checkpoint's metadata (``folder`` names it), or None when there is none."""
    try:
        with open(os.path.join(root, POINTER), encoding="utf-8") as f:
            meta = json.load(f)
    except FileNotFoundError:
        return None
    if not os.path.isdir(os.path.join(root, meta.get("folder", ""))):
        return None
    return meta


def load_checkpoint(root: str, meta: dict[str, Any], model: nn.Module, opt: torch.optim.Optimizer) -> None:
    """Load the checkpoint ``meta`` names into ``model`` and ``opt`` as they are sharded now."""
    state = _state(model, opt)
    with _dcp_call() as no_dist:
        dcp.load(state, checkpoint_id=os.path.join(root, meta["folder"]), no_dist=no_dist)
    set_state_dict(model, opt, model_state_dict=state["model"], optim_state_dict=state["optimizer"])


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole model's weights on the CPU (collective: every rank calls it; rank 0 gets them)."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
