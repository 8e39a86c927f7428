#!/usr/bin/env python3
"""Does the host-speed score track the single-thread part of torch.compile on one machine?

    python3 bench/score_vs_compile.py --out results.json --rounds 8

Each round is a fresh process that measures the score (bench/hostspeed.py) and then
times the first training step of a small CNN under ``torch.compile(backend="aot_eager")``:
dynamo's bytecode tracing and AOT autograd's forward/backward graphs, the pure-Python part of a
compile (no code generation, no compile workers), minus the same step run eagerly. Run it while
the machine's load varies (other processes come and go): if the score measures what the compile
is bound by, the two move together. CPU only; needs torch.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

ROUND = """
import json, os, time
import torch
from torch import nn
from bench.hostspeed import measure
torch.set_num_threads(1)
def block(c):
    return nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU())
model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), *[block(8) for _ in range(10)], nn.AdaptiveAvgPool2d(1),
                      nn.Flatten(), nn.Linear(8, 10))
x, y = torch.randn(2, 3, 16, 16), torch.randint(0, 10, (2,))
def step(m):
    loss = nn.functional.cross_entropy(m(x), y)
    loss.backward()
t0 = time.perf_counter(); step(model); eager = time.perf_counter() - t0
before = measure()["score"]
compiled = torch.compile(model, backend="aot_eager")
t0 = time.perf_counter(); step(compiled); first = time.perf_counter() - t0
after = measure()["score"]
print(json.dumps({"score_before": before, "score_after": after, "compile_s": round(first - eager, 4),
                  "loadavg": os.getloadavg()[0]}))
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--rounds", type=int, default=8)
    a = ap.parse_args(argv)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p))
    rows = []
    for _ in range(a.rounds):
        proc = subprocess.run([sys.executable, "-c", ROUND], capture_output=True, text=True, cwd=ROOT, env=env,
                              timeout=300)
        try:
            rows.append({**json.loads(proc.stdout.strip().splitlines()[-1]), "time": time.time()})
        except (ValueError, IndexError):
            rows.append({"error": proc.stderr[-300:]})
        print(json.dumps(rows[-1]), flush=True)
    ok = [r for r in rows if "compile_s" in r]
    doc = {"command": "python3 bench/score_vs_compile.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "cores": os.cpu_count(), "rows": rows}
    if len(ok) >= 3:  # work rate (1 / compile seconds) against the mean score around the compile
        xs = [(r["score_before"] + r["score_after"]) / 2 for r in ok]
        ys = [1 / r["compile_s"] for r in ok]
        doc["correlation"] = round(statistics.correlation(xs, ys), 3)
    with open(a.out, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
