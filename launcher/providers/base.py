"""The provider contract, written once.

A provider turns a job spec into a reachable machine and back into nothing. The lifecycle
(waiting for SSH, upload, run, stream, fetch, budget, teardown ordering) lives in
``launcher.runner`` and is the same for every provider; providers never print, never
sleep without a deadline, and raise only ``launcher.errors`` types.

Every cloud resource is announced through ``ctx.intent(...)`` *before* the create call and
confirmed with ``ctx.created(...)`` after it, so a crash between the two still leaves a
record (and the cloud-side tags let ``gpujob gc`` find it even when the record is gone).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Protocol

if TYPE_CHECKING:
    from launcher.spec import JobSpec

TAG_RUN = "gpujob-run"  # value: run id; on every resource (AWS tag / GCP label)
TAG_JOB = "gpujob-job"  # value: the spec's name
TAG_OWNER = "gpujob-owner"
TAG_CREATED = "gpujob-created"  # ISO-8601 UTC (GCP labels: unix seconds; labels forbid ':')


@dataclass
class Machine:
    """A machine that runs the job, as the runner needs to reach it."""

    provider: str
    id: str  # instance id / name; "localhost" for local
    host: str | None = None  # address to SSH to (None for local)
    port: int = 22
    user: str | None = None
    key_path: str | None = None  # private key file (0600) for this run
    host_keys: list[str] = field(default_factory=list)  # pinned, "ssh-ed25519 AAAA..." lines
    region: str | None = None
    zone: str | None = None
    instance_type: str | None = None
    gpu: str | None = None
    gpu_count: int = 0
    spot: bool = False
    price_per_hour: float | None = None  # what this machine bills, USD/h (host + GPUs)
    private_ip: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Resource:
    """One thing a provider created (or found by tag)."""

    provider: str
    kind: str  # "instance" | "security-group" | "key-pair" | "firewall" | "volume" ...
    id: str
    region: str | None = None
    run_id: str | None = None
    state: str | None = None
    delete_command: str | None = None  # exact CLI command a human can run to delete it


@dataclass(frozen=True)
class Leftover:
    resource: Resource
    reason: str


class RunContext(Protocol):
    """What the runner hands a provider for one run."""

    run_id: str
    spec: "JobSpec"
    ssh_public_key: str  # per-run client key, OpenSSH format
    ssh_private_key_path: str
    host_key_private: str  # per-run host key (OpenSSH PEM) to install on the machine
    host_key_public: str  # its public line, pinned by the client
    ssh_cidr: str | None  # caller's address /32 for ingress
    owner: str

    def intent(self, kind: str, name: str, region: str | None = None) -> int:
        """Record that a resource is about to be created; returns a handle for created()."""

    def created(self, handle: int, resource_id: str) -> None:
        """Record the id the cloud gave the resource announced by intent()."""

    def deleted(self, resource_id: str) -> None:
        """Record that a resource is gone."""

    def emit(self, event: str, **fields: Any) -> None:
        """Tell the user something (the CLI renders it); e.g. emit('zone-failed', zone=..)."""


class Provider(Protocol):
    name: str

    def plan(self, spec: "JobSpec", ctx: RunContext) -> dict[str, Any]:
        """What launch() would do, without calling any create API (for --dry-run)."""

    def launch(self, spec: "JobSpec", ctx: RunContext, deadline_s: float) -> Machine:
        """Create everything and wait until the machine runs and has an address.

        Tries zones/regions in order on CapacityError; raises QuotaError, CredentialsError,
        WaitTimeout. On failure it leaves recorded resources for teardown() to remove.
        """

    def launch_nodes(self, spec: "JobSpec", ctx: RunContext, deadline_s: float, count: int) -> list[Machine]:
        """`count` machines for one multi-node job, node 0 first, all in ONE zone.

        AWS: a cluster placement group (strategy "cluster", tagged, recorded via ctx.intent/created,
        deleted at teardown) for families that support it (p3dn/p4d/p4de/p5/p5e/p5en/p6, g5/g6/g6e .12xlarge+ ...;
        others launch without one), one run_instances call with MinCount=MaxCount=count in a zone (fail fast,
        try the next zone on capacity errors); GCP: `count` instances in one zone (a compact placement
        resource policy where the machine family supports it, e.g. a2/a3; otherwise none), each labelled.
        Network: SSH 22/tcp from the caller /32 only (as today) PLUS all TCP/UDP between the run's own nodes
        and nothing else — AWS: an ingress rule on the run's security group whose source is that same group;
        GCP: a second firewall rule `gpujob-<run>-nodes` with sourceTags = targetTags = the run's network tag.
        Every Machine has private_ip set (the rendezvous address). If fewer than `count` can be had in any zone,
        raise CapacityError("only k of N nodes could be launched in <zone>; ...") after trying every zone —
        whatever was created stays recorded, so teardown() removes every node (partial-launch teardown).
        """

    def poll(self, machine: Machine) -> str | None:
        """None while healthy; else a reason such as 'spot-interrupted' or 'terminated'."""

    def teardown(self, run_id: str, resources: list[Resource], ctx: RunContext | None) -> list[Leftover]:
        """Delete everything of this run; idempotent (already gone == success)."""

    def find(self, regions: list[str] | None) -> list[Resource]:
        """Every resource carrying our tags, for `gpujob gc`."""


def tried_last(zones: list[str], ctx: Any) -> list[str]:
    """Zones in try order with those in ``ctx.avoid_zones`` (where this run's spot machine was
    reclaimed) moved to the end: a recovery goes to the next zone the provider offers, and back
    to the same one only when no other has capacity."""
    avoid = set(getattr(ctx, "avoid_zones", ()) or ())
    return [z for z in zones if z not in avoid] + [z for z in zones if z in avoid]


EventSink = Callable[..., None]
