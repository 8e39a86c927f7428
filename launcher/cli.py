"""The gpujob command line: options -> one core call -> render.

This is the only module that prints or exits. Heavy modules (SDKs, torch, the estimator)
are imported inside the commands so `gpujob --help` stays instant.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from typer.core import TyperGroup

from launcher import __version__
from launcher.errors import GpujobError, UsageError
from launcher.richhelp import install as _defer_unused_rich
from launcher.signals import ignore_from_now
from launcher.typerfast import install as _plain_values_without_pydantic

_defer_unused_rich()  # help pages without rich.markdown / rich.traceback (launcher/richhelp.py)
_plain_values_without_pydantic()  # typer's option coercion, pydantic only when needed (launcher/typerfast.py)

_DEBUG = bool(os.environ.get("GPUJOB_DEBUG"))


class _Group(TyperGroup):
    """Turns every GpujobError into one line on stderr and its exit code (also under CliRunner)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except GpujobError as exc:
            if exc.exit_code == 130:  # released already: more Ctrl-C's must not cut the message
                ignore_from_now()
            if _DEBUG:
                raise
            from rich.markup import escape

            _err().print(f"[red]error:[/] {escape(str(exc))}")
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:  # a command with nothing to release (a run handles its own signals)
            ignore_from_now()
            _err().print("interrupted")
            sys.exit(130)


app = typer.Typer(cls=_Group, add_completion=True, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Estimate, launch, stream and always tear down GPU training jobs.")
catalog_app = typer.Typer(no_args_is_help=True, help="The bundled GPU price catalog.")
app.add_typer(catalog_app, name="catalog")

def _out():
    from rich.console import Console

    con = Console(highlight=False)
    if not con.is_terminal:  # pipes and CI logs: don't squeeze tables into 80 columns
        con = Console(highlight=False, width=max(con.width, 180))
    return con


def _err():
    """stderr: errors and notices. A pipe or log gets each message as one line (grep finds it
    whole); a terminal gets it wrapped between words at its width, not cut mid-word by the
    terminal (`max_du` / `ration` at 80 columns)."""
    from rich.console import Console

    con = Console(stderr=True, highlight=False)
    con.soft_wrap = not con.is_terminal
    return con


def _json_out(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, default=str) + "\n")
    sys.stdout.flush()


def _version(value: bool) -> None:
    if value:
        from launcher.catalog.store import snapshot_date
        from launcher.estimate.calibration import provenance

        cal = provenance()
        typer.echo(f"gpujob {__version__} (calibration {(cal['fitted_at'] or 'never')[:10]}, {cal['points']} points; "
                   f"price snapshot {snapshot_date()})")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Show the version and exit.")) -> None:
    pass


# --- validate / estimate ---------------------------------------------------------------


@app.command()
def validate(specs: list[Path] = typer.Argument(..., help="Job spec(s) (YAML)."),
             as_json: bool = typer.Option(False, "--json", help="One JSON object per spec, in a list.")) -> None:
    """Check job specs and print what each asks for."""
    from launcher.estimate.flops import check_model
    from launcher.spec import load_job

    jobs = [(spec, load_job(spec)) for spec in specs]  # the first bad spec stops here, before any output
    unchecked = {}
    for spec, job in jobs:
        try:
            why = check_model(job.workload)  # a model that cannot be built: one line, exit 2
        except GpujobError as exc:
            if len(jobs) > 1:  # say which of the specs
                exc.message = f"{spec}: {exc.message}"
            raise
        if why:
            unchecked[spec] = why
    if as_json:
        _json_out([{"spec": str(spec), "ok": True, **job.model_dump(mode="json")} for spec, job in jobs])
        return
    from rich.markup import escape  # the human line only: --json never imports rich

    for spec, job in jobs:
        w, r = job.workload, job.resources
        acc = str(r.accelerators) if r.accelerators else "any GPU"
        square = len(w.sample_shape) == 3 and w.sample_shape[1] == w.sample_shape[2]
        what = (f"{w.effective_seq_len}-token sequences, {w.total_samples:,} tokens" if w.is_token_model
                else f"{f'{w.image_size}px' if square else f'input {list(w.sample_shape)}'}, {w.total_samples:,} samples")
        _out().print(f"[green]ok[/] {spec}: {job.name} - {w.model} {what}, "
                     f"batch {w.batch_size}, {w.precision}; {acc}; max {job.limits.max_duration / 3600:.2g} h"
                     + (f", budget ${job.limits.budget_usd:g}" if job.limits.budget_usd else "")
                     + (f"; model not built here: {escape(unchecked[spec])}" if spec in unchecked else ""))


@app.command()
def estimate(
    spec: Path = typer.Argument(..., help="Job spec (YAML)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object on stdout."),
    no_baseline: bool = typer.Option(False, "--no-baseline", help="Skip the local CPU probe."),
    probe_seconds: float = typer.Option(15.0, "--probe-seconds", min=1, max=600, help="Length of the CPU probe."),
    provider: list[str] = typer.Option(["aws", "gcp", "azure", "lambda", "vast"], "--provider", "-p",
                                       help="Providers to price (repeatable); azure, lambda, vast are estimate only."),
    top: int = typer.Option(25, "--top", min=1, help="Rows to show."),
    all_regions: bool = typer.Option(False, "--all-regions", help="One row per region, not only the cheapest."),
    refresh_baseline: bool = typer.Option(False, "--refresh-baseline",
                                          help="Measure the CPU again even when a cached measurement exists."),
    show_all: bool = typer.Option(False, "--all", help="Every offer, not only what the spec asks for and cheaper alternatives."),
    wide: bool = typer.Option(False, "--wide", help="All columns: $/h, samples/s, GPU efficiency, overheads, notes."),
) -> None:
    """Price the job on every AWS and GCP GPU, next to this machine's CPU."""
    from launcher.jobestimate import full_estimate
    from launcher.spec import load_job

    from launcher.catalog.listing import ALL_PROVIDERS

    unknown = [p for p in provider if p not in ALL_PROVIDERS]
    if unknown:  # a typo is bad input, not "no offers"
        raise UsageError(f"--provider {unknown[0]}: the catalog has no such provider",
                         f"use one of {', '.join(ALL_PROVIDERS)}")
    job = load_job(spec)
    result = full_estimate(job, providers=tuple(provider), baseline=not no_baseline, probe_seconds=probe_seconds,
                           top=top, all_regions=all_regions, refresh_baseline=refresh_baseline,
                           show_all=show_all, on_probe=_probe_notice)
    if as_json:  # no rich: its tables cost start-up that JSON does not need
        _json_out(result)
        return
    from launcher.render import render_estimate

    render_estimate(_out(), result, wide=wide)


def _probe_notice(seconds: float) -> None:
    from launcher.render import probe_notice

    _err().print(probe_notice(seconds))


# --- run and friends -------------------------------------------------------------------


@app.command()
def run(
    spec: Path = typer.Argument(..., help="Job spec (YAML)."),
    provider: str = typer.Option("local", "--provider", "-p",
                                 help="local | ssh | aws | gcp | auto (the cheapest AWS/GCP offer, failing over)"),
    host: Optional[str] = typer.Option(None, "--host", help="ssh: the machine to use."),
    user: Optional[str] = typer.Option(None, "--user", help="ssh: login user (default: ~/.ssh/config, else $USER)."),
    port: Optional[int] = typer.Option(None, "--port", help="ssh: port (default: ~/.ssh/config, else 22)."),
    ssh_config: Optional[Path] = typer.Option(None, "--ssh-config", help="ssh: OpenSSH config (default ~/.ssh/config)."),
    identity: Optional[Path] = typer.Option(None, "--identity", "-i", help="ssh: private key file."),
    known_hosts: Optional[Path] = typer.Option(None, "--known-hosts", help="ssh: known_hosts file with the pinned key."),
    region: list[str] = typer.Option([], "--region", help="aws/gcp: allowed regions (repeatable)."),
    project: Optional[str] = typer.Option(None, "--project", help="gcp: project id."),
    ssh_cidr: Optional[str] = typer.Option(None, "--ssh-cidr", help="aws/gcp: SSH ingress (default: your address /32)."),
    detach: bool = typer.Option(False, "--detach", "-d", help="Start the job, print the run id, return."),
    keep: bool = typer.Option(False, "--keep", help="Do not tear down (you pay until `gpujob down`)."),
    force: bool = typer.Option(False, "--force", help="Launch even if the estimate exceeds the budget."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan; create nothing (exit 7 if the launch would be refused)."),
    artifacts: Optional[Path] = typer.Option(None, "--artifacts", help="Where results land (default ./gpujob-runs/RUN_ID)."),
    no_baseline: bool = typer.Option(False, "--no-baseline", help="Skip the local CPU baseline in the report."),
    as_json: bool = typer.Option(False, "--json", help="Events as JSON lines."),
    env: list[str] = typer.Option([], "--env", help="Pass this variable from your environment to the job "
                                  "(repeatable; the value is never stored or printed)."),
    env_file: list[Path] = typer.Option([], "--env-file", help="Pass NAME=VALUE lines of this file to the job "
                                        "(repeatable; never stored or printed)."),
) -> None:
    """Launch, ship, stream, fetch and tear down. Provider `local` needs no cloud account."""
    from launcher.runner import RunOptions, Runner
    from launcher.spec import load_job, with_env

    job = load_job(spec)
    if env or env_file:
        from launcher.secrets import cli_env

        job = with_env(job, cli_env(list(env), list(env_file)), str(spec))
    config = _provider_config(provider, host, user, port, identity, known_hosts, region, project, ssh_cidr,
                              ssh_config)
    if provider == "ssh" and ssh_config:
        config["ssh_config"] = str(ssh_config)
    opts = RunOptions(provider=provider, provider_config=config, detach=detach, keep=keep, force=force,
                      artifacts_dir=str(artifacts) if artifacts else None, baseline=not no_baseline)
    from launcher.render import EventPrinter, render_plan, render_report

    if dry_run:
        plan = Runner(on_event=lambda *a, **k: None).plan(job, opts, spec_path=str(spec))
        _json_out(plan) if as_json else render_plan(_out(), plan)
        if plan.get("refused"):  # the plan of a launch that would be refused fails like the launch itself
            from launcher.errors import BudgetError

            raise BudgetError(f"the launch would be refused: {plan['refused']}")
        return
    with EventPrinter(_out(), as_json=as_json) as printer:
        result = Runner(on_event=printer).run(job, opts, spec_path=str(spec), spec_text=spec.read_text())
    if detach:
        _json_out({"run_id": result.run.id}) if as_json else _out().print(
            f"run {result.run.id} started; follow it with `gpujob logs {result.run.id} --follow`")
        return
    _json_out({"event": "report", **result.report}) if as_json else render_report(_out(), result.report)


# run options that mean something to some providers only (a --host without --provider ssh ran here)
_PROVIDER_OPTIONS = {"--host": ("ssh",), "--user": ("ssh",), "--port": ("ssh",), "--identity": ("ssh",),
                     "--known-hosts": ("ssh",), "--ssh-config": ("ssh",), "--region": ("aws", "gcp", "auto"),
                     "--ssh-cidr": ("aws", "gcp", "auto"), "--project": ("gcp", "auto")}


def _provider_config(provider, host, user, port, identity, known_hosts, region, project, ssh_cidr,
                     ssh_config=None) -> dict:
    given = {"--host": host, "--user": user, "--port": port, "--identity": identity, "--known-hosts": known_hosts,
             "--ssh-config": ssh_config, "--region": region, "--ssh-cidr": ssh_cidr, "--project": project}
    for flag, value in given.items():
        if value and provider not in _PROVIDER_OPTIONS[flag]:
            meant = _PROVIDER_OPTIONS[flag][0]
            raise UsageError(f"{flag} is for --provider {' or '.join(_PROVIDER_OPTIONS[flag])}, not {provider}"
                             + (" (this machine)" if provider == "local" else ""),
                             f"add --provider {meant}, or leave {flag} out")
    if provider == "ssh":
        if not host:
            raise UsageError("--provider ssh needs --host", "e.g. --host gpu-box (a ~/.ssh/config alias works)")
        return {"host": host, "user": user, "port": port,
                "identity": str(identity) if identity else None,
                "known_hosts": str(known_hosts) if known_hosts else None}
    config: dict[str, Any] = {}
    if provider in ("aws", "gcp", "auto"):
        if region:
            config["regions"] = list(region)
        if ssh_cidr:
            config["ssh_cidr"] = _check_cidr(ssh_cidr)
    if provider in ("gcp", "auto") and project:
        config["project"] = project
    return config


def _check_cidr(value: str) -> str:
    import ipaddress

    try:
        net = ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise UsageError(f"--ssh-cidr {value!r} is not an address", "e.g. --ssh-cidr 203.0.113.7/32") from None
    if net.num_addresses != 1:  # SSH is opened to one caller, never to a range or the internet
        raise UsageError(f"--ssh-cidr {value} opens SSH to {net.num_addresses:,} addresses",
                         "give your own public address, e.g. 203.0.113.7/32")
    return str(net)


@app.command()
def logs(run_id: str = typer.Argument(...),
         follow: bool = typer.Option(False, "--follow", "-f", help="Stream until the job ends, then finish it."),
         as_json: bool = typer.Option(False, "--json")) -> None:
    """Re-attach to a running job, or replay a finished one."""
    from launcher.render import EventPrinter, render_report
    from launcher.runner import Runner

    with EventPrinter(_out(), as_json=as_json, replay=True) as printer:
        result = Runner(on_event=printer).attach(run_id, follow=follow)
    if follow and result.report and result.run.finished:
        _json_out({"event": "report", **result.report}) if as_json else render_report(_out(), result.report)


@app.command("ls")
def list_runs(as_json: bool = typer.Option(False, "--json"),
              limit: int = typer.Option(20, "--limit", min=1)) -> None:
    """Runs: id, name, provider, state, elapsed, dollars so far."""
    from launcher.liveness import orphaned
    from launcher.render import render_runs
    from launcher.store import Store

    runs = Store().list_runs(limit)
    if as_json:
        _json_out([{"id": r.id, "name": r.name, "provider": r.provider, "state": r.state,
                    "created_at": r.created_at, "elapsed_s": r.billed_seconds(), "spent_usd": r.charged_usd(),
                    "reason": r.reason, "orphaned": orphaned(r)} for r in runs])
        return
    render_runs(_out(), runs)


@app.command()
def cost(days: Optional[float] = typer.Option(None, "--days", help="Only runs started in the last N days."),
         as_json: bool = typer.Option(False, "--json", help="One JSON object on stdout.")) -> None:
    """What runs cost: estimate vs actual time and $, totals per provider, GPU and month."""
    from launcher.costs import cost_report

    rep = cost_report(days=days)
    if as_json:
        _json_out(rep)
        return
    from launcher.render_cost import render_cost

    render_cost(_out(), rep)


@app.command()
def show(run_id: str = typer.Argument(...), as_json: bool = typer.Option(False, "--json"),
         plot: Optional[Path] = typer.Option(None, "--plot", help="Draw estimate vs actual and GPU vs CPU to a PNG.")
         ) -> None:
    """Estimate vs actual, GPU vs the local CPU."""
    from launcher.render import render_report
    from launcher.report import build_report
    from launcher.store import Store

    report = build_report(Store().get_run(run_id))
    if plot:
        from launcher.plot import plot_report

        plot_report(report, plot)
    if as_json:
        _json_out(report)
    else:
        render_report(_out(), report)
        if plot:
            _out().print(f"chart written to {plot}")


@app.command()
def down(run_id: str = typer.Argument(...),
         discard: bool = typer.Option(False, "--discard", help="Release a fetch-failed run without its results."),
         as_json: bool = typer.Option(False, "--json", help="Events as JSON lines, then {\"event\": \"down\"}.")
         ) -> None:
    """Stop the job (it checkpoints first), bring its results home and release everything it holds."""
    from launcher.render import EventPrinter
    from launcher.runner import Runner

    with EventPrinter(_out(), as_json=as_json) as printer:
        Runner(on_event=printer).down(run_id, discard=discard)
    _json_out({"event": "down", "run_id": run_id, "released": True}) if as_json else _out().print(
        f"run {run_id}: everything released")


@app.command(context_settings={"allow_interspersed_args": False, "ignore_unknown_options": True})
def ssh(run_id: str = typer.Argument(..., help="A running run, or one kept with --keep."),
        command: Optional[list[str]] = typer.Argument(None, help="After --: a command to run instead of a shell.")
        ) -> None:
    """A shell (or `-- CMD`) on a run's machine: its key, its pinned host key, the system ssh."""
    from launcher import runshell

    command = list(command or [])
    if command[:1] == ["--"]:  # click keeps the separator when options stop at the run id
        command = command[1:]
    inv = runshell.prepare(run_id, command)
    for note in inv.notes:
        _err().print(note, markup=False)
    if not command:
        _err().print(f"connecting to {inv.target} (run {run_id}); `exit` leaves, the job keeps running",
                     markup=False)
    sys.stdout.flush()
    raise typer.Exit(runshell.run(inv))


@app.command()
def calibrate(reset: bool = typer.Option(
        False, "--reset", help="Forget what your runs taught: the GPU runs and their fit, and the local CPU runs "
        "recorded in the CPU baseline cache. CPU probes are kept (re-measure with --refresh-baseline)."),
              as_json: bool = typer.Option(False, "--json")) -> None:
    """Refit the estimate's speed on your own finished runs (kept apart from the bundled calibration)."""
    from launcher.estimate import learned

    if reset:
        from launcher.estimate.baseline import drop_cpu_runs

        n, cpu = learned.reset(), drop_cpu_runs()
        if as_json:
            _json_out({"reset": True, "runs_dropped": n, "cpu_runs_dropped": cpu})
            return
        dropped = [f"{k} {what}{'s' if k != 1 else ''}" for k, what in
                   ((n, "measured GPU run"), (cpu, "measured CPU run")) if k]
        _out().print((f"dropped {' and '.join(dropped)}" + (" and your fit" if n else "") if dropped
                      else "nothing to drop") + "; estimates use the bundled calibration only; "
                     "CPU probes kept (--refresh-baseline re-measures)")
        return
    doc = learned.refit()
    runs = learned.load_runs()
    if as_json:
        _json_out({**doc, "runs": len(runs)})
        return
    if not doc["factors"]:
        _out().print((f"{len(runs)} measured run{'s' if len(runs) != 1 else ''}, none with a single-GPU "
                      "prediction to fit" if runs else "no measured GPU runs yet")
                     + ": nothing to refit (each GPU run that finishes is recorded automatically; a local "
                     "CPU run needs no refit: it is this machine's CPU figure at once)")
        return
    for key, f in sorted(doc["factors"].items()):
        _out().print(f"{key}: your runs ran at {f['factor']:.2f}x the bundled estimate ({f['runs']} run(s)); "
                     "estimates there now use it")


@app.command()
def fetch(run_id: str = typer.Argument(...)) -> None:
    """Retry bringing a fetch-failed run's results home (resumes a partial fetch), then release it."""
    from launcher.render import EventPrinter
    from launcher.runner import Runner

    with EventPrinter(_out()) as printer:
        result = Runner(on_event=printer).fetch(run_id)
    _out().print(f"run {result.run.id}: results in {result.run.artifacts_dir}; everything released")


@app.command()
def gc(provider: list[str] = typer.Option([], "--provider", "-p",
                                         help="Providers to check (repeatable; default: all, tags on aws and gcp)."),
       region: list[str] = typer.Option([], "--region"),
       project: Optional[str] = typer.Option(None, "--project", help="gcp: project id."),
       yes: bool = typer.Option(False, "--yes", help="Delete (default: dry run)."),
       as_json: bool = typer.Option(False, "--json")) -> None:
    """Find orphaned runs (client killed) and gpujob-tagged resources of no live run; --yes releases them.

    With --yes it names each one, then stops and releases it."""
    from launcher.gc import CLOUDS, collect
    from launcher.render import EventPrinter, render_gc

    providers = list(provider) or None
    if yes and not as_json:  # the confirmation names what will be deleted before anything is
        plan = collect(providers, list(region) or None, delete=False, project=project)
        render_gc(_out(), plan, deleted=False, confirming=True)
    printer = EventPrinter(_out()) if yes and not as_json else None
    report = collect(providers, list(region) or None, delete=yes, project=project, on_event=printer)
    if printer is not None:
        printer.close()
    clouds = [p for p in (providers or CLOUDS) if p in CLOUDS]
    if clouds and len(report["errors"]) >= len(clouds) and not report["orphaned_runs"]:
        from launcher.errors import ProviderError

        # "nothing to collect" would be a lie: nothing was checked
        raise ProviderError("gc", "could not check any provider: " + "; ".join(report["errors"]))
    _json_out(report) if as_json else render_gc(_out(), report, deleted=yes)
    # The exit code says whether anything may be left: unlisted kinds (3), undeleted resources (6).
    if yes and report["leftovers"]:
        from launcher.errors import TeardownError

        raise TeardownError([(x, "gpujob gc --yes (again)") for x in report["leftovers"]])
    if report["unchecked"]:
        from launcher.errors import ProviderError

        raise ProviderError("gc", f"could not check {len(report['unchecked'])} kind(s)/region(s): "
                            + "; ".join(report["unchecked"]), hint="rerun `gpujob gc` once the listing works")


# --- gpus ----------------------------------------------------------------------------------


@app.command()
def gpus(name: Optional[str] = typer.Argument(None, help="One GPU (family): list every offer of it, e.g. A100."),
         gpu: Optional[str] = typer.Option(None, "--gpu", help="Only this GPU family (A100 includes A100-80GB)."),
         provider: Optional[str] = typer.Option(None, "--provider", "-p", help="aws, gcp, azure, lambda or vast."),
         region: Optional[str] = typer.Option(None, "--region", help="Only offers in this region."),
         spot: bool = typer.Option(False, "--spot", help="Only offers with a spot price; --max-price applies to it."),
         max_price: Optional[float] = typer.Option(None, "--max-price", min=0, help="At most this $ per GPU-hour."),
         min_memory: Optional[float] = typer.Option(None, "--min-memory", min=0, help="At least this GiB per GPU."),
         as_json: bool = typer.Option(False, "--json", help="One JSON object on stdout.")) -> None:
    """GPU models with memory, peak bf16 and the cheapest $/GPU-hour per provider."""
    from launcher.catalog import load_catalog
    from launcher.catalog.listing import gpus_result

    if name and gpu and name.casefold() != gpu.casefold():
        raise UsageError(f"two GPUs asked for: {name} and --gpu {gpu}", "give one of them")
    result = gpus_result(load_catalog(), name or gpu, one=bool(name), provider=provider, region=region,
                         spot=spot, max_price=max_price, min_memory=min_memory)
    if as_json:
        _json_out(result)
        return
    from launcher.render_gpus import render_gpu_offers, render_gpus

    (render_gpu_offers if name else render_gpus)(_out(), result)


# --- catalog -------------------------------------------------------------------------------


@catalog_app.command("show")
def catalog_show(gpu: Optional[str] = typer.Option(None, "--gpu"),
                 provider: Optional[str] = typer.Option(None, "--provider"),
                 region: Optional[str] = typer.Option(None, "--region"),
                 as_json: bool = typer.Option(False, "--json")) -> None:
    """Prices per instance type and region, with the snapshot's source and age."""
    from launcher.catalog import load_catalog, show as catalog_offers
    from launcher.render import render_catalog

    from launcher.catalog.listing import ALL_PROVIDERS

    if provider and provider not in ALL_PROVIDERS:
        raise UsageError(f"the catalog has no provider '{provider}'", f"use one of {', '.join(ALL_PROVIDERS)}")
    cat = load_catalog()
    offers = catalog_offers(gpu=gpu, provider=provider, region=region)
    if not offers:
        asked = ", ".join(f"{k} {v}" for k, v in (("gpu", gpu), ("provider", provider), ("region", region)) if v)
        raise UsageError(f"no offer matches {asked or 'the filters'}",
                         f"GPUs in the catalog: {', '.join(cat.gpus())}")
    if as_json:
        from dataclasses import asdict

        _json_out({"provenance": asdict(cat.provenance), "offers": [asdict(o) for o in offers]})
        return
    render_catalog(_out(), cat.provenance, offers)


@catalog_app.command("update")
def catalog_update(as_json: bool = typer.Option(False, "--json", help="The new snapshot's provenance as JSON.")) -> None:
    """Download the current public price catalog (needs the internet)."""
    from launcher.catalog import update_catalog
    from launcher.catalog.store import user_catalog_path

    prov = update_catalog()
    if as_json:
        from dataclasses import asdict

        _json_out({"path": str(user_catalog_path()), **asdict(prov)})
        return
    _out().print(f"catalog updated: {prov.source} as of {prov.snapshot} ({user_catalog_path()})")
    for name, d in prov.details.items():
        if isinstance(d, dict) and d.get("kept"):
            _err().print(f"{name}: not refreshed ({d['error']}); kept its prices from {d['kept']} (estimate only)",
                         markup=False)


# --- entry point ---------------------------------------------------------------------------


def _click_error(exc: BaseException, name: str) -> bool:
    """Is ``exc`` click's ``name`` exception (typer may vendor click: matched by class name)?"""
    return any(c.__name__ == name for c in type(exc).__mro__)


def main() -> None:
    try:
        code = app(standalone_mode=False)  # click's own error panel is a box: one line instead, below
    except Exception as exc:
        if _click_error(exc, "NoArgsIsHelpError"):  # `gpujob`, `gpujob catalog`: the help is the answer
            message = exc.format_message()  # typer's rich help printed itself already (and left this empty)
            if message.strip():
                _out().print(message, markup=False, highlight=False)
            sys.exit(2)
        if _click_error(exc, "UsageError"):  # a bad option, value or command: what, where, how to fix
            ctx, names = getattr(exc, "ctx", None), []
            while ctx is not None and ctx.parent is not None:  # the subcommands, not how gpujob was started
                names.insert(0, ctx.info_name)
                ctx = ctx.parent
            where = " ".join(["gpujob", *names])
            _err().print(f"error: {exc.format_message()} (see `{where} --help`)", markup=False)
            sys.exit(2)
        if _click_error(exc, "ClickException"):
            _err().print(f"error: {exc.format_message()}", markup=False)
            sys.exit(getattr(exc, "exit_code", 1))
        if _click_error(exc, "Abort"):  # end of input at a prompt
            _err().print("aborted", markup=False)
            sys.exit(1)
        if _DEBUG:  # a bug, not a user error: one line, no traceback unless asked
            raise
        _err().print(f"internal error: {exc!r} (rerun with GPUJOB_DEBUG=1 for a traceback and report it)",
                     markup=False)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
