"""Time a cloud job spends, and is billed for, outside the training loop.

Defaults are round figures from published measurements (docs/estimator.md lists them):
SkyPilot's AWS GPU provisioning at 1 min 41 s after its image work (skypilot#4091) and
2.5-3 min typically (skypilot#1111, #1092); image pulls and pip installs of PyTorch take
minutes (dstack#2187). Each can be overridden per call or with environment variables
GPUJOB_BOOT_S, GPUJOB_SETUP_S, GPUJOB_TEARDOWN_S, GPUJOB_UPLOAD_MBPS.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

# seconds: boot = request -> SSH reachable; setup = environment + payload ready;
# teardown = terminate call -> billing stops.
DEFAULTS = {
    "aws": {"boot_s": 150.0, "setup_s": 180.0, "teardown_s": 30.0},
    "gcp": {"boot_s": 120.0, "setup_s": 180.0, "teardown_s": 30.0},
    # local: the payload's own start-up (interpreter, torch import, data), measured at ~3-4 s on
    # a 2-core machine by bench/ssh_overhead.py ("payload_startup_to_first_step_s").
    "local": {"boot_s": 0.0, "setup_s": 4.0, "teardown_s": 0.0},
    "ssh": {"boot_s": 0.0, "setup_s": 60.0, "teardown_s": 0.0},
}
UPLOAD_MBPS = 100.0  # laptop -> cloud upstream, megabits per second
# Bytes per sample of a dataset we cannot measure: compressed image of the workload's size.
COMPRESSED_BYTES_PER_PIXEL = 0.5
_BUILTIN_DATASETS = ("synthetic", "digits")  # generated or downloaded on the machine
_MAX_FILES_WALKED = 200_000


@dataclass(frozen=True)
class Overheads:
    boot_s: float
    setup_s: float
    data_s: float
    teardown_s: float
    data_bytes: float = 0.0
    note: str = ""

    @property
    def total_s(self) -> float:
        return self.boot_s + self.setup_s + self.data_s + self.teardown_s

    def to_dict(self) -> dict:
        return {**asdict(self), "total_s": self.total_s}


def _env_float(name: str) -> float | None:
    raw = os.environ.get(name)
    try:
        return float(raw) if raw not in (None, "") else None
    except ValueError:
        return None  # a malformed override is ignored rather than failing the estimate


def dataset_bytes(workload) -> tuple[float, str]:
    """Bytes to ship for the workload's dataset, and how we know."""
    ds = workload.dataset
    if ds in _BUILTIN_DATASETS:
        return 0.0, f"dataset {ds!r} is made on the machine: nothing to upload"
    path = Path(ds).expanduser()
    if path.is_file():
        return float(path.stat().st_size), f"{ds}: measured size"
    if path.is_dir():
        total, n = 0, 0
        for root, _dirs, files in os.walk(path):
            for f in files:
                n += 1
                try:
                    total += (Path(root) / f).stat().st_size
                except OSError:
                    pass
                if n >= _MAX_FILES_WALKED:
                    return float(total), f"{ds}: size of the first {n} files (walk stopped)"
        return float(total), f"{ds}: measured size"
    guess = workload.samples_per_epoch * workload.image_size**2 * workload.in_channels * COMPRESSED_BYTES_PER_PIXEL
    return guess, f"{ds}: not found here; size guessed from samples x image size"


def overheads_for(provider: str, workload=None, overrides: dict | None = None) -> Overheads:
    """Overheads of one run on ``provider``; ``overrides`` keys: boot_s, setup_s, teardown_s,
    data_s, upload_mbps (then environment variables, then DEFAULTS)."""
    base = dict(DEFAULTS.get(provider, DEFAULTS["aws"]))
    for key in ("boot_s", "setup_s", "teardown_s"):
        env = _env_float(f"GPUJOB_{key.upper()}")
        if env is not None:
            base[key] = env
    o = overrides or {}
    base.update({k: float(o[k]) for k in ("boot_s", "setup_s", "teardown_s") if o.get(k) is not None})
    mbps = o.get("upload_mbps") or _env_float("GPUJOB_UPLOAD_MBPS") or UPLOAD_MBPS
    data_bytes, note = (0.0, "") if workload is None or provider == "local" else dataset_bytes(workload)
    data_s = float(o["data_s"]) if o.get("data_s") is not None else data_bytes * 8 / (mbps * 1e6)
    return Overheads(base["boot_s"], base["setup_s"], data_s, base["teardown_s"], data_bytes, note)
