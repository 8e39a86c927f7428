"""Teardown and tag sweep for the EC2 provider.

Teardown works from two sources at once: the resources the run store recorded, and a tag
lookup (TAG_RUN=run id) per region, so a crash between a create call and ``ctx.created``
still gets cleaned. Everything already gone counts as deleted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from launcher.errors import CredentialsError, GpujobError, ProviderError
from launcher.providers.aws.common import NOT_FOUND_CODES, PROVIDER, delete_command, one_line, tag_value, translate
from launcher.providers.base import TAG_RUN, Leftover, Resource

if TYPE_CHECKING:
    from launcher.providers.aws.api import AwsApi

_NOT_TERMINATED = ["pending", "running", "shutting-down", "stopping", "stopped"]


def _res(kind: str, rid: str, region: str, run_id: str | None, state: str | None = None) -> Resource:
    return Resource(PROVIDER, kind, rid, region=region, run_id=run_id, state=state,
                    delete_command=delete_command(kind, rid, region))


def _tag_filter(run_id: str | None) -> list[dict]:
    if run_id is None:
        return [{"Name": "tag-key", "Values": [TAG_RUN]}]
    return [{"Name": f"tag:{TAG_RUN}", "Values": [run_id]}]


def _instances(p: "AwsApi", region: str, run_id: str | None) -> list[Resource]:
    out = []
    pages = p.client("ec2", region).get_paginator("describe_instances").paginate(
        Filters=_tag_filter(run_id) + [{"Name": "instance-state-name", "Values": _NOT_TERMINATED}])
    try:
        for page in pages:
            for r in page.get("Reservations", []):
                for i in r.get("Instances", []):
                    out.append(_res("instance", i["InstanceId"], region, tag_value(i.get("Tags"), TAG_RUN),
                                    i["State"]["Name"]))
    except Exception as exc:
        raise _wrap(exc, "DescribeInstances", region) from None
    return out


def _groups(p: "AwsApi", region: str, run_id: str | None) -> list[Resource]:
    out = []
    try:
        for page in p.client("ec2", region).get_paginator("describe_security_groups").paginate(Filters=_tag_filter(run_id)):
            for g in page.get("SecurityGroups", []):
                out.append(_res("security-group", g["GroupId"], region, tag_value(g.get("Tags"), TAG_RUN)))
    except Exception as exc:
        raise _wrap(exc, "DescribeSecurityGroups", region) from None
    return out


def _key_pairs(p: "AwsApi", region: str, run_id: str | None) -> list[Resource]:
    kps = p.api(region, "ec2", "describe_key_pairs", Filters=_tag_filter(run_id))["KeyPairs"]
    return [_res("key-pair", k["KeyName"], region, tag_value(k.get("Tags"), TAG_RUN)) for k in kps]


def _placement_groups(p: "AwsApi", region: str, run_id: str | None) -> list[Resource]:
    pgs = p.api(region, "ec2", "describe_placement_groups", Filters=_tag_filter(run_id))["PlacementGroups"]
    return [_res("placement-group", g["GroupName"], region, tag_value(g.get("Tags"), TAG_RUN), g.get("State"))
            for g in pgs if g.get("State") != "deleted"]


_LISTERS = (("instance", lambda p, r, run: _instances(p, r, run)), ("security-group", lambda p, r, run: _groups(p, r, run)),
            ("key-pair", lambda p, r, run: _key_pairs(p, r, run)),
            ("placement-group", lambda p, r, run: _placement_groups(p, r, run)))


def _tagged(p: "AwsApi", region: str, run_id: str | None) -> tuple[list[Resource], list[tuple[str, GpujobError]]]:
    """Tagged resources of every kind in one region, and (kind, error) for each kind whose
    listing failed: one kind failing never hides the others."""
    found: list[Resource] = []
    failed: list[tuple[str, GpujobError]] = []
    for kind, lister in _LISTERS:
        try:
            found += lister(p, region, run_id)
        except GpujobError as exc:
            failed.append((kind, exc))
    return found, failed


def _wrap(exc: Exception, op: str, region: str) -> Exception:
    return exc if isinstance(exc, GpujobError) else translate(exc, op, region)


def find(p: "AwsApi", regions: list[str] | None) -> tuple[list[Resource], list[str]]:
    """Every live instance, security group, key pair and placement group carrying TAG_RUN in
    these regions (all enabled regions when None), and one line per kind and region that could
    not be listed. Raises CredentialsError when AWS refuses every call (nothing was checked)."""
    if not regions:
        regions = sorted(r["RegionName"] for r in p.api("us-east-1", "ec2", "describe_regions")["Regions"])
    found: list[Resource] = []
    problems: list[str] = []
    for region in regions:
        got, failed = _tagged(p, region, None)
        if failed and len(failed) == len(_LISTERS) and all(isinstance(e, CredentialsError) for _, e in failed):
            raise failed[0][1]
        found += got
        problems += [f"{kind} in {region}: could not list ({one_line(exc)})" for kind, exc in failed]
    return found, problems


def teardown(p: "AwsApi", run_id: str, resources: list[Resource], ctx, regions: list[str]) -> list[Leftover]:
    leftovers: list[Leftover] = []
    todo: dict[tuple[str, str, str], Resource] = {}  # (kind, region, id): key pair names repeat per region
    for r in resources:
        if r.provider == PROVIDER and r.region and _is_cloud_id(r.kind, r.id):
            todo[(r.kind, r.region, r.id)] = r
    for region in regions:
        got, failed = _tagged(p, region, run_id)
        for r in got:
            todo.setdefault((r.kind, r.region, r.id), r)
        for kind, exc in failed:  # cannot list this kind here: still delete what the store recorded
            where = Resource(PROVIDER, "region", f"{region} ({kind}s)", region=region, run_id=run_id,
                             delete_command=f"gpujob gc --provider aws --region {region} --yes")
            leftovers.append(Leftover(where, _unconfirmed(exc, f"no other {kind} of this run is left in {region}",
                                                          f"could not list {kind}s")))

    def done(rid: str) -> None:
        if ctx is not None:
            ctx.deleted(rid)

    instances = [r for (k, _, _), r in todo.items() if k == "instance"]
    stuck = _terminate(p, instances, done)
    leftovers += [Leftover(_res("instance", r.id, r.region, run_id, state), why) for r, state, why in stuck]
    # Groups and placement groups refuse deletion while a member instance still exists.
    for kind, delete in (("security-group", _delete_group), ("key-pair", _delete_key_pair),
                         ("placement-group", _delete_placement_group)):
        for r in [r for (k, _, _), r in todo.items() if k == kind]:
            why = delete(p, r)
            if why:
                leftovers.append(Leftover(_res(r.kind, r.id, r.region, run_id), why))
            else:
                done(r.id)
    return leftovers


def _unconfirmed(exc: Exception, what: str, failed: str) -> str:
    """Why ``what`` is reported as left: the cloud refused our credentials (so nothing about it
    can be confirmed), or the call failed for another reason."""
    if isinstance(exc, CredentialsError):
        return f"AWS rejected our credentials ({exc.code or 'no credentials'}): cannot confirm {what}"
    return f"{failed}: {one_line(exc)}"


def _is_cloud_id(kind: str, rid: str | None) -> bool:
    """Recorded intents may carry a name instead of an id; the tag lookup covers those."""
    if not rid:
        return False
    if kind == "instance":
        return rid.startswith("i-")
    if kind == "security-group":
        return rid.startswith("sg-")
    # Key pairs can be deleted by name as well as by id; placement groups only by name.
    return kind in ("key-pair", "placement-group")


def _terminate(p: "AwsApi", instances: list[Resource], done) -> list[tuple[Resource, str | None, str]]:
    """Terminate, then wait (bounded) until terminated. Returns (resource, state, reason) left."""
    pending: list[Resource] = []
    stuck: list[tuple[Resource, str | None, str]] = []
    for r in instances:
        try:
            p.api(r.region, "ec2", "terminate_instances", InstanceIds=[r.id])
            pending.append(r)
        except ProviderError as exc:
            if exc.code in NOT_FOUND_CODES:
                done(r.id)
            else:
                stuck.append((r, r.state, _unconfirmed(exc, f"{r.id} is gone", "terminate failed")))
    start = p.clock()
    end = start + p.teardown_wait_s
    last: dict[str, str | None] = {}
    while pending:
        still = []
        for r in pending:
            try:
                desc = p.describe_instance(r.region, r.id)
            except ProviderError as exc:
                if isinstance(exc, CredentialsError):  # will not get better by waiting
                    stuck.append((r, last.get(r.id), _unconfirmed(exc, f"{r.id} is gone", "describe failed")))
                    continue
                last[r.id] = f"unknown ({one_line(exc)})"
                still.append(r)
                continue
            state = desc["State"]["Name"] if desc else "terminated"
            last[r.id] = state
            if state == "terminated":
                done(r.id)
            else:
                still.append(r)
        pending = still
        if not pending:
            break
        if p.clock() >= end:
            waited = p.clock() - start
            stuck += [(r, last.get(r.id), f"not terminated after {waited:.0f}s (last state: {last.get(r.id)})")
                      for r in pending]
            break
        p.sleep(min(p.poll_interval_s, max(0.0, end - p.clock())))
    return stuck


def _delete_group(p: "AwsApi", r: Resource) -> str | None:
    """None when gone; else why not. DependencyViolation lasts until the instance's ENI is released."""
    kwargs = {"GroupId": r.id} if r.id.startswith("sg-") else {"GroupName": r.id}
    return _delete_retrying(p, r, "delete_security_group", kwargs, "DependencyViolation")


def _delete_placement_group(p: "AwsApi", r: Resource) -> str | None:
    # InUse lasts while a member is still shutting down.
    return _delete_retrying(p, r, "delete_placement_group", {"GroupName": r.id}, "InvalidPlacementGroup.InUse")


def _delete_retrying(p: "AwsApi", r: Resource, op: str, kwargs: dict, busy_code: str) -> str | None:
    """None when gone; else why not. ``busy_code`` means "not yet": retried with a backoff."""
    for attempt in range(p.sg_delete_attempts):
        try:
            p.api(r.region, "ec2", op, **kwargs)
            return None
        except ProviderError as exc:
            if exc.code in NOT_FOUND_CODES:
                return None
            if exc.code != busy_code or attempt == p.sg_delete_attempts - 1:
                return _unconfirmed(exc, f"{r.id} is gone", "delete failed")
        p.sleep(min(5.0 * (attempt + 1), 20.0))
    return "delete failed"  # pragma: no cover - the loop returns


def _delete_key_pair(p: "AwsApi", r: Resource) -> str | None:
    # Our key pairs are recorded by name; an id ("key-...") from elsewhere is accepted too.
    kwargs = {"KeyPairId": r.id} if r.id.startswith("key-") else {"KeyName": r.id}
    try:
        p.api(r.region, "ec2", "delete_key_pair", **kwargs)
    except ProviderError as exc:
        if exc.code not in NOT_FOUND_CODES:
            return _unconfirmed(exc, f"{r.id} is gone", "delete failed")
    return None
