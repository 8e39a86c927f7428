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
(``python -m launcher.estimate.cpufit``) needs nothing but this file. Token models
(``TOKEN_MODELS``, model:seq_len:batch) run payloads/lm_train.py's step instead (AdamW foreach,
gradient clipping, ``lm_loss``), counted per token. ``--merge`` adds a pass to --out's rows: per
row the faster pass's, each class's profiled time the least of both. ``--checks`` probes token
models through the CPU baseline's own probe as checks that are never fitted. Prints one JSON line
per row, then writes --out.
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
                   "vit_b16:224:4", "tinycnn:32:64", "mlp:28:64", "jobs/models/unet.py:build:256:4",
                   "mobilenetv2:224:64", "resnet50:224:32",  # a larger batch of the same models
                   "jobs/models/tokenlm.py:build:512:4", "gpt2-124m:512:1")  # token models: model:seq_len:batch
SMALL = {"tinycnn": (10, 1), "mlp": (10, 1)}  # (classes, channels): the quickstart's digits shape
FACTORIES = {"jobs/models/unet.py:build": {"model_args": {"in_channels": 3, "num_classes": 21, "width": 32, "depth": 4},
                                           "num_classes": 21, "in_channels": 3}}
PROFILED_STEPS = 3
MIN_REPEAT_S = 0.5  # a timed repeat runs this long at least (several steps of a small model)


# Token models (payloads/lm_train.py's step: AdamW foreach, clip_grad_norm_), model:seq_len:batch:
# a built-in language model, or a factory with the settings of its jobs/*.yaml.
TOKEN_MODELS = {"gpt2-124m": {"vocab_size": 50304, "model_args": {}},
                "jobs/models/tokenlm.py:build": {"vocab_size": 8192, "model_args": {
                    "vocab_size": 8192, "max_seq_len": 512, "d_model": 256, "n_layers": 4, "n_heads": 4}}}


def parse_config(text: str) -> dict:
    head, size, batch = text.rsplit(":", 2)
    if head in TOKEN_MODELS:
        t = TOKEN_MODELS[head]
        return {"model": head, "image_size": int(size), "seq_len": int(size), "batch_size": int(batch),
                "num_classes": t["vocab_size"], "in_channels": 0, "vocab_size": t["vocab_size"],
                "model_args": t["model_args"]}
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

    if cfg.get("seq_len"):  # counted per token: the step's units are batch x seq_len tokens
        w = Workload(model=cfg["model"], seq_len=cfg["seq_len"], vocab_size=cfg["vocab_size"],
                     model_args=cfg["model_args"], batch_size=cfg["batch_size"], precision="fp32")
        cost = workload_cost(w, ROOT)
        from launcher.estimate.cpufit import step_counts

        return {"train_flops_per_sample": cost.train_flops_per_sample, "tokens_per_step": cfg["batch_size"] * cfg["seq_len"],
                "classes": step_counts(cost.ops, cfg["batch_size"] * cfg["seq_len"])}
    w = Workload(model=cfg["model"], image_size=cfg["image_size"], num_classes=cfg["num_classes"],
                 in_channels=cfg["in_channels"], model_args=cfg["model_args"],
                 input_shape=[cfg["in_channels"], cfg["image_size"], cfg["image_size"]]
                 if cfg["model"] in FACTORIES else None)
    cost = workload_cost(w, ROOT)
    from launcher.estimate.cpufit import step_counts

    return {"train_flops_per_sample": cost.train_flops_per_sample,
            "classes": step_counts(cost.ops, cfg["batch_size"])}


def build_tokens(cfg: dict):
    """payloads/lm_train.py's fp32 CPU step of a token model: AdamW (foreach), clipping, lm_loss."""
    import torch

    from payloads import lm_shapes
    from payloads.factory import build_factory_model, output_logits
    from payloads.lm import build_lm, lm_loss
    from payloads.lm_train import ADAMW, ADAMW_LR, CLIP_NORM

    torch.manual_seed(0)
    if lm_shapes.is_lm(cfg["model"]):
        model = build_lm(lm_shapes.resolve(cfg["model"], cfg["model_args"], cfg["vocab_size"], cfg["seq_len"]))
    else:
        model = build_factory_model(cfg["model"], cfg["model_args"], str(ROOT))
    opt = torch.optim.AdamW(model.parameters(), lr=ADAMW_LR, foreach=True, **ADAMW)
    x = torch.randint(0, cfg["vocab_size"], (cfg["batch_size"], cfg["seq_len"]))
    y = torch.randint(0, cfg["vocab_size"], (cfg["batch_size"], cfg["seq_len"]))

    def step() -> None:  # lm_train.train_step, fp32
        loss = lm_loss(output_logits(model(x)), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP_NORM, foreach=True)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def build(cfg: dict):
    import torch

    if cfg.get("seq_len"):
        return build_tokens(cfg)
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
    """(class -> self CPU seconds, class -> aten calls) of one step under torch.profiler. Every
    operation run inside the optimizer's step is ``optimizer`` (on a CPU its foreach kernels run
    per tensor as aten::add_, aten::mul_...: element-wise by name)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    from launcher.estimate.opcount import op_class

    with torch_profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        step()
    secs: dict[str, float] = {}
    calls: dict[str, float] = {}
    for e in prof.events():
        if e.self_cpu_time_total <= 0:
            continue
        cls = "other"
        if e.name.startswith("aten::"):
            cls = op_class(e.name)
            if cls == "conv":
                cls = _conv_split(e.name, [list(s) for s in e.input_shapes])
            up = e.cpu_parent
            while up is not None:
                if up.name.startswith("Optimizer.step"):
                    cls = "optimizer"
                    break
                up = up.cpu_parent
            calls[cls] = calls.get(cls, 0.0) + 1
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
    units = cfg["batch_size"] * cfg.get("seq_len", 1)  # samples (tokens for a token model) per step
    return {**{k: cfg[k] for k in ("model", "image_size", "batch_size", "num_classes", "in_channels")},
            "units": units, "threads": threads, "precision": "fp32", "step_s": round(best, 5), "steps_per_repeat": k,
            "samples_per_second": round(units / best, 4), "step_s_all": [round(t, 5) for t in times],
            "load": loads[times.index(best)], "loads": loads, "others_running": others, "profile": prof}


def merge(old: list, new: list) -> list:
    """Rows of both passes, one per (model, size, batch, threads): the faster pass's row (another
    pass's repeats are more repeats: the machine is shared, a slower step was interrupted), each
    class's profiled time the least of both (as within a pass), with the number of passes and
    every pass's fastest step."""
    key = lambda r: (r["model"], r["image_size"], r["batch_size"], r["threads"])  # noqa: E731
    out = {key(r): r for r in old}
    for r in new:
        prev = out.get(key(r))
        if prev is not None:
            steps = prev.get("pass_steps_s", [prev["step_s"]]) + [r["step_s"]]
            faster = min(prev, r, key=lambda x: x["step_s"])
            merged = {**faster, "passes": len(steps), "pass_steps_s": steps}
            if "profile" in prev:
                a, b = prev["profile"]["self_us"], r["profile"]["self_us"]
                least = {c: min(a.get(c, b.get(c)), b.get(c, a.get(c))) for c in sorted({*a, *b})}
                merged["profile"] = {**faster["profile"], "self_us": least}
            r = merged
        out[key(r)] = r
    return list(out.values())


def probe_row(text: str, threads: int, repeats: int, max_wait_s: float) -> dict:
    """A token model's check row (never fitted): ``SPEC:BATCH`` probed in fp32 by the CPU baseline's
    own probe (payloads/train.py through ``measure_baseline``, OMP_NUM_THREADS=threads, uncached),
    the fastest of ``repeats`` probes, with its per-class counts at the probe's batch in tokens."""
    from launcher.estimate.baseline import cpu_batch, measure_baseline
    from launcher.estimate.cpufit import step_counts
    from launcher.estimate.flops import workload_cost
    from launcher.spec import load_spec

    path, batch = text.rsplit(":", 1)
    spec = load_spec(ROOT / path)
    spec = spec.model_copy(update={"workload": spec.workload.model_copy(update={"batch_size": int(batch),
                                                                                "precision": "fp32"})})
    os.environ["OMP_NUM_THREADS"] = str(threads)
    best, loads, runs = None, [], []
    for _ in range(repeats):
        wait_quiet(threads, max_wait_s)
        loads.append(load())
        b = measure_baseline(spec, probe_seconds=10.0, use_cache=False)
        runs.append(b.samples_per_second)
        if b.measured and (best is None or b.samples_per_second > best.samples_per_second):
            best = b
    os.environ.pop("OMP_NUM_THREADS", None)
    w = spec.workload.model_copy(update={"batch_size": best.probe_batch_size})
    cost = workload_cost(w, ROOT)
    return {"model": path, "image_size": 0, "batch_size": best.probe_batch_size, "units": cpu_batch(w),
            "threads": threads, "precision": "fp32",
            "samples_per_second": best.samples_per_second, "step_s": cpu_batch(w) / best.samples_per_second,
            "probe_samples_per_second": runs, "load": loads[runs.index(best.samples_per_second)], "loads": loads,
            "note": best.note, "train_flops_per_sample": cost.train_flops_per_sample,
            "classes": step_counts(cost.ops, cpu_batch(w))}


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
    p.add_argument("--checks", default="",
                   help="token models probed as held-out checks (never fitted), SPEC:BATCH,... e.g. jobs/tokenlm.yaml:8")
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
    for text in filter(None, args.configs.split(",")):
        cfg = parse_config(text)
        c = counts(cfg)
        for threads in (int(t) for t in args.threads.split(",")):
            row = {**measure(cfg, threads, args.repeats, args.max_wait_s), **c}
            print(json.dumps({k: v for k, v in row.items() if k not in ("classes", "profile")}), flush=True)
            rows.append(row)
    checks = []
    for text in filter(None, args.checks.split(",")):
        for threads in (int(t) for t in args.threads.split(",")):
            checks.append(probe_row(text, threads, args.repeats, args.max_wait_s))
            print(json.dumps({k: v for k, v in checks[-1].items() if k != "classes"}), flush=True)
    old = json.loads(Path(args.out).read_text()) if args.merge and Path(args.out).is_file() else {}
    if old:
        rows = merge(old["rows"], rows)
        checks = merge(old.get("checks", []), checks)
    doc = {"about": "fp32 CPU training steps of the payload's models (bench/cpu_rates.py): fastest of the timed "
                    "repeats, per-class profiler self time, per-class counts of launcher/estimate/opcount.py",
           "command": "python3 bench/cpu_rates.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "host": host, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "rows": rows, "checks": checks}
    Path(args.out).write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
