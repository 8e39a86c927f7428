"""Error bands: how far an estimate's samples/s may be off, from the measured error of its case.

    band(case) -> (fraction, basis)   e.g. (0.08, "leave-one-model-out error on hopper profiles")

Cases, narrowest first:

* ``measured``: the user ran this signature on this GPU before; the band is the spread of
  repeated runs (the user's own when there are several, else the median run-to-run spread of
  steady samples/s of the same job on different lent H200 hosts over ordered pairs of runs,
  bench/results/host_repeats.json, launcher/estimate/repeats.py: ~2% for steps of 20 ms or more,
  ~9% for shorter, host-bound steps; the largest, 22% and 41%, named in the basis),
* ``profiled``: a GPU architecture with per-kernel profiles behind the per-operation model;
  the band is that model's median leave-one-model-out error (bench/results/op_efficiency.json)
  or, when larger, its median error against the CLI runs on lent H200 hosts
  (``cli_samples_per_second`` in host_repeats.json: runs it never fitted, whose hosts differ),
* ``lm``: a built-in language model, priced by whichever of the per-operation model and the LM
  MFU fit measured better on our H200 LM runs (``method_choice.lm``), or by the LM MFU fit when
  it has no per-operation count: the median error of the method that priced it on the LM runs
  the MFU fit never saw (``method_choice.lm``; the per-operation errors leave the model out of
  the fit: launcher/estimate/opfit.py, ``lm_rows``),
* ``mfu``: a model priced by the MFU fit (section 2 of docs/estimator.md): that fit's median
  held-out error (``mfu_error`` in op_efficiency.json),
* ``cross-gpu``: the per-operation model on an architecture never profiled: its
  leave-one-model-out error combined (root sum of squares) with the median error of the GPU
  speed ratios it predicts for published figures of other GPUs (``cross_gpu``), both written by
  ``python -m launcher.estimate.opfit --write``.

A band is a median absolute error: about half of the cases measured so far landed inside it. The
total of an unmeasured local GPU job takes a higher quantile (LOCAL_TOTAL_QUANTILE) so that it
too holds about half of the runs on a host it never saw (below).

``local_total_band`` is the band of a local GPU job's *total* time. Unmeasured: the errors the
estimate made on cold CLI runs of lent hosts it never saw (``local_total.pairs`` in
host_repeats.json, launcher/estimate/repeats.py: each run's overhead and samples/s error, applied
together at this job's share of start-up and compile, since a host slow at compiling is slow at
stepping too), their LOCAL_TOTAL_QUANTILE quantile (docs/estimator.md section 13, "The error band
of a local total"): ±17-19% when start-up and compile are 80-90% of the total, ±9-10% when they
are a tenth to a third (the samples/s errors of those hosts). Measured, the overhead's spread times its share and the samples/s band
times the rest add (not in quadrature, for the same reason). A measured signature's overhead takes the
median spread of the same job's overhead on different hosts (``overhead_seconds`` in host_repeats.json);
one whose start-up and compile are the recorded run's own (the same signature on this machine,
``overhead_measured``) the same job's overhead spread on one host (``same_host`` in host_repeats.json).
"""

from __future__ import annotations

import math
from functools import lru_cache

from launcher.estimate.opmodel import efficiencies
from launcher.estimate.paths import calibration_dir, read_json

FALLBACK_BAND = 0.25  # no measured error for the case at all (no fit file): said so in the basis
# The total's band of an unmeasured local GPU job: this quantile of the held-out runs' errors. Runs
# of one host err together, so the median over runs of four hosts held 10 of 26 runs with each run's
# own call left out; two thirds held 17 of 26 (``local_total.inside_leave_one_call_out`` in
# host_repeats.json), about the half a band promises (docs/estimator.md section 13).
LOCAL_TOTAL_QUANTILE = 2 / 3


@lru_cache(maxsize=1)
def host_repeats() -> dict:
    """The bundled run-to-run spread of the same job on different lent H200 hosts
    (host_repeats.json, written by ``python -m launcher.estimate.repeats --write``); {} when absent."""
    doc = read_json(calibration_dir() / "host_repeats.json", {})
    return doc if isinstance(doc, dict) else {}


def repeat_spread(step_s: float | None = None) -> tuple[float, str] | None:
    """(median |b / a - 1| over pairs of runs (a, b) of one job, samples/s; basis naming the largest)
    for a job whose step takes ``step_s`` seconds (None: unknown, taken as short); None without
    the bundled spread."""
    sps = host_repeats().get("samples_per_second") or {}
    limit = float(sps.get("short_step_s") or 0.02)
    short = step_s is None or step_s < limit
    got = sps.get("short_step" if short else "long_step")
    if not got or got.get("median") is None:
        return None
    steps = f"steps under {limit * 1000:.0f} ms" if short else f"steps of {limit * 1000:.0f} ms or more"
    return float(got["median"]), (f"median run-to-run spread of the same job on different H200 hosts, {steps}: "
                                  f"{got.get('n_runs', 0)} runs of {got.get('n_groups', 0)} jobs, "
                                  f"largest {float(got.get('max') or 0):.0%}")


def with_hosts(fraction: float, basis: str) -> tuple[float, str]:
    """(fraction, basis), or the per-operation model's median error against the CLI runs on lent
    hosts when that is larger (the profiles came from few hosts; a user's run lands on any)."""
    cli = host_repeats().get("cli_samples_per_second") or {}
    if cli.get("median") is not None and float(cli["median"]) > fraction:
        return float(cli["median"]), (f"median error against {cli.get('n_runs', 0)} CLI runs on lent H200 "
                                      f"hosts, none fitted")
    return fraction, basis


def band(arch: str, method: str, measured: dict | None = None, user_spread: float | None = None,
         lm: bool = False, step_s: float | None = None) -> tuple[float, str]:
    """(fraction, basis) for one estimate; see the module docstring. ``step_s``: the measured
    step time of a measured signature (samples per step / its samples/s)."""
    if measured is not None:
        if user_spread is not None:
            return user_spread, "spread of your repeated runs of this job"
        spread = repeat_spread(step_s)
        if spread is not None:
            return spread
    doc = efficiencies()
    if lm:  # the held-out LM error of the method that priced it (method_choice.lm has both)
        got = (doc.get("method_choice", {}).get("lm") or {}).get("per_operation" if method == "per-operation" else "mfu")
        if not got and doc.get("lm_error", {}).get("method", method) == method:
            got = doc.get("lm_error")
        if got and got.get("median") is not None:
            # no brackets: the estimate prints the basis inside its own ("tokens/s ±6% (...)")
            how = "the per-operation model with the model left out" if method == "per-operation" else "the LM MFU fit"
            return with_hosts(float(got["median"]), f"error on held-out language-model runs on an H200, {how}")
    err = doc.get("error", {})
    archs = {k.split("/")[0] for k in doc.get("efficiency", {}) if not k.startswith("*")}
    if method == "per-operation" and arch in archs and err.get("leave_one_model_out", {}).get("median") is not None:
        return with_hosts(float(err["leave_one_model_out"]["median"]), f"leave-one-model-out error on {arch} profiles")
    if method == "mfu" and doc.get("mfu_error", {}).get("median") is not None:
        return float(doc["mfu_error"]["median"]), "held-out error of the MFU fit on measured and published runs"
    cross = doc.get("cross_gpu", {}).get("median")
    lomo = err.get("leave_one_model_out", {}).get("median")
    lomo = None if lomo is None else with_hosts(float(lomo), "")[0]
    if cross is not None and lomo is not None:  # the model's own error and the transfer to this GPU
        return math.hypot(float(cross), float(lomo)), ("leave-one-model-out error combined with the ratio error "
                                                        "on published figures of other GPUs")
    if cross is not None:
        return float(cross), "ratio error on published figures of other GPUs"
    return FALLBACK_BAND, "no measured error for this case yet"


def local_total_band(train_s: float, overhead_s: float, sps_band: float | None,
                     measured: bool = False, overhead_measured: bool = False) -> tuple[float | None, str]:
    """(fraction, basis) of a local GPU job's total time: total_error_quantile of the held-out runs'
    errors at this job's overhead share (see the module docstring); (None, "") without them.
    A ``measured`` signature (``sps_band``: its samples/s band) adds the median spread of the
    overhead x its share of the total and ``sps_band`` x the training share. Its overhead takes the median spread of the overhead (total minus
    training) of the same job on different hosts instead, when bundled; ``overhead_measured`` (the
    overhead is the recorded run's own, on this machine) the spread of the same job on one host."""
    total = train_s + overhead_s
    repeats = host_repeats()
    for wanted, spread, where in ((overhead_measured, (repeats.get("same_host") or {}).get("overhead_seconds"),
                                   "one host"),
                                  (measured, repeats.get("overhead_seconds"), "different hosts")):
        if wanted and total > 0 and (spread or {}).get("median") is not None:
            over = float(spread["median"]) * overhead_s / total
            train = float(sps_band or 0.0) * train_s / total
            return over + train, (f"start-up and compile of the same cold job differ by {float(spread['median']):.0%} "
                                  f"(median; up to {float(spread.get('max') or 0):.0%}) between "
                                  f"{spread.get('n_runs', 0)} runs on {where}; samples/s band on the rest")
    held = repeats.get("local_total") or {}
    if total <= 0 or not held.get("pairs"):
        return None, ""
    return total_error_quantile(overhead_s / total, held["pairs"]), (
        f"{LOCAL_TOTAL_QUANTILE:.0%} of {held.get('n_runs', 0)} cold runs on lent H200 hosts never fitted "
        f"would have been within it, at this job's share of start-up and compile")


def total_error_of(overhead_share: float, pair: list) -> float:
    """|predicted / measured - 1| of a total whose predicted overhead is ``overhead_share`` of it,
    had the overhead and the samples/s been off as in one run: ``pair`` = [overhead error,
    samples/s error], each predicted / measured - 1 (the run's total is then overhead / (1 + e_o)
    + training x (1 + e_s) of the predicted ones)."""
    w = min(max(overhead_share, 0.0), 1.0)
    return abs(1.0 / (w / (1.0 + float(pair[0])) + (1.0 - w) * (1.0 + float(pair[1]))) - 1.0)


def total_error_quantile(overhead_share: float, pairs: list, quantile: float | None = None) -> float:
    """The ``quantile`` (default LOCAL_TOTAL_QUANTILE) of total_error_of over held-out ``pairs``
    (host_repeats.json ``local_total``): the total's band at that overhead share."""
    errs = sorted(total_error_of(overhead_share, p) for p in pairs)
    q = LOCAL_TOTAL_QUANTILE if quantile is None else quantile
    return errs[min(len(errs) - 1, int(q * len(errs)))]


def cpu_band(cpu: str) -> tuple[float | None, str]:
    """(fraction, basis) of a CPU figure predicted per operation class (launcher.estimate.cpufit,
    no probe): the rates were fitted on one CPU. On that CPU model the band is their median
    leave-one-model-out error; on any other it is their largest held-out error (as a fraction of
    the smaller of predicted and measured), since no other CPU was measured. (None, "") without a fit."""
    from launcher.estimate.cpufit import fitted_rates

    doc = fitted_rates()
    err = doc.get("error", {}).get("leave_one_model_out", {})
    if err.get("median") is None:
        return None, ""
    host = doc.get("host", {}).get("cpu") or "one CPU"
    if cpu == host:
        return float(err["median"]), f"leave-one-model-out error of CPU rates fitted on this CPU model ({host})"
    return float(err["max_ratio"]) - 1.0, (f"largest leave-one-model-out error of CPU rates fitted on one other CPU "
                                           f"({host}); this CPU was never measured")
