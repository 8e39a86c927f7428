"""Dict-returning entry points for the CLI and the runner (JSON-ready, nothing printed).

    full_estimate(spec, ...)        -> Estimate.to_dict()   (gpujob estimate [--json])
    for_machine(spec, provider, ...) -> one machine's row    (budget check before a run, estimate vs actual)
"""

from __future__ import annotations

from typing import Any, Callable

from launcher.errors import EstimateError
from launcher.estimate import calibration
from launcher.estimate.bands import band, local_total_band
from launcher.estimate.baseline import cached_baseline, measure_baseline
from launcher.estimate.billing import bill_usd
from launcher.estimate.clifit import checkpoint_bytes
from launcher.estimate.flops import workload_cost
from launcher.estimate.learned import measured_for
from launcher.estimate.overheads import overheads_for
from launcher.estimate.scaling import network_for
from launcher.estimate.table import DEFAULT_TOP, estimate, lm_step_batch, model_baseline, per_epoch, predict_job


def full_estimate(spec, *, providers=("aws", "gcp"), baseline: bool = True, probe_seconds: float = 15.0,
                  top: int = DEFAULT_TOP, all_regions: bool = False, catalog=None,
                  refresh_baseline: bool = False, show_all: bool = False,
                  on_probe: Callable[[float], None] | None = None) -> dict[str, Any]:
    """The whole table. baseline=False skips the CPU probe: the CPU row is the cached measurement
    of this workload on this machine when there is one (it says so), else predicted.
    refresh_baseline: probe again even when a cached measurement exists. show_all: every row,
    not only the spec's and the cheaper alternatives (``table.estimate``). on_probe(seconds):
    called just before the CPU probe starts, only when one runs (no cache hit, PyTorch here).
    A model that cannot be built raises ModelError before any probe."""
    workload_cost(spec.workload)  # counted (and cached) first: a broken model fails before the probe
    if baseline:
        base = measure_baseline(spec, probe_seconds=probe_seconds, refresh=refresh_baseline, on_probe=on_probe)
    else:
        base = cached_baseline(spec, probe_seconds=probe_seconds)
    out = estimate(spec, catalog=catalog, baseline=base, providers=providers, top=top,
                   all_regions=all_regions, show_all=show_all).to_dict()
    out["calibration"] = calibration.provenance()
    return out


def _pick_offer(spec, catalog, provider: str, instance_type: str):
    offers = [o for o in catalog.offers if o.provider == provider and o.instance_type == instance_type]
    acc = spec.resources.accelerators
    if acc is not None:  # a GCP host type (n1-standard-8) carries different GPUs: match the spec's
        from launcher.catalog.model import normalize_gpu

        same_gpu = [o for o in offers if o.gpu.casefold() == normalize_gpu(acc.name).casefold()]
        offers = same_gpu or offers
    if not offers:
        raise EstimateError(f"{provider} instance type {instance_type!r} is not in the price catalog",
                            "run `gpujob catalog show` for the known types")
    want = {r.casefold() for r in spec.resources.regions}
    in_region = [o for o in offers if o.region.casefold() in want]
    return min(in_region or offers, key=lambda o: (o.price is None, o.price or 0.0))


def own_overhead(seen: dict | None) -> dict | None:
    """A recorded local run's own time outside its loop and compile, when it ran on this machine:
    {outside_s, compile_s (None: price the compile by the fit), label}; else None.

    The run's start event said whether its compile cache was cold (payloads/compile_cache.py):
    cold, its compile is a cold compile, as the fit's are: reused; warm, its compile describes the
    next run only while the cache is still warm, so it is reused when a folder the run looked at
    still holds a file now, else the compile is priced by the fit (cold) and only the start-up is
    reused; unknown (older runs), reused with the old hedge."""
    from launcher.estimate.learned import this_host

    if not seen or seen.get("outside_s") is None or seen.get("compile_s") is None or seen.get("host") != this_host():
        return None
    out, comp, cache = float(seen["outside_s"]), float(seen["compile_s"]), seen.get("compile_cache")
    measured = f"start-up {out:.1f} s and compile {comp:.1f} s measured in run {seen['run_id']}"
    if cache == "cold":
        return {"outside_s": out, "compile_s": comp, "label": f"{measured} (compile cache cold)"}
    if cache == "warm":
        from launcher.payloads.compile_cache import holds_a_file

        if any(holds_a_file(d) for d in seen.get("compile_cache_dirs") or []):
            return {"outside_s": out, "compile_s": comp,
                    "label": f"{measured} (compile cache warm, and it still holds files: the compile is priced warm)"}
        return {"outside_s": out, "compile_s": None,
                "label": (f"start-up {out:.1f} s measured in run {seen['run_id']} (its compile, {comp:.1f} s, ran on a "
                          f"warm compile cache that is now empty or gone: the compile is priced cold, by the fit)")}
    return {"outside_s": out, "compile_s": comp,
            "label": f"{measured} (its compile cache may have been warm: not recorded)"}


def job_overrides(w, cost) -> dict[str, Any]:
    """What overheads_for needs to know of the job: its graph operations (a language model compiles
    one block's graph for all its blocks, so None: overheads.compile_warmup_s uses its measured or
    default figure) and the bytes of the final checkpoint and model files."""
    return {"graph_ops": None if w.is_lm else cost.graph_ops(), "checkpoint_bytes": checkpoint_bytes(w, cost)}


def for_machine(spec, provider: str, instance_type: str | None, price_per_hour: float | None, *, spot: bool,
                baseline: bool, catalog=None, local_gpu: str | None = None,
                on_probe: Callable[[float], None] | None = None) -> dict[str, Any]:
    """Predicted time and dollars of this job on one machine (the one a run is about to use).

    aws/gcp: the catalog's GPU for instance_type (price_per_hour overrides the catalog's).
    local: this machine's GPU (``local_gpu``, found by the provider) or its CPU (measured when
    baseline=True); ssh: the spec's accelerator when it names one, else the CPU; billed $0.
    resources.num_nodes machines of it: num_nodes x the GPUs, num_nodes x the price.
    on_probe(seconds): called just before the CPU probe starts, only when one runs.
    """
    w = spec.workload
    cost = workload_cost(w)
    base = (measure_baseline(spec, on_probe=on_probe) if baseline
            else (cached_baseline(spec) or model_baseline(spec, cost)))
    base_dict = base.to_dict()
    gpu_name, count, note, sps_band, seen = None, 0, "", None, None
    nodes = spec.resources.num_nodes
    if provider in ("aws", "gcp"):
        if not instance_type:
            raise EstimateError(f"no instance type to estimate on {provider}", "set resources.instance_type")
        if catalog is None:
            from launcher.catalog import load_catalog

            catalog = load_catalog()
        offer = _pick_offer(spec, catalog, provider, instance_type)
        gpu_name, count = offer.gpu, offer.gpu_count
        if price_per_hour is None:
            price_per_hour = offer.spot_price if spot else offer.price
    elif provider == "local":
        # This machine: its own GPU (found by the provider) or its CPU, whatever the spec asks for.
        if local_gpu:
            acc = spec.resources.accelerators
            gpu_name, count = local_gpu, acc.count if acc else 1
    elif spec.resources.accelerators is not None:  # ssh: trust the spec about the remote GPU
        gpu_name, count = spec.resources.accelerators.name, spec.resources.accelerators.count
    if gpu_name:
        from launcher.catalog.gpus import get_gpu

        net = network_for(provider, instance_type, count) if nodes > 1 else None
        gpu = get_gpu(gpu_name)
        p = predict_job(w, cost, gpu, count, num_nodes=nodes, network=net)
        sps, fits, max_batch, note = p.samples_per_second, p.fits_memory, p.max_batch, p.note
        eff, interconnect, world, sps_band = p.scaling_efficiency, p.interconnect, p.world_size, p.error_band
        basis = "gpu model"
        seen = measured_for(w, gpu_name, count) if provider == "local" and nodes == 1 else None
        if seen:  # this signature ran on this GPU before: its measured rate, with the spread of repeats
            sps, note = seen["samples_per_second"], "; ".join(x for x in (note, seen["label"]) if x)
            sps_band = band(gpu.arch, p.method, seen, step_s=lm_step_batch(w) / sps)[0]
            basis = "gpu measured"
    else:
        # One CPU process per machine: the CPU row is not a data-parallel estimate.
        sps, fits, max_batch = base.samples_per_second, True, None
        eff, interconnect, world, nodes = None, "", 1, 1
        basis = "cpu measured" if base.measured else "cpu model"
        note = base.note
    if not sps:
        raise EstimateError("no throughput for this machine", "check the spec's workload")
    train = w.total_samples / sps
    overrides = job_overrides(w, cost)
    own = own_overhead(seen if gpu_name else None)
    if own:  # the recorded run's own start-up and (unless its warm cache is gone) compile, on this machine
        overrides.update(setup_s=own["outside_s"], warmup_s=own["compile_s"])
        note = "; ".join(x for x in (note, own["label"]) if x)
    over_parts = overheads_for(provider, w, overrides, on_gpu=bool(gpu_name))
    over = over_parts.total_s
    total = train + over
    # This machine's own GPU: how far the total may be off on a host the overhead was never measured on.
    total_band, band_basis = (local_total_band(train, over, sps_band, measured=basis == "gpu measured",
                                               overhead_measured=bool(own and own["compile_s"] is not None))
                         if provider == "local" and gpu_name else (None, ""))
    usd = bill_usd(total, None if price_per_hour is None else price_per_hour * nodes, provider)
    epoch_s, epoch_usd = per_epoch(train, w.epochs, price_per_hour if provider in ("aws", "gcp") else 0.0, nodes)
    budget = spec.limits.budget_usd
    return {
        "provider": provider, "instance_type": instance_type, "gpu": gpu_name, "gpu_count": count, "spot": spot,
        "price_per_hour": price_per_hour, "samples_per_second": sps, "train_seconds": train,
        "overhead_seconds": over, "warmup_seconds": over_parts.warmup_s, "total_seconds": total,
        "total_usd": usd, "fits_memory": fits,
        "total_error_band": None if total_band is None else round(total_band, 4), "total_band_basis": band_basis,
        "max_batch": max_batch, "budget_usd": budget,
        "over_budget": bool(budget is not None and usd is not None and usd > budget),
        "basis": basis, "note": note, "train_flops_per_sample": cost.train_flops_per_sample,
        "baseline": base_dict,
        "num_nodes": nodes, "world_size": world, "scaling_efficiency": eff, "seconds_per_epoch": epoch_s,
        "usd_per_epoch": epoch_usd, "interconnect": interconnect,
        "unit": "token" if getattr(w, "is_token_model", False) else "sample",  # what samples_per_second counts
    }
