"""This host's single-thread Python speed: a short, cached score for the compile warm-up of a
local GPU job.

torch.compile's cold compile of a training step is mostly one Python thread (dynamo's bytecode
tracing, AOT autograd, inductor's lowering and code generation: the payload's main process is
~100% busy through it while the compile workers wait, docs/estimator.md section 13), so a host
whose Python runs faster compiles faster. The score is operations per second of a fixed
pure-Python workload of the same kind (small objects, attribute and dict access, tuples, string
formatting: a toy graph built, walked and printed as code), the best of a few short repeats (the
least disturbed), about 0.1 s in all. It is measured once per host and cached in the estimator's
cache directory, keyed by CPU model, usable cores and Python version; ``python -m
launcher.estimate.hostspeed`` prints the score and the host as JSON.
"""

from __future__ import annotations

import hashlib
import json
import platform
import sys
import time
from pathlib import Path
from typing import Callable

from launcher.estimate.baseline import cpu_cores, cpu_name
from launcher.estimate.paths import cache_dir, read_json, write_json_atomic

NODES = 400  # graph nodes per pass: one pass is one "operation" of the score
PASSES = 12  # passes per repeat (~15 ms per repeat on a 2-core VM at ~0.8 passes/ms)
REPEATS = 7
CACHE_MAX_AGE_S = 30 * 86400
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


def host_key(cpu: str | None = None, cores: int | None = None, python: str | None = None) -> str:
    """What the score is cached under: CPU model, usable cores and the Python that runs the payload."""
    parts = [cpu if cpu is not None else cpu_name(), str(cores if cores is not None else cpu_cores()),
             python if python is not None else platform.python_implementation() + platform.python_version()]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def _cache_file() -> Path:
    return cache_dir() / "hostspeed.json"


def host_score(cache_path: Path | None = None, key: str | None = None, measurer: Callable[[], dict] = measure,
               now: Callable[[], float] = time.time, refresh: bool = False) -> dict:
    """This host's score: the cached one when there is one (younger than CACHE_MAX_AGE_S), else
    measured now and cached. Returns {"score", "cpu", "cores", "time", "cached"}; score is None
    when the measurement failed (then nothing is cached)."""
    path = cache_path or _cache_file()
    key = key or host_key()
    cache = read_json(path, {})
    if not isinstance(cache, dict):
        cache = {}
    hit = cache.get(key)
    if not refresh and isinstance(hit, dict) and hit.get("score") and now() - hit.get("time", 0) < CACHE_MAX_AGE_S:
        return {**hit, "cached": True}
    got = measurer()
    entry = {"score": got.get("score"), "cpu": cpu_name(), "cores": cpu_cores(), "time": now()}
    if entry["score"]:
        cache[key] = entry
        try:
            write_json_atomic(path, cache)
        except OSError:
            pass  # an unwritable cache only costs a new measurement next time
    return {**entry, "cached": False}


def scale(reference: float | None, score: float | None) -> float:
    """Factor on single-thread CPU time measured on hosts of score ``reference`` for a host of
    score ``score``: reference / score (a faster host, higher score, takes less); 1 when either
    is unknown."""
    if not reference or not score or reference <= 0 or score <= 0:
        return 1.0
    return reference / score


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    doc = {"cpu": cpu_name(), "cores": cpu_cores(), "python": platform.python_version(),
           "key": host_key(), "runs": [measure() for _ in range(int(argv[0]) if argv else 1)]}
    sys.stdout.write(json.dumps(doc) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
