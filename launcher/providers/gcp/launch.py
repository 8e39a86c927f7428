"""GCP provider: GPU VMs on Compute Engine (one, or N in one zone), secured, labelled and self-deleting.

Launch creates a per-run firewall rule (22/tcp from the caller's /32 to a per-run network
tag), then tries zones cheapest first until one has capacity; the VM carries the run's SSH
key in its own metadata, pins its SSH host key through the boot script, and deletes itself
after limits.max_duration + 10 minutes (``scheduling.maxRunDuration``).
The endpoint can be redirected with GPUJOB_GCP_API_ENDPOINT (see ``gcp.api``).
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any, Callable

from launcher import guard, signals
from launcher.errors import CapacityError, GpujobError, ProviderError, QuotaError, WaitTimeout
from launcher.providers.address import CHECKIP_URL, detect_public_ip
from launcher.providers.gcp import api, cleanup
from launcher.providers.gcp import selection as shp
from launcher.providers.base import Leftover, Machine, Resource, RunContext, tried_last

if TYPE_CHECKING:
    from launcher.spec import JobSpec

_GONE_STATES = {"STOPPING", "STOPPED", "TERMINATED", "SUSPENDING", "SUSPENDED"}


class GcpProvider:
    name = "gcp"

    def __init__(self, project: str | None = None, regions: list[str] | None = None, ssh_cidr: str | None = None,
                 credentials: Any = None, catalog: Any = None, sleep: Callable[[float], None] = signals.sleep,
                 clock: Callable[[], float] = time.monotonic, detect_ip: Callable[[], str] | None = None):
        self._project = project
        self._regions = shp.gcp_regions(regions)
        self._ssh_cidr = ssh_cidr
        self._credentials = credentials
        self._catalog = catalog
        self._sleep, self._clock, self._detect_ip = sleep, clock, detect_ip
        # Checked now, so a refused endpoint fails before anything else happens.
        self._endpoint, self._anonymous = api.parse_endpoint(os.environ.get(api.ENDPOINT_ENV))
        self._clients: api.Clients | None = None

    # --- plumbing ---------------------------------------------------------------------------

    def _api(self) -> api.Clients:
        if self._clients is None:
            self._clients = api.build_clients(self._project, self._credentials, self._endpoint, self._anonymous)
            self._project = self._clients.project
        return self._clients

    def _load_catalog(self) -> Any:
        if self._catalog is None:
            from launcher.catalog import load_catalog

            self._catalog = load_catalog()
        return self._catalog

    def _shape(self, spec: "JobSpec") -> shp.Shape:
        regions = self._regions or shp.gcp_regions(spec.resources.regions)
        needs_catalog = spec.resources.accelerators is not None
        shape = shp.choose_shape(spec, self._load_catalog() if needs_catalog else None, regions)
        if spec.resources.regions and not regions:
            shape.notes.append(f"none of the spec's regions ({', '.join(spec.resources.regions)}) is a GCP region: "
                               "every GCP region with the GPU is considered; pass --region to limit them")
        return shape

    def _cidr(self, ctx: RunContext) -> str:
        cidr = ctx.ssh_cidr or self._ssh_cidr
        if not cidr and self._detect_ip is None and self._anonymous:
            cidr = "127.0.0.1"  # a loopback fake endpoint hands out loopback machines: no need to look outside
        elif not cidr:
            try:
                cidr = (self._detect_ip or detect_public_ip)().strip()
            except Exception as exc:  # noqa: BLE001 - any failure means: ask the user
                raise ProviderError("gcp", f"could not detect your public address from {CHECKIP_URL} ({api.first_line(exc)})",
                                    hint="pass --ssh-cidr YOUR.PUBLIC.IP/32 (port 22 is never opened to everyone)") from None
        return shp.check_cidr(cidr if "/" in cidr else f"{cidr}/{128 if ':' in cidr else 32}")

    def _call(self, fn: Callable[..., Any], **kw: Any) -> Any:
        """One API call with a bounded time and no hidden retry loop (our loops retry)."""
        return fn(timeout=api.CALL_TIMEOUT_S, retry=None, **kw)

    # --- pre-flight -------------------------------------------------------------------------

    def preflight(self, spec: "JobSpec", ctx: RunContext) -> dict[str, Any]:
        """Before anything slow or billable: the machine shape (local), Application Default
        Credentials and the project, then the caller's address for the firewall rule (kept for
        launch). Creates nothing. Returns {"project", "ssh_cidr"}; raises CredentialsError or
        ProviderError (exit code 3)."""
        shape = self._shape(spec)
        c = self._api()
        if shape.accelerator_type:
            self._check_quota(c, shape, shape.gpu_count * spec.resources.num_nodes)
        self._ssh_cidr = self._cidr(ctx)
        return {"project": c.project, "ssh_cidr": self._ssh_cidr}

    def _check_quota(self, c: api.Clients, s: shp.Shape, need: int) -> None:
        """Best effort: QuotaError when every candidate region's GPU quota has room for fewer than
        ``need`` GPUs. A region, metric or call we cannot read counts as enough (launch will say)."""
        metric = shp.quota_metric(s.accelerator_type, s.spot)
        short = []
        for region in s.regions:
            try:
                quotas = self._call(c.regions.get, project=c.project, region=region).quotas
            except Exception:  # noqa: BLE001 - no permission, not reachable: unknown
                return
            q = next((q for q in quotas if q.metric == metric), None)
            if q is None or q.limit - q.usage >= need:
                return
            short.append(f"{region} {q.limit - q.usage:g} free")
        if short:
            raise QuotaError("gcp", f"quota {metric} has room for fewer than {need} GPU(s) in every candidate region "
                                    f"({'; '.join(short)})",
                             hint=f"request more {metric} at https://console.cloud.google.com/iam-admin/quotas?project={c.project}, "
                                  "or add resources.regions where it has room", code="QUOTA_EXCEEDED")

    # --- plan -------------------------------------------------------------------------------

    def plan(self, spec: "JobSpec", ctx: RunContext) -> dict[str, Any]:
        s = self._shape(spec)
        name = shp.resource_name(ctx.run_id)
        return {
            "provider": self.name,
            "project": self._project or os.environ.get("GOOGLE_CLOUD_PROJECT") or "(from Application Default Credentials)",
            "api_endpoint": self._endpoint or "https://compute.googleapis.com",
            "instance_name": name,
            "machine_type": s.machine_type,
            "instance_type": s.machine_type,  # the name the runner and estimator use
            "gpu": s.gpu,
            "gpu_count": s.gpu_count,
            "accelerator_type": s.accelerator_type,
            "guest_accelerators": [{"acceleratorType": s.accelerator_type, "acceleratorCount": s.gpu_count}] if s.attach else [],
            "spot": s.spot,
            "provisioning_model": "SPOT" if s.spot else "STANDARD",
            "price_per_hour": s.price,
            "host_price_per_hour": s.host_price,
            "accelerator_price_per_hour": s.accelerator_price,
            "on_demand_price_per_hour": s.on_demand_price,  # = host + accelerator; spot bills price_per_hour
            "zones": s.zones,
            "regions": s.regions,
            "image": s.image,
            "image_family": s.image_family,
            "boot_disk_gb": s.disk_gb,
            "boot_disk_type": s.disk_type,
            "ssh_user": shp.SSH_USER,
            "firewall_rule": {"name": name, "allow": "tcp:22", "source_ranges": [ctx.ssh_cidr or self._ssh_cidr or "(your address)/32"],
                              "target_tags": [name]},
            "scheduling": {"maxRunDuration_s": s.max_run_s, "instanceTerminationAction": "DELETE",
                           "onHostMaintenance": "TERMINATE" if s.gpu else "MIGRATE"},
            "labels": shp.labels_for(ctx.run_id, spec.name, ctx.owner),
            "notes": s.notes,
            **self._plan_nodes(spec, ctx, s, name),
        }

    def _plan_nodes(self, spec: "JobSpec", ctx: RunContext, s: shp.Shape, tag: str) -> dict[str, Any]:
        nodes = spec.resources.num_nodes
        if nodes <= 1:
            return {}
        return {
            "num_nodes": nodes,
            "instance_names": [shp.node_name(ctx.run_id, i) for i in range(nodes)],
            "placement": (f"compact resource policy {tag}-<zone> (COLLOCATED, vmCount {nodes}), "
                          "one per zone tried, all nodes in that zone") if shp.compact_placement(s.machine_type)
                         else f"all nodes in one zone; no compact placement for {s.machine_type}",
            "intra_node_rule": {"name": shp.nodes_firewall_name(ctx.run_id), "allow": "tcp, udp (all ports)",
                                "source_tags": [tag], "target_tags": [tag]},
            "rendezvous": "node 0's internal IP",
        }

    # --- launch -----------------------------------------------------------------------------

    def launch(self, spec: "JobSpec", ctx: RunContext, deadline_s: float) -> Machine:
        """deadline_s: seconds from now for the whole launch (firewall, zones, boot)."""
        deadline = self._clock() + deadline_s
        s, c, image, name, labels, script = self._prepare(spec, ctx, deadline)
        tried: list[str] = []
        for zone in tried_last(s.zones, ctx):
            body = shp.instance_body(s, zone, name, labels, image, ctx.ssh_public_key, script)
            failure = self._insert(c, ctx, zone, name, body, deadline)
            if failure is None:
                ctx.emit("instance-created", instance_id=name, zone=zone, region=shp.region_of(zone),
                         instance_type=s.machine_type)
                return self._wait_running(c, ctx, s, zone, name, image, deadline)
            ctx.emit("zone-failed", zone=zone, code=failure.code, message=failure.message)
            tried.append(f"{zone} ({failure.code})")
        raise CapacityError("gcp", f"no capacity for {s.machine_type}" + (f" with {s.gpu_count}x {s.gpu}" if s.gpu else "")
                            + f"{' (spot)' if s.spot else ''}; tried {', '.join(tried) or 'no zone'}",
                            hint="retry later, add regions under resources.regions, or try another GPU"
                                 + (" or on-demand" if s.spot else " or spot: true"),
                            code="ZONE_RESOURCE_POOL_EXHAUSTED")

    def _prepare(self, spec: "JobSpec", ctx: RunContext, deadline: float) -> tuple[shp.Shape, api.Clients, str, str, dict, str]:
        """What every launch needs before its first instance: shape, clients, image, the run's
        name (also its network tag), labels, boot script, and the SSH rule."""
        s = self._shape(spec)
        cidr = self._cidr(ctx)  # before creating anything: a missing CIDR must cost nothing
        c = self._api()
        image = self._resolve_image(c, s)
        name = shp.resource_name(ctx.run_id)
        self._create_firewall(c, ctx, name, spec.name, cidr, deadline)
        script = shp.render_startup(ctx.run_id, ctx.host_key_private, ctx.host_key_public, spec.limits)
        return s, c, image, name, shp.labels_for(ctx.run_id, spec.name, ctx.owner), script

    def launch_nodes(self, spec: "JobSpec", ctx: RunContext, deadline_s: float, count: int) -> list[Machine]:
        """``count`` VMs in one zone, node 0 first (see ``base.Provider.launch_nodes``). Each
        carries the run's network tag; a second rule opens all TCP/UDP between tagged VMs only."""
        if count < 1:
            raise ProviderError("gcp", f"launch_nodes needs count >= 1, got {count}")
        if count == 1:
            return [self.launch(spec, ctx, deadline_s)]
        deadline = self._clock() + deadline_s
        s, c, image, tag, labels, script = self._prepare(spec, ctx, deadline)
        nodes_rule = shp.nodes_firewall_body(shp.nodes_firewall_name(ctx.run_id), tag, ctx.run_id, spec.name)
        self._insert_firewall(c, ctx, nodes_rule, deadline, lambda fw: list(fw.source_tags) == [tag])
        tried: list[str] = []
        best: tuple[int, str] | None = None
        for zone in s.zones:
            policy = self._create_policy(c, ctx, zone, spec.name, count, deadline) if shp.compact_placement(s.machine_type) else None
            names = [shp.node_name(ctx.run_id, i) for i in range(count)]
            bodies = [shp.instance_body(s, zone, n, {**labels, shp.NODE_LABEL: str(i)}, image, ctx.ssh_public_key, script,
                                        tag=tag, resource_policy=policy) for i, n in enumerate(names)]
            made, failure = self._insert_all(c, ctx, zone, names, bodies, deadline)
            if failure is None:
                for rank, name in enumerate(names):
                    ctx.emit("instance-created", instance_id=name, zone=zone, region=shp.region_of(zone),
                             instance_type=s.machine_type, node=rank)
                machines = [self._wait_running(c, ctx, s, zone, name, image, deadline) for name in names]
                for rank, m in enumerate(machines):
                    m.extra.update(node_rank=rank, nodes_firewall=nodes_rule["name"], resource_policy=policy)
                return machines
            message = f"only {len(made)} of {count} nodes could be launched: {failure.message}"
            ctx.emit("zone-failed", zone=zone, code=failure.code, message=message)
            tried.append(f"{zone} ({failure.code}, {len(made)} of {count})")
            if best is None or len(made) > best[0]:
                best = (len(made), zone)
            self._free(c, ctx, zone, made, deadline)
        had, where = best or (0, "no zone")
        raise CapacityError("gcp", f"only {had} of {count} nodes could be launched in {where}; no zone had {count}x "
                            f"{s.machine_type}{' (spot)' if s.spot else ''}; tried {', '.join(tried) or 'no zone'}",
                            hint="retry later, add regions under resources.regions, lower resources.num_nodes, or try another GPU",
                            code="ZONE_RESOURCE_POOL_EXHAUSTED")

    def _insert_all(self, c: api.Clients, ctx: RunContext, zone: str, names: list[str], bodies: list[dict],
                    deadline: float) -> tuple[list[str], api.Failure | None]:
        """Start every insert of one zone, then wait for all: N boots overlap instead of adding up.
        Returns the names that exist and the zone's capacity failure (None: all of them)."""
        started = []
        for name, body in zip(names, bodies):
            begun = self._insert_start(c, ctx, zone, name, body)
            started.append((name, begun))
            if begun[2] is not None:
                break  # the zone already said no: asking for the rest only makes more to delete
        made, failure, error = [], None, None
        for name, begun in started:
            try:
                f = self._insert_finish(c, ctx, zone, name, begun, deadline)
            except GpujobError as exc:  # a quota or API error: still finish (and record) the others first
                error = error or exc
                continue
            if f is None:
                made.append(name)
            else:
                failure = failure or f
        if error is not None:
            raise error
        return made, failure

    def _free(self, c: api.Clients, ctx: RunContext, zone: str, names: list[str], deadline: float) -> None:
        """Delete a zone's partial set before the next zone is tried: they would bill for nothing.
        Best effort; whatever stays is recorded and labelled, so teardown still finds it."""
        begun = [(name, cleanup.delete_start(self, c.instances.delete_unary, {"project": c.project, "zone": zone, "instance": name}))
                 for name in names]
        for name, started in begun:
            cleanup.delete_finish(self, c, ctx, f"{zone}/{name}", zone, deadline, started)

    def _create_policy(self, c: api.Clients, ctx: RunContext, zone: str, job: str, count: int, deadline: float) -> str:
        """A compact placement policy for this zone's attempt (policies are regional; one per zone so a
        zone whose nodes could not all be deleted does not pin the next zone's)."""
        from google.cloud import compute_v1

        region, name = shp.region_of(zone), shp.policy_name(ctx.run_id, zone)
        url = f"projects/{c.project}/regions/{region}/resourcePolicies/{name}"
        h = ctx.intent("resource-policy", f"{region}/{name}", region)
        what = f"resource policy {name}"
        try:
            op = self._call(c.resource_policies.insert_unary, project=c.project, region=region,
                            resource_policy_resource=compute_v1.ResourcePolicy(shp.policy_body(name, ctx.run_id, job, count)))
        except Exception as exc:  # noqa: BLE001
            f = api.api_failure(exc)
            if f.http_status == 409 and self._ours(c.resource_policies.get, project=c.project, region=region,
                                                   resource_policy=name):
                ctx.created(h, f"{region}/{name}")
                return url
            api.raise_failure(f, c.project, what)
        op = api.wait_operation(c, op, None, deadline, what, self._clock, self._sleep, region=region)
        failure = api.op_failure(op)
        if failure:
            api.raise_failure(failure, c.project, what)
        ctx.created(h, f"{region}/{name}")
        return url

    def _resolve_image(self, c: api.Clients, s: shp.Shape) -> str:
        """Pin the family to today's image, so a boot failure names the exact image."""
        if not s.image_family:
            return s.image
        try:
            img = self._call(c.images.get_from_family, project=shp.DLVM_PROJECT, family=s.image_family)
        except Exception as exc:  # noqa: BLE001
            f = api.api_failure(exc)
            if f.kind == "not-found":
                raise ProviderError("gcp", f"image family {s.image_family} not found in {shp.DLVM_PROJECT}",
                                    hint="set resources.image_id to an image or projects/P/global/images/family/F") from None
            api.raise_failure(f, c.project, f"image family {s.image_family}")
        return img.self_link or s.image

    def _create_firewall(self, c: api.Clients, ctx: RunContext, name: str, job: str, cidr: str, deadline: float) -> None:
        body = shp.firewall_body(name, ctx.run_id, job, cidr)
        if self._insert_firewall(c, ctx, body, deadline, lambda fw: list(fw.source_ranges) == [cidr]):
            ctx.emit("firewall-created", name=name, source=cidr, port=22)

    def _insert_firewall(self, c: api.Clients, ctx: RunContext, body: dict, deadline: float,
                         same: Callable[[Any], bool]) -> bool:
        """Create one rule; True if made now, False if ``same`` recognised ours from an earlier attempt."""
        from google.cloud import compute_v1

        name = body["name"]
        h = ctx.intent("firewall", name, None)
        try:
            op = self._call(c.firewalls.insert_unary, project=c.project, firewall_resource=compute_v1.Firewall(body))
        except Exception as exc:  # noqa: BLE001
            f = api.api_failure(exc)
            if f.http_status == 409 and self._ours(c.firewalls.get, same, project=c.project, firewall=name):
                ctx.created(h, name)  # our own rule from an earlier attempt of this run
                return False
            api.raise_failure(f, c.project, f"firewall rule {name}")
        op = api.wait_operation(c, op, None, deadline, f"firewall rule {name}", self._clock, self._sleep)
        failure = api.op_failure(op)
        if failure:
            api.raise_failure(failure, c.project, f"firewall rule {name}")
        ctx.created(h, name)
        return True

    def _ours(self, get: Callable[..., Any], same: Callable[[Any], bool] = lambda r: True, **args: Any) -> bool:
        """A resource of that name exists, carries our run mark and passes ``same``."""
        try:
            r = self._call(get, **args)
        except Exception:  # noqa: BLE001 - then it is not provably ours: report the conflict
            return False
        return shp.firewall_run_id(r.description) is not None and same(r)

    def _insert(self, c: api.Clients, ctx: RunContext, zone: str, name: str, body: dict, deadline: float) -> api.Failure | None:
        """Insert in one zone. None on success; the Failure if the zone cannot take it."""
        return self._insert_finish(c, ctx, zone, name, self._insert_start(c, ctx, zone, name, body), deadline)

    def _insert_start(self, c: api.Clients, ctx: RunContext, zone: str, name: str,
                      body: dict) -> tuple[int, Any, api.Failure | None]:
        """Announce and send one insert: (intent handle, operation, failure of the call itself)."""
        from google.cloud import compute_v1

        h = ctx.intent("instance", f"{zone}/{name}", shp.region_of(zone))
        try:
            op = self._call(c.instances.insert_unary, project=c.project, zone=zone, instance_resource=compute_v1.Instance(body))
        except Exception as exc:  # noqa: BLE001
            return h, None, api.api_failure(exc)
        return h, op, None

    def _insert_finish(self, c: api.Clients, ctx: RunContext, zone: str, name: str,
                       begun: tuple[int, Any, api.Failure | None], deadline: float) -> api.Failure | None:
        h, op, failure = begun
        rid = f"{zone}/{name}"
        what = f"instance {name} in {zone}"
        if op is not None:
            op = api.wait_operation(c, op, zone, deadline, what, self._clock, self._sleep)
            failure = api.op_failure(op)
        if failure is None:
            ctx.created(h, rid)
            return None
        if failure.kind in ("capacity", "quota") and not self._exists(c, zone, name):
            ctx.deleted(rid)  # nothing was made; keep the record honest
        if failure.kind != "capacity":
            api.raise_failure(failure, c.project, what)
        return failure

    def _exists(self, c: api.Clients, zone: str, name: str) -> bool:
        try:
            self._call(c.instances.get, project=c.project, zone=zone, instance=name)
        except Exception as exc:  # noqa: BLE001
            if api.api_failure(exc).kind == "not-found":
                return False
            return True  # unknown: assume it exists so teardown still looks
        return True

    def _wait_running(self, c: api.Clients, ctx: RunContext, s: shp.Shape, zone: str, name: str, image: str,
                      deadline: float) -> Machine:
        start, status = self._clock(), "PROVISIONING"
        while True:
            try:
                inst = self._call(c.instances.get, project=c.project, zone=zone, instance=name)
            except Exception as exc:  # noqa: BLE001
                f = api.api_failure(exc)
                if f.kind == "not-found":
                    raise ProviderError("gcp", f"instance {name} in {zone} vanished while booting (last status {status})",
                                        hint="spot capacity was reclaimed; retry or use on-demand" if s.spot else None,
                                        code="NOT_FOUND") from None
                if not api.is_transient(exc):
                    api.raise_failure(f, c.project, f"instance {name}")
                inst = None
            if inst is not None:
                status = inst.status
                nat, private = _addresses(inst)
                if status == "RUNNING" and nat:
                    ctx.emit("instance-running", name=name, zone=zone, host=nat)
                    return Machine(
                        provider=self.name, id=name, host=nat, port=22, user=shp.SSH_USER,
                        key_path=ctx.ssh_private_key_path, host_keys=[ctx.host_key_public.strip()],
                        region=shp.region_of(zone), zone=zone, instance_type=s.machine_type, gpu=s.gpu,
                        gpu_count=s.gpu_count, spot=s.spot, price_per_hour=s.price, private_ip=private or None,
                        extra={"project": c.project, "firewall": name, "image": image,
                               "host_price_per_hour": s.host_price, "accelerator_price_per_hour": s.accelerator_price,
                               "max_run_duration_s": s.max_run_s, guard.EXTRA_KEY: guard.GUARD_DIR},
                    )
                if status in _GONE_STATES:
                    raise ProviderError("gcp", f"instance {name} in {zone} went {status} while booting", code=status)
            if self._clock() >= deadline:
                raise WaitTimeout(f"instance {name} in {zone} to run with an external IP", self._clock() - start,
                                  last_state=status)
            self._sleep(min(2.0, max(0.0, deadline - self._clock())))

    # --- poll -------------------------------------------------------------------------------

    def poll(self, machine: Machine) -> str | None:
        c = self._api()
        try:
            inst = self._call(c.instances.get, project=c.project, zone=machine.zone, instance=machine.id)
        except Exception as exc:  # noqa: BLE001
            f = api.api_failure(exc)
            if f.kind == "not-found":  # deleted: preempted (spot) or maxRunDuration / someone else
                return "spot-interrupted" if machine.spot else "terminated"
            if api.is_transient(exc):
                return None  # one failed look is not a dead machine
            api.raise_failure(f, c.project, f"instance {machine.id}")
        if inst.status in ("RUNNING", "PROVISIONING", "STAGING", "REPAIRING"):
            return None
        return "spot-interrupted" if machine.spot else "terminated"

    # --- teardown / find (gcp.cleanup) --------------------------------------------------------

    def teardown(self, run_id: str, resources: list[Resource], ctx: RunContext | None) -> list[Leftover]:
        return cleanup.teardown(self, run_id, resources, ctx)

    def find(self, regions: list[str] | None) -> list[Resource]:
        return cleanup.find(self, regions)[0]

    def find_all(self, regions: list[str] | None) -> tuple[list[Resource], list[str]]:
        """(gpujob resources, one line per kind that could not be listed)."""
        return cleanup.find(self, regions)


def _addresses(inst: Any) -> tuple[str | None, str | None]:
    for nic in inst.network_interfaces:
        for ac in nic.access_configs:
            if ac.nat_i_p:
                return ac.nat_i_p, nic.network_i_p
        return None, nic.network_i_p
    return None, None

