#!/usr/bin/env python3
"""gpujob's built-in training payload.

Runs on the rented machine as ``python payloads/train.py --config job.json`` (or under
torchrun for several GPUs) and reports progress as JSON lines on stdout (protocol.py,
README.md). It never imports the launcher: only torch, numpy and its sibling modules.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import random
import socket
import sys
import time
import traceback
from typing import Any

if __package__:
    from . import data as D
    from . import compile_cache, fast_layers, lm_shapes, models, protocol
    from .runtime import (AUTOCAST_DTYPES, PRECISIONS, Dist, Stop, UsageError, atomic_save, atomic_write_text,
                          cpu_name, log, lr_at, profile_steps, rng_state, run_precision, set_precision,
                          set_rng_state, start_process, sync)
else:  # run as a script: the siblings, loaded as one private package (PRIVATE_PACKAGE)
    def _load_siblings(name: str) -> None:
        """Import this folder as package ``name`` without putting it on ``sys.path``: its modules
        (models.py, data.py, runtime.py) would otherwise take those top-level names from the
        user's own project (a ``models/`` package holding the factory of ``models.net:build``)."""
        import importlib.util

        here = os.path.dirname(os.path.abspath(__file__))
        sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here or p == ""]
        spec = importlib.util.spec_from_file_location(name, os.path.join(here, "__init__.py"),
                                                      submodule_search_locations=[here])
        package = importlib.util.module_from_spec(spec)
        sys.modules[name] = package
        spec.loader.exec_module(package)

    PRIVATE_PACKAGE = "gpujob_payload"
    _load_siblings(PRIVATE_PACKAGE)
    from gpujob_payload import data as D  # type: ignore[no-redef]
    from gpujob_payload import compile_cache, fast_layers, lm_shapes, models, protocol  # type: ignore[no-redef]
    from gpujob_payload.runtime import (AUTOCAST_DTYPES, PRECISIONS, Dist, Stop, UsageError,  # type: ignore[no-redef]
                                        atomic_save, atomic_write_text, cpu_name, log, lr_at, profile_steps,
                                        rng_state, run_precision, set_precision, start_process, set_rng_state, sync)

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

MODEL_CHOICES = models.MODEL_NAMES + lm_shapes.ALL_NAMES
SGD_LR = 0.1  # image models' default learning rate (language models: lm_train.ADAMW_LR)

# Defaults mirror launcher/spec.py's Workload, so a config with missing keys means the same.
DEFAULTS: dict[str, Any] = {
    "model": "resnet50", "image_size": 224, "num_classes": 1000, "in_channels": 3,
    "dataset": "synthetic", "samples_per_epoch": 1281167, "epochs": 1.0, "batch_size": 128,
    "precision": "bf16", "learning_rate": None, "compile": None, "channels_last": True,
    "output_dir": "outputs", "checkpoint_every_s": 600.0, "seed": 0, "max_seconds": None,
    "device": "auto", "resume": False, "log_every": 10, "warmup_steps": None,
    "probe_steps": None, "probe_seconds": None, "compile_mode": "default", "max_steps": None,
    "pad_channels": None, "profile": None, "fast_layers": None, "model_args": {}, "input_shape": None,
    # language models (payloads/lm_train.py); model_args then holds shape fields
    "seq_len": None, "vocab_size": None, "parallel": "auto", "activation_checkpointing": None,
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="train.py", description="gpujob training payload (JSON-lines progress on stdout)")
    S = argparse.SUPPRESS  # unset flags stay absent, so the config file's values survive
    p.add_argument("--config", help="JSON file whose keys are the workload fields; flags override it")
    p.add_argument("--model", default=S, help=f"{' | '.join(MODEL_CHOICES)} | package.module:callable | "
                                               "path/to/file.py:callable (relative to the working directory)")
    p.add_argument("--image-size", dest="image_size", type=int, default=S)
    p.add_argument("--num-classes", dest="num_classes", type=int, default=S)
    p.add_argument("--in-channels", dest="in_channels", type=int, default=S)
    p.add_argument("--dataset", default=S, help="synthetic | digits | PATH.npz | folder of class subfolders")
    p.add_argument("--samples-per-epoch", dest="samples_per_epoch", type=int, default=S)
    p.add_argument("--epochs", type=float, default=S)
    p.add_argument("--batch-size", dest="batch_size", type=int, default=S, help="per process")
    p.add_argument("--precision", choices=PRECISIONS, default=S)
    p.add_argument("--lr", dest="learning_rate", type=float, default=S)
    p.add_argument("--compile", dest="compile", action=argparse.BooleanOptionalAction, default=S,
                   help="torch.compile the model (default: on for CUDA, off for CPU)")
    p.add_argument("--compile-mode", dest="compile_mode", default=S,
                   help="torch.compile mode: default | reduce-overhead | max-autotune | max-autotune-no-cudagraphs")
    p.add_argument("--channels-last", dest="channels_last", action=argparse.BooleanOptionalAction, default=S)
    p.add_argument("--fast-layers", dest="fast_layers", action=argparse.BooleanOptionalAction, default=S,
                   help="same math, faster GPU kernels: conv+bias+ReLU fused, ResNet stem as space-to-depth "
                        "(default: on for CUDA)")
    p.add_argument("--pad-channels", dest="pad_channels", type=int, default=S,
                   help="zero-pad the input to this many channels (aligned first conv on GPUs; default: auto)")
    p.add_argument("--output-dir", dest="output_dir", default=S)
    p.add_argument("--checkpoint-every-s", dest="checkpoint_every_s", type=float, default=S)
    p.add_argument("--resume", action="store_true", default=S, help="continue from OUTPUT_DIR/checkpoints/last.pt")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=S)
    p.add_argument("--seed", type=int, default=S)
    p.add_argument("--log-every", dest="log_every", type=int, default=S, help="steps between step events")
    p.add_argument("--max-seconds", dest="max_seconds", type=float, default=S,
                   help="stop (checkpoint, exit 75) after this many seconds of training")
    p.add_argument("--max-steps", dest="max_steps", type=int, default=S,
                   help="stop (checkpoint, exit 75) after this global step, as if signalled")
    p.add_argument("--probe-steps", dest="probe_steps", type=int, default=S)
    p.add_argument("--probe-seconds", dest="probe_seconds", type=float, default=S)
    p.add_argument("--warmup-steps", dest="warmup_steps", type=int, default=S)
    p.add_argument("--profile", default=S, help="probe mode: write a torch.profiler per-op/per-shape table to this file")
    lm = p.add_argument_group("language models (--model gpt2-124m, lm-1b, ...; payloads/lm_train.py)")
    lm.add_argument("--seq-len", dest="seq_len", type=int, default=S, help="tokens per sequence")
    lm.add_argument("--vocab-size", dest="vocab_size", type=int, default=S)
    lm.add_argument("--parallel", choices=("auto", "ddp", "fsdp"), default=S,
                    help="several processes: DDP, or FSDP2 (fully_shard per block); auto: FSDP when DDP does not fit")
    lm.add_argument("--activation-checkpointing", dest="activation_checkpointing",
                    action=argparse.BooleanOptionalAction, default=S, help="recompute each block in backward")
    return p


def load_config(argv: list[str] | None) -> dict[str, Any]:
    args = vars(build_parser().parse_args(argv))
    cfg = dict(DEFAULTS)
    path = args.pop("config", None)
    if path:
        try:
            with open(path, encoding="utf-8") as f:
                file_cfg = json.load(f)
        except FileNotFoundError:
            raise UsageError(f"--config {path}: no such file") from None
        except (OSError, ValueError) as exc:
            raise UsageError(f"--config {path}: not a readable JSON file ({exc})") from None
        if not isinstance(file_cfg, dict):
            raise UsageError(f"--config {path}: must hold a JSON object of workload fields")
        unknown = sorted(set(file_cfg) - set(DEFAULTS))
        if unknown:
            raise UsageError(f"--config {path}: unknown key(s) {', '.join(unknown)}")
        cfg.update(file_cfg)
    cfg.update(args)
    _validate(cfg)
    return cfg


def _validate(cfg: dict[str, Any]) -> None:
    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise UsageError(msg)

    need(isinstance(cfg["model"], str) and (cfg["model"] in MODEL_CHOICES or models.is_factory(cfg["model"])),
         f"model {cfg['model']!r} is not one of {', '.join(MODEL_CHOICES)} nor a factory 'module:callable'")
    need(isinstance(cfg["model_args"], dict), f"model_args must be a JSON object, got {cfg['model_args']!r}")
    shape = cfg["input_shape"]
    need(shape is None or (isinstance(shape, list) and 1 <= len(shape) <= 4
                           and all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in shape)),
         f"input_shape must be a list of 1 to 4 positive whole numbers, got {shape!r}")
    need(cfg["precision"] in PRECISIONS, f"precision {cfg['precision']!r} is not one of {', '.join(PRECISIONS)}")
    for key, lo in (("image_size", 8), ("num_classes", 2), ("in_channels", 1), ("samples_per_epoch", 1),
                    ("batch_size", 1), ("log_every", 1)):
        v = cfg[key]
        need(isinstance(v, int) and not isinstance(v, bool) and v >= lo, f"{key} must be a whole number >= {lo}, got {v!r}")
    for key in ("epochs", "checkpoint_every_s"):
        v = cfg[key]
        need(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0, f"{key} must be a positive number, got {v!r}")
    for key in ("max_seconds", "probe_seconds", "learning_rate"):
        v = cfg[key]
        need(v is None or (isinstance(v, (int, float)) and v > 0), f"{key} must be a positive number, got {v!r}")
    for key in ("max_steps", "probe_steps", "warmup_steps", "pad_channels"):
        v = cfg[key]
        need(v is None or (isinstance(v, int) and v >= 0), f"{key} must be a whole number >= 0, got {v!r}")
    need(cfg["device"] in ("auto", "cpu", "cuda"), f"device must be auto, cpu or cuda, got {cfg['device']!r}")
    need(cfg["parallel"] in ("auto", "ddp", "fsdp"), f"parallel must be auto, ddp or fsdp, got {cfg['parallel']!r}")
    for key in ("seq_len", "vocab_size"):
        v = cfg[key]
        need(v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 2), f"{key} must be a whole number >= 2, got {v!r}")
    for key in ("compile", "fast_layers", "activation_checkpointing"):
        need(cfg[key] in (None, True, False), f"{key} must be true, false or null, got {cfg[key]!r}")
    need(isinstance(cfg["channels_last"], bool), f"channels_last must be true or false, got {cfg['channels_last']!r}")
    need(isinstance(cfg["dataset"], str) and cfg["dataset"] != "", "dataset must be a non-empty string")


def make_optimizer(params: Any, lr: float, device: torch.device) -> torch.optim.Optimizer:
    kw = dict(lr=lr, momentum=0.9, weight_decay=1e-4)
    if device.type == "cuda":
        try:  # one fused kernel for all parameters; also takes GradScaler's inf check without a sync
            return torch.optim.SGD(params, fused=True, **kw)
        except (RuntimeError, TypeError, ValueError):
            pass
    return torch.optim.SGD(params, foreach=True, **kw)


# --- the run --------------------------------------------------------------------------


def run(cfg: dict[str, Any]) -> int:
    # Language models, and factories fed tokens (seq_len set), train in their own loop.
    if lm_shapes.is_lm(cfg["model"]) or (models.is_factory(cfg["model"]) and cfg["seq_len"]):
        if __package__:
            from . import lm_train
        else:
            from gpujob_payload import lm_train  # type: ignore[no-redef]
        return lm_train.run(cfg)
    cfg = {**cfg, "learning_rate": cfg["learning_rate"] or SGD_LR}
    stop = Stop()
    probe = cfg["probe_steps"] is not None or cfg["probe_seconds"] is not None
    dd, device = start_process(cfg["device"])
    precision, precision_note = run_precision(cfg["precision"], device)
    cfg = {**cfg, "precision": precision}
    emit = protocol.emit if dd.main else (lambda *a, **k: None)
    autocast, scaler = set_precision(cfg["precision"], device)
    use_compile = cfg["compile"] if cfg["compile"] is not None else device.type == "cuda"
    # Before anything compiles (torch.compile is lazy: the first step compiles), on the rank that reports.
    cache_state, cache_dirs = compile_cache.state(use_compile, device.type) if dd.main else (None, [])
    channels_last = bool(cfg["channels_last"])
    batch = cfg["batch_size"]
    global_batch = batch * dd.world
    total_samples = int(round(cfg["samples_per_epoch"] * cfg["epochs"]))
    total_steps = max(1, math.ceil(total_samples / global_batch))
    steps_per_epoch = max(1, math.ceil(cfg["samples_per_epoch"] / global_batch))
    warmup = cfg["warmup_steps"]
    if warmup is None:
        warmup = 10 if device.type == "cuda" else 3
    in_ch = cfg["in_channels"]
    user_model = models.is_factory(cfg["model"])
    # Fast layers rewrite our built-in architectures' patterns; a user's model runs as written.
    fast = cfg["fast_layers"] if cfg["fast_layers"] is not None else device.type == "cuda" and not user_model
    shape = tuple(cfg["input_shape"] or (in_ch, cfg["image_size"], cfg["image_size"]))
    # Tensor cores want the channel count a multiple of 8 (16 bytes); a 3-channel first
    # conv falls onto slow kernels. Zero channels change no result, only alignment. (The
    # space-to-depth ResNet stem aligns its own input: 4 phases x 4 channels.)
    pad_to = cfg["pad_channels"]
    if pad_to is None:
        pad_models = ("vgg",) if fast else ("vgg", "resnet")
        pad_to = 8 if device.type == "cuda" and in_ch % 8 and not user_model \
            and cfg["model"].startswith(pad_models) else in_ch
    pad_to = max(pad_to, in_ch)

    ckpt_dir = os.path.join(cfg["output_dir"], "checkpoints")
    ckpt_path = os.path.join(ckpt_dir, "last.pt")
    torch.manual_seed(cfg["seed"])
    np.random.seed(cfg["seed"])
    random.seed(cfg["seed"])

    data = D.open_dataset(cfg["dataset"], cfg["image_size"], in_ch, cfg["num_classes"])

    model = models.build(cfg["model"], cfg["num_classes"], pad_to, cfg["image_size"], cfg["model_args"])
    # Labels of one sample: a class index per output position beyond the class dimension
    # (a classifier: none; a segmenter's [classes, H, W] output: [H, W]).
    vocab = cfg["vocab_size"] if user_model else None  # a classifier fed token ids (the LM loop takes seq_len)
    label_shape = _label_shape(model, shape, cfg["num_classes"], vocab) if user_model else ()
    if user_model:
        models.check_trainable(model, cfg["model"])
    if label_shape and data is not None:
        raise models.FactoryError(f"the model's output has a class per position ([batch, classes, "
                                  f"{', '.join(map(str, label_shape))}]), so it needs a label per position; "
                                  f"dataset {cfg['dataset']} has one label per image: use dataset: synthetic")
    rewritten = {}
    if fast:
        rewritten = fast_layers.rewrite(model, AUTOCAST_DTYPES.get(cfg["precision"]))
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    raw = model
    params = sum(p.numel() for p in raw.parameters())
    opt = make_optimizer(raw.parameters(), cfg["learning_rate"], device)

    step = samples = 0
    resumed_from = None
    if cfg["resume"] and not probe:
        if os.path.exists(ckpt_path):
            ck = torch.load(ckpt_path, map_location=device, weights_only=False)
            for key in ("model", "num_classes", "in_channels", "image_size", "batch_size"):
                if ck["config"].get(key) != cfg[key] and not (key == "batch_size" and ck["config"].get("global_batch_size") == global_batch):
                    raise UsageError(f"--resume: {ckpt_path} was written with {key}={ck['config'].get(key)!r}, "
                                     f"this run has {key}={cfg[key]!r}")
            raw.load_state_dict(ck["model"])
            opt.load_state_dict(ck["optimizer"])
            if scaler is not None and ck.get("scaler"):
                scaler.load_state_dict(ck["scaler"])
            step, samples, resumed_from = ck["step"], ck["samples"], ck["step"]
            set_rng_state(ck["rng"], device)
            ck_global = ck["config"].get("global_batch_size", global_batch)
            if ck_global != global_batch:
                # Another number of processes: steps are counted in global batches, samples are
                # not, so the step (and with it the schedule and the data position) follows them.
                step = samples // global_batch
                log(f"checkpoint's global batch was {ck_global}, now {global_batch}: "
                    f"{samples} samples done = step {step} of {total_steps}")
            log(f"resumed from {ckpt_path} at step {step}")
        else:
            log(f"--resume: no checkpoint at {ckpt_path}; starting from scratch")
    if dd.world > 1:
        # Different dropout per rank. A checkpoint holds rank 0's RNG only: restoring it on every
        # rank would give all of them the same masks, so each rank seeds from (seed, rank, step).
        torch.manual_seed(cfg["seed"] + 1000 * dd.rank + 1_000_003 * step)

    model = raw
    if dd.world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        # broadcast_buffers=False: no per-step broadcast of rank 0's BatchNorm statistics; they
        # are averaged over the ranks before evaluation and checkpoints (Dist.average_buffers).
        model = DDP(raw, device_ids=[device.index] if device.type == "cuda" else None, gradient_as_bucket_view=True,
                    broadcast_buffers=False)
    if use_compile:
        mode = None if cfg["compile_mode"] in (None, "default") else cfg["compile_mode"]
        model = torch.compile(model, mode=mode)

    # Data: synthetic lives on the device; real data comes through a worker DataLoader.
    pin = device.type == "cuda"
    if data is None:
        x_syn, y_syn = D.synthetic_batch(batch, in_ch, cfg["image_size"], cfg["num_classes"], device,
                                         cfg["seed"] + dd.rank, False, shape=shape, label_shape=label_shape,
                                         vocab=vocab)
        x_syn = _prep(x_syn, pad_to, channels_last)
        batches: Any = None
    else:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", dd.world))
        if data.in_memory:
            workers = 2 if device.type == "cuda" else 0  # in-memory batches are slicing: no decode work
        else:
            workers = max(1, min(8, cpus // max(1, local_world) - 1))
        batches = D.train_batches(data, batch, dd.world, dd.rank, cfg["seed"], step, workers, pin)

    def next_batch() -> tuple[torch.Tensor, torch.Tensor]:
        if batches is None:
            return x_syn, y_syn
        x, y = next(batches)
        x = x.to(device, non_blocking=pin)
        return _prep(x, pad_to, channels_last), y.to(device, non_blocking=pin)

    def train_step(x: torch.Tensor, y: torch.Tensor, lr: float) -> torch.Tensor:
        for g in opt.param_groups:
            g["lr"] = lr
        with autocast():
            loss = F.cross_entropy(models.output_logits(model(x)), y)
        opt.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
        return loss.detach()

    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else (cpu_name() or "cpu")
    if precision_note and dd.main:
        log(precision_note)
    emit("start", model=cfg["model"], device=device.type, device_name=device_name, precision=cfg["precision"],
         world_size=dd.world, batch_size=batch, global_batch_size=global_batch, total_samples=total_samples,
         params=params, compile=bool(use_compile), channels_last=channels_last, resumed_from_step=resumed_from,
         dataset=cfg["dataset"], steps=total_steps, host=socket.gethostname(), fast_layers=rewritten,
         compile_cache=cache_state, compile_cache_dirs=cache_dirs)

    model.train()
    if probe:
        return _probe(cfg, dd, emit, device, stop, next_batch, train_step, warmup, batch, global_batch,
                      use_compile, fast)

    # --- training loop ---
    t0 = time.monotonic()
    last_ckpt = t0
    steady_t = steady_samples = None  # clock and samples once warm-up (compile) is over
    start_step, start_samples = step, samples
    log_t, log_samples = t0, samples
    loss_sum = torch.zeros((), device=device)  # epoch loss accumulates on the device: no sync
    loss_count = 0
    last_loss = None
    accuracy = None
    reason = None
    epoch = step // steps_per_epoch

    def save(why: str) -> None:
        """Every rank calls it at the same step; rank 0 alone writes."""
        nonlocal last_ckpt
        dd.average_buffers(raw)
        if dd.main:
            state = {"model": raw.state_dict(), "optimizer": opt.state_dict(),
                     "scaler": scaler.state_dict() if scaler is not None else None,
                     "step": step, "samples": samples, "epoch": step / steps_per_epoch, "rng": rng_state(device),
                     "config": {**{k: cfg[k] for k in ("model", "num_classes", "in_channels", "image_size",
                                                        "batch_size", "precision", "dataset", "seed")},
                                "global_batch_size": global_batch, "pad_channels": pad_to}}
            atomic_save(state, ckpt_path)
            emit("checkpoint", path=ckpt_path, step=step, reason=why)
        last_ckpt = time.monotonic()

    while step < total_steps:
        x, y = next_batch()
        loss = train_step(x, y, lr_at(step, total_steps, cfg["learning_rate"]))
        step += 1
        samples += global_batch
        loss_sum += loss
        loss_count += 1
        if step - start_step == warmup and step < total_steps:
            sync(device)
            steady_t, steady_samples = time.monotonic(), samples
        if step % cfg["log_every"] == 0 or step == total_steps:
            last_loss = loss.item()  # the only sync in the loop, at log steps
            now = time.monotonic()
            emit("step", step=step, samples=samples, loss=last_loss, elapsed=round(now - t0, 3),
                 samples_per_second=round((samples - log_samples) / max(now - log_t, 1e-9), 2),
                 epoch=round(samples / cfg["samples_per_epoch"], 4), lr=lr_at(step - 1, total_steps, cfg["learning_rate"]))
            log_t, log_samples = now, samples
        if step % steps_per_epoch == 0 or step == total_steps:
            epoch = math.ceil(step / steps_per_epoch)
            mean_loss = (loss_sum / max(1, loss_count)).item()
            dd.average_buffers(raw)
            accuracy = evaluate(raw, data, batch, device, autocast, pad_to, channels_last, dd)
            model.train()
            emit("epoch", epoch=epoch, samples=samples, loss=mean_loss, accuracy=accuracy,
                 elapsed=round(time.monotonic() - t0, 3))
            loss_sum.zero_()
            loss_count = 0
        now = time.monotonic()
        want_stop = stop.reason(cfg, step, now - t0)
        # One vote for all three, so every rank stops, checkpoints or gives up at the same step
        # (a checkpoint averages BatchNorm statistics: a collective every rank must join).
        diverged = last_loss is not None and not math.isfinite(last_loss)
        stop_any, due_any, diverged_any = dd.vote(want_stop is not None, now - last_ckpt >= cfg["checkpoint_every_s"],
                                                  diverged)
        if diverged_any:
            # Non-finite weights are worth nothing: keep the last checkpoint as it is.
            msg = (f"training diverged: the loss is not finite at step {step} (lr {cfg['learning_rate']:g}); "
                   f"lower learning_rate; the last checkpoint, if any, is left as it was")
            log(msg)
            emit("error", message=msg)
            dd.close()
            return protocol.EXIT_TRAINING_ERROR
        if stop_any and step < total_steps:
            reason = want_stop or "signal"
            break
        if due_any and step < total_steps:
            save("periodic")

    sync(device)
    t_end = time.monotonic()
    elapsed = t_end - t0
    if last_loss is None or step % cfg["log_every"]:
        last_loss = loss.item() if step > start_step else last_loss
    if steady_t is not None and t_end > steady_t:
        sps = (samples - steady_samples) / (t_end - steady_t)
    else:
        sps = (samples - start_samples) / max(elapsed, 1e-9)
    save("signal" if reason == "signal" else (reason or "end"))
    status = "interrupted" if reason else "ok"
    # warmup_seconds: from the loop's start to the first steady step (compile, autotuning).
    end = dict(status=status, steps=step, samples=samples, elapsed=round(elapsed, 3),
               samples_per_second=round(sps, 2), final_loss=last_loss, accuracy=accuracy,
               warmup_seconds=round(steady_t - t0, 3) if steady_t is not None else None)
    emit("end", **end)
    if dd.main:
        if not reason:
            atomic_save(raw.state_dict(), os.path.join(cfg["output_dir"], "model.pt"))
        atomic_write_text(json.dumps({"event": "end", **end}, indent=2) + "\n", os.path.join(cfg["output_dir"], "metrics.json"))
    if os.environ.get("GPUJOB_TEST_DUMP_RANK_WEIGHTS"):  # tests compare the ranks' final weights
        torch.save(raw.state_dict(), os.path.join(cfg["output_dir"], f"rank{dd.rank}.pt"))
    if dd.world > 1:
        dist.barrier(group=dd.ctl)  # rank 0 finished writing before anyone exits
    dd.close()
    return protocol.EXIT_INTERRUPTED if reason else protocol.EXIT_OK


def _probe(cfg: dict[str, Any], dd: Dist, emit: Any, device: torch.device, stop: Stop, next_batch: Any,
           train_step: Any, warmup: int, batch: int, global_batch: int, use_compile: bool, fast: bool) -> int:
    """Warm-up steps untimed (compile, cudnn autotune), then N steps or T seconds timed."""
    n, limit = cfg["probe_steps"], cfg["probe_seconds"]
    lr = cfg["learning_rate"] * 0.01  # small: a probe must not diverge into NaN/inf slow paths
    t_warm = time.monotonic()
    first_step_s = None
    for i in range(warmup):
        loss = train_step(*next_batch(), lr)
        if i == 0:
            sync(device)
            first_step_s = time.monotonic() - t_warm  # compile + autotune + the step itself
    sync(device)
    warmup_s = time.monotonic() - t_warm
    text_profile = cfg["profile"] and not cfg["profile"].endswith(".json")
    prof = _profiler(device) if text_profile else None
    t0 = time.monotonic()
    steps = 0
    while True:
        loss = train_step(*next_batch(), lr)
        steps += 1
        done = (n is not None and steps >= n) or (limit is not None and time.monotonic() - t0 >= limit)
        if dd.any(done or stop.signal is not None):
            break
    sync(device)
    seconds = time.monotonic() - t0
    if prof is not None:
        prof.__exit__(None, None, None)
        key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
        with open(cfg["profile"], "w", encoding="utf-8") as f:
            f.write(f"# {steps} steps, {seconds:.3f} s (profiler overhead included)\n")
            f.write(prof.key_averages().table(sort_by=key, row_limit=45, max_name_column_width=90) + "\n")
            f.write(prof.key_averages(group_by_input_shape=True).table(sort_by=key, row_limit=45,
                                                                        max_name_column_width=60) + "\n")
    elif cfg["profile"]:  # JSON: a few more steps under the profiler, after the timed (unprofiled) ones
        profile_steps(lambda: train_step(*next_batch(), lr), device, cfg["profile"])
    emit("probe", samples_per_second=round(steps * global_batch / seconds, 3), steps=steps,
         seconds=round(seconds, 4), warmup_steps=warmup, device=device.type, precision=cfg["precision"],
         batch_size=batch, global_batch_size=global_batch, world_size=dd.world, model=cfg["model"],
         compile=bool(use_compile), channels_last=cfg["channels_last"], fast_layers=fast, loss=loss.item(),
         first_step_seconds=round(first_step_s or 0.0, 4), warmup_seconds=round(warmup_s, 4),
         interrupted=stop.signal is not None)  # cut short by a signal: not a measurement
    dd.close()
    return protocol.EXIT_OK



def _profiler(device: torch.device) -> Any:
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    prof = profile(activities=acts, record_shapes=True)
    prof.__enter__()
    return prof


def _label_shape(model: torch.nn.Module, shape: tuple, num_classes: int, vocab: int | None = None) -> tuple:
    """Output shape of one sample past the class dimension: one eval-mode forward of one sample
    (on the host, before the model moves to the device). FactoryError when the model's logits
    have fewer classes than the labels (num_classes): cross-entropy would fail at the first step."""
    was = model.training
    model.eval()
    with torch.no_grad():
        out = models.output_logits(model(torch.zeros(1, *shape, dtype=torch.long if vocab else torch.float32)))
    model.train(was)
    models.check_classes(tuple(out.shape), num_classes)
    return tuple(out.shape[2:])


def _prep(x: torch.Tensor, pad_to: int, channels_last: bool) -> torch.Tensor:
    if x.dim() == 4 and pad_to > x.shape[1]:
        x = F.pad(x, (0, 0, 0, 0, 0, pad_to - x.shape[1]))
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


@torch.no_grad()
def evaluate(raw: torch.nn.Module, data: Any, batch: int, device: torch.device, autocast: Any, pad_to: int,
             channels_last: bool, dd: Dist) -> float | None:
    """Top-1 accuracy on the held-out split, with the uncompiled module (no eval-mode recompile).
    Every rank scores its share of the batches and the counts are summed, so no rank idles in
    a collective (NCCL's watchdog ends those after 10 minutes) while another evaluates."""
    if data is None or data.eval is None:
        return None
    raw.eval()
    correct = total = 0
    for x, y in D.eval_batches(data, batch, 0, False, dd.rank, dd.world):
        x = _prep(x.to(device), pad_to, channels_last)
        with autocast():
            pred = models.output_logits(raw(x)).argmax(dim=1)
        correct += int((pred.cpu() == y).sum())
        total += len(y)
    raw.train()
    correct, total = dd.sum([correct, total])
    return round(correct / max(1, total), 4)


def main(argv: list[str] | None = None) -> int:
    try:
        cfg = load_config(argv)
        return run(cfg)
    except UsageError as exc:
        print(f"train.py: error: {exc}", file=sys.stderr, flush=True)
        return protocol.EXIT_BAD_INPUT
    except D.DataError as exc:
        print(f"train.py: dataset error: {exc}", file=sys.stderr, flush=True)
        return protocol.EXIT_BAD_INPUT
    except models.FactoryError as exc:
        print(f"train.py: model error: {exc}", file=sys.stderr, flush=True)
        protocol.emit("error", message=str(exc))
        return protocol.EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("train.py: interrupted before a checkpoint could be written", file=sys.stderr, flush=True)
        return 130
    except Exception as exc:  # report it in the protocol too, so the launcher can show why
        traceback.print_exc()
        try:
            where = f"rank {os.environ.get('RANK')}: " if os.environ.get("WORLD_SIZE", "1") not in ("", "1") else ""
            protocol.emit("error", message=f"{where}{type(exc).__name__}: {exc}"[:2000])
        except Exception:
            pass
        return protocol.EXIT_TRAINING_ERROR


if __name__ == "__main__":
    rc = main()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # Under torchrun, skip interpreter teardown: gloo's threads can still be unwinding after
        # destroy_process_group, and C++ static destructors then abort the process (SIGABRT,
        # "terminate called without an active exception") after training already succeeded.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)
    # Interpreter teardown's last garbage collections walk every object torch made: 0.6-1.8 s
    # after the job's last write on a 2-core CPU (bench/outside_phases.py, cli_wind_down).
    # Frozen objects are not walked; atexit handlers still run, and every file is closed already.
    gc.freeze()
    sys.exit(rc)
