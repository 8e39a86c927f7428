"""Diagnostics for bench/compile_launch.py: put this folder first on PYTHONPATH and set
CXDIAG_OUT to a file; every Python process that imported torch's compiler appends one JSON line
at exit: torch.compile's phase times (torch._dynamo.utils.compile_times), dynamo's counters, and
what could make a compile differ between launches (affinity, compile threads, priority, stdio,
cwd, environment variables of torch/triton/CUDA/OpenMP/Python). Any other sitecustomize on
sys.path still runs (it is imported after this one)."""

import atexit
import importlib.util
import json
import os
import stat
import sys
import time

_T0 = time.monotonic()


def _chain() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    for entry in sys.path:
        if not entry or os.path.abspath(entry) == here:
            continue
        path = os.path.join(entry, "sitecustomize.py")
        if os.path.isfile(path):
            spec = importlib.util.spec_from_file_location("_cxdiag_next_sitecustomize", path)
            if spec and spec.loader:
                spec.loader.exec_module(importlib.util.module_from_spec(spec))
            return


def _stdio(fd: int) -> str:
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return "closed"
    return ("fifo" if stat.S_ISFIFO(mode) else "file" if stat.S_ISREG(mode) else "chr" if stat.S_ISCHR(mode)
            else "sock" if stat.S_ISSOCK(mode) else "other")


def _dump() -> None:
    out = os.environ.get("CXDIAG_OUT")
    utils = sys.modules.get("torch._dynamo.utils")
    if not out or utils is None:
        return
    try:
        names, values = utils.compile_times(repr="csv")
        phases = {n: [float(x) for x in str(v).split(",")] for n, v in zip(names, values)}
        cfg = sys.modules.get("torch._inductor.config")
        ru = os.times()
        rec = {"pid": os.getpid(), "argv": sys.argv[:3], "wall_s": round(time.monotonic() - _T0, 3),
               "cpu_self_s": round(ru.user + ru.system, 3), "cpu_children_s": round(ru.children_user + ru.children_system, 3),
               "phases": phases, "counters": {k: dict(v) for k, v in utils.counters.items() if v},
               "compile_threads": getattr(cfg, "compile_threads", None) if cfg else None,
               "worker_start_method": getattr(cfg, "worker_start_method", None) if cfg else None,
               "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
               "cpu_count": os.cpu_count(), "nice": os.getpriority(os.PRIO_PROCESS, 0), "cwd": os.getcwd(),
               "stdio": [_stdio(i) for i in (0, 1, 2)], "flags": str(sys.flags), "sys_path": sys.path[:6],
               "env": {k: v for k, v in os.environ.items()
                       if k.startswith(("TORCH", "TRITON", "CUDA", "OMP", "MKL", "PYTHON", "NCCL", "LD_", "GPUJOB"))}}
        with open(out, "a", encoding="utf-8") as f:
            f.write(json.dumps(rec) + "\n")
    except Exception as exc:  # diagnostics must never break the run
        sys.stderr.write(f"cxdiag: {exc}\n")


atexit.register(_dump)
_chain()
