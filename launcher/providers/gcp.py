"""GCP provider: one GPU VM on Compute Engine, secured, labelled and self-deleting.

Launch creates a per-run firewall rule (22/tcp from the caller's /32 to a per-run network
tag), then tries zones cheapest first until one has capacity; the VM carries the run's SSH
key in its own metadata, pins its SSH host key through the boot script, and deletes itself
after limits.max_duration + 10 minutes (``scheduling.maxRunDuration``).
The endpoint can be redirected with GPUJOB_GCP_API_ENDPOINT (see ``gcp_api``).
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any, Callable

from launcher.errors import CapacityError, GpujobError, ProviderError, WaitTimeout
from launcher.providers import gcp_api as api
from launcher.providers import gcp_shape as shp
from launcher.providers.base import TAG_RUN, Leftover, Machine, Resource, RunContext

if TYPE_CHECKING:
    from launcher.spec import JobSpec

TEARDOWN_TIMEOUT_S = 600.0
_GONE_STATES = {"STOPPING", "STOPPED", "TERMINATED", "SUSPENDING", "SUSPENDED"}


class GcpProvider:
    name = "gcp"

    def __init__(self, project: str | None = None, regions: list[str] | None = None, ssh_cidr: str | None = None,
                 credentials: Any = None, catalog: Any = None, sleep: Callable[[float], None] = time.sleep,
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
        return shp.choose_shape(spec, self._load_catalog() if needs_catalog else None, regions)

    def _cidr(self, ctx: RunContext) -> str:
        cidr = ctx.ssh_cidr or self._ssh_cidr
        if not cidr and self._detect_ip is None and self._anonymous:
            cidr = "127.0.0.1"  # a loopback fake endpoint hands out loopback machines: no need to look outside
        elif not cidr:
            try:
                cidr = (self._detect_ip or _public_ip)().strip()
            except Exception as exc:  # noqa: BLE001 - any failure means: ask the user
                raise ProviderError("gcp", f"could not detect your public address ({api.first_line(exc)})",
                                    hint="pass --ssh-cidr YOUR.PUBLIC.IP/32 (port 22 is never opened to everyone)") from None
        return shp.check_cidr(cidr if "/" in cidr else f"{cidr}/{128 if ':' in cidr else 32}")

    def _call(self, fn: Callable[..., Any], **kw: Any) -> Any:
        """One API call with a bounded time and no hidden retry loop (our loops retry)."""
        return fn(timeout=api.CALL_TIMEOUT_S, retry=None, **kw)

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
        }

    # --- launch -----------------------------------------------------------------------------

    def launch(self, spec: "JobSpec", ctx: RunContext, deadline_s: float) -> Machine:
        """deadline_s: seconds from now for the whole launch (firewall, zones, boot)."""
        deadline = self._clock() + deadline_s
        s = self._shape(spec)
        cidr = self._cidr(ctx)
        c = self._api()
        image = self._resolve_image(c, s)
        name = shp.resource_name(ctx.run_id)
        labels = shp.labels_for(ctx.run_id, spec.name, ctx.owner)
        self._create_firewall(c, ctx, name, spec.name, cidr, deadline)
        script = shp.render_startup(ctx.run_id, ctx.host_key_private, ctx.host_key_public)
        tried: list[str] = []
        for zone in s.zones:
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
        from google.cloud import compute_v1

        body = shp.firewall_body(name, ctx.run_id, job, cidr)
        h = ctx.intent("firewall", name, None)
        try:
            op = self._call(c.firewalls.insert_unary, project=c.project, firewall_resource=compute_v1.Firewall(body))
        except Exception as exc:  # noqa: BLE001
            f = api.api_failure(exc)
            if f.http_status == 409 and self._same_firewall(c, name, cidr):
                ctx.created(h, name)  # our own rule from an earlier attempt of this run
                return
            api.raise_failure(f, c.project, f"firewall rule {name}")
        op = api.wait_operation(c, op, None, deadline, f"firewall rule {name}", self._clock, self._sleep)
        failure = api.op_failure(op)
        if failure:
            api.raise_failure(failure, c.project, f"firewall rule {name}")
        ctx.created(h, name)
        ctx.emit("firewall-created", name=name, source=cidr, port=22)

    def _same_firewall(self, c: api.Clients, name: str, cidr: str) -> bool:
        try:
            fw = self._call(c.firewalls.get, project=c.project, firewall=name)
        except Exception:  # noqa: BLE001 - then it is not provably ours: report the conflict
            return False
        return list(fw.source_ranges) == [cidr] and shp.firewall_run_id(fw.description) is not None

    def _insert(self, c: api.Clients, ctx: RunContext, zone: str, name: str, body: dict, deadline: float) -> api.Failure | None:
        """Insert in one zone. None on success; the Failure if the zone cannot take it."""
        from google.cloud import compute_v1

        rid = f"{zone}/{name}"
        h = ctx.intent("instance", rid, shp.region_of(zone))
        what = f"instance {name} in {zone}"
        try:
            op = self._call(c.instances.insert_unary, project=c.project, zone=zone, instance_resource=compute_v1.Instance(body))
        except Exception as exc:  # noqa: BLE001
            failure = api.api_failure(exc)
        else:
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
                               "max_run_duration_s": s.max_run_s},
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

    # --- teardown / find --------------------------------------------------------------------

    def teardown(self, run_id: str, resources: list[Resource], ctx: RunContext | None) -> list[Leftover]:
        ours = [r for r in resources if r.provider == self.name]
        try:
            c = self._api()
        except GpujobError as err:
            if not ours:
                raise
            return [Leftover(self._with_command(r), f"not deleted: {err}") for r in ours]
        deadline = self._clock() + TEARDOWN_TIMEOUT_S
        instances = {r.id for r in ours if r.kind == "instance" and "/" in r.id}
        firewalls = {r.id for r in ours if r.kind == "firewall"} | {shp.resource_name(run_id)}
        leftovers: list[Leftover] = []
        label = f'labels.{TAG_RUN} = "{shp.label_value(run_id)}"'
        try:  # the label sweep also finds what a lost or partial record does not name
            instances |= {r.id for r in self._find_instances(c, label, None)}
        except Exception as exc:  # noqa: BLE001 - still delete what the record names
            sweep = Resource(self.name, "instance", f"label {label}", None, run_id,
                             delete_command=f"gcloud compute instances list --filter '{label}' --project {c.project}")
            leftovers.append(Leftover(sweep, f"could not list instances by label: {exc}"))
        for rid in sorted(instances):
            zone, name = rid.split("/", 1)
            res = Resource(self.name, "instance", rid, shp.region_of(zone), run_id,
                           delete_command=shp.instance_delete_command(name, zone, c.project))
            reason = self._delete(c, ctx, rid, zone, deadline, c.instances.delete_unary,
                                  {"project": c.project, "zone": zone, "instance": name})
            if reason:
                leftovers.append(Leftover(res, reason))
        for name in sorted(firewalls):
            res = Resource(self.name, "firewall", name, None, run_id,
                           delete_command=shp.firewall_delete_command(name, c.project))
            reason = self._delete(c, ctx, name, None, deadline, c.firewalls.delete_unary,
                                  {"project": c.project, "firewall": name})
            if reason:
                leftovers.append(Leftover(res, reason))
        return leftovers

    def _delete(self, c: api.Clients, ctx: RunContext | None, rid: str, zone: str | None, deadline: float,
                fn: Callable[..., Any], args: dict[str, Any]) -> str | None:
        """Delete one resource and wait for it; None when gone (already gone counts), else why not."""
        try:
            op = self._call(fn, **args)
            op = api.wait_operation(c, op, zone, deadline, f"delete of {rid}", self._clock, self._sleep)
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

    def find(self, regions: list[str] | None) -> list[Resource]:
        c = self._api()
        wanted = set(shp.gcp_regions(regions)) if regions else None
        try:
            found = self._find_instances(c, f"labels.{TAG_RUN}:*", wanted)
            for fw in self._call(c.firewalls.list, project=c.project):
                run = shp.firewall_run_id(fw.description)
                if fw.name.startswith("gpujob-") and run:
                    found.append(Resource(self.name, "firewall", fw.name, None, run, "ACTIVE",
                                          shp.firewall_delete_command(fw.name, c.project)))
        except Exception as exc:  # noqa: BLE001 - into the error tree
            api.raise_failure(api.api_failure(exc), c.project, "listing gpujob resources")
        return found

    def _find_instances(self, c: api.Clients, filter_: str, regions: set[str] | None) -> list[Resource]:
        out = []
        pager = self._call(c.instances.aggregated_list, request={"project": c.project, "filter": filter_})
        for scope, listing in pager:
            zone = scope.rsplit("/", 1)[-1]
            if regions is not None and shp.region_of(zone) not in regions:
                continue
            for inst in listing.instances:
                out.append(Resource(self.name, "instance", f"{zone}/{inst.name}", shp.region_of(zone),
                                    inst.labels.get(TAG_RUN), inst.status,
                                    shp.instance_delete_command(inst.name, zone, c.project)))
        return out

    def _with_command(self, r: Resource) -> Resource:
        if r.delete_command:
            return r
        if r.kind == "instance" and "/" in r.id:
            zone, name = r.id.split("/", 1)
            cmd = shp.instance_delete_command(name, zone, self._project)
        else:
            cmd = shp.firewall_delete_command(r.id, self._project)
        return Resource(r.provider, r.kind, r.id, r.region, r.run_id, r.state, cmd)


def _public_ip() -> str:
    """The caller's public address, found the same way as for AWS (one HTTPS GET)."""
    from launcher.providers.aws import _default_detect_ip

    return _default_detect_ip()


def _addresses(inst: Any) -> tuple[str | None, str | None]:
    for nic in inst.network_interfaces:
        for ac in nic.access_configs:
            if ac.nat_i_p:
                return ac.nat_i_p, nic.network_i_p
        return None, nic.network_i_p
    return None, None

