"""What the EC2 provider would launch, decided locally: instance type, price, region and zone
order from the catalog, and the --dry-run plan. Nothing here calls AWS."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

from launcher.errors import ProviderError
from launcher.providers.aws.common import (
    DLAMI_SSM_PARAMETERS,
    PROVIDER,
    arch_of,
    SSH_USER,
    cluster_placement,
    quota_for,
    resource_name,
    watchdog_minutes,
)
from launcher.providers.base import TAG_CREATED, TAG_JOB, TAG_OWNER, TAG_RUN

# Regular AZ ids ("use1-az1"); Local/Wavelength Zones ("use1-atl2-az1") need an opt-in first.
_AZ_ID = re.compile(r"^[a-z]+\d+-az\d+$")


@dataclass
class RegionPlan:
    region: str
    price: float | None = None
    zone_ids: tuple[str, ...] = ()  # AZ ids from the catalog (use1-az1); empty: ask EC2
    vcpus: int | None = None


@dataclass
class Choice:
    instance_type: str
    gpu: str | None
    gpu_count: int
    spot: bool
    price: float | None
    regions: list[RegionPlan] = field(default_factory=list)
    arch: str = "x86_64"  # host CPU; picks the DLAMI (see common.DLAMI_SSM_PARAMETERS)


def choose(spec, allowed: list[str], catalog) -> Choice:
    """The cheapest catalog match (or the spec's instance type) and its regions, cheapest first."""
    res = spec.resources
    acc = res.accelerators
    offers: list = []
    if catalog is not None:
        if acc:
            offers = catalog.query(provider="aws", gpu=acc.name, count=acc.count, regions=allowed, spot=res.spot)
        elif res.instance_type:
            offers = catalog.query(provider="aws", regions=allowed, spot=res.spot)

    def price(o) -> float:
        p = o.spot_price if res.spot else o.price
        return p if p is not None else float("inf")

    if res.instance_type:
        itype = res.instance_type
    else:
        if acc is None:
            raise ProviderError(PROVIDER, "the spec names neither resources.accelerators nor resources.instance_type",
                                hint="add e.g. `accelerators: A10G:1` or `instance_type: g5.xlarge`")
        if catalog is None:
            raise ProviderError(PROVIDER, f"no price catalog to pick an instance type for {acc}",
                                hint="set resources.instance_type")
        if not offers:
            market = "spot" if res.spot else "on-demand"
            raise ProviderError(PROVIDER, f"no {market} AWS offer for {acc} in {', '.join(allowed)}",
                                hint=_what_aws_sells(catalog, acc, res.spot))
        itype = min(offers, key=lambda o: (price(o), o.instance_type)).instance_type
    offers = sorted((o for o in offers if o.instance_type == itype), key=price)

    plans: list[RegionPlan] = []
    for o in offers:
        if any(p.region == o.region for p in plans):
            continue
        # A spot launch only works where a spot price is listed.
        zones = (tuple(getattr(o, "spot_zones", ()) or ()) if res.spot else ()) or tuple(o.zones or ())
        cost = price(o)
        plans.append(RegionPlan(o.region, None if cost == float("inf") else cost,
                                tuple(z for z in zones if _AZ_ID.match(z)),
                                int(o.vcpus) if getattr(o, "vcpus", None) else None))
    if res.instance_type:  # the catalog may not know every type: still try every allowed region
        plans += [RegionPlan(r) for r in allowed if all(p.region != r for p in plans)]
    first = offers[0] if offers else None
    return Choice(
        instance_type=itype,
        gpu=first.gpu if first else (acc.name if acc else None),
        gpu_count=first.gpu_count if first else (acc.count if acc else 0),
        spot=res.spot,
        price=plans[0].price if plans else None,
        regions=plans,
        arch=arch_of(itype, getattr(first, "arch", None) if first else None),
    )


def _what_aws_sells(catalog, acc, spot: bool) -> str:
    """The hint for a GPU request AWS cannot meet: what it does sell of that GPU, and where."""
    sold = catalog.query(provider="aws", gpu=acc.name, spot=spot)
    if not sold:
        others = sorted({o.provider for o in catalog.query(gpu=acc.name)} - {PROVIDER})
        return (f"AWS does not sell {acc.name}" + (f"; {', '.join(others)} does: use --provider {others[0]}" if others else "")
                + "; or pick another GPU")
    counts = sorted({o.gpu_count for o in sold})
    if acc.count not in counts:
        return f"AWS sells {acc.name} in counts of {', '.join(map(str, counts))}: write e.g. {acc.name}:{counts[0]}"
    regions = sorted({o.region for o in sold if o.gpu_count == acc.count})
    return f"AWS offers {acc} in {', '.join(regions[:8])}{' ...' if len(regions) > 8 else ''}: add one to resources.regions"


def normalize_cidr(cidr: str) -> str:
    try:
        net = ipaddress.ip_network(cidr.strip(), strict=False)
    except ValueError:
        raise ProviderError(PROVIDER, f"--ssh-cidr {cidr!r} is not an address or CIDR",
                            hint="pass e.g. --ssh-cidr 203.0.113.7/32") from None
    return str(net)


def plan(spec, ctx, choice: Choice, ssh_cidr: str | None) -> dict[str, Any]:
    run_id = getattr(ctx, "run_id", None) or "<run-id>"
    rule = f"22/tcp from {normalize_cidr(ssh_cidr)}" if ssh_cidr else "22/tcp from your address /32 (detected at launch)"
    zones = {p.region: list(p.zone_ids) or ["every zone offering the type (asked at launch)"] for p in choice.regions}
    nodes = spec.resources.num_nodes
    multi: dict[str, Any] = {}
    if nodes > 1:
        name = resource_name(run_id)
        multi = {
            "num_nodes": nodes,
            "launch": f"one RunInstances call, MinCount=MaxCount={nodes}, all nodes in one zone; "
                      "a zone that cannot give all of them is skipped",
            "placement": f"cluster placement group {name}-<zone> (one per zone tried, deleted at teardown)"
                         if cluster_placement(choice.instance_type)
                         else f"none ({choice.instance_type} gains nothing from a cluster placement group)",
            "intra_node_rule": f"{name}: all TCP/UDP from members of {name} itself (node to node only)",
            "rendezvous": "node 0's private address",
        }
    return {
        "provider": PROVIDER,
        "instance_type": choice.instance_type,
        "gpu": f"{choice.gpu}:{choice.gpu_count}" if choice.gpu else None,
        "market": "spot" if choice.spot else "on-demand",
        "price_per_hour": choice.price,
        "regions": [p.region for p in choice.regions],
        "zones": zones,
        "arch": choice.arch,
        "image": spec.resources.image_id or f"SSM parameter {DLAMI_SSM_PARAMETERS[choice.arch]} (resolved per region at launch)",
        "ssh_user": SSH_USER,
        "key_pair": f"{resource_name(run_id)} (per-run ed25519, imported, deleted at teardown)",
        "security_group": f"{resource_name(run_id)}: {rule}",
        "host_key": "generated locally, installed through user data, pinned by the client",
        "metadata": "IMDSv2 required",
        "root_volume": f"{spec.resources.disk_gb} GiB gp3, deleted with the instance",
        "watchdog": f"shutdown -h +{watchdog_minutes(spec.limits.max_duration)} min, "
                    "InstanceInitiatedShutdownBehavior=terminate",
        "tags": {TAG_RUN: run_id, TAG_JOB: spec.name, TAG_OWNER: getattr(ctx, "owner", None) or "<you>",
                 TAG_CREATED: "<launch time, ISO UTC>"},
        "quota": "{} ({})".format(*quota_for(choice.instance_type, choice.spot)),
        **multi,
    }
