"""The estimate: every GPU offer priced for this job, beside this machine's CPU.

``estimate(spec)`` returns an ``Estimate``; ``Estimate.to_dict()`` is the JSON contract of
``gpujob estimate --json`` (issue 3). Rendering is the CLI's job; ``COLUMNS`` says what to show.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

from launcher.catalog.reference import is_reference
from launcher.errors import EstimateError, UnknownGPU
from launcher.estimate.baseline import Baseline, cpu_batch, cpu_cores, cpu_name, predicted_baseline
from launcher.estimate.bands import band
from launcher.estimate.billing import bill_usd
from launcher.estimate.learned import measured_for
from launcher.estimate.flops import ModelCost, workload_cost
from launcher.estimate.memory import MemoryPlan, memory_table, plan_lm
from launcher.estimate.overheads import overheads_for
from launcher.estimate.scaling import network_for
from launcher.estimate.throughput import Prediction, predict, predict_cpu

DEFAULT_TOP = 25
ALTERNATIVES_TOP = 5  # cheaper rows the spec did not ask for, shown by default (--all: every row)
# CPU architectures each provider has an image for (aws: x86_64 and arm64 Deep Learning AMIs,
# providers.aws.common.DLAMI_SSM_PARAMETERS; gcp: the x86_64 Deep Learning VM family only).
# An offer of another architecture cannot launch with our image: it is left out, with a note.
LAUNCHABLE_ARCHS = {"aws": ("x86_64", "arm64"), "gcp": ("x86_64",)}
SECTIONS = {"requested": "what the spec asks for", "alternative": "cheaper, but not what the spec asks for"}

# What a human table shows, in order: (header, candidate key). The CLI formats
# *_seconds as durations and *_usd / price_per_hour as dollars.
COLUMNS = (
    ("PROVIDER", "provider"), ("INSTANCE", "instance_type"), ("REGION", "region"), ("GPU", "gpu"),
    ("N", "gpu_count"), ("SPOT", "spot"), ("$/H", "price_per_hour"), ("SAMPLES/S", "samples_per_second"),
    ("TRAIN", "train_seconds"), ("OVERHEAD", "overhead_seconds"), ("TOTAL", "total_seconds"),
    ("TOTAL $", "total_usd"), ("FITS", "fits_memory"), ("OVER BUDGET", "over_budget"),
)
FREE_COLUMNS = (
    ("FREE OPTION", "name"), ("GPU", "gpu"), ("N", "gpu_count"), ("SAMPLES/S", "samples_per_second"),
    ("TRAIN", "train_seconds"), ("FITS ONE SESSION", "fits_one_session"), ("SESSION H", "max_session_hours"),
    ("WEEKLY H", "weekly_hours"),
)


@dataclass
class Candidate:
    provider: str
    instance_type: str
    region: str
    zones: list
    gpu: str
    gpu_count: int
    spot: bool
    price_per_hour: float | None
    samples_per_second: float | None
    train_seconds: float | None
    overhead_seconds: float
    total_seconds: float | None
    total_usd: float | None
    fits_memory: bool
    over_budget: bool
    max_batch: int | None
    requested: bool = False  # the spec asks for exactly this: its market, regions, GPU or instance type
    section: str = "requested"  # "requested" | "alternative" (see SECTIONS)
    mfu: float | None = None
    bound: str | None = None
    memory_gib_needed: float | None = None
    note: str = ""
    # Many GPUs / machines (docs/estimator.md, "Many GPUs and many machines"). The job runs on
    # num_nodes machines of this offer: world_size = num_nodes x gpu_count, billed num_nodes x price.
    num_nodes: int = 1
    world_size: int = 1
    scaling_efficiency: float | None = None  # per-GPU samples/s here / on one such GPU
    seconds_per_epoch: float | None = None  # training only, no start-up
    usd_per_epoch: float | None = None  # seconds_per_epoch at num_nodes x price (no billing minimum)
    interconnect: str = ""
    error_band: float | None = None  # samples/s may be off by about this fraction (launcher.estimate.bands)
    band_basis: str = ""
    measured: dict | None = None  # an earlier run of this job on this GPU (launcher.estimate.learned)
    memory: dict | None = None  # language models: the per-GPU memory plan (launcher/estimate/memory.py)
    arch: str = "x86_64"  # host CPU of the offer; the provider launches it with an image of this arch
    method: str = ""  # "per-operation" | "mfu" (launcher.estimate.throughput)
    launchable: bool = True  # False: a reference cloud (azure, lambda, vast), priced but not launched on

    def sort_key(self) -> tuple:
        # Unfit and unpriced rows last; then cheapest, then fastest.
        return (not self.fits_memory, self.total_usd is None, self.total_usd or 0.0,
                self.total_seconds or math.inf, self.provider, self.instance_type, self.region)


@dataclass
class FreeRow:
    name: str
    gpu: str
    gpu_count: int
    samples_per_second: float | None
    train_seconds: float | None
    fits_one_session: bool
    fits_memory: bool
    max_session_hours: float
    weekly_hours: float | None
    source: str
    note: str


@dataclass
class Estimate:
    job: dict
    baseline: dict
    candidates: list[Candidate]
    free_options: list[FreeRow]
    catalog: dict
    summary: dict
    notes: list[str] = field(default_factory=list)
    candidates_total: int = 0  # before dedupe / top-N
    memory_plan: list[dict] = field(default_factory=list)  # language models: fewest GPUs per type
    asked: str = ""  # the spec's choices in words ("on-demand, us-east-1 or us-west-2, V100 x1")

    def to_dict(self) -> dict:
        return {
            "job": self.job,
            "baseline": self.baseline,
            "candidates": [asdict(c) for c in self.candidates],
            "candidates_total": self.candidates_total,
            "free_options": [asdict(f) for f in self.free_options],
            "catalog": self.catalog,
            "summary": self.summary,
            "notes": self.notes,
            "memory_plan": self.memory_plan,
            "asked": self.asked,
            "sections": {"requested": f"{SECTIONS['requested']} ({self.asked})", "alternative": SECTIONS["alternative"]},
        }


def human_duration(seconds: float) -> str:
    if seconds >= 2 * 365 * 86400:  # 9307 days reads better as 25.5 years
        return f"{seconds / (365 * 86400):.1f} years"
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.1f} days"
    if seconds >= 2 * 3600:
        return f"{seconds / 3600:.1f} hours"
    if seconds >= 120:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s"


# Tokens/s with activation checkpointing over without, measured on an H200: 0.836 (lm-1b) and
# 0.856 (lm-3b) (docs/benchmarks.md, "Language models"); 6/8 if recomputing were as slow as the rest.
CHECKPOINTING_SPEED = 0.85


def lm_step_batch(w) -> int:
    """Samples per GPU step for the throughput model: tokens (batch x seq_len) for language models."""
    return w.batch_size * w.effective_seq_len if w.is_token_model else w.batch_size


def predict_job(w, cost: ModelCost, gpu, count: int, *, num_nodes: int = 1, network=None,
                op_doc: dict | None = None, method: str | None = None) -> Prediction:
    """The throughput of a spec's workload on ``count`` GPUs of one type per machine x ``num_nodes``
    (throughput.predict). Language models: a GPU step trains batch x seq_len tokens, the memory
    plan picks DDP or FSDP and checkpointing (lm_memory_override), and under FSDP each GPU's
    optimizer update covers its shard only (the per-operation model's optimizer class / GPUs).
    A token-model factory has no plan: the one-GPU memory rule with AdamW's two moments, its
    largest batch counted in sequences."""
    plan = plan_lm(w, count * num_nodes, gpu.memory_gib) if w.is_lm else None
    if plan is not None and plan.parallel == "fsdp" and cost.ops:
        from launcher.estimate.opcount import OpCost

        cost = replace(cost, ops=OpCost.from_dict(cost.ops).sharded_optimizer(plan.world).to_dict())
    token = w.is_token_model  # AdamW's two moments; max_batch in sequences
    p = predict(gpu, count, w.precision, cost, lm_step_batch(w), w.model, num_nodes=num_nodes, network=network,
                compiled=w.compile is not False, op_doc=op_doc, method=method, optimizer_states=2 if token else 1,
                batch_unit=w.effective_seq_len if token else 1)
    return lm_memory_override(w, p, count * num_nodes, gpu.memory_gib, plan)


def lm_memory_override(w, p: Prediction | None, world: int, gpu_memory_gib: float,
                       plan: MemoryPlan | None = None) -> Prediction | None:
    """Language models: the memory plan (AdamW, FSDP, checkpointing) decides whether the job fits
    and the GiB per GPU, instead of the image models' one-GPU rule."""
    if p is None or not w.is_lm:
        return p
    plan = plan or plan_lm(w, world, gpu_memory_gib)
    p = replace(p, fits_memory=plan.fits, memory_gib_needed=plan.allocated_gib, max_batch=None, memory=plan.to_dict())
    if plan.checkpointing:  # every block's forward runs twice
        f = checkpointing_speed(w, p)
        p = replace(p, samples_per_second=p.samples_per_second * f, step_seconds=p.step_seconds / f, mfu=p.mfu * f)
    return p


def checkpointing_speed(w, p: Prediction) -> float:
    """Tokens/s with activation checkpointing over without, at the same batch. Per operation: the
    step plus the recomputed forward of every block, a third of the blocks' share of the GEMM class
    (a product's forward is 2 of its 6 FLOPs per weight; the output head, not in a block, is not
    recomputed) and a third of the attention and fused classes, from the step's own class times.
    Otherwise (the MFU fit) CHECKPOINTING_SPEED, measured across the batch doubling checkpointing buys."""
    per = p.per_class_seconds or {}
    if p.method != "per-operation" or not per or not p.step_seconds:
        return CHECKPOINTING_SPEED
    from launcher.payloads import lm_shapes

    s = lm_shapes.resolve(w.model, w.model_args or {}, w.vocab_size)
    blocks = 1.0 - s.vocab_size * s.d_model / lm_shapes.matmul_params(s)
    recompute = (per.get("gemm", 0.0) * blocks + per.get("attention", 0.0) + per.get("fused", 0.0)) / 3.0
    return p.step_seconds / (p.step_seconds + recompute)


def _memory_note(w, p: Prediction | None) -> str:
    if p is None:
        return ""
    if p.memory is not None:
        plan = MemoryPlan(**p.memory)
        return plan.describe() if plan.fits else f"does not fit ({plan.describe()}): more GPUs, see the memory plan"
    if p.fits_memory:
        return ""
    return (f"batch {w.batch_size} needs {p.memory_gib_needed:.1f} GiB; "
            + (f"use batch_size <= {p.max_batch}" if p.max_batch else "the model does not fit"))


def model_baseline(spec, cost: ModelCost) -> Baseline:
    """The CPU row when no probe ran: predicted from the model, marked measured=False."""
    cores = cpu_cores()
    sps = predict_cpu(cost, cores, batch=cpu_batch(spec.workload))
    return predicted_baseline(spec, cpu_name(), cores, sps, "not measured (probe skipped): predicted from the model",
                              "predicted: no measurement cached")


def per_epoch(train_seconds: float | None, epochs: float, price_per_hour: float | None,
              num_nodes: int) -> tuple[float | None, float | None]:
    """(seconds, dollars) of training per epoch; dollars None when unpriced."""
    if train_seconds is None:
        return None, None
    secs = train_seconds / epochs
    return secs, (None if price_per_hour is None else secs * price_per_hour * num_nodes / 3600)


class _Priced:
    """One offer on one market with what ranking it needs (``Candidate.sort_key``, ``_pick``,
    ``_nothing_fits``); ``_candidate`` makes the full row of the few that are shown."""

    __slots__ = ("offer", "spot", "price_per_hour", "p", "train_seconds", "overhead_seconds", "total_seconds",
                 "total_usd", "requested", "fits_memory", "provider", "instance_type", "region")
    sort_key = Candidate.sort_key

    def __init__(self, offer, spot: bool, price: float, p: Prediction | None, train: float | None, over: float,
                 total_s: float | None, usd: float | None, requested: bool):
        self.offer, self.spot, self.price_per_hour, self.p, self.requested = offer, spot, price, p, requested
        self.train_seconds, self.overhead_seconds, self.total_seconds, self.total_usd = train, over, total_s, usd
        self.fits_memory = bool(p and p.fits_memory)  # sort_key's fields are plain attributes: ~3,700 rows sorted
        self.provider, self.instance_type, self.region = offer.provider, offer.instance_type, offer.region

    gpu = property(lambda self: self.offer.gpu)
    samples_per_second = property(lambda self: self.p.samples_per_second if self.p else None)
    memory_gib_needed = property(lambda self: self.p.memory_gib_needed if self.p else None)
    max_batch = property(lambda self: self.p.max_batch if self.p else None)


def _candidate(r: _Priced, w, nodes: int, budget: float | None, get_gpu, measured: dict) -> Candidate:
    """The full row of one priced offer; ``measured``: earlier runs per (GPU, count), filled as met."""
    o, p, spot, price, usd = r.offer, r.p, r.spot, r.price_per_hour, r.total_usd
    if (o.gpu, o.gpu_count) not in measured:
        measured[(o.gpu, o.gpu_count)] = measured_for(w, o.gpu, o.gpu_count) if nodes == 1 else None
    seen_run = measured[(o.gpu, o.gpu_count)]
    err, basis = (band(get_gpu(o.gpu).arch, p.method, seen_run,
                       step_s=lm_step_batch(w) / seen_run["samples_per_second"]) if seen_run else
                  (p.error_band, p.band_basis)) if p else (None, "")
    epoch_s, epoch_usd = per_epoch(r.train_seconds, w.epochs, price, nodes)
    return Candidate(
        provider=o.provider, instance_type=o.instance_type, region=o.region, zones=list(o.zones),
        gpu=o.gpu, gpu_count=o.gpu_count, spot=spot, price_per_hour=price, samples_per_second=r.samples_per_second,
        train_seconds=r.train_seconds, overhead_seconds=r.overhead_seconds, total_seconds=r.total_seconds,
        total_usd=usd,
        fits_memory=r.fits_memory, over_budget=bool(budget is not None and usd is not None and usd > budget),
        max_batch=r.max_batch, requested=r.requested, section="requested" if r.requested else "alternative",
        mfu=p.mfu if p else None, bound=p.bound if p else None,
        memory_gib_needed=r.memory_gib_needed,
        num_nodes=nodes, world_size=nodes * o.gpu_count, memory=p.memory if p else None,
        scaling_efficiency=p.scaling_efficiency if p else None, seconds_per_epoch=epoch_s,
        usd_per_epoch=epoch_usd, interconnect=p.interconnect if p else "", arch=o.arch,
        note="; ".join(x for x in (_memory_note(w, p), seen_run["label"] if seen_run else "") if x),
        launchable=not is_reference(o.provider),
        error_band=err, band_basis=basis, measured=seen_run, method=p.method if p else "",
    )


def _asks_for(spec):
    """The test "is this row what the spec asks for?", as a function of (offer, spot): its market,
    one of its regions (when it names any), its instance type or its GPU and count. The spec's
    regions and GPU name are normalised once here, not once per row (3,700 rows by default)."""
    r = spec.resources
    regions = {x.casefold() for x in r.regions} if r.regions else None
    gpu = None
    if r.accelerators:
        from launcher.catalog.model import normalize_gpu

        gpu = normalize_gpu(r.accelerators.name).casefold()

    def asks(offer, spot: bool) -> bool:
        if spot != r.spot:
            return False
        if regions is not None and offer.region.casefold() not in regions:
            return False
        if r.instance_type:
            return offer.instance_type == r.instance_type
        if gpu is not None:
            return gpu == offer.gpu.casefold() and r.accelerators.count == offer.gpu_count
        return True

    return asks


def _asked_words(spec) -> str:
    r = spec.resources
    what = (r.instance_type if r.instance_type else
            f"{r.accelerators.name} x{r.accelerators.count}" if r.accelerators else "any GPU")
    where = " or ".join(r.regions) if r.regions else "any region"
    return f"{'spot' if r.spot else 'on-demand'}, {where}, {what}"


def _pick(rows: list, all_regions: bool, top: int | None) -> list:
    """Sorted rows, the cheapest region per (provider, type, market) unless all_regions, first ``top``."""
    rows = sorted(rows, key=Candidate.sort_key)
    if not all_regions:
        seen, kept = set(), []
        for c in rows:  # sorted: the first row per key is the cheapest region
            k = (c.provider, c.instance_type, c.spot)
            if k not in seen:
                seen.add(k)
                kept.append(c)
        rows = kept
    return rows if top is None else rows[:top]


def _nothing_fits(w, rows: list[Candidate], get_gpu) -> str | None:
    """The sentence when no offer at all holds the job on its GPUs (None when one does): what it
    needs, the largest GPU, and the fix (a batch that fits, else: the model alone is too big)."""
    if not rows or any(c.fits_memory for c in rows):
        return None
    needs = [c.memory_gib_needed for c in rows if c.memory_gib_needed]
    sizes = {c.gpu: get_gpu(c.gpu).memory_gib for c in rows if c.samples_per_second}
    if not needs or not sizes:
        return None
    largest = max(sizes, key=sizes.get)
    best = max((c for c in rows if c.max_batch), key=lambda c: c.max_batch, default=None)
    fix = (f"use batch_size <= {best.max_batch} (on {best.gpu})" if best else
           "the model alone does not fit one GPU; make it smaller (gpujob shards only language models, with FSDP)")
    return (f"No GPU in the catalog holds this job: batch {w.batch_size} needs {min(needs):,.1f} GiB per GPU, "
            f"the largest ({largest}) has {sizes[largest]:g} GiB; {fix}.")


def _row_name(c: Candidate) -> str:
    """'p3.2xlarge (V100 x1, aws us-east-1 spot)': one row as the summary names it."""
    machines = f" x {c.num_nodes} machines" if c.num_nodes > 1 else ""
    return (f"{c.instance_type}{machines} ({c.gpu} x{c.gpu_count}, {c.provider} {c.region}"
            f"{' spot' if c.spot else ''})")


def _summary(rows: list[Candidate], base: dict, budget: float | None, nothing_fits: str | None = None) -> dict:
    priced = [c for c in rows if c.fits_memory and c.total_usd is not None]
    cheapest = min(priced, key=Candidate.sort_key, default=None)
    fastest = min(priced, key=lambda c: (c.total_seconds, c.total_usd), default=None)
    out = {"cheapest": asdict(cheapest) if cheapest else None, "fastest": asdict(fastest) if fastest else None,
           "speedup_vs_cpu": None, "hours_saved": None, "within_budget": None}
    if budget is not None:
        out["within_budget"] = sum(1 for c in priced if not c.over_budget)
    if cheapest is None:
        out["sentence"] = nothing_fits or "No offer the spec asks for fits this job (see the alternatives)."
        return out
    target = cheapest
    if not cheapest.launchable:  # the real cheapest GPU hour is priced; the sentence names what gpujob launches
        from launcher.catalog.reference import NOTE

        target = min((c for c in priced if c.launchable), key=Candidate.sort_key, default=None)
        out["cheapest_launchable"] = asdict(target) if target else None
        cheaper = (f"{_row_name(cheapest)}, {human_duration(cheapest.total_seconds)} with start-up, "
                   f"${cheapest.total_usd:.2f}")
        if target is None:
            out["sentence"] = (f"No offer gpujob can launch fits this job: the cheapest row, {cheaper}, is {NOTE}; "
                               "ask for a GPU that AWS or GCP offers (`gpujob gpus` lists them).")
            return out
        out["reference_note"] = f"cheaper, {NOTE}: {cheaper}"
    what = _row_name(target)
    gpu_part = f"takes {human_duration(target.total_seconds)} and costs ${target.total_usd:.2f}"
    cpu_s, cpu_sps = base.get("seconds"), base.get("samples_per_second")
    if not cpu_s or not cpu_sps:
        out["sentence"] = f"The spec would launch {what}: it {gpu_part}."
        return out
    out["speedup_vs_cpu"] = round(target.samples_per_second / cpu_sps, 2)
    saved = cpu_s - target.total_seconds
    out["hours_saved"] = round(saved / 3600, 3)
    how = base.get("basis") or ("measured" if base.get("measured") else "predicted")
    if saved > 0:  # (hours_saved, in the JSON, is the difference)
        out["sentence"] = (f"The spec would launch {what}: it {gpu_part}; this CPU would take "
                           f"{human_duration(cpu_s)} ({how}).")
    else:
        out["sentence"] = (f"This CPU finishes in {human_duration(cpu_s)} ({how}), sooner than what the spec "
                           f"would launch ({what}, {human_duration(target.total_seconds)} with start-up, "
                           f"${target.total_usd:.2f}): no GPU needed.")
    return out


def estimate(spec, *, catalog=None, baseline: Baseline | None = None, providers=("aws", "gcp"),
             include_spot: bool = True, overheads: dict | None = None, all_regions: bool = False,
             top: int | None = DEFAULT_TOP, get_gpu=None, free_options=None, show_all: bool = False) -> Estimate:
    """Price ``spec`` on every GPU offer of ``providers``. ``baseline``: a measured CPU
    baseline (measure_baseline); None predicts the CPU from the model. ``overheads``:
    overrides for overheads_for (boot_s, setup_s, teardown_s, data_s, upload_mbps).

    Rows come in two sections (``Candidate.section``): "requested", what the spec would
    launch (its market, regions, GPU or instance type; first ``top``), then "alternative",
    up to ALTERNATIVES_TOP rows the spec did not ask for that are cheaper than its cheapest
    row. ``show_all``: every row of both sections, no ``top`` cut. The summary sentence is
    about the cheapest requested row."""
    w = spec.workload
    cost = workload_cost(w)
    if catalog is None:
        from launcher.catalog import load_catalog

        catalog = load_catalog()
    if get_gpu is None:
        from launcher.catalog.gpus import get_gpu
    if free_options is None:
        from launcher.catalog.free import FREE_OPTIONS as free_options
    notes: list[str] = []
    if cost.approximate:
        notes.append(f"FLOPs are approximate: {cost.source}")
    if w.is_lm:
        notes.append(f"language model: samples are tokens ({w.batch_size} sequences x {w.effective_seq_len} "
                     "tokens per GPU step); memory per GPU from the AdamW/FSDP plan (docs/estimator.md)")
    elif w.is_token_model:
        notes.append(f"token model: samples are tokens ({w.batch_size} sequences x {w.effective_seq_len} "
                     "tokens per GPU step), counted per operation as the payload trains it (AdamW)")
    vocab = w.lm_shape().vocab_size if w.is_lm else w.vocab_size
    if w.is_token_model and vocab % 8:
        notes.append(f"vocab_size {vocab:,} is not a multiple of 8: the logits' matrix products fall off the fast "
                     "tensor-core kernels (GPT-2 ran ~44% slower at 50,257 than at 50,304 on an H200, "
                     "docs/benchmarks.md); the per-operation price includes the measured slowdown, the LM MFU "
                     "fit's does not: pad the vocabulary to a multiple of 64")
    total = w.total_samples
    budget = spec.limits.budget_usd
    nodes = spec.resources.num_nodes
    if nodes > 1:
        notes.append(f"every row is {nodes} machines of its instance type, billed {nodes} x its price; "
                     "machines all-reduce over the instance's network (docs/estimator.md)")
    providers = tuple(providers)
    offers = [o for o in catalog.offers if o.provider in providers]
    unlaunchable = sorted({(o.provider, o.arch) for o in offers
                           if o.arch not in LAUNCHABLE_ARCHS.get(o.provider, (o.arch,))})
    for provider, arch in unlaunchable:
        notes.append(f"{provider} {arch} offers left out: gpujob has no {arch} image for {provider}")
    offers = [o for o in offers if o.arch in LAUNCHABLE_ARCHS.get(o.provider, (o.arch,))]

    preds: dict[tuple, Prediction | None] = {}
    unknown: set[str] = set()
    slow_path: dict[str, list[str]] = {}
    over: dict[str, float] = {}
    rows: list[_Priced] = []
    asks_for = _asks_for(spec)
    for o in offers:
        net = network_for(o.provider, o.instance_type, o.gpu_count) if nodes > 1 else None
        key = (o.gpu, o.gpu_count, net)
        if key not in preds:
            try:
                preds[key] = predict_job(w, cost, get_gpu(o.gpu), o.gpu_count, num_nodes=nodes, network=net)
            except UnknownGPU:  # only that: any other failure is a bug, for the CLI's error gate
                preds[key] = None  # a GPU missing from the spec table: row shown, unpredicted
                unknown.add(o.gpu)
            if preds[key] and preds[key].note:
                slow_path.setdefault(w.precision, []).append(o.gpu)
        p = preds[key]
        if o.provider not in over:
            over[o.provider] = overheads_for(o.provider, w, {"graph_ops": cost.graph_ops(), **(overheads or {})}).total_s
        sps = p.samples_per_second if p else None
        train = total / sps if sps else None
        total_s = train + over[o.provider] if train is not None else None
        for spot, price in ((False, o.price), (True, o.spot_price if include_spot else None)):
            if price is None:
                continue
            usd = bill_usd(total_s, price * nodes, o.provider) if total_s is not None else None
            rows.append(_Priced(o, spot, price, p, train, over[o.provider], total_s, usd, asks_for(o, spot)))
    if unknown:
        notes.append(f"no hardware figures for {', '.join(sorted(unknown))}: their offers are not predicted")
    for prec, gpus in slow_path.items():
        names = ", ".join(sorted(set(gpus)))
        hint = "; use precision: fp16 there" if prec == "bf16" else ""
        notes.append(f"{prec} has no fast path on {names}: estimated at their fp32 rate{hint}")
    if not rows:
        raise EstimateError(f"no GPU offers for providers {', '.join(providers)} in the catalog",
                            "check resources.regions or run `gpujob catalog update`")
    n_all = len(rows)
    nothing_fits = None if w.is_lm else _nothing_fits(w, rows, get_gpu)
    asked = _pick([c for c in rows if c.requested], all_regions, None if show_all else top)
    others = _pick([c for c in rows if not c.requested], all_regions, None)
    if not show_all:
        best = min((c.total_usd for c in asked if c.fits_memory and c.total_usd is not None), default=None)
        others = [c for c in others if c.fits_memory and c.total_usd is not None
                  and (best is None or c.total_usd < best)][:ALTERNATIVES_TOP]
    if not asked:
        notes.append(f"no offer in the catalog is what the spec asks for ({_asked_words(spec)})")
    # The full rows of the shown offers only (a few dozen of ~3,700 by default).
    measured: dict[tuple, dict | None] = {}
    asked = [_candidate(r, w, nodes, budget, get_gpu, measured) for r in asked]
    others = [_candidate(r, w, nodes, budget, get_gpu, measured) for r in others]
    rows = asked + others

    base = baseline or model_baseline(spec, cost)
    free_rows = []
    for f in free_options:
        try:
            fp = predict_job(w, cost, get_gpu(f.gpu), f.gpu_count)
        except UnknownGPU:
            continue
        train = total / fp.samples_per_second
        free_rows.append(FreeRow(
            name=f.name, gpu=f.gpu, gpu_count=f.gpu_count, samples_per_second=fp.samples_per_second,
            train_seconds=train, fits_one_session=fp.fits_memory and train <= f.max_session_hours * 3600,
            fits_memory=fp.fits_memory, max_session_hours=f.max_session_hours, weekly_hours=f.weekly_hours,
            source=f.source_url, note=f.note + ("" if not fp.note else f"; {fp.note}"),
        ))
    prov = catalog.provenance
    base_dict = {"device": base.device, "cores": base.cores, "samples_per_second": base.samples_per_second,
                 "seconds": base.seconds, "measured": base.measured, "cached": base.cached, "note": base.note,
                 "basis": base.basis, "error_band": base.error_band, "band_basis": base.band_basis}
    return Estimate(
        job={"name": spec.name, "model": w.model, "precision": w.precision, "batch_size": w.batch_size,
             "image_size": w.image_size, "epochs": w.epochs, "total_samples": total,
             "train_flops_per_sample": cost.train_flops_per_sample, "params": cost.params,
             "flops_source": cost.source, "approximate": cost.approximate, "budget_usd": budget,
             "seq_len": w.effective_seq_len if w.is_token_model else None},
        baseline=base_dict,
        candidates=rows,
        free_options=free_rows,
        catalog={"source": prov.source, "snapshot": prov.snapshot, "age_days": prov.age_days, "stale": prov.stale},
        summary=_summary(asked, base_dict, budget, nothing_fits),
        notes=notes,
        candidates_total=n_all,
        memory_plan=memory_table(w, offers, get_gpu) if w.is_lm else [],
        asked=_asked_words(spec),
    )
