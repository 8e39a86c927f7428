"""`gpujob gc`: collect orphaned runs (their client is gone) and every tagged resource of no live run."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict
from typing import Any, Callable

from launcher.errors import CredentialsError, GpujobError, ProviderUnavailable
from launcher.liveness import orphaned
from launcher.providers import get_provider
from launcher.store import Store

CLOUDS = ("aws", "gcp")  # providers whose resources carry our tags


def collect(providers: list[str] | None, regions: list[str] | None, delete: bool = False, store: Store | None = None,
            provider_factory: Callable[..., Any] | None = None, project: str | None = None,
            on_event: Callable[..., None] | None = None) -> dict[str, Any]:
    """Find (and with ``delete``, release) what belongs to no live run.

    Two passes: runs of these providers whose client was killed (orphaned: see launcher.liveness)
    are stopped, their results brought home and their resources released, as `gpujob down` does;
    then resources found by tag whose run is not live (finished, orphaned, or unknown to this
    machine's store) are deleted. ``providers`` None: orphaned runs of every provider, tags on
    every cloud. Returns {"orphaned_runs", "orphans", "live", "errors", "skipped", "unchecked", "leftovers"}:
    "errors" are providers skipped whole (no SDK, no credentials); "skipped" those whose SDK is not
    installed and that no run in this store used (a local-only install); "unchecked" one kind/region of a
    provider that could not be listed while the rest was (and is collected)."""
    store = store or Store()
    provider_factory = provider_factory or get_provider
    runs = store.list_runs(limit=10_000)
    lost = [r for r in runs if (providers is None or r.provider in providers) and orphaned(r)]
    live_ids = {r.id for r in runs if not r.finished and not orphaned(r)}
    report: dict[str, Any] = {"orphaned_runs": [_describe(store, r) for r in lost], "orphans": [], "live": [],
                              "errors": [], "skipped": [], "unchecked": [], "leftovers": []}
    if delete and lost:
        from launcher.runner import Runner

        runner = Runner(store=store, provider_factory=provider_factory, on_event=on_event)
        for r in lost:
            who = f"pid {r.lease.get('pid')} on {r.lease.get('host')}"
            try:
                runner.down(r.id, state="interrupted", reason=f"its client ({who}) was gone; collected by gpujob gc")
            except GpujobError as exc:
                report["leftovers"].append(f"run {r.id}: {exc}")
    for name in CLOUDS if providers is None else providers:
        if name not in CLOUDS:
            continue
        config: dict[str, Any] = {"regions": regions} if regions else {}
        if name == "gcp" and project:
            config["project"] = project
        try:
            provider = provider_factory(name, **config)
            find_all = getattr(provider, "find_all", None)
            found, unchecked = find_all(regions) if find_all else (provider.find(regions), [])
        except (ProviderUnavailable, CredentialsError) as exc:
            if isinstance(exc, ProviderUnavailable) and not any(r.provider in (name, "auto") for r in runs):
                # its SDK is not here and no run of this machine used it: nothing of ours to miss here
                report["skipped"].append(f"{exc}; no run of this machine used {name}")
            else:
                report["errors"].append(str(exc))
            continue
        report["unchecked"] += [f"{name} {line}" for line in unchecked]
        orphans = [r for r in found if r.run_id not in live_ids]
        report["live"] += [asdict(r) for r in found if r.run_id in live_ids]
        report["orphans"] += [asdict(r) for r in orphans]
        if delete:
            by_run: dict[str, list] = defaultdict(list)
            for r in orphans:
                by_run[r.run_id or ""].append(r)
            for run_id, resources in by_run.items():
                try:
                    left = provider.teardown(run_id, resources, None)
                except GpujobError as exc:
                    report["leftovers"].append(f"run {run_id}: {exc}")
                    continue
                # A kind teardown could not list ("region" leftovers) is in "unchecked" already.
                report["leftovers"] += [f"{lo.resource.kind} {lo.resource.id}: {lo.resource.delete_command or lo.reason}"
                                        for lo in left if lo.resource.kind != "region"]
    return report


def _describe(store: Store, rec) -> dict[str, Any]:
    lease = rec.lease or {}
    return {"run_id": rec.id, "name": rec.name, "provider": rec.provider, "state": rec.state,
            "client_pid": lease.get("pid"), "client_host": lease.get("host"),
            "machine": (rec.machine or {}).get("id"), "resources": [f"{r.kind} {r.resource_id or r.name}"
                                                                     for r in store.resources(rec.id)]}
