#!/usr/bin/env python3
"""This host's single-thread Python speed: a short score, to test whether it explains how long a
cold torch.compile takes on a host (bench/host_compile.py, bench/score_vs_compile.py).

torch.compile's cold compile of a training step is mostly one Python thread (dynamo's bytecode
tracing, AOT autograd, inductor's lowering and code generation: the payload's main process is
~100% busy through it while the compile workers wait, docs/estimator.md section 13), so a host
whose Python runs faster compiles faster. The score is operations per second of a fixed
pure-Python workload of the same kind (small objects, attribute and dict access, tuples, string
formatting: a toy graph built, walked and printed as code), the best of a few short repeats (the
least disturbed), about 0.1 s in all. ``python3 bench/hostspeed.py [N]`` prints N scores and the
host as JSON.

Measured on two lent H200 hosts and this 2-core machine, it does not explain the spread of cold
compile times (docs/estimator.md, section 13, "Host speed"), so the estimator does not use it.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from typing import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from launcher.estimate.baseline import cpu_cores, cpu_name  # noqa: E402

NODES = 400  # graph nodes per pass: one pass is one "operation" of the score
PASSES = 12  # passes per repeat (~15 ms per repeat on a 2-core VM at ~0.8 passes/ms)
REPEATS = 7
_OPS = ("add", "mul", "relu", "convolution", "sum", "view", "addmm", "native_batch_norm", "getitem", "clone")
_POINTWISE = frozenset(("add", "mul", "relu", "clone"))


class _Node:
    __slots__ = ("name", "op", "args", "users", "meta")

    def __init__(self, name: str, op: str, args: tuple) -> None:
        self.name, self.op, self.args = name, op, args
        self.users: dict = {}
        self.meta = {"stride": (1,) * (len(args) + 1), "dtype": "bf16" if op in _POINTWISE else "fp32"}


def _one_pass(n: int = NODES) -> int:
    """Build a toy graph of n nodes, find its fusable chains and print it as code."""
    nodes: list[_Node] = []
    env: dict[str, _Node] = {}
    for i in range(n):
        args = tuple(nodes[i - k] for k in (1, 2, 5) if i - k >= 0)
        node = _Node(f"buf{i}", _OPS[i % len(_OPS)], args)
        for a in args:
            a.users[node] = None
        env[node.name] = node
        nodes.append(node)
    groups: list[list[str]] = []
    for node in nodes:
        fusable = node.op in _POINTWISE and len(node.users) <= 2 and isinstance(node.meta["stride"], tuple)
        if fusable and groups and groups[-1][-1] == (node.args[0].name if node.args else ""):
            groups[-1].append(node.name)
        elif fusable:
            groups.append([node.name])
    lines = [f"{node.name} = aten.{node.op}({', '.join(a.name for a in node.args)})  # {node.meta['dtype']}"
             for node in nodes if env[node.name] is node]
    lines += ["kernel_" + "_".join(g) for g in groups if len(g) > 1]
    return len("\n".join(lines))


def measure(passes: int = PASSES, repeats: int = REPEATS, clock: Callable[[], float] = time.perf_counter) -> dict:
    """The score now: passes per second of the best repeat, with every repeat's time."""
    times = []
    for _ in range(repeats):
        t0 = clock()
        for _ in range(passes):
            _one_pass()
        times.append(clock() - t0)
    best = min(times)
    return {"score": round(passes / best, 2) if best > 0 else None, "repeat_s": [round(t, 5) for t in times]}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    doc = {"cpu": cpu_name(), "cores": cpu_cores(), "python": platform.python_version(),
           "runs": [measure() for _ in range(int(argv[0]) if argv else 1)]}
    sys.stdout.write(json.dumps(doc) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
