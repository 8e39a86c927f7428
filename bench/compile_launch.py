#!/usr/bin/env python3
"""Does torch.compile take longer when `gpujob run --provider local` starts the payload than when
the estimator's probe (bench/op_profile.py) does? One host, one model, fresh compile caches each.

    python3 bench/compile_launch.py --out $OUT/compile_launch.json --budget-s 500 \
        --runs "unet:cli,unet:probe,unet:cli-probe,unet:direct-train,tinycnn:cli,mlp:cli,resnet18@128:cli"

Variants (launch x loop), each a fresh process with empty ``TORCHINDUCTOR_CACHE_DIR`` and
``TRITON_CACHE_DIR``:

* ``probe``: ``bench/op_profile.run_one`` exactly as the fitted profiles ran (pipes, cwd = the
  repository, ``CUDA_VISIBLE_DEVICES=0``, ``--probe-seconds 2 --warmup-steps 5``),
* ``cli``: ``bench/local_total.run_one``: the CLI end to end (its row is a held-out total that
  ``bench/local_total.py --check`` reads),
* ``cli-probe``: the CLI's launch (``bash``/``timeout`` wrapper, log file, new session, the run's
  work directory) of the probe's loop (payload args ``--probe-seconds 2 --warmup-steps 5``),
* ``direct-train``: the probe's launch of the CLI's training loop (the job's own config).

``unet`` is the factory ``jobs/models/unet.py:build``; ``MODEL@BATCH`` changes the batch. Every
Python process that compiled appends its torch.compile phase times and launch facts (compile
threads, affinity, stdio, cwd, environment) through ``bench/compile_diag/sitecustomize.py``; a
sampler records the most compile-worker processes alive at once. A run that would not fit the
budget left is skipped and listed; the file is rewritten after every run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench import local_total, op_profile  # noqa: E402
from bench.local_cli import run_local_cli  # noqa: E402

DIAG = os.path.join(ROOT, "bench", "compile_diag")
ALIAS = {"unet": "jobs/models/unet.py:build"}
PROBE_ARGS = ["--probe-seconds", "2", "--warmup-steps", "5"]
# Rough wall seconds per run (start-up + compile + the run itself), to skip what cannot fit.
NEED_S = {"probe": 45, "cli-probe": 50, "direct-train": 70}  # cli: local_total's per-model figure
PHASES = ("_compile.compile_inner", "compile_fx.<locals>.fw_compiler_base", "compile_fx.<locals>.bw_compiler",
          "async_compile.wait", "GraphLowering.codegen", "compile_file", "bytecode_tracing")


def _model(text: str) -> tuple[str, dict]:
    name, _, batch = text.partition("@")
    model = ALIAS.get(name, name)
    fields = dict(local_total.MODELS[model][0])
    if batch:
        fields["batch_size"] = int(batch)
    return model, fields


def _samples(model: str, fields: dict, seconds: float) -> int:
    per_step = fields["batch_size"] * fields.get("seq_len", 1)
    rate = local_total.MODELS[model][1]
    return max(per_step * 20, int(round(seconds * rate / per_step)) * per_step)


class Sampler:
    """The most compile-worker processes (inductor's sidecar and its forked workers) alive at once."""

    def __init__(self) -> None:
        self.most, self._stop = 0, threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            n = 0
            for pid in os.listdir("/proc"):
                if pid.isdigit():
                    try:
                        with open(f"/proc/{pid}/cmdline", "rb") as f:
                            n += b"compile_worker" in f.read()
                    except OSError:
                        pass
            self.most = max(self.most, n)

    def stop(self) -> int:
        self._stop.set()
        self._t.join()
        return self.most


def _diag(path: str) -> list[dict]:
    rows = []
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                rec = json.loads(line)
                rec["phases"] = {k: v for k, v in rec["phases"].items() if k in PHASES}
                rows.append(rec)
    except (OSError, ValueError):
        pass
    return rows


def _events(text: str) -> dict:
    found = {}
    for line in text.splitlines():
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        inner = ev.get("event") if isinstance(ev, dict) else None
        ev = inner if isinstance(inner, dict) else ev
        if isinstance(ev, dict) and ev.get("event") in ("start", "probe", "end"):
            found[ev["event"]] = {k: ev.get(k) for k in ("time", "first_step_seconds", "warmup_seconds",
                                                        "samples_per_second", "elapsed", "steps") if k in ev}
    return found


def run_variant(text: str, variant: str, seconds: float, timeout: float, cpu: bool = False) -> dict:
    model, fields = _model(text)
    if cpu:  # a plumbing check on a machine without a GPU: inductor's CPU backend, no Triton workers
        fields.update(compile=True, precision="fp32")
    cache = tempfile.mkdtemp(prefix="inductor-cache-")
    t0 = time.monotonic()
    if variant == "cli":
        saved = dict(local_total.MODELS)
        local_total.MODELS[model] = (fields, local_total.MODELS[model][1])
        try:
            row = local_total.run_one(model, "H200", seconds, cache, False, timeout)
        finally:
            local_total.MODELS.clear()
            local_total.MODELS.update(saved)
        row["events"] = {k: {f: (row.get(k) or {}).get(f) for f in ("time", "warmup_seconds", "elapsed",
                                                                      "samples_per_second")} for k in ("start", "end")}
    elif variant == "probe":
        cfg = op_profile.parse_config(f"{model}:{fields['precision']}:{fields['batch_size']}")
        cfg.update(fields)  # the same workload as the cli run (image size, classes, learning rate)
        rec = op_profile.run_one(cfg, None if cpu else "0", "cpu" if cpu else "cuda", 2.0, cache, False, timeout)
        row = {k: v for k, v in rec.items() if k not in ("rows", "shaped")}
    elif variant == "cli-probe":
        home = tempfile.mkdtemp(prefix="gpujob-home-")
        if ":" in model:
            target = model.rpartition(":")[0]
            os.makedirs(os.path.dirname(os.path.join(home, target)), exist_ok=True)
            with open(os.path.join(ROOT, target), "rb") as src, open(os.path.join(home, target), "wb") as dst:
                dst.write(src.read())
        spec = os.path.join(home, "job.yaml")
        with open(spec, "w", encoding="utf-8") as f:
            f.write(local_total.spec_text(model, fields, _samples(model, fields, seconds), "H200")
                    + f"payload: {{args: {json.dumps(PROBE_ARGS)}}}\n")
        env = dict(os.environ, **local_total.SAFE_ENV, GPUJOB_HOME=home,
                   TORCHINDUCTOR_CACHE_DIR=os.path.join(cache, "inductor"), TRITON_CACHE_DIR=os.path.join(cache, "triton"))
        jsonl, err = os.path.join(home, "run.jsonl"), os.path.join(home, "run.err")
        rc, wall = run_local_cli(spec, home, env, jsonl, err, timeout, term_grace_s=20)
        with open(jsonl, encoding="utf-8", errors="replace") as f:
            row = {"rc": rc, "cli_wall_s": round(wall, 2), "events": _events(f.read())}
    else:  # direct-train: the probe's launch, the CLI's loop
        work = tempfile.mkdtemp(prefix="direct-")
        job = {**fields, "model": model, "dataset": "synthetic", "samples_per_epoch": _samples(model, fields, seconds),
               "epochs": 1, "output_dir": os.path.join(work, "out")}
        with open(os.path.join(work, "job.json"), "w", encoding="utf-8") as f:
            json.dump(job, f)
        env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=os.path.join(cache, "inductor"),
                   TRITON_CACHE_DIR=os.path.join(cache, "triton"), PYTHONUNBUFFERED="1", CUDA_VISIBLE_DEVICES="0")
        try:
            proc = subprocess.run([sys.executable, os.path.join(ROOT, "payloads", "train.py"), "--config",
                                   os.path.join(work, "job.json"), "--device", "cpu" if cpu else "cuda"], cwd=ROOT, env=env,
                                  capture_output=True, text=True, timeout=timeout)
            row = {"rc": proc.returncode, "events": _events(proc.stdout), "stderr_tail": proc.stderr[-600:]}
        except subprocess.TimeoutExpired:
            row = {"rc": 124, "events": {}}
    row.update(run=text, variant=variant, model=model, batch_size=fields["batch_size"],
               driver_wall_s=round(time.monotonic() - t0, 2))
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--runs", default="unet:cli,unet:probe,unet:cli-probe,unet:direct-train")
    ap.add_argument("--seconds", type=float, default=20.0, help="steady training seconds of a cli run")
    ap.add_argument("--budget-s", type=float, default=500.0)
    ap.add_argument("--cpu", action="store_true", help="plumbing check without a GPU (fp32, inductor's CPU backend)")
    a = ap.parse_args(argv)
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (DIAG, os.environ.get("PYTHONPATH"), ROOT) if p)
    t0 = time.monotonic()
    doc: dict = {"command": "python3 bench/compile_launch.py " + " ".join(sys.argv[1:] if argv is None else argv),
                 "host_cores": os.cpu_count(), "results": [], "skipped": []}
    for item in [r for r in a.runs.split(",") if r]:
        text, variant = item.rsplit(":", 1)
        left = a.budget_s - (time.monotonic() - t0)
        need = (local_total.EXPECTED_EXTRA_S.get(_model(text)[0], 60) + a.seconds + 10 if variant == "cli"
                else NEED_S[variant])
        if need > left:
            doc["skipped"].append({"run": item, "why": f"{left:.0f}s left, ~{need:.0f}s needed"})
            continue
        diag_path = tempfile.mktemp(prefix="cxdiag-", suffix=".jsonl")
        os.environ["CXDIAG_OUT"] = diag_path
        sampler = Sampler()
        row = run_variant(text, variant, a.seconds if variant == "cli" else 5.0, left - 5, a.cpu)
        row["most_compile_worker_procs"] = sampler.stop()
        row["diag"] = _diag(diag_path)
        doc["results"].append(row)
        compiled = [d for d in row["diag"] if d["phases"]]
        print(json.dumps({"run": item, "rc": row.get("rc"), "wall": row.get("wall_s") or row.get("driver_wall_s"),
                          "events": row.get("events") or {k: row.get(k) for k in ("first_step_s", "warmup_s")},
                          "workers": row["most_compile_worker_procs"],
                          "compile": [{k.rsplit(".", 1)[-1]: round(sum(v), 2) for k, v in d["phases"].items()}
                                      for d in compiled]}), flush=True)
        doc["elapsed_s"] = round(time.monotonic() - t0, 1)
        with open(a.out + ".tmp", "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1)
        os.replace(a.out + ".tmp", a.out)
    with open(a.out + ".tmp", "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1)
    os.replace(a.out + ".tmp", a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
