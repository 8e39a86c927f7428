"""Efficiency calibration: measured and published throughput -> fraction of peak per case.

The throughput model needs one number per (GPU architecture, precision class, model): the
model FLOP utilisation (MFU) a real training loop reaches. It is fitted here from data files,
so adding measurements is a data change, never a code change:

* ``bench/results/calibration_public.json``  published figures (sources inside the file)
* ``bench/results/h100_payload.json``        our payload measured on an H100 (docs/benchmarks.md)
* ``bench/results/cpu_op_rates.json``        per-class CPU rates fitted on our payload's CPU steps
  (``launcher.estimate.cpufit``; its flat per-core rate prices a model without per-operation counts)
* ``bench/results/h200_lm.json``             our language models on H200s (bench/lm_throughput.py),
  fitted apart from the rest (``Calibration.lm``)

They ship as package data (``launcher/estimate/calibration/``, byte-equal copies made by
``python3 bench/package_calibration.py``, which also stamps ``manifest.json``; a test fails
when bench/results and the packaged copy differ), so an installed gpujob fits exactly what
the checkout fits.

Fit: log(MFU) = mu + precision class + arch + arch x class + model family + model, each effect
shrunk toward zero (ridge) so an unseen combination falls back to the broader effects.
Pure Python: it runs in well under a millisecond and needs neither numpy nor torch.
"""

from __future__ import annotations

import math
import os
import statistics
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from launcher.estimate.paths import calibration_dir, read_json

MODEL_FAMILY = {"vgg16": "vgg", "vgg11": "vgg", "resnet50": "resnet", "resnet18": "resnet",
                "tinycnn": "small", "mlp": "small"}
PRECISION_CLASS = {"fp32": "fp32", "tf32": "tf32", "fp16": "half", "bf16": "half"}

# Used when a file is missing or holds too few points; every one is documented in docs/estimator.md.
DEFAULT_MFU = 0.25
DEFAULT_MULTI_GPU_EFFICIENCY = 0.9
STEP_OVERHEAD_S = 0.001  # launch/optimizer/Python time per step not covered by FLOPs
CPU_GFLOPS_PER_CORE = 30.0  # per-core fp32 rate for a model without per-operation counts when cpu_op_rates.json is absent

# (term name, ridge strength): larger = trusts that term less when it has few points.
_TERMS = (("cls", 0.2), ("arch", 0.2), ("arch_cls", 0.5), ("family", 0.5), ("model", 1.0))
_ITERATIONS = 60


def model_family(model: str) -> str:
    from launcher.payloads.lm_shapes import is_lm  # standard library only

    return "lm" if is_lm(model) else MODEL_FAMILY.get(model, "other")


def gpu_from_device_name(device_name: str) -> str | None:
    """'NVIDIA H100 80GB HBM3' -> 'H100' (the GPU table's name); None when unknown."""
    name = device_name.upper()
    table = (("H100", "PCIE", "H100-PCIE"), ("H100", "", "H100"), ("H200", "", "H200"),
             ("A100", "80GB", "A100-80GB"), ("A100", "", "A100"), ("V100", "32GB", "V100-32GB"),
             ("V100", "", "V100"), ("A10G", "", "A10G"), ("L40S", "", "L40S"), ("L4", "", "L4"),
             ("T4", "", "T4"), ("A10", "", "A10"))
    for key, extra, gpu in table:
        if key in name and extra in name:
            return gpu
    return None


@dataclass(frozen=True)
class Point:
    gpu: str
    count: int
    model: str
    precision: str
    batch_size: int
    samples_per_second: float
    source: str
    role: str = "fit"  # fit | check | variant (a non-default payload setting: listed only)
    image_size: int = 224
    num_classes: int = 1000
    in_channels: int = 3
    flops_per_sample: float | None = None  # as recorded with the measurement, if any
    note: str = ""


def _load_public(path: Path) -> list[Point]:
    doc = read_json(path, {})
    out = []
    for p in doc.get("points", []):
        try:
            out.append(Point(gpu=p["gpu"], count=int(p.get("count", 1)), model=p["model"],
                             precision=p["precision"], batch_size=int(p["batch_size"]),
                             samples_per_second=float(p["samples_per_second"]),
                             source=p.get("source", path.name), role=p.get("role", "fit"),
                             image_size=int(p.get("image_size", 224)),
                             num_classes=int(p.get("num_classes", 1000)),
                             in_channels=int(p.get("in_channels", 3))))
        except (KeyError, TypeError, ValueError):
            continue  # a malformed row is skipped, not fatal: calibration is best effort
    return out


def _load_payload(path: Path, default_gpu: str | None) -> list[Point]:
    """Our own payload measurements (bench/results/*_payload.json): a list of run records."""
    doc = read_json(path, [])
    rows = doc.get("results", []) if isinstance(doc, dict) else doc
    out = []
    for r in rows if isinstance(rows, list) else []:
        try:
            gpu = gpu_from_device_name(str(r.get("device_name", ""))) or default_gpu
            if gpu is None or not r.get("samples_per_second"):
                continue
            # Defaults of our payload on CUDA: channels_last, compile and fast layers on. Other
            # variants (eager, channels-first, plain layers, rows measured before fast layers
            # existed) are a different program from what a job runs: listed, never fitted and
            # kept out of the error summary.
            default_cfg = (r.get("channels_last", True) is not False and r.get("compile", True) is not False
                           and r.get("fast_layers", True) is not False and not r.get("extra_args"))
            # language models: samples are tokens, so the batch is the tokens of one GPU step
            out.append(Point(gpu=gpu, count=int(r.get("gpu_count") or r.get("count", 1)), model=r["model"],
                             precision=r["precision"], batch_size=int(r.get("batch_tokens", r["batch_size"])),
                             samples_per_second=float(r["samples_per_second"]),
                             source=f"{path.name} ({r.get('torch', 'torch ?')})",
                             role=r.get("role", "fit" if default_cfg else "variant"),
                             image_size=int(r.get("image_size", 224)),
                             num_classes=int(r.get("num_classes", 1000)),
                             in_channels=int(r.get("in_channels", 3)),
                             flops_per_sample=r.get("flops_per_sample"),
                             note=f"compile={r.get('compile')} channels_last={r.get('channels_last')} "
                                  f"fast_layers={r.get('fast_layers')}"))
        except (KeyError, TypeError, ValueError):
            continue
    return out


# Every bench/results file the estimator reads at run time (op_efficiency.json: written by opfit,
# absent until op profiles were measured). Packaged by bench/package_calibration.py.
DATA_FILES = ("calibration_public.json", "h100_payload.json", "cpu_op_rates.json", "h200_lm.json",
              "op_efficiency.json", "host_repeats.json")
MANIFEST = "manifest.json"  # {"fitted_at": ISO time the packaged copy was taken, "files": {name: sha256}}


def load_points(directory: Path | None = None) -> list[Point]:
    d = directory or calibration_dir()
    return (_load_public(d / "calibration_public.json")
            + _load_payload(d / "h100_payload.json", default_gpu="H100")
            + _load_payload(d / "h200_lm.json", default_gpu="H200"))


LM_POOLED = "lm"  # the model name every language-model point is fitted and priced under


@dataclass
class Calibration:
    mu: float = math.log(DEFAULT_MFU)
    effects: dict = field(default_factory=dict)  # term -> {key: log effect}
    multi_gpu_efficiency: float = DEFAULT_MULTI_GPU_EFFICIENCY
    step_overhead_s: float = STEP_OVERHEAD_S
    cpu_gflops_per_core: float = CPU_GFLOPS_PER_CORE
    n_points: int = 0
    sources: tuple = ()
    # Language models are fitted apart (their MFU says nothing about CNNs' and the other way
    # round): their own fit on their own points, carried to other GPUs by the main fit's
    # architecture effects relative to the architecture they were measured on; one MFU for all of
    # them (LM_POOLED: no per-model term). It prices only the shapes the per-operation model
    # cannot count (docs/estimator.md, section 10).
    lm: "Calibration | None" = None
    lm_arch: str = ""

    @staticmethod
    def keys(arch: str, cls: str, model: str) -> dict:
        # Model effects are per precision class: VGG16 beats ResNet-50 in MFU in bf16 (ResNet's
        # element-wise layers are memory-bound there) but not in fp32, where both are compute-bound;
        # one shared effect carried the bf16 gap into fp32 and predicted 95% MFU for VGG16 on V100.
        return {"cls": cls, "arch": arch, "arch_cls": f"{arch}/{cls}", "family": f"{model_family(model)}/{cls}",
                "model": f"{model}/{cls}"}

    def knows(self, model: str, cls: str) -> bool:
        """True when fitted runs of this model's family (at this precision class) exist."""
        return f"{model_family(model)}/{cls}" in self.effects.get("family", {}) and model_family(model) != "other"

    def efficiency(self, arch: str, cls: str, model: str) -> float:
        """Fitted MFU; unseen keys contribute 0 (fall back to the broader effects)."""
        if self.lm is not None and model_family(model) == "lm":
            shift = self._arch_effect(arch, cls) - self._arch_effect(self.lm_arch, cls)
            return min(0.95, self.lm.efficiency(self.lm_arch, cls, LM_POOLED) * math.exp(shift))
        log_e = self.mu + sum(self.effects.get(t, {}).get(k, 0.0) for t, k in self.keys(arch, cls, model).items())
        return min(0.95, math.exp(log_e))

    def _arch_effect(self, arch: str, cls: str) -> float:
        return self.effects.get("arch", {}).get(arch, 0.0) + self.effects.get("arch_cls", {}).get(f"{arch}/{cls}", 0.0)


def implied_mfu(point: Point, flops_per_sample: float, peak_tflops: float, overhead_s: float) -> float:
    """MFU a single-GPU measurement implies, after removing the fixed per-step overhead."""
    step = point.batch_size / point.samples_per_second
    compute = max(step - overhead_s, 0.2 * step)
    return flops_per_sample * point.batch_size / (peak_tflops * 1e12 * compute)


def fit(rows: list[tuple[dict, float]], cal: Calibration | None = None) -> Calibration:
    """rows: (keys from Calibration.keys, log MFU). Ridge backfitting of the additive effects.

    Each row's current effect per term is kept in a list (``held``) rather than looked up again
    for every other term; the sums are the same additions in the same order as the plain
    ``sum(effects[t][keys[t]] for t != term)``, so the fit is the same to the last bit."""
    cal = cal or Calibration()
    if not rows:
        return cal
    mu = statistics.fmean(y for _, y in rows)
    terms = [t for t, _ in _TERMS]
    row_keys = [[keys[t] for t in terms] for keys, _ in rows]
    resid = [y - mu for _, y in rows]
    held = [[0.0] * len(terms) for _ in rows]  # effects start empty: every key contributes 0.0
    effects: dict[str, dict[str, float]] = {t: {} for t in terms}
    counts = [{} for _ in terms]
    for i in range(len(terms)):
        for rk in row_keys:
            counts[i][rk[i]] = counts[i].get(rk[i], 0) + 1
    others_of = [[j for j in range(len(terms)) if j != i] for i in range(len(terms))]
    for _ in range(_ITERATIONS):
        for i, (term, lam) in enumerate(_TERMS):
            sums: dict[str, float] = {}
            js = others_of[i]
            for rk, h, y in zip(row_keys, held, resid):
                others = 0
                for j in js:
                    others += h[j]
                k = rk[i]
                sums[k] = sums.get(k, 0.0) + (y - others)
            n = counts[i]
            eff = effects[term] = {k: sums[k] / (n[k] + lam) for k in sums}
            for rk, h in zip(row_keys, held):
                h[i] = eff[rk[i]]
    cal.mu, cal.effects, cal.n_points = mu, effects, len(rows)
    return cal


def _gpu_lookup():
    from launcher.catalog.gpus import get_gpu

    return get_gpu


def peak_and_class(gpu, precision: str) -> tuple[float, str, str]:
    """(dense peak TFLOPS actually used, precision class, note) for a GPU and a precision.

    A precision with no tensor path on this GPU (tf32/bf16 before Ampere) runs at the fp32
    rate, as GPUSpec.peak() documents; the note says so and what to use instead.
    """
    raw = gpu.peak_tflops.get(precision)
    if raw is None:
        note = ""
        if precision == "bf16":
            note = f"bf16 has no fast path on {gpu.name} ({gpu.arch}): estimated at the fp32 rate; use precision: fp16"
        elif precision == "tf32":
            note = f"TF32 needs Ampere or newer: on {gpu.name} it runs as fp32"
        elif precision == "fp16":
            note = f"{gpu.name} has no fast fp16 path: estimated at the fp32 rate"
        return gpu.peak_tflops["fp32"], "fp32", note
    return raw, PRECISION_CLASS[precision], ""


def flops_for(point: Point) -> float:
    from launcher.estimate.flops import model_cost

    try:
        return model_cost(point.model, point.image_size, point.num_classes, point.in_channels,
                          allow_torch=False).train_flops_per_sample
    except Exception:
        if point.flops_per_sample:
            return float(point.flops_per_sample)
        raise


def build(points: list[Point], get_gpu=None, exclude: Point | None = None) -> Calibration:
    """Fit a Calibration from points (``exclude``: leave one out, for the error table)."""
    get_gpu = get_gpu or _gpu_lookup()
    cal = Calibration()
    fit_points = [p for p in points if p.role == "fit" and p is not exclude]
    rows, lm_rows, lm_archs = [], [], []
    for p in fit_points:
        if p.count != 1:
            continue
        try:
            gpu = get_gpu(p.gpu)
            peak, cls, _ = peak_and_class(gpu, p.precision)
            mfu = implied_mfu(p, flops_for(p), peak, cal.step_overhead_s)
        except Exception:
            continue  # unknown GPU or model: the point cannot inform the fit
        if model_family(p.model) == "lm":  # one MFU for every language model: no term of its own per model
            lm_rows.append((Calibration.keys(gpu.arch, cls, LM_POOLED), math.log(mfu)))
            lm_archs.append(gpu.arch)
        else:
            rows.append((Calibration.keys(gpu.arch, cls, p.model), math.log(mfu)))
    fit(rows, cal)
    if lm_rows:
        cal.lm = fit(lm_rows, Calibration())
        cal.lm_arch = statistics.mode(lm_archs)
    # Multi-GPU efficiency: measured n-GPU rate over n x the same setup's 1-GPU rate.
    singles = {(p.gpu, p.model, p.precision, p.source): p.samples_per_second
               for p in fit_points if p.count == 1}
    ratios = [p.samples_per_second / (p.count * singles[(p.gpu, p.model, p.precision, p.source)])
              for p in fit_points if p.count > 1 and (p.gpu, p.model, p.precision, p.source) in singles]
    if ratios:
        cal.multi_gpu_efficiency = statistics.median(ratios)
    cal.sources = tuple(sorted({p.source for p in fit_points}))
    cpu_rate = _cpu_rate(calibration_dir() / "cpu_op_rates.json")
    if cpu_rate:
        cal.cpu_gflops_per_core = cpu_rate
    return cal


def _cpu_rate(path: Path) -> float | None:
    """Median sustained fp32 GFLOP/s per core over our measured CPU steps (launcher.estimate.cpufit),
    for a model without per-operation counts; None when not measured."""
    rate = read_json(path, {}).get("flat_gflops_per_core")
    return float(rate) if rate else None


def _stamp(directory: Path) -> tuple:
    out = []
    for name in DATA_FILES:
        try:
            out.append(os.stat(directory / name).st_mtime_ns)
        except OSError:
            out.append(None)
    return tuple(out)


@lru_cache(maxsize=4)
def _cached(directory: str, stamp: tuple) -> Calibration:
    return build(load_points(Path(directory)))


def current() -> Calibration:
    """The calibration from the packaged points, refitted when a file changes."""
    d = calibration_dir()
    return _cached(str(d), _stamp(d))


def provenance() -> dict:
    """Which calibration the estimator uses: {"source", "points", "fitted_at"}.

    source: where the points came from; points: measurements the fit used (int);
    fitted_at: when the packaged points were taken from bench/results (ISO 8601 UTC), the fit
    being a deterministic function of them. Missing data reads as 0 points and fitted_at None.
    """
    d = calibration_dir()
    manifest = read_json(d / MANIFEST, {})
    return {"source": f"gpujob package data ({', '.join(DATA_FILES)} from bench/results)",
            "points": current().n_points, "fitted_at": manifest.get("fitted_at")}
