#!/usr/bin/env python3
"""CPU training throughput of every built-in model, and its time per operation class, on this CPU.

    python3 bench/cpu_rates.py --out bench/results/cpu_rates.json [--threads 1,2] [--repeats 4]
                               [--configs vgg16:224:4,resnet50:224:8,...] [--max-wait-s 20] [--merge]

For each configuration (model, image size, batch) and thread count (``torch.set_num_threads``)
the payload's fp32 training step on a CPU (payloads/train.py ``train_step``: the payload's
model, channels_last, a synthetic batch, cross-entropy on ``output_logits``, ``make_optimizer``'s
foreach SGD with momentum) runs twice untimed, then ``--repeats`` timed repeats (each of one
step, or of enough steps to last 0.5 s for a small model). The machine is shared: before each
repeat the script waits (at most --max-wait-s) until no more than cores - threads other
threads are runnable (/proc/loadavg), and records the 1-minute load average
(``os.getloadavg``); the row keeps the fastest repeat (others only ever slow a step down) and the
load before it. Then three steps run under torch.profiler, one by one: each aten operation's
self CPU time is summed per operation class (``launcher.estimate.opcount.op_class``;
convolutions split into dense and grouped/depthwise by their weight shape), non-aten events
(autograd engine, optimizer bookkeeping) are ``other``, and per class the least of the three
steps is kept (an interrupted step inflates some classes only).

Each row also carries the model's per-class FLOPs, bytes and operation counts of one step at
that batch (``launcher.estimate.opcount`` through ``workload_cost``: the bundled table for
built-in models, counted on the meta device for the factory), so the fit
(``python -m launcher.estimate.cpufit``) needs nothing but this file. ``--merge`` adds a pass to
--out's rows, keeping per row the faster pass. Prints one JSON line per row, then writes --out.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# model:image_size:batch (factory: path.py:fn:image_size:batch, its settings in FACTORIES)
DEFAULT_CONFIGS = ("vgg16:224:4", "vgg11:224:4", "resnet50:224:8", "resnet18:224:16", "mobilenetv2:224:16",
                   "vit_b16:224:4", "tinycnn:32:64", "mlp:28:64", "jobs/models/unet.py:build:256:4")
SMALL = {"tinycnn": (10, 1), "mlp": (10, 1)}  # (classes, channels): the quickstart's digits shape
FACTORIES = {"jobs/models/unet.py:build": {"model_args": {"in_channels": 3, "num_classes": 21, "width": 32, "depth": 4},
                                           "num_classes": 21, "in_channels": 3}}
PROFILED_STEPS = 3
MIN_REPEAT_S = 0.5  # a timed repeat runs this long at least (several steps of a small model)


def parse_config(text: str) -> dict:
    head, size, batch = text.rsplit(":", 2)
    if head in FACTORIES:
        f = FACTORIES[head]
        return {"model": head, "image_size": int(size), "batch_size": int(batch), "num_classes": f["num_classes"],
                "in_channels": f["in_channels"], "model_args": f["model_args"]}
    classes, channels = SMALL.get(head, (1000, 3))
    return {"model": head, "image_size": int(size), "batch_size": int(batch), "num_classes": classes,
            "in_channels": channels, "model_args": {}}


def counts(cfg: dict) -> dict:
    """class -> {flops, bytes, kernels} of one fp32 eager step at the config's batch, with the
    convolutions' depthwise (grouped) share apart, and the step's training FLOPs per sample."""
    from launcher.estimate.flops import workload_cost
    from launcher.spec import Workload

    w = Workload(model=cfg["model"], image_size=cfg["image_size"], num_classes=cfg["num_classes"],
                 in_channels=cfg["in_channels"], model_args=cfg["model_args"],
                 input_shape=[cfg["in_channels"], cfg["image_size"], cfg["image_size"]]
                 if cfg["model"] in FACTORIES else None)
    cost = workload_cost(w, ROOT)
    from launcher.estimate.cpufit import step_counts

    return {"train_flops_per_sample": cost.train_flops_per_sample,
            "classes": step_counts(cost.ops, cfg["batch_size"])}


def build(cfg: dict):
    import torch
    import torch.nn.functional as F

    from payloads import data as D
    from payloads import models
    from payloads.factory import output_logits
    from payloads.train import SGD_LR, make_optimizer

    torch.manual_seed(0)
    device = torch.device("cpu")
    model = models.build(cfg["model"], cfg["num_classes"], cfg["in_channels"], cfg["image_size"],
                         cfg["model_args"] or None, str(ROOT))
    model.to(memory_format=torch.channels_last)
    shape = (cfg["in_channels"], cfg["image_size"], cfg["image_size"])
    model.eval()
    with torch.no_grad():
        label_shape = tuple(output_logits(model(torch.zeros(1, *shape))).shape[2:])
    model.train()
    x, y = D.synthetic_batch(cfg["batch_size"], cfg["in_channels"], cfg["image_size"], cfg["num_classes"], device,
                             0, False, shape=shape, label_shape=label_shape)
    x = x.contiguous(memory_format=torch.channels_last)
    opt = make_optimizer(model.parameters(), SGD_LR * 0.01, device)

    def step() -> None:  # payloads/train.py train_step, fp32 (no autocast, no scaler)
        loss = F.cross_entropy(output_logits(model(x)), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def _conv_split(name: str, shapes: list) -> str:
    """conv_depthwise for a depthwise weight ([C, 1, kh, kw] on C > 1 input channels) or one with
    fewer input channels than the input that is not a transposed convolution's ([C_in, C_out /
    groups, ...] on C_in input channels); otherwise conv (dense)."""
    back = "backward" in name
    x, w = (shapes[1], shapes[2]) if back and len(shapes) > 2 else (shapes[0], shapes[1]) if len(shapes) > 1 else ([], [])
    if len(x) < 3 or len(w) < 3:
        return "conv"
    if (w[1] == 1 and x[1] > 1) or (x[1] != w[1] and x[1] != w[0]):
        return "conv_depthwise"
    return "conv"


def _profile_one(step) -> tuple[dict, dict]:
    """(class -> self CPU seconds, class -> aten calls) of one step under torch.profiler."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    from launcher.estimate.opcount import op_class

    with torch_profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        step()
    secs: dict[str, float] = {}
    calls: dict[str, float] = {}
    for e in prof.key_averages(group_by_input_shape=True):
        if e.self_cpu_time_total <= 0:
            continue
        cls = "other"
        if e.key.startswith("aten::"):
            cls = op_class(e.key)
            if cls == "conv":
                cls = _conv_split(e.key, [list(s) for s in e.input_shapes])
            calls[cls] = calls.get(cls, 0.0) + e.count
        secs[cls] = secs.get(cls, 0.0) + e.self_cpu_time_total / 1e6
    return secs, calls


def profile(step, steps: int = PROFILED_STEPS) -> dict:
    """class -> self CPU microseconds of one step, the least over ``steps`` steps profiled one by
    one (a step the shared machine interrupted inflates some classes only), plus ``other``
    (non-aten events: autograd engine, optimizer bookkeeping) and each profiled step's wall time."""
    best: dict[str, float] = {}
    walls = []
    calls: dict = {}
    for _ in range(steps):
        t0 = time.perf_counter()
        secs, calls = _profile_one(step)
        walls.append(round(time.perf_counter() - t0, 5))
        for c, t in secs.items():
            best[c] = min(best.get(c, t), t)
    return {"self_us": {k: round(v * 1e6, 1) for k, v in sorted(best.items())},
            "aten_calls": {k: round(v, 1) for k, v in sorted(calls.items())}, "wall_s": walls}


def load() -> float:
    return round(os.getloadavg()[0], 2)


def others_running() -> int:
    """Runnable threads on the machine right now besides this one (/proc/loadavg's 4th field)."""
    try:
        return max(0, int(Path("/proc/loadavg").read_text().split()[3].split("/")[0]) - 1)
    except (OSError, IndexError, ValueError):
        return 0


def wait_quiet(threads: int, max_wait_s: float) -> int:
    """Wait (at most ``max_wait_s``) until no more than cores - threads other threads are runnable,
    so that a timed step has its cores; returns the runnable others seen last."""
    cores = len(os.sched_getaffinity(0))
    deadline = time.monotonic() + max_wait_s
    while True:
        busy = max(others_running() for _ in range(3))
        if busy <= cores - threads or time.monotonic() >= deadline:
            return busy
        time.sleep(0.2)


def measure(cfg: dict, threads: int, repeats: int, max_wait_s: float) -> dict:
    import torch

    torch.set_num_threads(threads)
    step = build(cfg)
    step()  # warm-up: allocations, oneDNN primitive creation
    t0 = time.perf_counter()
    step()
    k = max(1, math.ceil(MIN_REPEAT_S / (time.perf_counter() - t0)))  # steps per timed repeat
    times, loads, others = [], [], []
    for _ in range(repeats):
        others.append(wait_quiet(threads, max_wait_s))
        loads.append(load())
        t0 = time.perf_counter()
        for _ in range(k):
            step()
        times.append((time.perf_counter() - t0) / k)
    best = min(times)
    prof = profile(step)
    return {**{k: cfg[k] for k in ("model", "image_size", "batch_size", "num_classes", "in_channels")},
            "threads": threads, "precision": "fp32", "step_s": round(best, 5), "steps_per_repeat": k,
            "samples_per_second": round(cfg["batch_size"] / best, 4), "step_s_all": [round(t, 5) for t in times],
            "load": loads[times.index(best)], "loads": loads, "others_running": others, "profile": prof}


def merge(old: list, new: list) -> list:
    """Rows of both passes, one per (model, size, batch, threads): the faster (another pass's
    repeats are more repeats: the machine is shared, a slower step was interrupted), with the
    number of passes and every pass's fastest step."""
    key = lambda r: (r["model"], r["image_size"], r["batch_size"], r["threads"])  # noqa: E731
    out = {key(r): r for r in old}
    for r in new:
        prev = out.get(key(r))
        if prev is not None:
            steps = prev.get("pass_steps_s", [prev["step_s"]]) + [r["step_s"]]
            r = min(prev, r, key=lambda x: x["step_s"])
            r = {**r, "passes": len(steps), "pass_steps_s": steps}
        out[key(r)] = r
    return list(out.values())


def cpu_model() -> str:
    from launcher.estimate.baseline import cpu_name

    return cpu_name()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--configs", default=",".join(DEFAULT_CONFIGS))
    p.add_argument("--threads", default="1,2")
    p.add_argument("--repeats", type=int, default=4)
    p.add_argument("--max-wait-s", type=float, default=20.0,
                   help="before each timed step, wait up to this long for the other runnable threads to leave the cores")
    p.add_argument("--merge", action="store_true",
                   help="merge with --out's rows: per (model, size, batch, threads) the faster of the two passes")
    args = p.parse_args(argv)
    import torch

    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    fam = {k.strip(): v.strip() for k, v in (ln.split(":", 1) for ln in cpuinfo.splitlines()[:30] if ":" in ln)}
    host = {"cpu": cpu_model(), "cpu_family": fam.get("cpu family"), "cpu_model": fam.get("model"),
            "avx512f": "avx512f" in cpuinfo.split(), "cores": len(os.sched_getaffinity(0)),
            "torch": torch.__version__, "python": platform.python_version()}
    rows = []
    for text in args.configs.split(","):
        cfg = parse_config(text)
        c = counts(cfg)
        for threads in (int(t) for t in args.threads.split(",")):
            row = {**measure(cfg, threads, args.repeats, args.max_wait_s), **c}
            print(json.dumps({k: v for k, v in row.items() if k not in ("classes", "profile")}), flush=True)
            rows.append(row)
    if args.merge and Path(args.out).is_file():
        rows = merge(json.loads(Path(args.out).read_text())["rows"], rows)
    doc = {"about": "fp32 CPU training steps of the payload's models (bench/cpu_rates.py): fastest of the timed "
                    "repeats, per-class profiler self time, per-class counts of launcher/estimate/opcount.py",
           "command": "python3 bench/cpu_rates.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "host": host, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "rows": rows}
    Path(args.out).write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
