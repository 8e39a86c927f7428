#!/usr/bin/env python3
"""Total time of `gpujob run --provider local` per built-in model on one GPU, cold compile cache.

    python3 bench/local_total.py --out-dir $OUT --gpu H200 --budget-s 530 [--models resnet50,vgg16,...]
                                 [--warm vgg16,resnet18] [--seconds 20]
    python3 bench/local_total.py --check bench/results/h200_local_total/*.json   # offline: estimate vs measured
    python3 bench/local_total.py --cross          # offline: the overhead fit held out by run and by call

Each model runs through the CLI (the code path a user's job takes) in a fresh process with its own
fresh, empty ``TORCHINDUCTOR_CACHE_DIR`` and ``TRITON_CACHE_DIR`` (a cold compile, as a user's first
run gets) and its own ``GPUJOB_HOME``, on synthetic data: enough samples for about ``--seconds`` of
steady training at the rate in ``RATES`` (measured rates of our payload on an H200; a guess only
sizes the run). ``--warm`` models run once more on the cache their cold run filled (warm compile).
Per run it records the wall time around the CLI, the run's ``report`` event (the estimate the CLI
made before starting, and the actual total, job and training time) and the payload's start,
first step and end events. A run that would not fit the budget left is skipped and listed. The
file ``local_total.json`` under ``--out-dir`` is rewritten after every run (the only file written
there: the CLI's own output stays in each run's temporary ``GPUJOB_HOME``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.local_cli import run_local_cli  # noqa: E402

SAFE_ENV = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1",
            "PYTHONUNBUFFERED": "1"}
# model -> (workload fields, steady samples/s on an H200 used to size the run; tokens/s for the LM)
MODELS = {
    "resnet50": ({"image_size": 224, "num_classes": 1000, "batch_size": 256, "precision": "bf16"}, 7000),
    # VGG has no batch norm: at the default learning rate 0.1 its loss can diverge (the payload
    # then stops with an error, as it did in the first call); 0.01 trains it.
    "vgg16": ({"image_size": 224, "num_classes": 1000, "batch_size": 256, "precision": "bf16",
               "learning_rate": 0.01}, 5200),
    "mobilenetv2": ({"image_size": 224, "num_classes": 1000, "batch_size": 256, "precision": "bf16"}, 10500),
    "vit_b16": ({"image_size": 224, "num_classes": 1000, "batch_size": 128, "precision": "bf16"}, 3400),
    "resnet18": ({"image_size": 224, "num_classes": 1000, "batch_size": 256, "precision": "bf16"}, 20000),
    "gpt2-124m": ({"seq_len": 1024, "vocab_size": 50304, "batch_size": 32, "precision": "bf16"}, 500000),
    "vgg11": ({"image_size": 224, "num_classes": 1000, "batch_size": 256, "precision": "bf16",
               "learning_rate": 0.01}, 9500),
    "tinycnn": ({"image_size": 32, "num_classes": 10, "batch_size": 256, "precision": "bf16"}, 80000),
    "mlp": ({"image_size": 28, "num_classes": 10, "batch_size": 256, "precision": "bf16", "in_channels": 1}, 130000),
    # a user's factory (jobs/unet.yaml's model), copied into the run's project directory
    "jobs/models/unet.py:build": ({"model_args": {"in_channels": 3, "num_classes": 21, "width": 32, "depth": 4},
                                   "input_shape": [3, 256, 256], "num_classes": 21, "batch_size": 32,
                                   "precision": "bf16", "learning_rate": 0.01}, 2500),
}
# Rough cold-run wall seconds beyond the training itself (start-up + compile), to skip what cannot fit.
EXPECTED_EXTRA_S = {"resnet50": 85, "mobilenetv2": 85, "vit_b16": 45, "vgg16": 40, "resnet18": 55,
                    "gpt2-124m": 55, "vgg11": 40, "tinycnn": 30, "mlp": 25, "jobs/models/unet.py:build": 50}


def spec_text(model: str, fields: dict, samples: int, gpu: str) -> str:
    work = dict(fields)
    work.update(model=model, dataset="synthetic", samples_per_epoch=samples, epochs=1)
    inner = ", ".join(f"{k}: {json.dumps(v)}" for k, v in work.items())
    env_lines = "".join(f"  {k}: \"{v}\"\n" for k, v in SAFE_ENV.items())
    name = re.sub(r"[^a-z0-9-]+", "-", model.rpartition("/")[2].lower())
    return (f"name: {name}-{gpu.lower()}-total\nworkload: {{{inner}}}\n"
            f"resources: {{accelerators: \"{gpu}:1\"}}\nlimits: {{max_duration: 15m}}\nenv:\n{env_lines}")


def run_one(model: str, gpu: str, seconds: float, cache: str, warm: bool, timeout: float,
            home: str | None = None) -> dict:
    """One cold (or ``warm``) CLI run; ``home``: the GPUJOB_HOME to run in (default: a fresh one)."""
    fields, rate = MODELS[model]
    per_step = fields["batch_size"] * fields.get("seq_len", 1)
    samples = max(per_step * 20, int(round(seconds * rate / per_step)) * per_step)
    home = home or tempfile.mkdtemp(prefix="gpujob-home-")
    spec = os.path.join(home, "job.yaml")
    if ":" in model:  # a factory: the project directory (the run's cwd) holds its file
        target = model.rpartition(":")[0]
        os.makedirs(os.path.dirname(os.path.join(home, target)), exist_ok=True)
        shutil.copy(os.path.join(ROOT, target), os.path.join(home, target))
    with open(spec, "w", encoding="utf-8") as f:
        f.write(spec_text(model, fields, samples, gpu))
    env = dict(os.environ, **SAFE_ENV, GPUJOB_HOME=home, TORCHINDUCTOR_CACHE_DIR=os.path.join(cache, "inductor"),
               TRITON_CACHE_DIR=os.path.join(cache, "triton"),
               PYTHONPATH=os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), ROOT) if p))
    # The CLI's events and stderr stay in the run's GPUJOB_HOME (the device tool returns few files);
    # the row keeps the report, the payload's events and the last lines of stderr.
    jsonl, err = os.path.join(home, "run.jsonl"), os.path.join(home, "run.err")
    rc, wall = run_local_cli(spec, home, env, jsonl, err, timeout, term_grace_s=20)
    row: dict = {"model": model, "cache": "warm" if warm else "cold", "rc": rc,
                 "wall_s": round(wall, 2), "samples": samples, **fields}
    events = {}
    with open(jsonl, encoding="utf-8", errors="replace") as f:
        lines = f.read().splitlines()
    for line in lines:
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if ev.get("event") == "report":
            row["report"] = {k: ev[k] for k in ev if k != "event"}
        inner = ev.get("event")
        if isinstance(inner, dict) and inner.get("event") in ("start", "end", "step"):
            events.setdefault(inner["event"], []).append({**inner, "_t": ev.get("time")})
    for name in ("start", "end"):
        if events.get(name):
            row[name] = events[name][-1]
    steps = events.get("step", [])
    if steps:
        row["first_step_event"], row["last_step_event"] = steps[0], steps[-1]
    if rc != 0:
        with open(err, encoding="utf-8", errors="replace") as f:
            row["error"] = f"exit {rc}: {' | '.join(f.read().strip().splitlines()[-3:])[:400]}"
        row["payload_errors"] = [ln[:400] for ln in lines if '"error"' in ln][-3:]
    return row


def check(paths: list[str]) -> dict:
    """Each recorded run re-estimated by the current estimator (no GPU, no torch for built-ins):
    predicted vs measured total time, steady samples/s and start-up + warm-up (the CLI's total
    minus the steady training time), per run and their median |error|, and whether the measured
    total lies inside the estimate's band. The estimate prices a user's machine (torch with its
    bytecode); a run made on the lent machine as it is (no ``condition`` "pyc") is compared with
    the estimate plus the measured bytecode cost (``warmup.cli.bytecode``), like for like."""
    from launcher.estimate.api import for_machine
    from launcher.estimate.clifit import bytecode_s
    from launcher.estimate.opmodel import efficiencies
    from launcher.spec import parse_spec

    lent_s = bytecode_s((efficiencies().get("warmup") or {}).get("cli") or {})
    rows = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
        for r in doc.get("results", []):
            actual = (r.get("report") or {}).get("actual") or {}
            if r.get("rc") != 0 or not actual.get("total_seconds"):
                continue
            fields = {k: r[k] for k in MODELS[r["model"]][0] if k in r}
            spec = parse_spec(spec_text(r["model"], fields, r["samples"], "H200"), check_catalog=False)
            est = for_machine(spec, "local", None, 0.0, spot=False, baseline=False, local_gpu="H200")
            steady = actual["samples"] / actual["samples_per_second"]
            measured_over = actual["total_seconds"] - steady
            extra = 0.0 if r.get("condition") == "pyc" or r.get("cache") != "cold" else lent_s
            predicted_over = est["total_seconds"] - est["train_seconds"] + extra
            predicted_total = est["total_seconds"] + extra
            band = est.get("total_error_band")
            rows.append({"model": r["model"], "cache": r["cache"], "source": os.path.basename(path),
                         **({"condition": r["condition"]} if "condition" in r else {}),
                         "measured_total_s": round(actual["total_seconds"], 1),
                         "predicted_total_s": round(predicted_total, 1),
                         "total_error": round(predicted_total / actual["total_seconds"] - 1, 4),
                         "total_band": band, "inside_band": None if band is None else
                         abs(predicted_total / actual["total_seconds"] - 1) <= band,
                         "priced_as": "user" if not extra else "lent machine (+ bytecode cost)",
                         "measured_samples_per_second": round(actual["samples_per_second"], 1),
                         "predicted_samples_per_second": round(est["samples_per_second"], 1),
                         "throughput_error": round(est["samples_per_second"] / actual["samples_per_second"] - 1, 4),
                         "measured_overhead_s": round(measured_over, 1), "predicted_overhead_s": round(predicted_over, 1),
                         "predicted_warmup_s": round(est["warmup_seconds"], 1)})
    cold = [x for x in rows if x["cache"] == "cold"]
    errs = [abs(x["total_error"]) for x in cold]
    return {"rows": rows, "cold_total_error": {"median": round(statistics.median(errs), 4) if errs else None,
                                              "max": round(max(errs), 4) if errs else None, "n": len(errs),
                                              "within_10pct": sum(e <= 0.10 for e in errs),
                                              "inside_band": sum(bool(x["inside_band"]) for x in cold)}}


def cross() -> dict:
    """The CLI-run overhead fit (launcher/estimate/clifit.py) checked on the runs it is fitted on,
    each run predicted by a fit without it (leave-one-run-out) and without its whole call
    (leave-one-call-out), the training time by the current estimator; beside it the estimator as
    it stands (fitted on all runs: in-sample)."""
    from launcher.estimate import clifit
    from launcher.estimate.api import for_machine
    from launcher.estimate.opmodel import efficiencies
    from launcher.spec import parse_spec

    runs = clifit.fit_runs()
    train, full = [], []
    for r in runs:
        fields = {k: v for k, v in r["workload"].items() if k in MODELS[r["model"]][0]}
        spec = parse_spec(spec_text(r["model"], fields, r["samples"], "H200"), check_catalog=False)
        est = for_machine(spec, "local", None, 0.0, spot=False, baseline=False, local_gpu="H200")
        train.append(est["train_seconds"])
        full.append(est["total_seconds"])
    probe = (efficiencies().get("warmup") or {}).get("compile_s")
    out: dict = {}
    for by in ("run", "call"):
        rows = clifit.held_out(runs, train, probe, by)
        for row, total in zip(rows, full):
            row["in_sample_total_error"] = round(total / row["measured_total_s"] - 1, 4)
        err = [abs(x["total_error"]) for x in rows]
        out[f"leave_one_{by}_out"] = {"rows": rows, "median": round(statistics.median(err), 4),
                                      "max": round(max(err), 4), "within_10pct": sum(e <= 0.10 for e in err),
                                      "n": len(err)}
    ins = [abs(x["in_sample_total_error"]) for x in out["leave_one_run_out"]["rows"]]
    out["in_sample"] = {"median": round(statistics.median(ins), 4), "max": round(max(ins), 4),
                        "within_10pct": sum(e <= 0.10 for e in ins), "n": len(ins)}
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--check":  # offline: re-estimate recorded runs
        print(json.dumps(check(argv[1:]), indent=1))
        return 0
    if argv and argv[0] == "--cross":  # offline: the overhead fit held out by run and by call
        print(json.dumps(cross(), indent=1))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--gpu", default="H200", help="the spec's accelerator name (what the estimate prices)")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--warm", default="vgg16", help="models to run again on their warm compile cache")
    ap.add_argument("--seconds", type=float, default=20.0, help="steady training seconds to aim for")
    ap.add_argument("--budget-s", type=float, default=530.0)
    a = ap.parse_args(argv)
    t0 = time.monotonic()
    os.makedirs(a.out_dir, exist_ok=True)
    todo = [(m, False) for m in a.models.split(",") if m]
    warm = [m for m in a.warm.split(",") if m]
    caches: dict[str, str] = {}
    doc = {"command": "python3 bench/local_total.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "results": [], "skipped": []}
    out = os.path.join(a.out_dir, "local_total.json")
    while todo:
        model, is_warm = todo.pop(0)
        left = a.budget_s - (time.monotonic() - t0)
        need = (0.6 if is_warm else 1.0) * EXPECTED_EXTRA_S.get(model, 60) + a.seconds + 10
        if need > left:
            doc["skipped"].append({"model": model, "cache": "warm" if is_warm else "cold",
                                   "why": f"{left:.0f}s left, ~{need:.0f}s needed"})
            continue
        cache = caches.get(model) if is_warm else tempfile.mkdtemp(prefix="inductor-cache-")
        row = run_one(model, a.gpu, a.seconds, cache, is_warm, timeout=left - 5)
        print(json.dumps({k: row.get(k) for k in ("model", "cache", "rc", "wall_s", "error")}), flush=True)
        doc["results"].append(row)
        if model in warm and not is_warm and row["rc"] == 0:
            caches[model] = cache
            todo.insert(0, (model, True)) if model == warm[0] else todo.append((model, True))
        doc["elapsed_s"] = round(time.monotonic() - t0, 1)
        with open(out + ".tmp", "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1)
        os.replace(out + ".tmp", out)
    with open(out + ".tmp", "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1)
    os.replace(out + ".tmp", out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
