"""The job lifecycle, written once for every provider.

provision -> wait until running -> wait for SSH -> upload payload + job config -> setup ->
start the job detached -> stream -> fetch artifacts -> teardown.

Teardown runs on success, failure, exceptions, SIGINT and SIGTERM; ``keep`` is the only way
to skip it, and ``detach`` hands the still-running job to ``attach``/``down`` (the machine's
own watchdog still bounds it). The runner never prints: everything the user sees goes
through ``on_event(kind, **fields)``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from launcher import artifacts, checkpoints, guard, recovery

from launcher.errors import (BudgetError, CredentialsError, FetchFailed, GpujobError, Interrupted, MachineGone, JobFailed, RemoteError, SSHConnectError,
                             TeardownError, UsageError, WaitTimeout)
from launcher.packaged import payload_dir
from launcher.providers import get_provider
from launcher.hostcheck import check_host
from launcher.secrets import redact_spec, redact_spec_text
from launcher.uploads import plan_upload
from launcher.providers.base import Leftover, Machine, Resource
from launcher.job import (DEFAULT_ENTRYPOINT, EXIT_SIGNALLED, EXIT_TIMEOUT, GRACE_S, Paths,
                          default_host, describes_work, host_paths, job_command, job_env, machine_dict,
                          machine_from, machine_public, payload_exit_status, q)
from launcher.liveness import Lease
from launcher.report import build_report
from launcher import signals
from launcher.signals import Stop
from launcher.store import RunRecord, Store, new_run_id
from launcher.streaming import Progress, WorkerStream, last_event

EventSink = Callable[..., None]
# What the "estimate" event carries of the estimate (total_error_band: a local GPU job's total band).
ESTIMATE_EVENT_KEYS = ("total_seconds", "total_usd", "samples_per_second", "error", "unit", "total_error_band")


@dataclass
class RunOptions:
    provider: str = "local"
    provider_config: dict[str, Any] = field(default_factory=dict)
    detach: bool = False
    keep: bool = False
    force: bool = False
    artifacts_dir: str | None = None
    launch_deadline_s: float = 1200.0
    ssh_deadline_s: float = 600.0
    poll_every_s: float = 15.0
    baseline: bool = True  # measure (or reuse) the local CPU baseline for the report


class _Ctx:
    """The RunContext a provider sees (launcher.providers.base.RunContext)."""

    def __init__(self, store: Store, run_id: str, spec, provider: str, emit: EventSink, ssh_cidr: str | None):
        self.store, self.run_id, self.spec, self.provider = store, run_id, spec, provider
        self._emit = emit
        self.ssh_cidr = ssh_cidr
        self.owner = os.environ.get("USER") or os.environ.get("USERNAME") or "unknown"
        self.avoid_zones: tuple[str, ...] = ()  # zones where this run's spot machine was reclaimed: tried last
        self.ssh_public_key = self.ssh_private_key_path = ""
        self.host_key_private = self.host_key_public = ""

    def make_keys(self, run_dir: Path) -> None:
        from launcher import keys

        priv, pub = keys.generate_ed25519(f"gpujob-{self.run_id}")
        path = run_dir / "id_ed25519"
        keys.write_private_key(path, priv)
        self.ssh_private_key_path, self.ssh_public_key = str(path), pub
        self.host_key_private, self.host_key_public = keys.generate_ed25519(f"gpujob-host-{self.run_id}")

    def intent(self, kind: str, name: str, region: str | None = None, provider: str | None = None) -> int:
        # provider: who creates it, when that is not the run's provider (--provider auto)
        return self.store.intent(self.run_id, provider or self.provider, kind, name, region)

    def created(self, handle: int, resource_id: str) -> None:
        self.store.created(handle, resource_id)

    def deleted(self, resource_id: str) -> None:
        self.store.deleted(self.run_id, resource_id)

    def emit(self, event: str, **fields: Any) -> None:
        self.store.add_event(self.run_id, event, fields)
        self._emit(event, run_id=self.run_id, **fields)


@dataclass
class RunResult:
    run: RunRecord
    report: dict[str, Any]
    leftovers: list[Leftover] = field(default_factory=list)


class Runner:
    def __init__(self, store: Store | None = None, on_event: EventSink | None = None,
                 provider_factory: Callable[..., Any] = get_provider,
                 host_factory: Callable[[Machine], Any] | None = None,
                 clock: Callable[[], float] = time.time):
        self.store = store or Store()
        self.on_event = on_event or (lambda *a, **k: None)
        self.provider_factory = provider_factory
        self.host_factory = host_factory or default_host
        self.clock = clock

    # --- entry points ---------------------------------------------------------------------

    def plan(self, spec, opts: RunOptions, spec_path: str | None = None) -> dict[str, Any]:
        """--dry-run: what would happen, with no create call (``spec_path``: named in a refusal's fix)."""
        _check_model(spec, opts.provider)
        provider = self.provider_factory(opts.provider, **opts.provider_config)
        ctx = _Ctx(self.store, "dry-run", spec, opts.provider, lambda *a, **k: None,
                   opts.provider_config.get("ssh_cidr"))
        plan = provider.plan(spec, ctx)
        # No probe in a dry run: a cached CPU measurement or the model (the plan must be instant).
        est = job_estimate(spec, plan.get("estimate_provider") or opts.provider, plan.get("instance_type"),
                           plan.get("price_per_hour"),
                           spot=spec.resources.spot, baseline=False, gpu=plan.get("gpu_name"))
        if spec.checkpoint_store:
            unused = checkpoints.store_unused(spec, opts.provider)
            plan["checkpoint store"] = f"{spec.checkpoint_store}: not used ({unused})" if unused else spec.checkpoint_store
            spec = spec.model_copy(update={"checkpoint_store": None}) if unused else spec
        plan["commands"] = plan_commands(spec, opts.provider, plan)
        if recovery.describe(spec, opts.provider):
            plan["spot recovery"] = recovery.describe(spec, opts.provider)
        refusal = over_limits(spec, est, opts.provider, spec_path)
        return {"plan": plan, "estimate": est, "budget_usd": spec.limits.budget_usd,
                "refused": None if refusal is None or opts.force else str(refusal[1])}

    def run(self, spec, opts: RunOptions, spec_path: str | None = None, spec_text: str | None = None) -> RunResult:
        """Launch, ship, stream, fetch, tear down. SIGINT/SIGTERM/SIGHUP at any stage end in state
        `interrupted` and Interrupted (exit 130) after the job is stopped and everything released."""
        with signals.handled(), ExitStack() as held:
            return self._run(spec, opts, spec_path, spec_text, held)

    def _run(self, spec, opts: RunOptions, spec_path: str | None, spec_text: str | None,
             held: ExitStack) -> RunResult:
        _check_model(spec, opts.provider)  # bad input is refused before the pre-flight, the run record, any create
        store_url, store_unused = spec.checkpoint_store, checkpoints.store_unused(spec, opts.provider)
        if store_unused:  # a local run keeps its checkpoint on this disk: the bucket is not reached
            spec = spec.model_copy(update={"checkpoint_store": None})
        provider = self.provider_factory(opts.provider, **opts.provider_config)
        preflight = getattr(provider, "preflight", None)
        if preflight is not None:  # credentials, quota, address: before the probe, the run record, any create
            preflight(spec, _Ctx(self.store, "pre-flight", spec, opts.provider, lambda *a, **k: None,
                                 opts.provider_config.get("ssh_cidr")))
        run_id = new_run_id()
        # env values are secrets: the record keeps their names only (the job gets them through its 0600 file).
        self.store.create_run(run_id, spec.name, opts.provider, spec_path=spec_path,
                              spec_text=redact_spec_text(spec_text), spec=redact_spec(spec.model_dump(mode="json")),
                              provider_config=opts.provider_config)
        held.enter_context(Lease(self.store, run_id))  # a killed client leaves an orphaned run for ls/gc
        self._emit("run", run_id=run_id, name=spec.name, provider=opts.provider)
        if store_unused:
            self._emit("warning", run_id=run_id, message=f"checkpoint_store {store_url} is not used ({store_unused})")
        ctx = _Ctx(self.store, run_id, spec, opts.provider, self.on_event, opts.provider_config.get("ssh_cidr"))
        run_dir = self.store.run_dir(run_id)

        try:  # where the results will land is settled before anything is created
            dest = artifacts.choose_destination(run_id, opts.artifacts_dir)
        except UsageError as exc:
            self.store.set_state(run_id, "cancelled", exc.message)
            raise
        self.store.update_run(run_id, artifacts_dir=str(dest))
        # The estimate (and the prices it used) is recorded before anything is created.
        plan = provider.plan(spec, ctx)
        try:
            if not describes_work(spec):
                est = {"note": "a custom payload with no workload section: nothing to estimate"}
            else:
                est = job_estimate(spec, plan.get("estimate_provider") or opts.provider, plan.get("instance_type"),
                                   plan.get("price_per_hour"), spot=spec.resources.spot, baseline=opts.baseline,
                                   gpu=plan.get("gpu_name"),
                                   on_probe=lambda seconds: self._emit("baseline", run_id=run_id, seconds=seconds))
            signals.check()
        except Stop:  # a signal during the estimate (the CPU probe is killed): no estimate, no refusal;
            est = None  # the check below ends the run as interrupted
        if est is not None:
            self.store.update_run(run_id, estimate=est)
            self._emit("estimate", run_id=run_id, **{k: est.get(k) for k in ESTIMATE_EVENT_KEYS})
            refusal = over_limits(spec, est, opts.provider, spec_path)
            if refusal is not None and not opts.force:
                self.store.set_state(run_id, "cancelled", refusal[0])
                raise refusal[1]
            if opts.provider in ("aws", "gcp", "auto"):
                ctx.make_keys(run_dir)
        live = _Live()  # the current attempt's machine, connections, paths
        detached = False
        outcome: BaseException | None = None
        try:
            signals.check()  # a signal during the estimate: stop before creating anything
            attempt_spec, reclaimed = spec, 0
            while True:
                try:
                    status = self._attempt(run_id, attempt_spec, opts, provider, ctx, plan, live, reclaimed > 0)
                    break
                except MachineGone as gone:
                    if gone.how != "spot-interrupted" or not spec.resources.spot:
                        raise
                    reclaimed += 1
                    attempt_spec = self._recover(run_id, spec, reclaimed, provider, ctx, live)
            if status is None:
                detached = True
                return RunResult(self.store.get_run(run_id), {})
            exit_status, reason = status
            self._finish(run_id, spec, live.host, live.paths, opts, exit_status, reason, live.workers)
        except Stop as exc:
            outcome = exc
            with signals.shielded():  # the stage decides; nothing below is skipped by a signal
                self._interrupted(run_id, live.host, live.machine, live.paths, live.workers, opts)
        except GpujobError as exc:
            outcome = exc
            if isinstance(exc, MachineGone):
                self.store.set_state(run_id, exc.state, exc.message)
            elif not isinstance(exc, (JobFailed, FetchFailed)):
                state = "launch-failed" if live.machine is None and not self.store.get_run(run_id).attempts else "failed"
                self.store.set_state(run_id, state, str(exc))
            for w in live.workers:  # one node failing stops the others
                self._stop_pid(w.host, w.pid)
        except BaseException as exc:  # noqa: BLE001 - a bug or SystemExit must still tear down
            outcome = exc
            self.store.set_state(run_id, "failed", f"internal error: {exc!r}")
        finally:
            leftovers: list[Leftover] = []
            machine, host, paths = live.machine, live.host, live.paths
            if not detached and not opts.keep and self.store.get_run(run_id).state != "fetch-failed":
                with signals.shielded():  # a second Ctrl-C shortens waits, never skips the release
                    leftovers = self._teardown(run_id, provider, ctx)
            for w in live.workers:
                w.host.close()
            if machine is not None and paths is not None and not detached and not opts.keep:
                with signals.shielded():
                    self._clean_workdir(run_id, host, machine, paths)
            if host is not None:
                host.close()  # a detached job lives on: it was started with setsid
                self._emit("connections", run_id=run_id, opened=getattr(host, "connections_opened", 0))
            if opts.keep and machine is not None and machine.provider != "local" and not detached:
                self._emit("kept", run_id=run_id, target=f"{machine.user}@{machine.host}:{machine.port}",
                           reach=f"gpujob ssh {run_id}", release=f"gpujob down {run_id}")
        return self._conclude(run_id, outcome, leftovers)

    def _attempt(self, run_id: str, spec, opts: RunOptions, provider, ctx: _Ctx, plan: dict[str, Any],
                 live: "_Live", resume: bool) -> tuple[int, str | None] | None:
        """One machine's go: launch, connect, upload (with the last checkpoint when ``resume``), start,
        stream. Returns (exit status, reason), or None when the job was detached. Fills ``live``
        as things come up, so the caller can stop and release them. A reclaimed spot machine
        raises MachineGone("spot-interrupted")."""
        run_dir = self.store.run_dir(run_id)
        self.store.set_state(run_id, "provisioning")
        launched_at = self.clock()
        self.store.update_run(run_id, launched_at=launched_at)
        machines = self._launch(provider, spec, ctx, opts)
        signals.check()
        machine = live.machine = machines[0]
        if plan.get("estimate_provider") and describes_work(spec) and not resume and (
                machine.provider, machine.instance_type) != (plan["estimate_provider"], plan.get("instance_type")):
            # --provider auto moved on to another offer: estimate the machine it got
            est = job_estimate(spec, machine.provider, machine.instance_type, machine.price_per_hour,
                               spot=spec.resources.spot, baseline=opts.baseline, gpu=machine.gpu)
            self.store.update_run(run_id, estimate=est)
            self._emit("estimate", run_id=run_id, **{k: est.get(k) for k in ESTIMATE_EVENT_KEYS})
        price = None if machine.price_per_hour is None else machine.price_per_hour * len(machines)
        self.store.update_run(run_id, machine=machine_dict(machine), price_per_hour=price)
        for m in machines:
            self._emit("machine", run_id=run_id, **machine_public(m))

        try:
            self.store.set_state(run_id, "connecting")
            host = live.host = self.host_factory(machine)
            live.workers = [_Node(rank, m, self.host_factory(m)) for rank, m in enumerate(machines[1:], start=1)]
            workers = live.workers
            self._reach(host, machine, opts)
            for w in workers:
                self._reach(w.host, w.machine, opts)
            signals.check()
            self._emit("connected", run_id=run_id)
            paths = live.paths = host_paths(machine, run_id, run_dir, host)
            # recorded before the upload: `down`/`gc` of a killed client clean it up on an ssh host
            self.store.update_run(run_id, machine={**machine_dict(machine), "workdir": paths.workdir})
            for w in workers:  # a worker's own directory: nodes may share a home directory (NFS)
                w.paths = Paths(f"{paths.workdir}-node{w.rank}")
            master = machine.private_ip or machine.host
            nodes = [(0, machine, host, paths)] + [(w.rank, w.machine, w.host, w.paths) for w in workers]
            if not spec.setup:  # nothing will install anything: check the hosts before uploading
                self._check_hosts(run_id, spec, nodes)
            self.store.set_state(run_id, "uploading")
            for rank, m, h, p in nodes:
                self._upload(h, spec, p, m)
                if spec.setup:
                    self.store.set_state(run_id, "setup")
                    self._emit("setup", run_id=run_id, node=rank)
                    h.run(f"cd {q(p.workdir)} && {spec.setup}", timeout=opts.launch_deadline_s)
            sent = checkpoints.upload(host, run_dir, paths.workdir) if resume and not spec.checkpoint_store else None
            if sent is not None:  # the client's copy, where the payload's --resume looks for it
                self._emit("checkpoint-uploaded", run_id=run_id, bytes=sent)
        except (RemoteError, WaitTimeout) as exc:  # a machine reclaimed before the job started
            if spec.resources.spot and self._poll(provider, machine) == "spot-interrupted":
                raise MachineGone(run_id, "spot-interrupted") from None
            raise exc
        if spec.setup:  # setup may install python or torch: check after it, before the start
            self._check_hosts(run_id, spec, nodes)
        signals.check()
        # Workers first: with a static rendezvous they wait for node 0, never the other way round.
        for w in workers:
            w.pid = w.host.start_detached(job_command(spec, w.machine, w.paths, w.rank, master, run_id),
                                          w.paths.workdir, w.paths.log, w.paths.exit,
                                          env=job_env(spec, w.machine, w.rank),
                                          started_file=guard.job_file(w.machine.extra))
        log_base = len(self.store.log_text(run_id).encode())  # an earlier attempt's log stays; this one follows
        command = job_command(spec, machine, paths, 0, master if workers else None, run_id)
        python = sys.executable if machine.provider == "local" else spec.payload.python
        if spec.checkpoint_store:
            command = f"{checkpoints.store_prefix(spec, run_id, python, resume)} && {command}"
        pid = host.start_detached(command, paths.workdir, paths.log, paths.exit, env=job_env(spec, machine),
                                  started_file=guard.job_file(machine.extra))
        if spec.checkpoint_store:  # the machine keeps the checkpoint in the bucket while the job runs
            host.start_detached(checkpoints.store_watch(spec, run_id, python, pid), paths.workdir,
                                f"{paths.workdir}/checkpoint_sync.log", f"{paths.workdir}/checkpoint_sync.exit",
                                env=job_env(spec, machine))
        self.store.update_run(run_id, job_started_at=self.clock(),
                              machine={**machine_dict(machine), "pid": pid, "workdir": paths.workdir,
                                       "log_base": log_base,
                                       "workers": [{**machine_dict(w.machine), "pid": w.pid} for w in workers]})
        self.store.set_state(run_id, "running")
        self._emit("job-started", run_id=run_id, pid=pid)
        if opts.detach:
            self._emit("detached", run_id=run_id)
            return None
        streams = [WorkerStream(self._node_log(run_id, w.rank), w) for w in workers]
        puller = self._puller(run_id, spec, machine, paths)
        try:
            exit_status, reason = self._follow(run_id, spec, provider, machine, host, paths, pid, opts, 0, log_base)
        finally:
            if puller is not None:
                puller.stop(1.0)
        worker_status = [t.join_status(opts.ssh_deadline_s) for t in streams]
        failed = [(r, st) for r, st in enumerate(worker_status, start=1) if st != 0]
        if exit_status == 0 and failed:
            exit_status, reason = failed[0][1] or 1, f"node {failed[0][0]} exited {failed[0][1]}"
        return exit_status, reason

    def _recover(self, run_id: str, spec, reclaimed: int, provider, ctx: _Ctx, live: "_Live"):
        """The ``reclaimed``-th spot reclaim: release what is left of the machine (verified), record
        the attempt, and return the spec of the next attempt; MachineGone when there is none
        (restarts used, budget spent, or the release not confirmed)."""
        rec = self.store.get_run(run_id)
        zone = (rec.machine or {}).get("zone") or (rec.machine or {}).get("region")
        for w in live.workers:
            w.host.close()
        if live.host is not None:
            live.host.close()
        live.clear()
        with signals.shielded():  # the release of the reclaimed machine always completes
            leftovers = self._teardown(run_id, provider, ctx, final=False)
        end = self.clock()
        attempts = [*(rec.attempts or ()), recovery.closed_attempt(rec, end, "spot-interrupted")]
        self.store.update_run(run_id, attempts=attempts, launched_at=None, job_started_at=None,
                              job_ended_at=None, machine={**(rec.machine or {}), "pid": None})
        checkpoint = checkpoints.location(spec, run_id, self.store.run_dir(run_id))
        nxt, why = recovery.plan_next(spec, reclaimed)
        budget = spec.limits.budget_usd
        spent = self.store.get_run(run_id).spent_usd(end)
        if leftovers:
            nxt, why = None, "the reclaimed machine's resources are not confirmed gone"
        elif nxt is not None and budget and spent >= budget:
            nxt, why = None, (f"limits.budget_usd ${budget:.2f} reached (${spent:.2f} over {len(attempts)} "
                         f"attempt{'s' if len(attempts) > 1 else ''})")
        if nxt is None:
            raise MachineGone(run_id, "spot-interrupted", attempts=len(attempts), checkpoint=checkpoint,
                              why_stopped=why)
        signals.check()  # a signal during the release: stop here, before anything new is created
        ctx.spec = nxt.spec
        ctx.avoid_zones = tuple(a["zone"] for a in attempts if a.get("zone"))
        self.store.add_event(run_id, "recovering", {"attempt": nxt.number, "spot": nxt.spot,
                                                    "reclaimed_zone": zone, "checkpoint": checkpoint})
        self._emit("recovering", run_id=run_id, attempt=nxt.number, market="spot" if nxt.spot else "on-demand",
                   reclaimed_zone=zone, checkpoint=checkpoint, spent_usd=spent)
        return nxt.spec

    def _puller(self, run_id: str, spec, machine: Machine, paths: Paths):
        def pulled(path: Path, size: int) -> None:
            self.store.add_event(run_id, "checkpoint-pulled", {"path": str(path), "bytes": size})
            self._emit("checkpoint-pulled", run_id=run_id, path=str(path), bytes=size)

        return checkpoints.start_puller(spec, machine, lambda: self.host_factory(machine), paths.workdir,
                                        self.store.run_dir(run_id), pulled)

    def _poll(self, provider, machine: Machine) -> str | None:
        try:
            return provider.poll(machine)
        except GpujobError:
            return None

    def _reach(self, host, machine: Machine, opts: RunOptions) -> None:
        # A cloud machine needs minutes to boot; an existing one (ssh) answers now or not at all.
        deadline = min(opts.ssh_deadline_s, 30.0) if machine.provider == "ssh" else opts.ssh_deadline_s
        try:
            host.wait_until_reachable(deadline)
        except WaitTimeout as exc:
            if machine.provider != "ssh":
                raise
            raise SSHConnectError(f"cannot reach {machine.user}@{machine.host}:{machine.port} over SSH "
                                  f"({exc.last_state or 'no answer'})",
                                  "check --host and --port, and that sshd runs there and lets you in") from None

    def _check_hosts(self, run_id: str, spec, nodes: list) -> None:
        """The host pre-flight on every remote node (python, torch, CUDA count); see hostcheck."""
        for rank, m, h, _ in nodes:
            if m.provider == "local":
                continue
            found = check_host(h, spec, m, f"{m.user}@{m.host}" + (f" (node {rank})" if len(nodes) > 1 else ""))
            self._emit("host-checked", run_id=run_id, node=rank, **found)

    def _launch(self, provider, spec, ctx, opts: RunOptions) -> list[Machine]:
        nodes = spec.resources.num_nodes
        if nodes == 1:
            return [provider.launch(spec, ctx, opts.launch_deadline_s)]
        launch_nodes = getattr(provider, "launch_nodes", None)
        if launch_nodes is None:
            raise UsageError(f"provider {provider.name} runs one machine; resources.num_nodes is {nodes}",
                             "use --provider aws or gcp for multi-node jobs, or set num_nodes: 1")
        return launch_nodes(spec, ctx, opts.launch_deadline_s, nodes)

    def _node_log(self, run_id: str, rank: int) -> Callable[[str], None]:
        return lambda text: self._emit("log", run_id=run_id, text=text, node=rank)

    def _stop_pid(self, host, pid: int | None) -> None:
        if not pid:
            return
        try:
            host.kill_job(pid, "TERM")
        except GpujobError:
            pass

    def attach(self, run_id: str, follow: bool = True, keep: bool = False) -> RunResult:
        """Re-attach to a detached/running job: stream from where the record stops, then finish."""
        rec = self.store.get_run(run_id)
        run_id = rec.id
        if rec.finished or not (rec.machine or {}).get("pid"):  # no job (yet): nothing to follow
            self.on_event("log", run_id=run_id, text=self.store.log_text(run_id), replay=True)
            return RunResult(rec, build_report(rec))
        from launcher.spec import JobSpec

        spec = JobSpec.model_validate(rec.spec)
        provider = self.provider_factory(rec.provider, **rec.provider_config)
        machine = machine_from(rec.machine)
        ctx = _Ctx(self.store, run_id, spec, rec.provider, self.on_event, rec.provider_config.get("ssh_cidr"))
        host = self.host_factory(machine)
        paths = Paths(rec.machine["workdir"])
        log_base = rec.machine.get("log_base") or 0  # the stored log holds earlier attempts' text first
        offset = len(self.store.log_text(run_id).encode()) - log_base
        self.on_event("log", run_id=run_id, text=self.store.log_text(run_id), replay=True)
        if not follow:
            return RunResult(rec, build_report(rec))
        outcome: BaseException | None = None
        leftovers: list[Leftover] = []
        opts = RunOptions(provider=rec.provider, provider_config=rec.provider_config, keep=keep,
                          artifacts_dir=rec.artifacts_dir)
        with signals.handled(), Lease(self.store, run_id):  # adopts an orphaned run
            try:
                exit_status, reason = self._follow(run_id, spec, provider, machine, host, paths,
                                                   rec.machine.get("pid"), opts, offset, log_base)
                self._finish(run_id, spec, host, paths, opts, exit_status, reason)
            except Stop as exc:
                # Leaving `logs --follow` detaches again; it never kills the job.
                host.close()
                raise Interrupted(f"stopped following run {run_id}; the job keeps running",
                                  f"`gpujob logs {run_id} --follow` to re-attach, `gpujob down {run_id}` to stop") from exc
            except GpujobError as exc:
                outcome = exc
                if isinstance(exc, MachineGone):
                    self.store.set_state(run_id, exc.state, exc.message)
                elif not isinstance(exc, (JobFailed, FetchFailed)):
                    self.store.set_state(run_id, "failed", str(exc))
            finally:
                if outcome is not None or self.store.get_run(run_id).finished:
                    if not keep and self.store.get_run(run_id).state != "fetch-failed":
                        with signals.shielded():
                            leftovers = self._teardown(run_id, provider, ctx)
                host.close()
        return self._conclude(run_id, outcome, leftovers)

    def down(self, run_id: str, discard: bool = False, state: str = "cancelled",
             reason: str = "stopped with gpujob down") -> RunResult:
        """Stop the job (checkpoint first), bring its results home, release everything the run holds.

        A run whose results are only on the machine (fetch-failed) is released only once they are
        home, or with ``discard``; otherwise FetchFailed. Signals only shorten waits."""
        with signals.handled(), signals.shielded():
            return self._down(run_id, discard, state, reason)

    def _down(self, run_id: str, discard: bool, state: str, reason: str) -> RunResult:
        rec = self.store.get_run(run_id)
        run_id = rec.id
        provider, ctx = self._reopen(rec)
        unfetched = rec.state == "fetch-failed"
        # A workdir: the payload may be there (and the job, when it has a pid) - stop, bring home, clean.
        if rec.machine and not rec.finished and rec.machine.get("workdir") and not (unfetched and discard):
            host = None
            try:
                host = self.host_factory(machine_from(rec.machine))
                host.connect()
                self._stop_job(host, run_id)
                if unfetched:
                    self._fetch(run_id, host, Paths(rec.machine["workdir"]))  # FetchFailed: keep the machine
                else:
                    self._salvage(run_id, host, Paths(rec.machine["workdir"]))
                self._clean_workdir(run_id, host, machine_from(rec.machine), Paths(rec.machine["workdir"]))
                for w in rec.machine.get("workers", []):
                    wh = self.host_factory(machine_from(w))
                    self._stop_pid(wh, w.get("pid"))
                    wh.close()
            except FetchFailed:
                raise
            except GpujobError as exc:  # an unreachable machine must not block the release
                if unfetched:
                    self.store.set_state(run_id, "fetch-failed", f"fetching the results failed: {exc.message}")
                    raise FetchFailed(run_id, exc.message) from None
                self._emit("warning", run_id=run_id, message=f"could not stop the job cleanly: {exc}")
            finally:
                if host is not None:
                    host.close()
        if not rec.finished:
            self.store.set_state(run_id, state, "results discarded with gpujob down --discard"
                                 if unfetched and discard else reason)
        leftovers = self._teardown(run_id, provider, ctx)
        return self._conclude(run_id, None, leftovers)

    def fetch(self, run_id: str) -> RunResult:
        """Retry bringing a run's results home (resuming a partial fetch), then release its machine."""
        rec = self.store.get_run(run_id)
        if rec.fetched_at:
            return RunResult(rec, build_report(rec))
        if rec.state != "fetch-failed" or not rec.machine:
            raise UsageError(f"run {rec.id} is {rec.state}: it has no results waiting on a machine",
                             "`gpujob fetch` retries a run in state fetch-failed")
        with signals.handled(), Lease(self.store, rec.id):
            return self._refetch(rec)

    def _refetch(self, rec: RunRecord) -> RunResult:
        run_id = rec.id
        provider, ctx = self._reopen(rec)
        host = self.host_factory(machine_from(rec.machine))
        try:
            host.connect()

            def notice() -> None:
                self._emit("warning", run_id=run_id, message="finishing the fetch; a second Ctrl-C stops it "
                                                              "(the machine is kept: `gpujob fetch` resumes)")

            with signals.shielded(1, notice):
                self._fetch(run_id, host, Paths(rec.machine["workdir"]))
            with signals.shielded():
                self._clean_workdir(run_id, host, machine_from(rec.machine), Paths(rec.machine["workdir"]))
        except GpujobError as exc:
            if not isinstance(exc, FetchFailed):
                self.store.set_state(run_id, "fetch-failed", f"fetching the results failed: {exc.message}")
                raise FetchFailed(run_id, exc.message) from None
            raise
        except Stop:
            raise Interrupted(f"fetch of run {run_id} stopped; the machine is kept",
                              f"`gpujob fetch {run_id}` resumes it, `gpujob down {run_id} --discard` "
                              "releases it without the results") from None
        finally:
            host.close()
        status = rec.exit_status
        if status == 0:
            self.store.set_state(run_id, "succeeded", None)
        else:
            self.store.set_state(run_id, "failed", f"job exited {status}")
        with signals.shielded():
            leftovers = self._teardown(run_id, provider, ctx)
        return self._conclude(run_id, None, leftovers)

    def _clean_workdir(self, run_id: str, host, machine: Machine, paths: Paths) -> None:
        """Once the results are home, delete the run's directory on a machine that outlives the run
        (local, ssh: payload, outputs and checkpoints are big); a cloud machine is deleted whole."""
        if machine.provider not in ("local", "ssh") or not self.store.get_run(run_id).fetched_at:
            return
        if machine.provider == "local":
            shutil.rmtree(paths.workdir, ignore_errors=True)
            return
        try:
            host.run(f"rm -rf {q(paths.workdir)}", timeout=120)
        except GpujobError as exc:
            self._emit("warning", run_id=run_id, message=f"could not delete {paths.workdir} on {machine.host}: {exc}")

    def _reopen(self, rec: RunRecord):
        """The provider and context of a recorded run (for attach/down/fetch from another process)."""
        from launcher.spec import JobSpec

        spec = JobSpec.model_validate(rec.spec) if rec.spec else None
        provider = self.provider_factory(rec.provider, **rec.provider_config)
        return provider, _Ctx(self.store, rec.id, spec, rec.provider, self.on_event, rec.provider_config.get("ssh_cidr"))

    # --- phases ---------------------------------------------------------------------------

    def _emit(self, kind: str, **fields: Any) -> None:
        self.on_event(kind, **fields)

    def _upload(self, host, spec, paths: Paths, machine: Machine) -> None:
        from launcher.spec import project_dataset

        host.run(f"mkdir -p {q(paths.outputs)}")
        own = spec.payload.entrypoint != DEFAULT_ENTRYPOINT
        if own:
            why = f"payload.entrypoint {spec.payload.entrypoint} is your own code"
        elif spec.workload.is_factory:
            why = f"workload.model {spec.workload.model} is in it"
        elif project_dataset(spec.workload.dataset) is not None:  # the payload reads it from the project's copy
            why = f"workload.dataset {spec.workload.dataset} is in it"
        else:
            why = None
        if why:  # the project directory, then (for our payload) the payload beside it
            ignore = list(spec.payload.ignore) + ["gpujob-runs"]
            plan = plan_upload(Path.cwd(), ignore)
            if plan.large:  # said before a byte is sent, so a mistaken dataset upload can be stopped
                self._emit("upload", bytes=plan.total_bytes, files=len(plan.files),
                           message=plan.describe(f"{why}, so the current directory is sent"))
            host.put_dir(Path.cwd(), paths.workdir, ignore=ignore)
        if not own:
            host.put_dir(payload_dir(), f"{paths.workdir}/payloads", ignore=list(spec.payload.ignore))
        if spec.checkpoint_store:
            sync = (payload_dir() / "checkpoint_sync.py").read_bytes()
            host.put_bytes(sync, f"{paths.workdir}/{checkpoints.SYNC_REL}", mode=0o644)
        config = {**spec.workload.model_dump(mode="json"), "output_dir": "outputs"}
        if checkpoints.pull_every(spec):  # the payload checkpoints at least as often as the client pulls
            config["checkpoint_every_s"] = checkpoints.pull_every(spec)
        host.put_bytes(json.dumps(config, indent=2).encode(), f"{paths.workdir}/job.json", mode=0o644)

    def _follow(self, run_id, spec, provider, machine, host, paths: Paths, pid, opts: RunOptions,
                offset: int, log_base: int = 0) -> tuple[int, str | None]:
        """Stream the log from byte ``offset`` until the job exits; watch spot interruption and the
        budget meanwhile. The stored log holds earlier attempts' text first: this machine's log
        byte N is the stored log's byte ``log_base + N``."""
        progress = Progress(self.store, self.on_event, self.clock, run_id, spec, log_base + offset)
        stop_reason: list[str] = []
        warned: list[GpujobError] = []
        done = threading.Event()

        def watch() -> None:
            budget = spec.limits.budget_usd
            while not done.wait(opts.poll_every_s):
                rec = self.store.get_run(run_id)
                if budget and machine.price_per_hour and rec.spent_usd(self.clock()) >= budget:
                    stop_reason.append(f"budget ${budget:.2f} reached")
                    self._emit("warning", run_id=run_id, message=f"budget ${budget:.2f} reached: stopping the job")
                    self._stop_pid(host, pid)
                    return
                try:
                    state = provider.poll(machine)
                except CredentialsError as exc:  # the job goes on; teardown will need working credentials
                    state = None
                    if not warned:
                        warned.append(exc)
                        self._emit("warning", run_id=run_id, message=f"the cloud rejected our credentials: {exc}")
                except GpujobError:
                    state = None
                if state:
                    stop_reason.append(state)
                    self._emit("warning", run_id=run_id, message=f"machine {state}")
                    abandon = getattr(host, "abandon", None)
                    if abandon is not None:  # no reconnect attempts to a machine that is gone
                        abandon(f"machine {state}")
                    return

        watcher = threading.Thread(target=watch, daemon=True, name=f"watch-{run_id}")
        watcher.start()
        try:
            exit_status, _ = host.stream(paths.log, paths.exit, progress.feed, offset=offset, pid=pid)
        except (RemoteError, WaitTimeout) as exc:
            if stop_reason and stop_reason[0] in MachineGone.STATES:  # say why, not "connection lost"
                raise MachineGone(run_id, stop_reason[0]) from None
            if stop_reason:
                return -1, stop_reason[0]
            raise exc
        finally:
            done.set()
            progress.flush()
        self.store.update_run(run_id, job_ended_at=self.clock())
        if exit_status not in (0, EXIT_SIGNALLED, EXIT_TIMEOUT):  # torchrun: a checkpointed stop exits 1
            exit_status = payload_exit_status(exit_status, last_event(self.store.log_text(run_id), "end"))
        reason = stop_reason[0] if stop_reason else None
        if exit_status == EXIT_TIMEOUT:
            reason = reason or f"limits.max_duration ({spec.limits.max_duration:.0f}s) reached"
        elif exit_status == EXIT_SIGNALLED:
            reason = reason or "the job was stopped by a signal (checkpoint written)"
        return exit_status, reason

    def _finish(self, run_id, spec, host, paths: Paths, opts: RunOptions, exit_status: int,
                reason: str | None, workers: list["_Node"] = ()) -> None:
        """Record how the job ended, bring the results home, then say succeeded/failed.

        The job's status is recorded before the fetch. A signal during the fetch is noted and the
        fetch goes on; a second one stops it (after saying what is lost). A failed fetch leaves
        the machine up in state fetch-failed (FetchFailed says how to retry or release)."""
        log_text = self.store.log_text(run_id)
        self.store.update_run(run_id, exit_status=exit_status,
                              result={"start": last_event(log_text, "start"), "end": last_event(log_text, "end")})
        self.store.set_state(run_id, "fetching")

        def notice() -> None:
            self._emit("warning", run_id=run_id, message="bringing the results home before releasing the machine; "
                                                          "a second Ctrl-C skips the fetch and the results are lost")

        with signals.shielded(1, notice):
            files = self._fetch(run_id, host, paths, workers, keep=opts.keep)
        signals.check()  # the results are home; a signal during the fetch still ends the run as interrupted
        rec = self.store.get_run(run_id)
        self.store.update_run(run_id, result={**(rec.result or {}), "files": files})
        if exit_status != 0:
            self.store.set_state(run_id, "failed", reason or f"job exited {exit_status}")
            raise JobFailed(run_id, exit_status, reason or "see `gpujob logs`")
        self.store.set_state(run_id, "succeeded", reason)

    def _fetch(self, run_id: str, host, paths: Paths, workers=(), keep: bool = False) -> int:
        """Fetch into the run's results directory (resuming a partial fetch there); fetch-failed on error.
        Then tell the machine's guard the results are home (``keep``: the user keeps the machine)."""
        rec = self.store.get_run(run_id)
        started = any(kind == "fetch-started" for _, kind, _ in self.store.events(run_id))
        planned = Path(rec.artifacts_dir) if rec.artifacts_dir else artifacts.choose_destination(run_id, None)
        if started:
            dest = planned
            dest.mkdir(parents=True, exist_ok=True)
        else:
            dest = artifacts.prepare(planned)
            self.store.update_run(run_id, artifacts_dir=str(dest))
            self.store.add_event(run_id, "fetch-started", {"path": str(dest)})
        try:
            files = artifacts.fetch(host, paths, dest, workers, on_skip=lambda why: self._emit(
                "warning", run_id=run_id, message=f"not fetched, for safety: {why}"))
        except (GpujobError, OSError) as exc:
            why = getattr(exc, "message", None) or str(exc)
            if guard.guard_dir((rec.machine or {}).get("extra")):  # the machine will not wait forever
                grace = ((rec.spec or {}).get("limits") or {}).get("unfetched_grace") or 900
                why += (f"; with no client attached the machine powers itself off {grace / 60:g} min after the "
                        "job's end (limits.unfetched_grace)")
            self.store.set_state(run_id, "fetch-failed", f"fetching the results failed: {why}")
            raise FetchFailed(run_id, why) from None
        self.store.update_run(run_id, fetched_at=self.clock())
        self._emit("artifacts", run_id=run_id, path=str(dest), files=files)
        nodes = [(host, (rec.machine or {}).get("extra"))] + [(w.host, w.machine.extra) for w in workers]
        for node_host, extra in nodes:
            try:
                guard.mark_fetched(node_host, extra, keep)
            except GpujobError as exc:  # the release goes on; unmarked, the guard waits out its grace
                self._emit("warning", run_id=run_id, message=f"could not tell the machine's guard: {exc}")
        return files

    def _interrupted(self, run_id: str, host, machine, paths, workers, opts: RunOptions) -> None:
        """A signal arrived: stop the job (it checkpoints), bring home what it left; the caller releases."""
        name = signals.signal_name() or "a signal"
        self._emit("warning", run_id=run_id, signal=name,
                   message=f"{name} received: stopping the job and releasing everything "
                           "(Ctrl-C again shortens the waits, never the release)")
        self.store.set_state(run_id, "interrupted", f"interrupted by {name}")
        if host is not None and machine is not None:
            self._stop_job(host, run_id)
            if paths is not None and not self.store.get_run(run_id).fetched_at:  # home already: nothing skipped
                if signals.received() > 1 and self.store.get_run(run_id).exit_status is not None:
                    self._emit("warning", run_id=run_id, message="results not fetched (skipped by a second signal)")
                else:
                    self._salvage(run_id, host, paths, keep=opts.keep)
        for w in workers:
            self._stop_pid(w.host, w.pid)

    def _salvage(self, run_id: str, host, paths: Paths, keep: bool = False) -> None:
        """Bring home what a stopped job left (its checkpoint, the log) before the machine goes."""
        if self.store.get_run(run_id).fetched_at:
            return
        try:
            self._fetch(run_id, host, paths, keep=keep)
        except FetchFailed as exc:  # the release must go on regardless
            self._emit("warning", run_id=run_id, message=f"could not fetch the checkpoint: {exc.message}")

    def _stop_job(self, host, run_id: str) -> None:
        """SIGTERM the job's process group (the payload checkpoints), then SIGKILL after a grace period."""
        rec = self.store.get_run(run_id)
        pid = (rec.machine or {}).get("pid")
        if not pid:
            return
        try:
            host.kill_job(pid, "TERM")
            deadline = time.monotonic() + GRACE_S
            # A further signal shortens the checkpoint grace (SIGKILL at once), never the release.
            while time.monotonic() < deadline and host.is_running(pid):
                if signals.nap(0.5):
                    self._emit("warning", run_id=run_id, message="stopping the job now, without its checkpoint")
                    break
            if host.is_running(pid):
                host.kill_job(pid, "KILL")
        except GpujobError:
            pass

    def _teardown(self, run_id: str, provider, ctx: _Ctx, final: bool = True) -> list[Leftover]:
        """Delete everything the run holds (verified by the provider). ``final=False``: between two
        attempts of a recovered run (the record's state and end of billing are left alone)."""
        rows = self.store.resources(run_id)
        resources = [Resource(r.provider, r.kind, r.resource_id or r.name, r.region, run_id, r.state) for r in rows]
        self._emit("teardown", run_id=run_id, resources=len(resources), final=final)
        try:
            leftovers = provider.teardown(run_id, resources, ctx)
        except GpujobError as exc:
            leftovers = [Leftover(r, str(exc)) for r in resources] or [
                Leftover(Resource(provider.name, "run", run_id, run_id=run_id), str(exc))]
        if not final:
            if not leftovers:
                self.store.all_deleted(run_id)
            self._emit("teardown-done", run_id=run_id, leftovers=len(leftovers), final=False)
            return leftovers
        rec = self.store.get_run(run_id)
        if leftovers:  # billing is not known to have ended: the state says so and names the fix
            self.store.set_state(run_id, "leftovers", leftovers_reason(leftovers, rec.reason))
        else:  # includes intents whose create call never succeeded
            self.store.all_deleted(run_id)
            if rec.state == "leftovers":
                self.store.set_state(run_id, "released", f"leftovers deleted; before: {rec.reason}")
            if rec.ended_at is None:  # billing ended once; a later `down` keeps it
                self.store.update_run(run_id, ended_at=self.clock())
        self._emit("teardown-done", run_id=run_id, leftovers=len(leftovers))
        return leftovers

    def _conclude(self, run_id: str, outcome: BaseException | None, leftovers: list[Leftover]) -> RunResult:
        rec = self.store.get_run(run_id)
        report = build_report(rec)
        # Teach the next estimate: a GPU run its GPU row (launcher/estimate/learned.py), a local
        # CPU run this machine's CPU row (launcher/estimate/baseline.py); never fails a run.
        try:
            from launcher.estimate.baseline import record_finished_cpu
            from launcher.estimate.learned import record_finished

            record_finished(rec) or record_finished_cpu(rec)  # at most one applies to a run
        except Exception:
            pass
        if leftovers:
            raise TeardownError([(f"{lo.resource.kind} {lo.resource.id} ({lo.reason})",
                                  lo.resource.delete_command or gc_command(leftovers))
                                 for lo in leftovers])
        if isinstance(outcome, Stop):
            raise Interrupted(f"run {run_id} interrupted ({outcome}); everything it created was released")
        if isinstance(outcome, GpujobError):
            raise outcome
        if outcome is not None:
            raise outcome
        return RunResult(rec, report)


# --- helpers -----------------------------------------------------------------------------


def plan_commands(spec, provider: str, plan: dict[str, Any]) -> list[dict[str, Any]]:
    """What each node would run: [{"node": rank, "command": the job command line}], the same
    ``job_command`` a run starts (environment values are not part of it: they travel in the
    job's 0600 env file). Multi-node rendezvous addresses are placeholders until launch."""
    acc = spec.resources.accelerators
    count = acc.count if acc else int(plan.get("gpu_count") or 0)
    if not count and isinstance(plan.get("gpu"), str) and ":" in plan["gpu"]:
        count = int(plan["gpu"].rsplit(":", 1)[1])
    machine = Machine(provider=provider, id="<planned>", gpu_count=count)
    nodes = spec.resources.num_nodes
    master = "<node 0 private address>" if nodes > 1 else None
    return [{"node": rank, "command": job_command(spec, machine, Paths("<workdir>"), rank, master, "<run-id>")}
            for rank in range(nodes)]


def gc_command(leftovers: list[Leftover]) -> str:
    """The one `gpujob gc` command that deletes these leftovers (their provider and regions)."""
    providers = sorted({lo.resource.provider for lo in leftovers})
    regions = sorted({lo.resource.region for lo in leftovers if lo.resource.region})
    return " ".join(["gpujob gc"] + [f"--provider {p}" for p in providers] + [f"--region {r}" for r in regions]
                    + ["--yes"])


def leftovers_reason(leftovers: list[Leftover], before: str | None) -> str:
    """One line for the run record: what is not confirmed gone and why, the gc command, the earlier reason."""
    order = {"instance": 0, "region": 2}  # the billable machine first, "could not list" sweeps last
    first = min(leftovers, key=lambda lo: order.get(lo.resource.kind, 1))
    what = f"{first.resource.kind} {first.resource.id}: {first.reason}"
    more = f" (+{len(leftovers) - 1} more)" if len(leftovers) > 1 else ""
    return (f"{len(leftovers)} resource(s) not confirmed gone; {what}{more}; run: {gc_command(leftovers)}"
            + (f"; before teardown: {before}" if before else ""))


@dataclass
class _Live:
    """The current attempt's machine (node 0), its connection, directory and worker nodes."""

    machine: Machine | None = None
    host: Any = None
    paths: Paths | None = None
    workers: list["_Node"] = field(default_factory=list)

    def clear(self) -> None:
        self.machine, self.host, self.paths, self.workers = None, None, None, []


@dataclass
class _Node:
    """A worker node (rank >= 1) of a multi-node job: its machine, connection, directory and job."""

    rank: int
    machine: Machine
    host: Any
    paths: Paths | None = None
    pid: int | None = None


# What an ssh run's estimate stands on when the spec names no GPU (launcher.estimate.api.for_machine).
CPU_STAND_IN = "this machine's CPU in place of the host's, as the spec names no GPU"


def over_limits(spec, est: dict[str, Any], provider: str | None = None,
                spec_path: str | None = None) -> tuple[str, BudgetError] | None:
    """(the cancelled run's reason, the error) when the estimate breaks the spec's limits, else None:
    training alone longer than limits.max_duration (it bounds the job on the machine; boot and setup
    have the watchdog's grace), or the total over limits.budget_usd. --force launches anyway.
    The max_duration refusal gives the numbers to proceed with: the max_duration the job needs and,
    on ``provider`` local, the GPU command (``spec_path``) and the samples_per_epoch that fits here."""
    limit = spec.limits.max_duration
    if est.get("train_seconds") and est["train_seconds"] > limit:
        need = math.ceil(est["train_seconds"] * 1.1 / 3600)
        fix = f"set limits.max_duration: {need}h, pick a faster machine, or pass --force"
        if provider == "local":
            w, sps = spec.workload, est.get("samples_per_second") or 0.0
            fits = _round_down(limit * 0.9 * sps / max(w.epochs, 1e-9))  # 10% for warm-up and noise
            shorter = f"samples_per_epoch: {fits:,} or fewer, or " if 0 < fits < w.samples_per_epoch else ""
            path = spec_path or "SPEC"
            fix = (f"on a GPU: `gpujob run {path} --provider auto`, the cheapest AWS/GCP offer, priced by "
                   f"`gpujob estimate {path}`; here: {shorter}max_duration: {need}h, or --force to train until "
                   f"max_duration stops it")
        where = " on this machine" if provider == "local" else ""
        if provider == "ssh" and str(est.get("basis", "")).startswith("cpu"):  # the host's GPU is unknown
            where = f" on {CPU_STAND_IN}"
            fix = f"name the host's GPU in resources.accelerators (e.g. A100:1) for a GPU estimate, {fix}"
        return "estimate exceeds limits.max_duration", BudgetError(
            f"training alone is estimated at {est['train_seconds'] / 3600:.1f} h{where}, over limits.max_duration "
            f"({limit / 3600:.1f} h): the job would be stopped before it ends", fix)
    budget = spec.limits.budget_usd
    if budget and est.get("total_usd") and est["total_usd"] > budget:
        return f"estimate ${est['total_usd']:.2f} exceeds budget", BudgetError(
            f"the estimate ${est['total_usd']:.2f} exceeds limits.budget_usd ${budget:.2f}",
            "raise the budget, shorten the job, or pass --force")
    return None


def _round_down(n: float) -> int:
    """n rounded down to two significant digits (12,345 -> 12,000); 0 below 1."""
    if n < 1:
        return 0
    step = 10 ** max(0, int(math.log10(n)) - 1)
    return int(n // step * step)


def _check_model(spec, provider: str) -> None:
    """A model that cannot be built or trained as the spec says is bad input (ModelError, exit 2);
    on this machine (local, no setup to install it) a package missing here is missing for the job too."""
    if describes_work(spec):
        from launcher.estimate.flops import check_model

        check_model(spec.workload, allow_missing_module=provider != "local" or bool(spec.setup))


def job_estimate(spec, provider: str, instance_type: str | None, price_per_hour: float | None, *, spot: bool,
                 baseline: bool, gpu: str | None = None, on_probe: Callable[[float], None] | None = None
                 ) -> dict[str, Any]:
    """The estimate for the machine this run will use, with the price it assumed (on_probe: see
    ``for_machine``)."""
    from launcher.jobestimate import for_machine

    try:
        return for_machine(spec, provider, instance_type, price_per_hour, spot=spot, baseline=baseline,
                           local_gpu=gpu, on_probe=on_probe)
    except GpujobError as exc:
        return {"error": str(exc), "price_per_hour": price_per_hour}


