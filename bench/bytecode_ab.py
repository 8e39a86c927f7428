#!/usr/bin/env python3
"""Cold `gpujob run --provider local` runs with and without cached Python bytecode, alternating.

The lent GPU machines run every process with ``PYTHONDONTWRITEBYTECODE=1`` and a torch without
cached bytecode, so every payload (and each Inductor compile worker it starts) compiles torch's
Python source again. A user's torch installed by pip has its bytecode. Two conditions, each run
bench/local_total.run_one (the CLI end to end, fresh empty ``TORCHINDUCTOR_CACHE_DIR`` /
``TRITON_CACHE_DIR``, its own ``GPUJOB_HOME``):

    nopyc   as the runs clifit.py is fitted on: PYTHONDONTWRITEBYTECODE=1, the machine's Python as is
    pyc     as a user has it: first ``python3 -m compileall -q -j N`` over every sys.path folder
            (stdlib, site-packages: torch, triton, sympy, ...) into PYTHONPYCACHEPREFIX (a folder of
            its own, so the nopyc runs never see it and read-only site-packages do not matter),
            then runs with that prefix and PYTHONDONTWRITEBYTECODE unset

    python3 bench/bytecode_ab.py --out $OUT/bytecode_ab.json --seconds 6 --budget-s 350 \
        --models mlp,vgg16,vit_b16,mlp,resnet18

``--conditions pyc`` runs each model once, as a user's machine would (the long cold runs of
docs/estimator.md's local-total goal). With both, the conditions alternate within each model and the order flips from model to model (nopyc first,
then pyc first, ...). Each row carries ``condition`` and the figures clifit fits
(``outside_s`` = report total - loop, ``compile_s`` = loop - samples / steady samples/s); the
compileall times (torch + triton alone, then the rest) are in ``compileall``. The file is
rewritten after every run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench import local_total  # noqa: E402
from launcher.estimate import clifit  # noqa: E402


def package_dirs(names: tuple[str, ...]) -> dict[str, str]:
    """Where each importable package lives, found without importing it."""
    import importlib.util
    out = {}
    for name in names:
        spec = importlib.util.find_spec(name)
        if spec and spec.submodule_search_locations:
            out[name] = list(spec.submodule_search_locations)[0]
    return out


def count(path: str, suffix: str) -> int:
    """Files under ``path`` whose name ends with ``suffix`` (hidden folders included)."""
    return sum(f.endswith(suffix) for _, _, files in os.walk(path) for f in files)


def pyc_facts(dirs: dict[str, str]) -> dict:
    """For each package: whether its folder is writable and how many .pyc it already holds."""
    facts = {}
    for name, path in dirs.items():
        facts[name] = {"path": path, "writable": os.access(path, os.W_OK), "py": count(path, ".py"),
                       "pyc": count(path, ".pyc")}
    return facts


def compileall(paths: list[str], prefix: str, jobs: int) -> dict:
    env = dict(os.environ, PYTHONPYCACHEPREFIX=prefix)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    t0, c0 = time.monotonic(), os.times()
    proc = subprocess.run([sys.executable, "-m", "compileall", "-q", "-j", str(jobs), *paths],
                          capture_output=True, text=True, env=env)
    c1 = os.times()
    return {"paths": paths, "wall_s": round(time.monotonic() - t0, 2),
            "cpu_s": round(c1.children_user + c1.children_system - c0.children_user - c0.children_system, 2),
            "rc": proc.returncode, "stderr_tail": proc.stderr[-400:]}


def condition_env(condition: str, prefix: str) -> None:
    """Set os.environ (run_one copies it) for one condition."""
    if condition == "nopyc":
        os.environ["PYTHONDONTWRITEBYTECODE"] = "1"
        os.environ.pop("PYTHONPYCACHEPREFIX", None)
    else:
        os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
        os.environ["PYTHONPYCACHEPREFIX"] = prefix


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--models", default="mlp,vgg16,vit_b16,mlp,resnet18")
    ap.add_argument("--seconds", type=float, default=6.0, help="steady training seconds of each run")
    ap.add_argument("--budget-s", type=float, default=350.0)
    ap.add_argument("--jobs", type=int, default=16, help="compileall's worker processes")
    ap.add_argument("--gpu", default="H200")
    ap.add_argument("--conditions", default="nopyc,pyc",
                    help="which conditions each model runs in: both (alternating, the A/B) or one, e.g. "
                         "'pyc' for cold runs as a user's machine makes them")
    a = ap.parse_args(argv)
    t0 = time.monotonic()
    prefix = tempfile.mkdtemp(prefix="pyc-")
    dirs = package_dirs(("torch", "triton", "sympy", "numpy"))
    doc: dict = {"command": "python3 bench/bytecode_ab.py " + " ".join(sys.argv[1:] if argv is None else argv),
                 "env_before": {k: os.environ.get(k) for k in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")},
                 "python": sys.version.split()[0], "cpu_count": os.cpu_count(),
                 "packages": pyc_facts(dirs), "loadavg_start": os.getloadavg(), "results": [], "skipped": []}

    def save() -> None:
        doc["elapsed_s"] = round(time.monotonic() - t0, 1)
        with open(a.out + ".tmp", "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1)
        os.replace(a.out + ".tmp", a.out)

    heavy = [dirs[n] for n in ("torch", "triton") if n in dirs]
    rest = [p for p in sys.path if p and os.path.isdir(p) and os.path.abspath(p) != ROOT
            and not p.endswith(".zip")]
    doc["compileall"] = {"torch_triton": compileall(heavy, prefix, a.jobs)}
    doc["compileall"]["rest"] = compileall(rest, prefix, a.jobs)
    doc["compileall"]["prefix_pyc"] = count(prefix, ".pyc")
    print(json.dumps({"compileall": {k: v.get("wall_s") if isinstance(v, dict) else v
                                     for k, v in doc["compileall"].items()}}), flush=True)
    save()
    conditions = tuple(c for c in a.conditions.split(",") if c)
    if not conditions or set(conditions) - {"nopyc", "pyc"}:
        ap.error("--conditions: a comma-separated list of nopyc and pyc")
    for i, model in enumerate(m for m in a.models.split(",") if m):
        order = conditions if i % 2 == 0 else conditions[::-1]
        left = a.budget_s - (time.monotonic() - t0)
        need = len(order) * (0.8 * local_total.EXPECTED_EXTRA_S.get(model, 60) + a.seconds + 5)
        if need > left:
            doc["skipped"].append({"run": model, "why": f"{left:.0f}s left, ~{need:.0f}s needed"})
            continue
        for condition in order:
            condition_env(condition, prefix)
            left = a.budget_s - (time.monotonic() - t0)
            cache = tempfile.mkdtemp(prefix="inductor-cache-")
            row = local_total.run_one(model, a.gpu, a.seconds, cache, False, max(left - 5, 30))
            row["condition"] = condition
            row["loadavg_after"] = os.getloadavg()[0]
            fitted = clifit.runs_of({"results": [row]})
            if fitted:
                row["outside_s"] = round(fitted[0]["outside_s"], 2)
                row["compile_s"] = round(fitted[0]["compile_s"], 2)
            doc["results"].append(row)
            print(json.dumps({"run": model, "condition": condition, "rc": row.get("rc"), "wall": row.get("wall_s"),
                              "outside_s": row.get("outside_s"), "compile_s": row.get("compile_s"),
                              "error": row.get("error")}), flush=True)
            save()
    condition_env("nopyc", prefix)
    doc["loadavg_end"] = os.getloadavg()
    save()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
