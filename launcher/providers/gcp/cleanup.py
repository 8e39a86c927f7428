"""Teardown and label sweep for the Compute Engine provider.

Teardown works from the resources the run store recorded plus a label lookup (instances) and
the run mark in descriptions (firewall rules, resource policies), so a crash between a create
call and ``ctx.created`` still gets cleaned. Everything already gone counts as deleted.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

from launcher.errors import GpujobError
from launcher.providers.base import TAG_RUN, Leftover, Resource, RunContext
from launcher.providers.gcp import api
from launcher.providers.gcp import selection as shp

TEARDOWN_TIMEOUT_S = 600.0


class GcpCaller(Protocol):
    """What cleanup needs of the provider: its clients, one bounded call, and its clock."""

    name: str
    _project: str | None
    _clock: Callable[[], float]
    _sleep: Callable[[float], None]

    def _api(self) -> api.Clients: ...

    def _call(self, fn: Callable[..., Any], **kw: Any) -> Any: ...


def teardown(p: "GcpCaller", run_id: str, resources: list[Resource], ctx: RunContext | None) -> list[Leftover]:
    ours = [r for r in resources if r.provider == p.name]
    try:
        c = p._api()
    except GpujobError as err:
        if not ours:
            raise
        return [Leftover(_with_command(p, r), f"not deleted: {err}") for r in ours]
    deadline = p._clock() + TEARDOWN_TIMEOUT_S
    instances = {r.id for r in ours if r.kind == "instance" and "/" in r.id}
    policies = {r.id for r in ours if r.kind == "resource-policy" and "/" in r.id}
    firewalls = ({r.id for r in ours if r.kind == "firewall"}
                 | {shp.resource_name(run_id), shp.nodes_firewall_name(run_id)})
    leftovers: list[Leftover] = []
    label = f'labels.{TAG_RUN} = "{shp.label_value(run_id)}"'
    try:  # the label sweep also finds what a lost or partial record does not name
        instances |= {r.id for r in _find_instances(p, c, label, None)}
    except Exception as exc:  # noqa: BLE001 - still delete what the record names
        sweep = Resource(p.name, "instance", f"label {label}", None, run_id,
                         delete_command=f"gcloud compute instances list --filter '{label}' --project {c.project}")
        leftovers.append(Leftover(sweep, f"could not list instances by label: {exc}"))
    try:  # policies carry no labels: the run mark in their description finds them
        policies |= {r.id for r in _find_policies(p, c, None) if r.run_id == shp.label_value(run_id)}
    except Exception as exc:  # noqa: BLE001
        sweep = Resource(p.name, "resource-policy", f"gpujob-run={run_id}", None, run_id,
                         delete_command=f"gcloud compute resource-policies list --filter 'name~^gpujob-' --project {c.project}")
        leftovers.append(Leftover(sweep, f"could not list resource policies: {exc}"))
    # Every instance delete is sent before any is waited for: N nodes take one delete's time.
    # Then policies (refused while a member exists) and firewall rules.
    steps = [[("instance", rid, rid.split("/", 1)[0], None, c.instances.delete_unary,
               {"project": c.project, "zone": rid.split("/", 1)[0], "instance": rid.split("/", 1)[1]})
              for rid in sorted(instances)],
             [("resource-policy", rid, None, rid.split("/", 1)[0], c.resource_policies.delete_unary,
               {"project": c.project, "region": rid.split("/", 1)[0], "resource_policy": rid.split("/", 1)[1]})
              for rid in sorted(policies)],
             [("firewall", name, None, None, c.firewalls.delete_unary, {"project": c.project, "firewall": name})
              for name in sorted(firewalls)]]
    for step in steps:
        begun = [(kind, rid, zone, region, delete_start(p, fn, args)) for kind, rid, zone, region, fn, args in step]
        for kind, rid, zone, region, started in begun:
            reason = delete_finish(p, c, ctx, rid, zone, deadline, started, region)
            if reason:
                leftovers.append(Leftover(_with_command(p, Resource(p.name, kind, rid, region or (
                    shp.region_of(zone) if zone else None), run_id), c.project), reason))
    return leftovers

def delete_start(p: "GcpCaller", fn: Callable[..., Any], args: dict[str, Any]) -> tuple[Any, Any]:
    """(operation, None) or (None, the call's exception)."""
    try:
        return p._call(fn, **args), None
    except Exception as exc:  # noqa: BLE001 - classified in delete_finish
        return None, exc

def delete_finish(p: "GcpCaller", c: api.Clients, ctx: RunContext | None, rid: str, zone: str | None, deadline: float,
                   started: tuple[Any, Any], region: str | None = None) -> str | None:
    """Wait for a delete sent by delete_start; None when gone (already gone counts), else why not."""
    op, error = started
    failure = None
    try:
        if error is not None:
            raise error
        op = api.wait_operation(c, op, zone, deadline, f"delete of {rid}", p._clock, p._sleep, region=region)
        failure = api.op_failure(op)
    except GpujobError as exc:  # a timeout, or a failure the wait already classified
        return str(exc)
    except Exception as exc:  # noqa: BLE001
        failure = api.api_failure(exc)
    if failure is not None and failure.kind != "not-found":
        return f"{failure.code}: {failure.message}"
    if ctx is not None:
        ctx.deleted(rid)
    return None

def find(p: "GcpCaller", regions: list[str] | None) -> tuple[list[Resource], list[str]]:
    """Labelled instances, marked resource policies and firewall rules, and one line per kind
    that could not be listed (one kind failing never hides the others). Raises the error tree's
    CredentialsError when every listing is refused for credentials (nothing was checked)."""
    c = p._api()
    wanted = set(shp.gcp_regions(regions)) if regions else None

    def firewalls() -> list[Resource]:
        out = []
        for fw in p._call(c.firewalls.list, project=c.project):
            run = shp.firewall_run_id(fw.description)
            if fw.name.startswith("gpujob-") and run:
                out.append(Resource(p.name, "firewall", fw.name, None, run, "ACTIVE",
                                    shp.firewall_delete_command(fw.name, c.project)))
        return out

    listers = (("instance", lambda: _find_instances(p, c, f"labels.{TAG_RUN}:*", wanted)),
               ("resource-policy", lambda: _find_policies(p, c, wanted)), ("firewall", firewalls))
    found: list[Resource] = []
    failures: list[tuple[str, api.Failure]] = []
    for kind, lister in listers:
        try:
            found += lister()
        except Exception as exc:  # noqa: BLE001 - classified, reported per kind
            failures.append((kind, api.api_failure(exc)))
    if failures and len(failures) == len(listers) and all(f.kind == "auth" for _, f in failures):
        api.raise_failure(failures[0][1], c.project, "listing gpujob resources")
    return found, [f"{kind}: could not list ({f.code}: {f.message})" for kind, f in failures]


def _find_instances(p: "GcpCaller", c: api.Clients, filter_: str, regions: set[str] | None) -> list[Resource]:
    out = []
    pager = p._call(c.instances.aggregated_list, request={"project": c.project, "filter": filter_})
    for scope, listing in pager:
        zone = scope.rsplit("/", 1)[-1]
        if regions is not None and shp.region_of(zone) not in regions:
            continue
        for inst in listing.instances:
            out.append(Resource(p.name, "instance", f"{zone}/{inst.name}", shp.region_of(zone),
                                inst.labels.get(TAG_RUN), inst.status,
                                shp.instance_delete_command(inst.name, zone, c.project)))
    return out

def _find_policies(p: "GcpCaller", c: api.Clients, regions: set[str] | None) -> list[Resource]:
    out = []
    pager = p._call(c.resource_policies.aggregated_list, request={"project": c.project})
    for scope, listing in pager:
        region = scope.rsplit("/", 1)[-1]
        if regions is not None and region not in regions:
            continue
        for pol in listing.resource_policies:
            run = shp.firewall_run_id(pol.description)
            if pol.name.startswith("gpujob-") and run:
                out.append(Resource(p.name, "resource-policy", f"{region}/{pol.name}", region, run, pol.status or None,
                                    shp.policy_delete_command(pol.name, region, c.project)))
    return out

def _with_command(p: "GcpCaller", r: Resource, project: str | None = None) -> Resource:
    if r.delete_command:
        return r
    project = project or p._project
    if r.kind == "instance" and "/" in r.id:
        zone, name = r.id.split("/", 1)
        cmd = shp.instance_delete_command(name, zone, project)
    elif r.kind == "resource-policy" and "/" in r.id:
        region, name = r.id.split("/", 1)
        cmd = shp.policy_delete_command(name, region, project)
    else:
        cmd = shp.firewall_delete_command(r.id, project)
    return Resource(r.provider, r.kind, r.id, r.region, r.run_id, r.state, cmd)
