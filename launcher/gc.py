"""`gpujob gc`: find every resource carrying our tags, even when local state is gone."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict
from typing import Any, Callable

from launcher.errors import CredentialsError, GpujobError, ProviderUnavailable
from launcher.providers import get_provider
from launcher.store import Store


def collect(providers: list[str], regions: list[str] | None, delete: bool = False, store: Store | None = None,
            provider_factory: Callable[..., Any] | None = None) -> dict[str, Any]:
    """Resources of runs that are not live (finished, or unknown to this machine's store)."""
    store = store or Store()
    provider_factory = provider_factory or get_provider
    live_ids = {r.id for r in store.list_runs(limit=10_000) if not r.finished}
    report: dict[str, Any] = {"orphans": [], "live": [], "errors": [], "leftovers": []}
    for name in providers:
        try:
            provider = provider_factory(name, **({"regions": regions} if regions else {}))
            found = provider.find(regions)
        except (ProviderUnavailable, CredentialsError) as exc:
            report["errors"].append(str(exc))
            continue
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
                report["leftovers"] += [f"{lo.resource.kind} {lo.resource.id}: {lo.resource.delete_command or lo.reason}"
                                        for lo in left]
    return report
