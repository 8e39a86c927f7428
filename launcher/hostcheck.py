"""Host pre-flight: right after SSH connects, one command checks the job's python and, when the
job needs it (our trainer, or GPUs asked for), torch and that CUDA sees the GPUs asked for;
locally, that torch is installed.

A failure is one ``HostNotReady`` line naming the fix (``payload.python``, ``setup:``, the
image, ``gpujob[train]``) before anything is uploaded or started.
"""

from __future__ import annotations

import shlex
from typing import Any

from launcher.errors import RemoteError, UsageError
from launcher.job import DEFAULT_ENTRYPOINT

CHECK_TIMEOUT_S = 120.0  # importing torch and initialising CUDA on a cold disk can take a while
_PYTHON = """import sys
print("python", sys.version.split()[0])
"""
# What the built-in trainer imports besides the standard library (payloads/train.py, data.py);
# torch alone no longer brings numpy along.
TRAINER_IMPORTS = ("torch", "numpy")
_SCRIPT = _PYTHON + """try:
    import torch
except Exception as exc:
    print("torch-missing", type(exc).__name__)
    raise SystemExit(0)
print("torch", torch.__version__)
try:
    import numpy
except Exception as exc:
    print("numpy-missing", type(exc).__name__)
print("cuda", torch.cuda.device_count() if torch.cuda.is_available() else 0)
"""


class HostNotReady(RemoteError):
    """The job's machine lacks what the job needs (python, torch, GPUs)."""


def gpus_wanted(spec: Any, machine: Any) -> int:
    """GPUs per machine the job needs: the spec's accelerator count, else the machine's."""
    acc = spec.resources.accelerators
    return acc.count if acc is not None else int(getattr(machine, "gpu_count", 0) or 0)


def needs_torch(spec: Any, machine: Any) -> bool:
    """Our trainer needs torch; so does any job that asks for GPUs (CUDA is counted through it)."""
    return spec.payload.entrypoint == DEFAULT_ENTRYPOINT or gpus_wanted(spec, machine) > 0


def check_host(host: Any, spec: Any, machine: Any, where: str) -> dict[str, Any]:
    """Run the one check command on ``host`` (a launcher.remote.Session or LocalHost).

    Returns {"python": version, "torch": version | None, "cuda_devices": n | None}; raises
    HostNotReady naming the fix when python is missing, torch is missing (and needed), or CUDA
    sees fewer GPUs than wanted."""
    python = spec.payload.python
    torch = needs_torch(spec, machine)  # importing torch costs seconds: only when the job needs it
    status, out, err = host.run(f"{shlex.quote(python)} -c {shlex.quote(_SCRIPT if torch else _PYTHON)}",
                                timeout=CHECK_TIMEOUT_S, check=False)
    facts = dict(line.split(" ", 1) for line in out.splitlines() if " " in line)
    if status != 0 or "python" not in facts:
        detail = (err.strip().splitlines() or [f"exit {status}"])[-1]
        raise HostNotReady(f"payload.python '{python}' does not run on {where} ({detail})",
                           "set payload.python to the machine's interpreter (a venv path works), "
                           "or install it in setup:")
    found = {"python": facts["python"], "torch": facts.get("torch"),
             "cuda_devices": int(facts["cuda"]) if facts.get("cuda", "").isdigit() else None}
    if not torch:
        return found
    if "torch-missing" in facts:
        raise HostNotReady(f"torch is not importable by {python} on {where} ({facts['torch-missing']})",
                           "install it in setup: (pip install torch), point payload.python at an interpreter "
                           "that has it, or use an image with PyTorch")
    if "numpy-missing" in facts and spec.payload.entrypoint == DEFAULT_ENTRYPOINT:
        raise HostNotReady(f"numpy is not importable by {python} on {where} ({facts['numpy-missing']}): the "
                           "built-in trainer needs it", "install it in setup: (pip install numpy), or point "
                           "payload.python at an interpreter that has it")
    wanted = gpus_wanted(spec, machine)
    if wanted and (found["cuda_devices"] or 0) < wanted:
        raise HostNotReady(f"CUDA sees {found['cuda_devices'] or 0} GPU(s) on {where}, the job needs {wanted}",
                           "check the NVIDIA driver and the image (nvidia-smi), or lower resources.accelerators")
    return found


def check_local_torch(spec: Any) -> None:
    """Locally, our trainer runs on this Python: without torch it would fail late with a traceback."""
    if spec.payload.entrypoint != DEFAULT_ENTRYPOINT:
        return
    import importlib.util

    for name in TRAINER_IMPORTS:
        if importlib.util.find_spec(name) is None:
            raise UsageError(f"{name} is not installed in this Python, and the built-in trainer needs it",
                             "pip install 'gpujob[train]' (install a torch build for your CUDA first if you have "
                             "a GPU)")
