"""This machine: no resources to create, nothing to bill. The quick start's default."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from typing import Any

from launcher.providers.base import Leftover, Machine, Resource


def local_gpus() -> list[str]:
    """Names of this machine's NVIDIA GPUs, from nvidia-smi (no torch import); [] without one."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return []
    try:
        out = subprocess.run([exe, "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return []
    return [ln.strip() for ln in out.stdout.splitlines() if ln.strip()] if out.returncode == 0 else []


class LocalProvider:
    name = "local"

    def __init__(self, gpus: list[str] | None = None, **_: Any):
        self._gpus = gpus

    def _machine(self, spec=None) -> Machine:
        gpus = local_gpus() if self._gpus is None else self._gpus
        gpu, count = None, 0
        if gpus:
            from launcher.estimate.calibration import gpu_from_device_name

            gpu = gpu_from_device_name(gpus[0]) or gpus[0]
            acc = spec.resources.accelerators if spec is not None else None
            # One process unless the spec asks for more GPUs (then torchrun, capped at what is here).
            count = min(acc.count, len(gpus)) if acc else 1
        return Machine(provider="local", id=platform.node() or "localhost", instance_type="local",
                       gpu=gpu, gpu_count=count, price_per_hour=0.0,
                       extra={"cpus": os.cpu_count(), "gpus": gpus})

    def preflight(self, spec, ctx) -> dict[str, Any]:
        """This Python runs the job: our trainer needs torch (UsageError naming gpujob[train])."""
        from launcher.hostcheck import check_local_torch

        check_local_torch(spec)
        return {}

    def plan(self, spec, ctx) -> dict[str, Any]:
        m = self._machine(spec)
        return {"provider": "local", "machine": m.id, "cpus": m.extra["cpus"],
                "gpus": ", ".join(m.extra["gpus"]) or "none (the job trains on the CPU)",
                "gpu_name": m.gpu,  # the estimate uses this machine's GPU, or its CPU when None
                "price_per_hour": 0.0, "teardown": "nothing to release"}

    def launch(self, spec, ctx, deadline_s: float) -> Machine:
        return self._machine(spec)

    def poll(self, machine: Machine) -> str | None:
        return None

    def teardown(self, run_id: str, resources: list[Resource], ctx) -> list[Leftover]:
        return []

    def find(self, regions: list[str] | None) -> list[Resource]:
        return []
