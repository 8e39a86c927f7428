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
# Before a GPU job's first steady step: torch.compile plus cuDNN autotuning, measured with our
# payload on an H100 (torch 2.11; bench/results/h100_run/, docs/benchmarks.md): VGG16 26 s,
# ResNet-50 60 s. Other models: a middle value until measured. Eager runs skip it.
COMPILE_WARMUP_S = {"vgg16": 26.0, "resnet50": 60.0}
DEFAULT_COMPILE_WARMUP_S = 40.0
# A local GPU job's own start-up (interpreter, torch + CUDA init, data) and final checkpoint:
# 18-19 s on the same H100 host (job time minus training time in those runs).
LOCAL_GPU_SETUP_S = 18.0
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
    warmup_s: float = 0.0  # compile + autotune before the first steady step (GPU jobs)

    @property
    def total_s(self) -> float:
        return self.boot_s + self.setup_s + self.data_s + self.teardown_s + self.warmup_s

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


def compile_warmup_s(workload, graph_ops: float | None = None) -> float:
    """Seconds of torch.compile (cold cache) + autotuning before the first steady step.

    Fitted on `gpujob run --provider local` runs on the device machine (op_efficiency.json
    "warmup"/"cli", launcher/estimate/clifit.py): the model's median compile over its CLI runs;
    a model profiled but never run through the CLI: its probe compile (bench/op_profile.py) x the
    median CLI / probe ratio; a model never measured: a + b x graph operations (its eager training
    step's operation count, when known); less what compiling Python source cost every process of
    those runs (``warmup.cli.bytecode``: a user's torch has its bytecode); else the earlier H100
    figures below.
    """
    if workload is None or workload.compile is False:
        return 0.0
    from launcher.estimate import clifit
    from launcher.estimate.opmodel import efficiencies

    fit = efficiencies().get("warmup") or {}
    cli = fit.get("cli")
    if cli:
        measured = clifit.user_compile_s(cli, workload.model, graph_ops, fit.get("compile_s"))
        if measured is not None:
            return measured
    if workload.model in (fit.get("compile_s") or {}):
        return float(fit["compile_s"][workload.model])
    line = fit.get("line")
    if line and graph_ops:
        return max(0.0, float(line["a"]) + float(line["b"]) * graph_ops)
    return COMPILE_WARMUP_S.get(workload.model, DEFAULT_COMPILE_WARMUP_S)


def local_gpu_setup_s(checkpoint_bytes: float | None = None) -> float:
    """A local GPU job's time outside its training loop: when `gpujob run --provider local` runs
    were measured on the device machine (``warmup.cli.outside`` in op_efficiency.json, clifit.py),
    a + checkpoint_bytes x s_per_gb / 1e9 (spawn, start-up, model build, the final checkpoint and
    model write, the CLI's report) less what compiling Python source cost each of those runs
    (``warmup.cli.bytecode``: a user's torch has its bytecode, the lent machines' had none); else the payload's start-up measured by the probe, else
    LOCAL_GPU_SETUP_S."""
    from launcher.estimate import clifit
    from launcher.estimate.opmodel import efficiencies

    fit = efficiencies().get("warmup") or {}
    if (fit.get("cli") or {}).get("outside"):
        return clifit.user_outside_s(fit["cli"], checkpoint_bytes)
    measured = fit.get("startup_s")
    return float(measured) if measured else LOCAL_GPU_SETUP_S


def overheads_for(provider: str, workload=None, overrides: dict | None = None,
                  on_gpu: bool | None = None) -> Overheads:
    """Overheads of one run on ``provider``; ``overrides`` keys: boot_s, setup_s, teardown_s,
    data_s, warmup_s, upload_mbps (then environment variables, then DEFAULTS); graph_ops and
    checkpoint_bytes (the final checkpoint + model files) describe the job. ``on_gpu``: the job runs
    on a GPU (compile warm-up; a local GPU job's longer start-up)."""
    base = dict(DEFAULTS.get(provider, DEFAULTS["aws"]))
    if on_gpu is None:  # clouds rent GPUs; local and ssh machines are CPU unless told otherwise
        on_gpu = provider in ("aws", "gcp")
    if on_gpu and provider == "local":
        base["setup_s"] = local_gpu_setup_s((overrides or {}).get("checkpoint_bytes"))
    for key in ("boot_s", "setup_s", "teardown_s"):
        env = _env_float(f"GPUJOB_{key.upper()}")
        if env is not None:
            base[key] = env
    o = overrides or {}
    base.update({k: float(o[k]) for k in ("boot_s", "setup_s", "teardown_s") if o.get(k) is not None})
    mbps = o.get("upload_mbps") or _env_float("GPUJOB_UPLOAD_MBPS") or UPLOAD_MBPS
    data_bytes, note = (0.0, "") if workload is None or provider == "local" else dataset_bytes(workload)
    data_s = float(o["data_s"]) if o.get("data_s") is not None else data_bytes * 8 / (mbps * 1e6)
    warm = compile_warmup_s(workload, o.get("graph_ops")) if on_gpu else 0.0
    if o.get("warmup_s") is not None:
        warm = float(o["warmup_s"])
    return Overheads(base["boot_s"], base["setup_s"], data_s, base["teardown_s"], data_bytes, note, warm)
