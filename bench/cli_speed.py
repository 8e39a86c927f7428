#!/usr/bin/env python3
"""Start-up cost of the INSTALLED gpujob next to bare Python, measured side by side in one run.

    python3 bench/cli_speed.py [--runs 9] [--venv DIR] [--ref COMMIT] [--out bench/results/cli_speed.json]

Builds a wheel from the tracked files (git ls-files, as they are in the working tree),
installs it without extras into a fresh venv (or reuses ``--venv``), then times, interleaved
so drift in machine load hits all alike: ``python -c pass`` (the venv's interpreter),
``gpujob --help``, ``gpujob estimate jobs/vgg16.yaml --no-baseline`` (the table, and with
``--json``), ``gpujob gpus``, ``gpujob cost`` and ``--help`` under TYPER_USE_RICH=0 through the
venv's console script, from a directory outside the checkout. Prints one JSON object: median/min wall time of each, the median CPU time (user +
system, seconds; less moved by other processes on a loaded machine than wall time), the deltas
to bare Python, and the goals (issue 12): ``--help`` within 0.2 s of bare Python, the
estimate within 0.5 s.

``--ref COMMIT`` also installs ``git archive COMMIT`` into a second venv and times both builds
in the same rounds (one command of each build after the other), so the two are compared under
the same load; the JSON then has one section per build ("ref" and "this"), the change of each
median (this - ref) and whether each command printed the same stdout in both builds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "jobs" / "vgg16.yaml"
HELP_GOAL_S, ESTIMATE_GOAL_S = 0.2, 0.5


def install(venv: Path, ref: str | None = None) -> None:
    """Install the working tree's tracked files (or ``git archive ref``) into a fresh ``venv``."""
    with tempfile.TemporaryDirectory() as tmp:
        src, dist = Path(tmp) / "src", Path(tmp) / "dist"
        src.mkdir()
        if ref:
            tar = subprocess.run(["git", "archive", ref], cwd=ROOT, capture_output=True, check=True).stdout
            subprocess.run(["tar", "-x", "-C", str(src)], input=tar, check=True)
        else:
            files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
            for rel in filter(None, files.decode().split("\0")):
                if (ROOT / rel).is_file():
                    (src / rel).parent.mkdir(parents=True, exist_ok=True)
                    (src / rel).write_bytes((ROOT / rel).read_bytes())
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(src)], check=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        wheel = next(dist.glob("gpujob-*.whl"))
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(wheel)], check=True)


def _time(cmd: list[str], cwd: str, env: dict) -> tuple[float, float, int, bytes]:
    """(wall seconds, CPU seconds of the child, exit code, stdout) of one run of ``cmd``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, proc.returncode, proc.stdout


# TYPER_USE_RICH=0 is typer's documented switch to click's plain help (no panels, descriptions cut
# to one line): timed to show what rich's help formatting costs; gpujob does not set it.
PLAIN_HELP = "TYPER_USE_RICH=0 gpujob --help"


def _commands(venv: Path) -> dict[str, list[str]]:
    gpujob = str(venv / "bin" / "gpujob")
    return {
        "python -c pass": [str(venv / "bin" / "python"), "-c", "pass"],
        "gpujob --help": [gpujob, "--help"],
        "gpujob estimate jobs/vgg16.yaml --no-baseline": [gpujob, "estimate", str(SPEC), "--no-baseline"],
        "gpujob estimate jobs/vgg16.yaml --no-baseline --json": [gpujob, "estimate", str(SPEC), "--no-baseline",
                                                                 "--json"],
        "gpujob gpus": [gpujob, "gpus"],  # issue 17
        "gpujob cost": [gpujob, "cost"],
        PLAIN_HELP: [gpujob, "--help"],
    }


def _env(env: dict, name: str) -> dict:
    return {**env, "TYPER_USE_RICH": "0"} if name == PLAIN_HELP else env


def _summary(samples: dict[str, list[float]], cpu: dict[str, list[float]], codes: dict[str, set]) -> dict:
    med = {k: statistics.median(v) for k, v in samples.items()}
    base = med["python -c pass"]
    est = med["gpujob estimate jobs/vgg16.yaml --no-baseline"]
    return {
        "median_s": {k: round(v, 4) for k, v in med.items()},
        "min_s": {k: round(min(v), 4) for k, v in samples.items()},
        "cpu_median_s": {k: round(statistics.median(v), 4) for k, v in cpu.items()},
        "delta_vs_python_s": {k: round(v - base, 4) for k, v in med.items()},
        "exit_codes": {k: sorted(v) for k, v in codes.items()},
        "goals": {
            f"help_within_{HELP_GOAL_S}s_of_python": med["gpujob --help"] - base <= HELP_GOAL_S,
            f"estimate_within_{ESTIMATE_GOAL_S}s": est <= ESTIMATE_GOAL_S,
            "gpus_within_estimate_goal": med["gpujob gpus"] <= ESTIMATE_GOAL_S,
            "cost_within_estimate_goal": med["gpujob cost"] <= ESTIMATE_GOAL_S,
        },
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=9)
    ap.add_argument("--venv", help="an existing venv with gpujob installed (default: build and install one)")
    ap.add_argument("--ref", help="also install this commit (git archive) and time it side by side, e.g. main")
    ap.add_argument("--out", help="also write the JSON here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        venvs = {"this": Path(args.venv) if args.venv else Path(tmp) / "venv"}
        if not args.venv:
            install(venvs["this"])
        if args.ref:
            venvs = {"ref": Path(tmp) / "venv-ref", **venvs}
            install(venvs["ref"], args.ref)
        base_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        envs = {b: {**base_env, "GPUJOB_HOME": str(Path(tmp) / f"home-{b}")} for b in venvs}
        where = {b: subprocess.run([str(v / "bin" / "python"), "-c", "import launcher; print(launcher.__file__)"],
                                   cwd=tmp, env=envs[b], capture_output=True, text=True, check=True).stdout.strip()
                 for b, v in venvs.items()}
        cmds = {b: _commands(v) for b, v in venvs.items()}
        outputs: dict[str, dict[str, bytes]] = {b: {} for b in venvs}
        for b in venvs:  # warm the page cache, .pyc files and gpujob's caches
            for name, cmd in cmds[b].items():
                outputs[b][name] = _time(cmd, tmp, _env(envs[b], name))[3]
        samples = {b: {k: [] for k in cmds[b]} for b in venvs}
        cpu = {b: {k: [] for k in cmds[b]} for b in venvs}
        codes: dict[str, dict[str, set]] = {b: {k: set() for k in cmds[b]} for b in venvs}
        for _ in range(args.runs):
            for name in cmds["this"]:
                for b in venvs:
                    t, c, rc, _out = _time(cmds[b][name], tmp, _env(envs[b], name))
                    samples[b][name].append(t)
                    cpu[b][name].append(c)
                    codes[b][name].add(rc)
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "installed_from": where["this"],
        "runs": args.runs,
    }
    if not args.ref:
        result.update(_summary(samples["this"], cpu["this"], codes["this"]))
    else:
        result["ref"] = args.ref
        result["ref_commit"] = subprocess.run(["git", "rev-parse", args.ref], cwd=ROOT, capture_output=True,
                                              text=True, check=True).stdout.strip()
        for b in venvs:
            result[b] = _summary(samples[b], cpu[b], codes[b])
        result["change_median_s"] = {k: round(result["this"]["median_s"][k] - result["ref"]["median_s"][k], 4)
                                     for k in cmds["this"]}
        result["change_cpu_median_s"] = {
            k: round(result["this"]["cpu_median_s"][k] - result["ref"]["cpu_median_s"][k], 4) for k in cmds["this"]}
        result["same_stdout"] = {k: outputs["ref"][k] == outputs["this"][k] for k in cmds["this"]}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
