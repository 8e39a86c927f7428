#!/usr/bin/env python3
"""Does the host's single-thread Python speed explain how long a cold torch.compile takes on it?
One lent GPU host: its CPU, the host-speed score (bench/hostspeed.py, each time in a fresh
interpreter, as a CLI would measure it; launcher/estimate/hostspeed.py when host 6 was measured,
the same workload) before every run, and cold
`gpujob run --provider local` runs of built-in models with torch.compile's phase times.

    python3 bench/host_compile.py --out $OUT/host_compile.json --budget-s 290 --seconds 8 \
        --models resnet50,vgg16,resnet18,vit_b16,mlp,gpt2-124m

Each run is bench/compile_launch.py's ``cli`` variant (bench/local_total.run_one: the CLI end to
end, fresh empty ``TORCHINDUCTOR_CACHE_DIR`` / ``TRITON_CACHE_DIR``, its own ``GPUJOB_HOME``) with
``bench/compile_diag/sitecustomize.py`` recording the payload's compile phases and CPU seconds;
its row is a held-out CLI total that ``bench/local_total.py --check`` and
``launcher.estimate.clifit.runs_of`` read. Besides the score, a torch.fx trace of a small model
(``fx``: traces per second, torch imported) is timed at the start and the end, to see which of the
two tracks the compile better. The file is rewritten after every run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench import compile_launch, local_total  # noqa: E402

FX_SCRIPT = """
import json, time, torch
from torch import nn
m = nn.Sequential(*[nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU()) for _ in range(12)])
torch.fx.symbolic_trace(m)
times = []
for _ in range(7):
    t0 = time.perf_counter()
    for _ in range(3):
        torch.fx.symbolic_trace(m)
    times.append(time.perf_counter() - t0)
print(json.dumps({"fx": round(3 / min(times), 2), "repeat_s": [round(t, 5) for t in times]}))
"""


def host_facts() -> dict:
    facts: dict = {"python": platform.python_version(), "cpu_count": os.cpu_count(),
                   "affinity": len(os.sched_getaffinity(0)), "loadavg": os.getloadavg()}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            text = f.read()
        first = text.split("\n\n", 1)[0]
        for line in first.splitlines():
            k, _, v = line.partition(":")
            if k.strip() in ("model name", "cpu MHz", "cache size", "cpu family", "model", "stepping", "microcode",
                             "bogomips", "vendor_id"):
                facts[k.strip().replace(" ", "_")] = v.strip()
        facts["mhz_all"] = sorted({ln.split(":")[1].strip() for ln in text.splitlines() if ln.startswith("cpu MHz")})[:8]
    except OSError:
        pass
    try:
        facts["lscpu"] = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout[-2500:]
    except (OSError, subprocess.SubprocessError):
        pass
    return facts


def proc_stat_cpu() -> list[int]:
    """The whole machine's CPU time so far (user nice system idle iowait irq softirq steal ...,
    in clock ticks): steal counts time a virtual machine's CPUs waited for the host's."""
    try:
        with open("/proc/stat", encoding="utf-8") as f:
            return [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return []


def _json_line(cmd: list[str], timeout: float) -> dict:
    t0 = time.monotonic()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                              env=dict(os.environ, PYTHONPATH=os.pathsep.join(
                                  p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)))
        doc = json.loads(proc.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError) as exc:
        doc = {"error": str(exc)[:200]}
    doc["wall_s"] = round(time.monotonic() - t0, 3)
    doc["loadavg"] = os.getloadavg()[0]
    doc["proc_stat_cpu"] = proc_stat_cpu()
    return doc


def score() -> dict:
    return _json_line([sys.executable, os.path.join(ROOT, "bench", "hostspeed.py"), "3"], 60)


def fx_score() -> dict:
    return _json_line([sys.executable, "-c", FX_SCRIPT], 120)


SAMPLER = """
import json, sys, time
from bench.hostspeed import measure
while True:
    got = measure(repeats=3)
    print(json.dumps({"t": time.time(), "score": got["score"]}), flush=True)
    time.sleep(float(sys.argv[1]))
"""


def start_sampler(every_s: float, path: str) -> subprocess.Popen:
    """The score every ``every_s`` seconds through the whole call, in a process of its own (one of
    the host's cores for ~50 ms each time), so a run's score is the mean over its own window."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p))
    with open(path, "w", encoding="utf-8") as f:
        return subprocess.Popen([sys.executable, "-c", SAMPLER, str(every_s)], stdout=f, cwd=ROOT, env=env)


def read_samples(path: str) -> list[dict]:
    rows = []
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    pass
    except OSError:
        pass
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--models", default="resnet50,vgg16,resnet18,vit_b16,mlp,gpt2-124m")
    ap.add_argument("--seconds", type=float, default=8.0, help="steady training seconds of each run")
    ap.add_argument("--budget-s", type=float, default=290.0)
    ap.add_argument("--sample-every", type=float, default=0.0,
                    help="also sample the score every this many seconds through the call (0: off)")
    ap.add_argument("--cpu", action="store_true", help="plumbing check without a GPU (fp32, inductor's CPU backend)")
    a = ap.parse_args(argv)
    t0 = time.monotonic()
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (compile_launch.DIAG, os.environ.get("PYTHONPATH"), ROOT)
                                               if p)
    doc: dict = {"command": "python3 bench/host_compile.py " + " ".join(sys.argv[1:] if argv is None else argv),
                 "host": host_facts(), "scores": [], "fx": [fx_score()], "results": [], "skipped": []}
    out = a.out
    samples_path = out + ".samples"
    sampler = start_sampler(a.sample_every, samples_path) if a.sample_every > 0 else None

    def save() -> None:
        doc["elapsed_s"] = round(time.monotonic() - t0, 1)
        with open(out + ".tmp", "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1)
        os.replace(out + ".tmp", out)

    for i, model in enumerate(m for m in a.models.split(",") if m):
        s = score()
        s["before_run"] = i
        doc["scores"].append(s)
        left = a.budget_s - (time.monotonic() - t0)
        need = local_total.EXPECTED_EXTRA_S.get(compile_launch._model(model)[0], 60) + a.seconds + 10
        if need > left:
            doc["skipped"].append({"run": model, "why": f"{left:.0f}s left, ~{need:.0f}s needed"})
            continue
        diag_path = tempfile.mktemp(prefix="cxdiag-", suffix=".jsonl")
        os.environ["CXDIAG_OUT"] = diag_path
        row = compile_launch.run_variant(model, "cli", a.seconds, left - 5, a.cpu)
        row["window"] = [time.time() - row["driver_wall_s"], time.time()]
        row["diag"] = compile_launch._diag(diag_path)
        row["score_before"] = s.get("runs")
        doc["results"].append(row)
        phases = [{k.rsplit(".", 1)[-1]: round(sum(v), 2) for k, v in d["phases"].items()} for d in row["diag"]
                  if d["phases"]]
        print(json.dumps({"run": model, "rc": row.get("rc"), "wall": row.get("wall_s"),
                          "score": [r.get("score") for r in s.get("runs", [])], "compile": phases}), flush=True)
        save()
    s = score()
    s["before_run"] = "end"
    doc["scores"].append(s)
    doc["fx"].append(fx_score())
    if sampler is not None:
        sampler.terminate()
        sampler.wait()
        doc["samples"] = read_samples(samples_path)
        os.unlink(samples_path)
    save()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
