"""EC2 provider: a GPU instance that is locked down, tagged, guards itself and always goes away.

Launch order per region: key pair -> security group (22/tcp from one CIDR) -> instance, each
announced with ``ctx.intent`` first. Zones and regions are tried in price order; capacity
errors move on, quota errors name the quota. Cleanup lives in ``aws.cleanup``, SDK plumbing in ``aws.api``.
"""

from __future__ import annotations

import ipaddress
import time
from typing import Any, Callable

from launcher import guard, signals
from launcher.errors import (
    CapacityError,
    CredentialsError,
    GpujobError,
    ProviderError,
    ProviderUnavailable,
    QuotaError,
    WaitTimeout,
)
from launcher.providers.address import CHECKIP_URL, detect_public_ip
from launcher.providers.aws import cleanup as aws_cleanup, selection as aws_select
from launcher.providers.aws.api import AwsApi
from launcher.providers.aws.common import (
    DLAMI_SSM_PARAMETERS,
    PROVIDER,
    QUOTA_CODES,
    SSH_USER,
    cluster_placement,
    delete_command,
    is_zone_unavailable,
    node_rule,
    quota_error,
    quota_for,
    render_user_data,
    resource_name,
    run_tags,
    tag_value,
    watchdog_minutes,
)
from launcher.providers.aws.selection import Choice, RegionPlan, normalize_cidr
from launcher.providers.base import TAG_RUN, Leftover, Machine, Resource, tried_last

DEFAULT_REGION = "us-east-1"
SPOT_INTERRUPTION = "Server.SpotInstanceTermination"
_LIVE_STATES = ("pending", "running")


class _ZoneLost(Exception):
    """The instance died before running (e.g. spot reclaimed at once): try the next zone."""

    def __init__(self, code: str, message: str, had: int = 0):
        super().__init__(message)
        self.code, self.message = code, message
        self.had = had  # multi-node: how many of the zone's nodes were still alive


class AwsProvider(AwsApi):
    name = "aws"

    def __init__(
        self,
        regions: list[str] | None = None,
        ssh_cidr: str | None = None,
        session=None,
        catalog=None,
        sleep: Callable[[float], None] = signals.sleep,  # a signal ends a launch wait
        clock: Callable[[], float] = time.monotonic,
        detect_ip: Callable[[], str] | None = None,
    ):
        super().__init__(session, sleep, clock)
        self.regions = list(regions or [])
        self.ssh_cidr = ssh_cidr
        self._catalog = catalog
        self.detect_ip = detect_ip or detect_public_ip

    # --- choosing what to launch -------------------------------------------------------------

    def allowed_regions(self, spec) -> list[str]:
        return list(spec.resources.regions) or list(self.regions) or [DEFAULT_REGION]

    def _get_catalog(self):
        if self._catalog is None:
            try:
                from launcher.catalog import load_catalog
            except ImportError:
                return None
            self._catalog = load_catalog()
        return self._catalog

    def choose(self, spec) -> Choice:
        """Instance type, price and region/zone order. Local only: no AWS call."""
        res = spec.resources
        catalog = self._get_catalog() if (res.accelerators or res.instance_type) else None
        return aws_select.choose(spec, self.allowed_regions(spec), catalog)

    def plan(self, spec, ctx) -> dict[str, Any]:
        """What launch() would do. Calls no AWS API at all, so it works without an account."""
        return aws_select.plan(spec, ctx, self.choose(spec), getattr(ctx, "ssh_cidr", None) or self.ssh_cidr)

    # --- pre-flight ------------------------------------------------------------------------

    def preflight(self, spec, ctx) -> dict[str, Any]:
        """Everything that can fail before anything is slow or billable, in this order:
        credentials (boto3's chain, then STS GetCallerIdentity, 10 s deadline), the vCPU quota of
        the chosen family (best effort: Service Quotas, one attempt per region; unknown passes),
        the caller's address for the ingress rule (kept for launch). Creates nothing.

        Returns {"account", "arn", "ssh_cidr"}. Raises CredentialsError, QuotaError (every
        allowed region is below one instance) or ProviderError (exit code 3)."""
        ident = self.caller_identity(self.allowed_regions(spec)[0])
        choice = self.choose(spec)
        if choice.instance_type:
            shorts = []
            for rp in choice.regions:
                vcpus = rp.vcpus or self._vcpus(rp.region, choice.instance_type)
                short = self._quota_short(rp.region, choice.instance_type, choice.spot, vcpus, spec.resources.num_nodes)
                if short is None:
                    break
                shorts.append(short)
            else:
                if shorts:
                    raise shorts[0]
        self.ssh_cidr = self.ingress_cidr(ctx)
        return {**ident, "ssh_cidr": self.ssh_cidr}

    # --- launch ----------------------------------------------------------------------------

    def ingress_cidr(self, ctx) -> str:
        cidr = ctx.ssh_cidr or self.ssh_cidr
        if cidr:
            return normalize_cidr(cidr)
        try:
            ip = ipaddress.ip_address(self.detect_ip().strip())
        except Exception as exc:
            raise ProviderError(PROVIDER, f"could not detect your public address from {CHECKIP_URL} "
                                f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})",
                                hint="pass --ssh-cidr <your-ip>/32") from None
        return f"{ip}/{ip.max_prefixlen}"

    def launch(self, spec, ctx, deadline_s: float) -> Machine:
        """Create key pair, security group and instance; wait until it runs with a public IP.

        ``deadline_s`` is a budget in seconds for the whole launch (all zones tried)."""
        return self._launch(spec, ctx, deadline_s, 1)[0]

    def launch_nodes(self, spec, ctx, deadline_s: float, count: int) -> list[Machine]:
        """``count`` machines in one zone, node 0 first (see ``base.Provider.launch_nodes``):
        a cluster placement group where the family gains from one, one RunInstances call with
        MinCount=MaxCount=count, and a security group that also admits its own members."""
        if count < 1:
            raise ProviderError(PROVIDER, f"launch_nodes needs count >= 1, got {count}")
        return self._launch(spec, ctx, deadline_s, count)

    def _launch(self, spec, ctx, deadline_s: float, count: int) -> list[Machine]:
        end = self.clock() + deadline_s
        choice = self.choose(spec)
        cidr = self.ingress_cidr(ctx)  # before creating anything: a missing CIDR must cost nothing
        user_data = render_user_data(ctx.host_key_private, ctx.host_key_public, spec.limits)
        multi = count > 1
        tried: list[str] = []
        quota_errors: list[QuotaError] = []
        best: tuple[int, str] | None = None  # (nodes had, zone) of the closest multi-node attempt
        for rp in choice.regions:
            region = rp.region
            try:
                zones = tried_last(self._zone_names(region, choice.instance_type, rp.zone_ids), ctx)
            except GpujobError as exc:
                if isinstance(exc, (ProviderUnavailable, CredentialsError)):
                    raise
                ctx.emit("region-failed", region=region, message=str(exc))
                tried.append(f"{region} ({getattr(exc, 'code', None) or 'error'})")
                continue
            if not zones:
                ctx.emit("region-failed", region=region, message=f"{choice.instance_type} is not offered here")
                tried.append(f"{region} (not offered)")
                continue
            vcpus = rp.vcpus or self._vcpus(region, choice.instance_type)
            short = self._quota_short(region, choice.instance_type, choice.spot, vcpus, count)
            if short is not None:
                ctx.emit("quota-failed", region=region, quota=short.message)
                quota_errors.append(short)
                tried.append(f"{region} (quota)")
                continue
            image_id, root_device = self._image(region, spec, choice.arch)
            sg_id, key_name = self._ensure_access(region, spec, ctx, cidr, intra=multi)
            for zone in zones:
                had = 0
                try:
                    pg = self._placement_group(region, zone, spec, ctx) if multi and cluster_placement(choice.instance_type) else None
                    return self._launch_in_zone(spec, ctx, choice, rp, zone, image_id, root_device, sg_id,
                                                key_name, user_data, end, count, pg)
                except _ZoneLost as lost:
                    had = lost.had
                    ctx.emit("zone-failed", zone=zone, code=lost.code, message=lost.message)
                    tried.append(f"{zone} ({lost.code})")
                except ProviderError as exc:
                    if exc.code in QUOTA_CODES:
                        q = quota_error(choice.instance_type, choice.spot, region,
                                        exc.message.removeprefix(PROVIDER + ": "), exc.code, vcpus)
                        ctx.emit("quota-failed", region=region, quota=q.message)
                        quota_errors.append(q)
                        tried.append(f"{zone} ({exc.code})")
                        break  # quotas are per region: the next zone would say the same
                    if not is_zone_unavailable(exc.code, exc.message):
                        raise
                    ctx.emit("zone-failed", zone=zone, code=exc.code, message=exc.message)
                    tried.append(f"{zone} ({exc.code})")
                if best is None or had > best[0]:
                    best = (had, zone)
        where = "; ".join(tried) or "no region"
        if quota_errors:
            first = quota_errors[0]
            raise QuotaError(PROVIDER, f"{first.message.removeprefix(PROVIDER + ': ')} (tried: {where})",
                             hint=first.hint, code=first.code)
        market = "spot" if choice.spot else "on-demand"
        hint = "add regions (resources.regions), switch spot/on-demand, or retry later"
        if multi and best is not None:
            raise CapacityError(PROVIDER, f"only {best[0]} of {count} nodes could be launched in {best[1]}; "
                                f"no zone had {count} {market} {choice.instance_type}; tried: {where}",
                                hint=hint + ", or lower resources.num_nodes", code="InsufficientInstanceCapacity")
        raise CapacityError(PROVIDER, f"no {market} capacity for {choice.instance_type}; tried: {where}",
                            hint=hint, code="InsufficientInstanceCapacity")

    def _zone_names(self, region: str, itype: str, zone_ids: tuple[str, ...]) -> list[str]:
        """Zone names in try order: the catalog's AZ ids mapped to this account's names,
        else every available zone that offers the type."""
        azs = self.api(region, "ec2", "describe_availability_zones",
                       Filters=[{"Name": "state", "Values": ["available"]}])["AvailabilityZones"]
        by_id = {z["ZoneId"]: z["ZoneName"] for z in azs if z.get("ZoneType", "availability-zone") == "availability-zone"}
        if zone_ids:
            return [by_id[z] for z in zone_ids if z in by_id]
        try:
            offered = self.api(region, "ec2", "describe_instance_type_offerings", LocationType="availability-zone",
                               Filters=[{"Name": "instance-type", "Values": [itype]}])["InstanceTypeOfferings"]
            names = {o["Location"] for o in offered}
        except ProviderError as exc:
            if isinstance(exc, CredentialsError):
                raise
            names = set(by_id.values())
        return sorted(n for n in by_id.values() if n in names)

    def _vcpus(self, region: str, itype: str) -> int | None:
        try:
            info = self.api(region, "ec2", "describe_instance_types", InstanceTypes=[itype])["InstanceTypes"]
            return int(info[0]["VCpuInfo"]["DefaultVCpus"]) if info else None
        except (ProviderError, KeyError, ValueError):
            return None

    def _quota_short(self, region: str, itype: str, spot: bool, vcpus: int | None, count: int = 1) -> QuotaError | None:
        """Best effort: a QuotaError when Service Quotas says the limit is below one instance.
        Any failure (no permission, not implemented, unknown code) means "unknown": go on."""
        if not vcpus:
            return None
        _, code = quota_for(itype, spot)
        try:
            value = float(self.api(region, "service-quotas", "get_service_quota", fail_fast=True,
                                   ServiceCode="ec2", QuotaCode=code)["Quota"]["Value"])
        except Exception:
            return None
        if value >= vcpus * count:
            return None
        need = f"one {itype} needs {vcpus}" if count == 1 else f"{count} {itype} need {vcpus * count}"
        return quota_error(itype, spot, region, f"the limit is {value:g} vCPUs and {need}",
                           "VcpuLimitExceeded", vcpus * count)

    def _image(self, region: str, spec, arch: str = "x86_64") -> tuple[str, str]:
        """(AMI id, root device name): the spec's image_id, else the DLAMI for ``arch``. An
        image whose architecture is not the instance type's is refused before anything exists."""
        image_id = spec.resources.image_id
        if not image_id:
            param = DLAMI_SSM_PARAMETERS[arch]
            try:
                image_id = self.api(region, "ssm", "get_parameter", Name=param)["Parameter"]["Value"]
            except ProviderError as exc:
                if exc.code == "ParameterNotFound":
                    raise ProviderError(PROVIDER, f"the Deep Learning AMI parameter {param} does not exist in {region}",
                                        hint=f"set resources.image_id to an {arch} AMI in that region", code=exc.code) from None
                raise
        root = "/dev/sda1"  # Ubuntu AMIs; read from the image when we can
        try:
            images = self.api(region, "ec2", "describe_images", ImageIds=[image_id])["Images"]
        except ProviderError as exc:
            if exc.code in ("InvalidAMIID.NotFound", "InvalidAMIID.Malformed"):
                raise ProviderError(PROVIDER, f"image {image_id} does not exist in {region}",
                                    hint="check resources.image_id (AMI ids are per region)", code=exc.code) from None
            images = []
        if images and images[0].get("RootDeviceName"):
            root = images[0]["RootDeviceName"]
        image_arch = images[0].get("Architecture") if images else None
        if image_arch and image_arch.replace("aarch64", "arm64") != arch:
            raise ProviderError(PROVIDER, f"image {image_id} is {image_arch} but {spec.resources.instance_type or 'the instance type'} "
                                f"is {arch}: EC2 would refuse the launch",
                                hint=f"set resources.image_id to an {arch} AMI, or drop it to use the {arch} Deep Learning AMI")
        return image_id, root

    def _ensure_access(self, region: str, spec, ctx, cidr: str, intra: bool = False) -> tuple[str, str]:
        """Per-run key pair and security group in this region (both tagged, both recorded).
        intra: the group also admits all TCP/UDP from its own members (multi-node runs)."""
        name = resource_name(ctx.run_id)
        vpcs = self.api(region, "ec2", "describe_vpcs", Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"]
        if not vpcs:
            raise ProviderError(PROVIDER, f"no default VPC in {region}",
                                hint=f"create one with `aws ec2 create-default-vpc --region {region}`")
        vpc_id = vpcs[0]["VpcId"]
        tags = run_tags(ctx.run_id, spec.name, ctx.owner)

        def import_key():
            return self.api(region, "ec2", "import_key_pair", fail_fast=True, KeyName=name,
                            PublicKeyMaterial=ctx.ssh_public_key.strip().encode(),
                            TagSpecifications=[{"ResourceType": "key-pair", "Tags": tags}])

        h = ctx.intent("key-pair", name, region)
        try:
            kp = import_key()
        except ProviderError as exc:
            if exc.code != "InvalidKeyPair.Duplicate":
                raise
            # Left by an earlier attempt of this same run: replace it (the key may differ).
            old = self.api(region, "ec2", "describe_key_pairs", KeyNames=[name])["KeyPairs"][0]
            _refuse_unless_ours(old, "key-pair", name, name, region, ctx.run_id)
            self.api(region, "ec2", "delete_key_pair", KeyName=name)
            kp = import_key()
        # Recorded by name: unique per region, what RunInstances and delete-key-pair take everywhere.
        ctx.created(h, kp.get("KeyName") or name)

        h = ctx.intent("security-group", name, region)
        try:
            sg_id = self.api(region, "ec2", "create_security_group", fail_fast=True, GroupName=name, VpcId=vpc_id,
                             Description=f"gpujob run {ctx.run_id}: SSH from one address",
                             TagSpecifications=[{"ResourceType": "security-group", "Tags": tags}])["GroupId"]
        except ProviderError as exc:
            if exc.code != "InvalidGroup.Duplicate":
                raise
            old = self.api(region, "ec2", "describe_security_groups", Filters=[
                {"Name": "group-name", "Values": [name]}, {"Name": "vpc-id", "Values": [vpc_id]}])["SecurityGroups"][0]
            _refuse_unless_ours(old, "security-group", name, old["GroupId"], region, ctx.run_id)
            sg_id = old["GroupId"]
        ctx.created(h, sg_id)

        net = ipaddress.ip_network(cidr)
        ranges = ({"Ipv6Ranges": [{"CidrIpv6": cidr, "Description": "gpujob client"}]} if net.version == 6
                  else {"IpRanges": [{"CidrIp": cidr, "Description": "gpujob client"}]})
        rules = [[{"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, **ranges}]] + ([node_rule(sg_id)] if intra else [])
        for perms in rules:  # one call each: a duplicate of one (a relaunch) must not skip the other
            try:
                self.api(region, "ec2", "authorize_security_group_ingress", GroupId=sg_id, IpPermissions=perms)
            except ProviderError as exc:
                if exc.code != "InvalidPermission.Duplicate":
                    raise
        return sg_id, name

    def _placement_group(self, region: str, zone: str, spec, ctx) -> str:
        """A tagged, recorded cluster placement group for one zone's attempt. One per zone: a
        cluster group is bound to the zone of its first instance, so a zone that lost nodes
        must not pin the next zone's attempt."""
        name = f"{resource_name(ctx.run_id)}-{zone}"
        h = ctx.intent("placement-group", name, region)
        try:
            self.api(region, "ec2", "create_placement_group", fail_fast=True, GroupName=name, Strategy="cluster",
                     TagSpecifications=[{"ResourceType": "placement-group",
                                         "Tags": run_tags(ctx.run_id, spec.name, ctx.owner)}])
        except ProviderError as exc:
            if exc.code != "InvalidPlacementGroup.Duplicate":
                raise
            old = self.api(region, "ec2", "describe_placement_groups", GroupNames=[name])["PlacementGroups"][0]
            _refuse_unless_ours(old, "placement-group", name, name, region, ctx.run_id)
        ctx.created(h, name)  # by name: what RunInstances and delete-placement-group take
        return name

    def _default_subnet(self, region: str, zone: str) -> str | None:
        subnets = self.api(region, "ec2", "describe_subnets", Filters=[
            {"Name": "default-for-az", "Values": ["true"]}, {"Name": "availability-zone", "Values": [zone]}])["Subnets"]
        return subnets[0]["SubnetId"] if subnets else None

    def _launch_in_zone(self, spec, ctx, choice: Choice, rp: RegionPlan, zone: str, image_id: str, root_device: str,
                        sg_id: str, key_name: str, user_data: str, end: float, count: int = 1,
                        placement_group: str | None = None) -> list[Machine]:
        region = rp.region
        tags = run_tags(ctx.run_id, spec.name, ctx.owner)
        placement = {"AvailabilityZone": zone, **({"GroupName": placement_group} if placement_group else {})}
        params: dict[str, Any] = dict(
            ImageId=image_id,
            InstanceType=choice.instance_type,
            # All or nothing: a multi-node job cannot start on fewer machines.
            MinCount=count,
            MaxCount=count,
            KeyName=key_name,
            SecurityGroupIds=[sg_id],
            Placement=placement,
            UserData=user_data,
            # The watchdog's poweroff becomes a termination: nothing keeps billing.
            InstanceInitiatedShutdownBehavior="terminate",
            # IMDSv2 only; hop limit 2 so containers on the box still reach it.
            MetadataOptions={"HttpTokens": "required", "HttpEndpoint": "enabled", "HttpPutResponseHopLimit": 2},
            BlockDeviceMappings=[{"DeviceName": root_device, "Ebs": {
                "VolumeSize": spec.resources.disk_gb, "VolumeType": "gp3", "DeleteOnTermination": True}}],
            TagSpecifications=[{"ResourceType": "instance", "Tags": tags}, {"ResourceType": "volume", "Tags": tags}],
        )
        subnet = self._default_subnet(region, zone)
        if subnet:
            params["SubnetId"] = subnet
        if choice.spot:
            params["InstanceMarketOptions"] = {"MarketType": "spot", "SpotOptions": {
                "SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate"}}
        handles = [ctx.intent("instance", resource_name(ctx.run_id), region) for _ in range(count)]
        insts = self.api(region, "ec2", "run_instances", fail_fast=True, **params)["Instances"]
        insts.sort(key=lambda i: i.get("AmiLaunchIndex", 0))  # launch index 0 is node 0
        ids = [i["InstanceId"] for i in insts]
        for h, iid in zip(handles, ids):
            ctx.created(h, iid)
        for rank, iid in enumerate(ids):
            ctx.emit("instance-created", instance_id=iid, zone=zone, region=region, instance_type=choice.instance_type,
                     **({"node": rank} if count > 1 else {}))
        descs = []
        try:
            for iid in ids:
                descs.append(self._wait_running(region, iid, end))
        except _ZoneLost as lost:
            if count > 1:
                lost.had = self._drop_survivors(region, ids)
            raise
        extra = {"image_id": image_id, "security_group": sg_id, "key_pair": key_name,
                 "watchdog_minutes": watchdog_minutes(spec.limits.max_duration), guard.EXTRA_KEY: guard.GUARD_DIR}
        if count > 1:
            extra["placement_group"] = placement_group
        return [Machine(
            provider=PROVIDER,
            id=desc["InstanceId"],
            host=desc.get("PublicIpAddress"),
            port=22,
            user=SSH_USER,
            key_path=ctx.ssh_private_key_path,
            host_keys=[ctx.host_key_public.strip()],
            region=region,
            zone=desc.get("Placement", {}).get("AvailabilityZone", zone),
            instance_type=choice.instance_type,
            gpu=choice.gpu,
            gpu_count=choice.gpu_count,
            spot=choice.spot,
            price_per_hour=rp.price,
            private_ip=desc.get("PrivateIpAddress"),
            extra={**extra, "node_rank": rank} if count > 1 else extra,
        ) for rank, desc in enumerate(descs)]

    def _drop_survivors(self, region: str, ids: list[str]) -> int:
        """A zone lost a node: terminate the rest now (they would bill while other zones are
        tried) and say how many were still alive. Best effort; they stay recorded for teardown."""
        alive = []
        for iid in ids:
            try:
                desc = self.describe_instance(region, iid)
            except GpujobError:
                desc = None
            if desc is not None and desc["State"]["Name"] in _LIVE_STATES:
                alive.append(iid)
        if alive:
            try:
                self.api(region, "ec2", "terminate_instances", InstanceIds=alive)
            except GpujobError:
                pass  # teardown terminates them
        return len(alive)

    def _wait_running(self, region: str, iid: str, end: float) -> dict:
        start, last = self.clock(), "unknown"
        while True:
            desc = self.describe_instance(region, iid)  # None right after create: eventual consistency
            if desc is not None:
                last = desc["State"]["Name"]
                if last == "running" and desc.get("PublicIpAddress"):
                    return desc
                if last not in _LIVE_STATES:
                    reason = desc.get("StateReason") or {}
                    raise _ZoneLost(reason.get("Code") or last, reason.get("Message") or f"instance {iid} went {last}")
                if last == "running":
                    last = "running, no public IP yet"
            if self.clock() >= end:
                raise WaitTimeout(f"instance {iid} in {region} to run with a public IP", self.clock() - start, last)
            self.sleep(min(self.poll_interval_s, max(0.0, end - self.clock())))

    # --- poll ------------------------------------------------------------------------------

    def poll(self, machine: Machine) -> str | None:
        try:
            desc = self.describe_instance(machine.region or DEFAULT_REGION, machine.id)
        except CredentialsError:
            raise
        except ProviderError:
            return None  # a network blip is not a dead machine; the SSH side will tell
        if desc is None:
            return "terminated"
        state = desc["State"]["Name"]
        if state in _LIVE_STATES:
            return None
        if (desc.get("StateReason") or {}).get("Code") == SPOT_INTERRUPTION or self._spot_reclaimed(machine, desc):
            return "spot-interrupted"
        return "terminated"

    def _spot_reclaimed(self, machine: Machine, desc: dict) -> bool:
        """The spot request's status says AWS took the capacity back (when it can be read)."""
        req = desc.get("SpotInstanceRequestId")
        if not req:
            return False
        try:
            reqs = self.api(machine.region or DEFAULT_REGION, "ec2", "describe_spot_instance_requests",
                            SpotInstanceRequestIds=[req])["SpotInstanceRequests"]
        except Exception:
            return False
        code = (reqs[0].get("Status") or {}).get("Code", "") if reqs else ""
        return code.startswith("instance-terminated-by-") or code in ("marked-for-termination", "marked-for-stop",
                                                                         "instance-stopped-by-price", "instance-stopped-no-capacity")

    # --- teardown / gc ---------------------------------------------------------------------

    def teardown(self, run_id: str, resources: list[Resource], ctx) -> list[Leftover]:
        regions = {r.region for r in resources if r.region}
        if ctx is not None and getattr(ctx, "spec", None) is not None:
            regions.update(self.allowed_regions(ctx.spec))
        elif not regions:
            regions.update(self.regions or [DEFAULT_REGION])
        return aws_cleanup.teardown(self, run_id, resources, ctx, sorted(regions))

    def find(self, regions: list[str] | None) -> list[Resource]:
        return self.find_all(regions)[0]

    def find_all(self, regions: list[str] | None) -> tuple[list[Resource], list[str]]:
        """(tagged resources, one line per kind and region that could not be listed)."""
        return aws_cleanup.find(self, regions or self.regions or None)


def _refuse_unless_ours(old: dict, kind: str, name: str, delete_id: str, region: str, run_id: str) -> None:
    """A name clash is reused only when the existing resource is tagged with this run (an
    earlier attempt of it); anything else is someone's and is refused, with how to delete it."""
    if tag_value(old.get("Tags"), TAG_RUN) != run_id:
        what = kind.replace("-", " ")
        raise ProviderError(PROVIDER, f"a {what} named {name} exists in {region} and is not this run's",
                            hint=f"delete it: {delete_command(kind, delete_id, region)}") from None
