"""Process-level helpers every payload training loop shares.

Process group (Dist), device and precision set-up, the stop flag (Stop), the learning-rate
schedule, RNG state and crash-safe writes. Imports only torch, numpy, the standard library and
payloads/cpu.py.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import sys
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

if __package__:
    from .cpu import cpu_precision
else:  # run as a script: the siblings sit next to this file
    from cpu import cpu_precision  # type: ignore[no-redef]

PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}  # the rest run in fp32


class UsageError(Exception):
    """Bad arguments: one line on stderr, exit 2."""


class Dist:
    """Process-group facts; a single process is world 1, rank 0."""

    def __init__(self, device_kind: str):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.ctl = None
        if self.world > 1:
            if device_kind == "cuda":
                torch.cuda.set_device(self.local_rank)
            dist.init_process_group("nccl" if device_kind == "cuda" else "gloo")
            # Stop flags travel over a CPU group: agreeing to stop never syncs the GPU.
            self.ctl = dist.new_group(backend="gloo") if device_kind == "cuda" else None

    @property
    def main(self) -> bool:
        return self.rank == 0

    def any(self, flag: bool) -> bool:
        """True on every rank if it is true on any: all ranks stop at the same step."""
        return self.vote(flag)[0]

    def vote(self, *flags: bool) -> tuple[bool, ...]:
        """Each flag true on every rank if it is true on any, in one round trip over the CPU group:
        whatever a rank decides from its own clock or signals, all ranks then act at the same step."""
        if self.world == 1:
            return tuple(bool(f) for f in flags)
        t = torch.tensor([1 if f else 0 for f in flags], dtype=torch.int32)
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.ctl)
        return tuple(bool(v) for v in t.tolist())

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over the ranks (CPU group)."""
        if self.world == 1:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(t, group=self.ctl)
        return t.tolist()

    def average_buffers(self, module: torch.nn.Module) -> None:
        """Average floating-point buffers (BatchNorm running mean and variance) over the ranks.

        DDP runs with broadcast_buffers=False, so each rank's running statistics follow its own
        shard of the data (training itself uses batch statistics, never these); before they are
        used (evaluation) or kept (checkpoint) they become the mean over all ranks, as timm's
        distribute_bn does. Every rank must call this at the same step."""
        if self.world == 1:
            return
        bufs = [b for b in module.buffers() if b.is_floating_point()]
        if not bufs:
            return
        flat = torch.cat([b.detach().reshape(-1).float() for b in bufs])
        dist.all_reduce(flat)
        flat /= self.world
        for b, v in zip(bufs, flat.split([b.numel() for b in bufs])):
            b.copy_(v.view_as(b))

    def close(self) -> None:
        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def pick_device(want: str, local_rank: int) -> torch.device:
    if want == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is visible to torch")
    if want == "cpu" or (want == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    return torch.device("cuda", local_rank)


def start_process(want: str) -> tuple[Dist, torch.device]:
    """This process's group and device for the job's device choice ``want`` ('auto', 'cuda' or 'cpu').

    The group is NCCL when the job runs on CUDA ('cuda', or 'auto' with a GPU present), else gloo;
    the device is this rank's (``pick_device``). Raises UsageError where ``pick_device`` does.
    """
    dd = Dist("cuda" if want == "cuda" or (want == "auto" and torch.cuda.is_available()) else "cpu")
    return dd, pick_device(want, dd.local_rank)


def run_precision(precision: str, device: torch.device) -> tuple[str, str | None]:
    """(the precision this process trains at, the one line that says why when it is not the
    job's, else None). The job's on a GPU; on a CPU ``cpu.cpu_precision``: bf16 only where the
    CPU has it natively, else fp32, which is what the CPU probe measured. The caller logs the
    line with the start event, after any bad input has been refused in its own single line."""
    if device.type != "cpu":
        return precision, None
    chosen = cpu_precision(precision)
    if chosen == precision:
        return chosen, None
    # Fits 80 columns after the "[train] " tag; ~10x: jobs/tokenlm.yaml on 2 AVX2 cores, 294 tokens/s
    # fp32 vs 29 emulated bf16 (payloads/cpu.py).
    why = ("this CPU has no native bf16 (~10x slower)" if precision == "bf16" else f"{precision} is a GPU precision")
    return chosen, f"training in {chosen}, not {precision}: {why}"


def set_precision(precision: str, device: torch.device) -> tuple[Any, Any]:
    """(autocast context factory, GradScaler or None). fp32 is strict IEEE fp32 on GPUs."""
    tf32 = precision != "fp32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.set_float32_matmul_precision("high" if tf32 else "highest")
    # Fixed shapes: time the candidate conv kernels once and keep the fastest. Not in strict
    # fp32: there the candidates include non-tensor-core kernels that run for seconds each on
    # 224x224 activations (VGG16 on an H100: the first batch-128 step had not finished after
    # 150 s with autotuning; a batch-64 step takes 0.64 s without), while cuDNN's heuristic
    # pick already runs at ~75% of the fp32 peak.
    torch.backends.cudnn.benchmark = device.type == "cuda" and precision != "fp32"
    if precision in AUTOCAST_DTYPES:
        ctx = lambda: torch.autocast(device.type, dtype=AUTOCAST_DTYPES[precision])  # noqa: E731
    else:
        ctx = nullcontext
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    return ctx, scaler


def lr_at(step: int, total: int, base: float) -> float:
    """Linear warm-up then cosine decay; a function of the step alone, so resume needs no state."""
    warm = max(1, min(100, total // 20))
    if step < warm:
        return base * (step + 1) / warm
    t = (step - warm) / max(1, total - warm)
    return base * 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))


def rng_state(device: torch.device) -> dict[str, Any]:
    st = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if device.type == "cuda":
        st["cuda"] = torch.cuda.get_rng_state(device)
    return st


def set_rng_state(st: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(st["torch"])
    np.random.set_state(st["numpy"])
    random.setstate(st["python"])
    if device.type == "cuda" and "cuda" in st:
        torch.cuda.set_rng_state(st["cuda"], device)


def atomic_save(obj: Any, path: str) -> None:
    """Write to a temp file in the same folder, fsync, rename: a crash never leaves half a file."""
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    try:
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def atomic_write_text(text: str, path: str) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def log(msg: str) -> None:
    """One line on stderr, tagged with the rank when torchrun runs several (their lines interleave)."""
    print(f"{_log_tag()} {msg}", file=sys.stderr, flush=True)


def _log_tag() -> str:
    world = os.environ.get("WORLD_SIZE", "1")
    return f"[train rank {os.environ.get('RANK', '0')}/{world}]" if world not in ("", "1") else "[train]"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


PROFILED_STEPS = 3
# Library operations whose input shapes the JSON profile keeps (matrix and convolution calls that a
# compiled graph still makes through the dispatcher): the estimator's per-operation fit reads them.
_SHAPED_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::convolution",
               "aten::convolution_backward", "aten::_scaled_dot_product_flash_attention",
               "aten::_scaled_dot_product_flash_attention_backward", "aten::_scaled_dot_product_cudnn_attention",
               "aten::_scaled_dot_product_cudnn_attention_backward", "aten::_scaled_dot_product_efficient_attention",
               "aten::_scaled_dot_product_efficient_attention_backward")


def profile_steps(step: Any, device: torch.device, path: str, steps: int = PROFILED_STEPS) -> None:
    """Run ``step()`` ``steps`` times under torch.profiler and write JSON to ``path``:
    ``rows`` (per kernel name: count, self device and CPU microseconds) and ``shaped`` (the
    matrix/convolution/attention operations of ``_SHAPED_OPS`` per input shapes: count and
    device microseconds of the kernels they launched)."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts, record_shapes=True) as prof:
        for _ in range(steps):
            step()
        sync(device)
    rows = [{"name": e.key, "count": e.count, "device_us": round(e.self_device_time_total, 1),
             "cpu_us": round(e.self_cpu_time_total, 1), "device_type": str(e.device_type).rsplit(".", 1)[-1]}
            for e in prof.key_averages() if e.self_device_time_total > 0 or e.self_cpu_time_total > 0]
    shaped = [{"name": e.key, "shapes": [list(s) for s in e.input_shapes], "count": e.count,
               "device_us": round(e.device_time_total, 1)}
              for e in prof.key_averages(group_by_input_shape=True) if e.key in _SHAPED_OPS]
    atomic_write_text(json.dumps({"steps": steps, "rows": rows, "shaped": shaped}) + "\n", path)


class Stop:
    """SIGTERM/SIGINT set a flag; the loop finishes its step, checkpoints and exits 75."""

    def __init__(self) -> None:
        self.signal: int | None = None
        for s in (signal.SIGTERM, signal.SIGINT):
            signal.signal(s, self._handle)

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C means now
        self.signal = signum

    def agreed(self, dd: "Dist", cfg: dict[str, Any], step: int, total_steps: int, elapsed: float) -> str | None:
        """Why every rank stops after this step (None: go on); a collective when world > 1, so
        all ranks call it every step and stop at the same one."""
        want = self.reason(cfg, step, elapsed)
        if dd.any(want is not None) and step < total_steps:
            return want or "signal"
        return None

    def reason(self, cfg: dict[str, Any], step: int, elapsed: float) -> str | None:
        """Why the loop stops after this step: signal, max_steps or max_seconds; None: go on."""
        if self.signal is not None:
            return "signal"
        if cfg["max_steps"] is not None and step >= cfg["max_steps"]:
            return "max_steps"
        if cfg["max_seconds"] is not None and elapsed >= cfg["max_seconds"]:
            return "max_seconds"
        return None


def cpu_name() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None
