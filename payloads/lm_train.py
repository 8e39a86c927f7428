"""The training loop for the built-in language models (train.py hands ``--model lm-*`` here).

One process, DDP or FSDP2 under torchrun; AdamW (fused on CUDA) with fp32 master weights,
bf16 autocast (one process, DDP) or FSDP's bf16 parameters; each block compiled on its own;
optional activation checkpointing per block; gradient clipping at 1.0; sharded checkpoints
(payloads/sharding.py) that ``--resume`` reads on any process count.

Units: ``batch_size`` is sequences per process; ``samples_per_epoch`` counts tokens; the
protocol's ``samples`` and ``samples_per_second`` are tokens and tokens/s (``tokens_per_second``
says so explicitly), ``tflops_per_gpu`` uses lm_shapes.train_flops_per_token.

A user's factory fed tokens (``--model file.py:build`` with ``--seq-len`` and ``--vocab-size``: any
module mapping int64 token ids (batch, seq_len) to logits (batch, seq_len, vocab), or to an output
holding them as Hugging Face models return them: ``.logits``, a dict's ``"logits"``, a tuple's
first item; ``factory.output_logits``) trains in the same loop: one process or DDP, compiled whole, no FSDP or checkpointing (those wrap the built-in
model's blocks); its FLOPs per token are 6 x parameters (the matrix products' convention,
attention not counted) and it has no memory plan.
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
from typing import Any

import torch
import torch.distributed as dist

if __package__:
    from . import compile_cache, lm_data, lm_shapes, protocol, sharding
    from .factory import build_factory_model, is_factory, output_logits
    from .lm import build_lm, lm_loss
    from .runtime import (AUTOCAST_DTYPES, Dist, Stop, UsageError, atomic_save, atomic_write_text, cpu_name, log,
                          lr_at, profile_steps, run_precision, set_precision, start_process, sync)
else:  # run as a script: the siblings sit next to this file
    import compile_cache  # type: ignore[no-redef]
    import lm_data  # type: ignore[no-redef]
    import lm_shapes  # type: ignore[no-redef]
    import protocol  # type: ignore[no-redef]
    import sharding  # type: ignore[no-redef]
    from factory import build_factory_model, is_factory, output_logits  # type: ignore[no-redef]
    from lm import build_lm, lm_loss  # type: ignore[no-redef]
    from runtime import (AUTOCAST_DTYPES, Dist, Stop, UsageError, atomic_save,  # type: ignore[no-redef]
                         atomic_write_text, cpu_name, log, lr_at, profile_steps, run_precision, set_precision,
                         start_process, sync)

ADAMW_LR = 3e-4
ADAMW = dict(betas=(0.9, 0.95), weight_decay=0.1, eps=1e-8)
CLIP_NORM = 1.0
GIB = 1024**3


def _shape(cfg: dict[str, Any]) -> tuple[lm_shapes.LMShape | None, int]:
    """(the built-in model's shape, tokens per sequence); a factory has no shape (None)."""
    if is_factory(cfg["model"]):
        if not cfg["seq_len"] or not cfg["vocab_size"]:
            raise UsageError("a model factory trained on tokens needs seq_len and vocab_size")
        return None, cfg["seq_len"]
    try:
        shape = lm_shapes.resolve(cfg["model"], cfg["model_args"], cfg["vocab_size"], cfg["seq_len"])
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return shape, cfg["seq_len"] or shape.max_seq_len


def choose_parallel(cfg: dict[str, Any], shape: lm_shapes.LMShape, seq: int, world: int,
                    device: torch.device, compiled: bool) -> tuple[str, bool]:
    """(single | ddp | fsdp, activation checkpointing) for this run, from the config and the plan."""
    want, ac = cfg["parallel"], cfg["activation_checkpointing"]
    if shape is None:  # a factory: its blocks are unknown, so neither FSDP nor per-block checkpointing
        if want == "fsdp" or ac:
            raise UsageError("parallel: fsdp and activation_checkpointing apply to the built-in language models; "
                             "a model factory trains on one GPU or with DDP")
        return ("single" if world == 1 else "ddp"), False
    if world == 1:
        if want == "fsdp":
            raise UsageError("parallel: fsdp needs several processes (torchrun --nproc_per_node N)")
        mode = "single"
    elif want != "auto":
        mode = want
    elif device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        plan = lm_shapes.memory_plan(shape, seq, cfg["batch_size"], world=world, parallel="ddp",
                                     checkpointing=bool(ac), precision=cfg["precision"], compiled=compiled)
        mode = "ddp" if lm_shapes.fits(plan["total"], total) else "fsdp"
    else:
        mode = "ddp"
    if ac is None:
        ac = False
        if device.type == "cuda":
            total = torch.cuda.get_device_properties(device).total_memory
            plan = lm_shapes.memory_plan(shape, seq, cfg["batch_size"], world=world, parallel=mode,
                                         precision=cfg["precision"], compiled=compiled)
            ac = not lm_shapes.fits(plan["total"], total)
    return mode, ac


def build(cfg: dict[str, Any], shape: lm_shapes.LMShape, mode: str, ac: bool, device: torch.device,
          use_compile: bool) -> tuple[torch.nn.Module, torch.nn.Module, torch.optim.Optimizer]:
    """(model as trained, the module whose state is saved, optimizer). Same seed, same weights:
    small models are initialised whole on the host first, so sharded and unsharded runs start
    equal; on CUDA under FSDP every rank initialises only its shards (meta device first)."""
    half = cfg["precision"] in AUTOCAST_DTYPES
    meta = mode == "fsdp" and device.type == "cuda"
    torch.manual_seed(cfg["seed"])
    with torch.device("meta" if meta else (device if device.type == "cuda" else "cpu")):
        model = build_lm(shape) if shape is not None else build_factory_model(cfg["model"], cfg["model_args"])
    for block in getattr(model, "blocks", []) if shape is not None else []:
        block.checkpoint = ac
        if use_compile:
            block.compile()
    if shape is None and use_compile:
        model.compile()
    if mode == "fsdp":
        sharding.apply_fsdp(model, AUTOCAST_DTYPES[cfg["precision"]] if half else None, device.type)
        if meta:
            model.to_empty(device=device)
            model.init_weights()
    model.to(device)
    fused = device.type == "cuda"
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["learning_rate"] or ADAMW_LR, fused=fused,
                            foreach=None if fused else True, **ADAMW)
    trained = model
    if mode == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP

        trained = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    return trained, model, opt


def run(cfg: dict[str, Any]) -> int:
    stop = Stop()
    shape, seq = _shape(cfg)
    if cfg["precision"] == "fp16":
        raise UsageError("precision fp16 is not offered for language models; use bf16 (same speed, no loss scaling)")
    probe = cfg["probe_steps"] is not None or cfg["probe_seconds"] is not None
    dd, device = start_process(cfg["device"])
    precision, precision_note = run_precision(cfg["precision"], device)
    cfg = {**cfg, "precision": precision}
    emit = protocol.emit if dd.main else (lambda *a, **k: None)
    vocab = shape.vocab_size if shape is not None else cfg["vocab_size"]
    try:
        data = lm_data.open_tokens(cfg["dataset"], vocab)
    except lm_data.DataError as exc:
        raise UsageError(f"dataset: {exc}") from None
    autocast, _ = set_precision(cfg["precision"], device)
    use_compile = cfg["compile"] if cfg["compile"] is not None else device.type == "cuda"
    # Before anything compiles (torch.compile is lazy: the first step compiles), on the rank that reports.
    cache_state, cache_dirs = compile_cache.state(use_compile, device.type) if dd.main else (None, [])
    mode, ac = choose_parallel(cfg, shape, seq, dd.world, device, use_compile)
    if mode == "fsdp":  # FSDP casts the weights itself; autocast would only add casts
        from contextlib import nullcontext

        autocast = nullcontext
    model, raw, opt = build(cfg, shape, mode, ac, device, use_compile)
    loss_fn = torch.compile(lm_loss) if use_compile else lm_loss
    base_lr = cfg["learning_rate"] or ADAMW_LR

    batch = cfg["batch_size"]
    tokens_per_step = batch * seq * dd.world
    total_tokens = int(round(cfg["samples_per_epoch"] * cfg["epochs"]))
    total_steps = max(1, math.ceil(total_tokens / tokens_per_step))
    params = lm_shapes.param_count(shape) if shape is not None else sum(p.numel() for p in raw.parameters())
    flops_per_token = lm_shapes.train_flops_per_token(shape, seq) if shape is not None else 6.0 * params
    plan = lm_shapes.memory_plan(shape, seq, batch, world=dd.world, parallel=mode, checkpointing=ac,
                                 precision=cfg["precision"], compiled=use_compile) if shape is not None else None
    warmup = cfg["warmup_steps"] if cfg["warmup_steps"] is not None else (5 if device.type == "cuda" else 2)
    ckpt_root = os.path.join(cfg["output_dir"], "checkpoints", "lm")
    shape_cfg = {"model": cfg["model"], "seq_len": seq,
                 "shape": shape.to_dict() if shape is not None else {"model_args": cfg["model_args"], "vocab_size": vocab}}

    step = tokens = 0
    resumed_from = None
    if cfg["resume"] and not probe:
        meta = sharding.read_pointer(ckpt_root)
        if meta is None:
            log(f"--resume: no checkpoint under {ckpt_root}; starting from scratch")
        else:
            for key in ("shape", "seq_len"):
                if meta["config"].get(key) != shape_cfg[key]:
                    raise UsageError(f"--resume: {ckpt_root} was written with {key}={meta['config'].get(key)!r}, "
                                     f"this run has {key}={shape_cfg[key]!r}")
            sharding.load_checkpoint(ckpt_root, meta, raw, opt)
            step, tokens, resumed_from = meta["step"], meta["tokens"], meta["step"]
            log(f"resumed from {ckpt_root}/{meta['folder']} at step {step} (written by {meta['world_size']} "
                f"process(es), read by {dd.world})")

    def next_batch(at: int) -> tuple[torch.Tensor, torch.Tensor]:
        if data is None:
            return lm_data.synthetic_batch(at, dd.rank, dd.world, batch, seq, vocab, cfg["seed"], device)
        x, y = data.batch(at, dd.rank, dd.world, batch, seq, cfg["seed"])
        pin = device.type == "cuda"
        return x.to(device, non_blocking=pin), y.to(device, non_blocking=pin)

    def train_step(at: int, lr: float) -> torch.Tensor:
        for g in opt.param_groups:
            g["lr"] = lr
        x, y = next_batch(at)
        with autocast():
            loss = loss_fn(output_logits(model(x)), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP_NORM, foreach=True)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    def mean_loss(loss: torch.Tensor) -> float:
        """The global batch's loss (every rank calls it: an all-reduce when world > 1)."""
        if dd.world > 1:
            loss = loss.clone()
            dist.all_reduce(loss, op=dist.ReduceOp.AVG if device.type == "cuda" else dist.ReduceOp.SUM)
            if device.type != "cuda":  # gloo has no AVG
                loss /= dd.world
        return loss.item()

    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else (cpu_name() or "cpu")
    if precision_note and dd.main:
        log(precision_note)
    emit("start", model=cfg["model"], device=device.type, device_name=device_name, precision=cfg["precision"],
         world_size=dd.world, batch_size=batch, global_batch_size=batch * dd.world, total_samples=total_tokens,
         params=params, compile=bool(use_compile), channels_last=False, resumed_from_step=resumed_from,
         dataset=cfg["dataset"], steps=total_steps, host=socket.gethostname(), fast_layers={},
         seq_len=seq, tokens_per_step=tokens_per_step, parallel=mode, activation_checkpointing=ac,
         flops_per_token=flops_per_token, shape=shape.to_dict() if shape is not None else None,
         compile_cache=cache_state, compile_cache_dirs=cache_dirs)
    model.train()
    if probe:
        return _probe(cfg, dd, emit, device, stop, train_step, warmup, tokens_per_step, flops_per_token, plan,
                      mode, ac, use_compile, seq)

    t0 = time.monotonic()
    last_ckpt = t0
    steady_t = steady_tokens = None
    start_step = step
    log_t, log_tokens = t0, tokens
    last_loss = None
    reason = None
    loss = None

    def save(why: str) -> None:
        nonlocal last_ckpt
        meta = {"tokens": tokens, "world_size": dd.world, "parallel": mode, "config": shape_cfg}
        sharding.save_checkpoint(ckpt_root, step, raw, opt, meta, dd.main)
        emit("checkpoint", path=ckpt_root, step=step, reason=why)
        last_ckpt = time.monotonic()

    while step < total_steps:
        loss = train_step(step, lr_at(step, total_steps, base_lr))
        step += 1
        tokens += tokens_per_step
        if step - start_step == warmup and step < total_steps:
            sync(device)
            steady_t, steady_tokens = time.monotonic(), tokens
        if step % cfg["log_every"] == 0 or step == total_steps:
            last_loss = mean_loss(loss)
            now = time.monotonic()
            tps = (tokens - log_tokens) / max(now - log_t, 1e-9)
            emit("step", step=step, samples=tokens, loss=last_loss, elapsed=round(now - t0, 3),
                 samples_per_second=round(tps, 2), tokens_per_second=round(tps, 2),
                 tflops_per_gpu=round(tps * flops_per_token / dd.world / 1e12, 3),
                 epoch=round(tokens / cfg["samples_per_epoch"], 4), lr=lr_at(step - 1, total_steps, base_lr))
            log_t, log_tokens = now, tokens
        now = time.monotonic()
        reason = stop.agreed(dd, cfg, step, total_steps, now - t0)
        if reason:
            break
        if now - last_ckpt >= cfg["checkpoint_every_s"] and step < total_steps:
            save("periodic")

    sync(device)
    t_end = time.monotonic()
    elapsed = t_end - t0
    if loss is not None and (last_loss is None or step % cfg["log_every"]):
        last_loss = mean_loss(loss)
    if steady_t is not None and t_end > steady_t:
        tps = (tokens - steady_tokens) / (t_end - steady_t)
    else:
        tps = (tokens - start_step * tokens_per_step) / max(elapsed, 1e-9)
    save("signal" if reason == "signal" else (reason or "end"))
    end = dict(status="interrupted" if reason else "ok", steps=step, samples=tokens, elapsed=round(elapsed, 3),
               samples_per_second=round(tps, 2), tokens_per_second=round(tps, 2),
               tflops_per_gpu=round(tps * flops_per_token / dd.world / 1e12, 3), final_loss=last_loss,
               accuracy=None, **_memory(device, plan))
    emit("end", **end)
    weights = sharding.full_state_dict(raw) if not reason else None  # collective: every rank
    if dd.main:
        if weights is not None:
            atomic_save(weights, os.path.join(cfg["output_dir"], "model.pt"))
        atomic_write_text(json.dumps({"event": "end", **end}, indent=2) + "\n",
                          os.path.join(cfg["output_dir"], "metrics.json"))
    if dd.world > 1:
        dist.barrier(group=dd.ctl)
    dd.close()
    return protocol.EXIT_INTERRUPTED if reason else protocol.EXIT_OK


def _memory(device: torch.device, plan: dict[str, Any] | None) -> dict[str, Any]:
    """Measured peak (this rank) beside the planner's figure (none for a factory), in GiB."""
    out = {"planned_memory_gib": round(plan["total"] / GIB, 3) if plan else None}
    if device.type == "cuda":
        out["max_memory_allocated_gib"] = round(torch.cuda.max_memory_allocated(device) / GIB, 3)
    return out


def _probe(cfg: dict[str, Any], dd: Dist, emit: Any, device: torch.device, stop: Stop, train_step: Any,
           warmup: int, tokens_per_step: int, flops_per_token: float, plan: dict[str, Any], mode: str, ac: bool,
           use_compile: bool, seq: int) -> int:
    """Warm-up steps untimed (compile), then N steps or T seconds timed; one ``probe`` event."""
    n, limit = cfg["probe_steps"], cfg["probe_seconds"]
    lr = (cfg["learning_rate"] or ADAMW_LR) * 0.1
    t_warm = time.monotonic()
    first_step_s = None
    for i in range(warmup):
        loss = train_step(i, lr)
        if i == 0:
            sync(device)
            first_step_s = time.monotonic() - t_warm  # compile + autotune + the step itself
    sync(device)
    warmup_s = time.monotonic() - t_warm
    static_gib = torch.cuda.memory_allocated(device) / GIB if device.type == "cuda" else None
    t0 = time.monotonic()
    steps = 0
    while True:
        loss = train_step(warmup + steps, lr)
        steps += 1
        done = (n is not None and steps >= n) or (limit is not None and time.monotonic() - t0 >= limit)
        if dd.any(done or stop.signal is not None):
            break
    sync(device)
    seconds = time.monotonic() - t0
    if cfg["profile"] and cfg["profile"].endswith(".json"):  # a few more steps under the profiler
        profile_steps(lambda: train_step(warmup + steps, lr), device, cfg["profile"])
    tps = steps * tokens_per_step / seconds
    emit("probe", samples_per_second=round(tps, 3), tokens_per_second=round(tps, 3), steps=steps,
         seconds=round(seconds, 4), warmup_steps=warmup, device=device.type, precision=cfg["precision"],
         batch_size=cfg["batch_size"], global_batch_size=cfg["batch_size"] * dd.world, world_size=dd.world,
         model=cfg["model"], compile=bool(use_compile), channels_last=False, fast_layers=False, loss=loss.item(),
         first_step_seconds=round(first_step_s or 0.0, 4), warmup_seconds=round(warmup_s, 4), seq_len=seq, parallel=mode, activation_checkpointing=ac, flops_per_token=flops_per_token,
         tflops_per_gpu=round(tps * flops_per_token / dd.world / 1e12, 3),
         static_memory_gib=None if static_gib is None else round(static_gib, 3),
         memory_plan_gib={k: round(v / GIB, 3) for k, v in (plan or {}).items() if isinstance(v, float)},
         **_memory(device, plan))
    dd.close()
    return protocol.EXIT_OK
