"""Fixtures and helpers for testing the EC2 provider against moto (in-process, no network).

Import in a test module with ``from tests.aws_fixtures import *``-free explicit names, e.g.
``from tests.aws_fixtures import aws, make_ctx, loopback_addresses, booted_sshd_for``.
"""

from __future__ import annotations

import base64
import itertools
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from unittest import mock

import pytest

ACCOUNT = "123456789012"  # moto's default account
REGIONS = ("us-east-1", "us-west-2")


@pytest.fixture
def aws_env(monkeypatch):
    """Fake credentials only; no profile, no endpoint override, nothing that could go online."""
    for var in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_EC2",
                "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/gpujob-test-aws-config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/gpujob-test-aws-credentials")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # never ask 169.254.169.254
    monkeypatch.setenv("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")  # ~1 s per region saved; we register one


@pytest.fixture
def aws(aws_env):
    """moto's mock_aws with the DLAMI SSM parameter registered in REGIONS."""
    from moto import mock_aws

    with mock_aws(), placement_groups():
        for region in REGIONS:
            register_dlami(region)
        yield


def known_ami(region: str, ec2=None, account: str = ACCOUNT) -> str:
    """An Ubuntu-like AMI that moto knows in this region (registered here, root /dev/sda1);
    ``ec2``: a client of another moto account (``account``), e.g. against a moto server."""
    import boto3

    ec2 = ec2 or boto3.client("ec2", region_name=region)
    found = ec2.describe_images(Filters=[{"Name": "name", "Values": ["gpujob-test-dlami"]}])["Images"]
    if found:
        return found[0]["ImageId"]
    ami = ec2.register_image(Name="gpujob-test-dlami", RootDeviceName="/dev/sda1", Architecture="x86_64",
                             VirtualizationType="hvm")["ImageId"]
    return set_image_arch(region, ami, "x86_64", account)


def set_image_arch(region: str, ami: str, arch: str, account: str = ACCOUNT) -> str:
    """moto 5 drops RegisterImage's Architecture: put it on its model so DescribeImages has it."""
    from moto.ec2.models import ec2_backends

    ec2_backends[account][region].amis[ami].architecture = arch
    return ami


def register_dlami(region: str, ami_id: str | None = None, account: str = ACCOUNT, ec2=None) -> str:
    """Put the public DLAMI parameter into moto's SSM (put_parameter refuses /aws/ names);
    ``account``/``ec2`` as for known_ami."""
    from moto.ssm.models import Parameter, ssm_backends

    from launcher.providers.aws.common import DLAMI_SSM_PARAMETER

    ami_id = ami_id or known_ami(region, ec2, account)
    params = ssm_backends[account][region]._parameters
    params[DLAMI_SSM_PARAMETER] = [Parameter(
        account_id=account, name=DLAMI_SSM_PARAMETER, value=ami_id, parameter_type="String",
        description=None, allowed_pattern=None, keyid=None, last_modified_date=datetime.now(timezone.utc), version=1,
        data_type="aws:ec2:image")]
    return ami_id


_LOADER = None


def fast_session():
    """A fresh boto3 session (fresh credentials) sharing one botocore data loader, so the
    large EC2 service model is parsed once per test process instead of once per provider."""
    import boto3
    import botocore.session

    global _LOADER
    core = botocore.session.get_session()
    if _LOADER is None:
        _LOADER = core.get_component("data_loader")
    else:
        core.register_component("data_loader", _LOADER)
    return boto3.session.Session(botocore_session=core)


# --- a RunContext for tests ----------------------------------------------------------------


def ed25519_pair() -> tuple[str, str]:
    """(OpenSSH private PEM, "ssh-ed25519 AAAA..." public line)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return private, public


@dataclass
class FakeCtx:
    """Records what the provider announces, like the run store would."""

    run_id: str
    spec: Any
    ssh_cidr: str | None = "203.0.113.7/32"
    owner: str = "tester"
    ssh_private_key_path: str = "/tmp/gpujob-test-key"
    ssh_public_key: str = ""
    host_key_private: str = ""
    host_key_public: str = ""
    intents: list = field(default_factory=list)  # [kind, name, region, id-or-None]
    deleted_ids: list = field(default_factory=list)
    events: list = field(default_factory=list)  # (event, fields)

    def __post_init__(self):
        if not self.ssh_public_key:
            _, self.ssh_public_key = ed25519_pair()
        if not self.host_key_private:
            self.host_key_private, self.host_key_public = ed25519_pair()

    def intent(self, kind, name, region=None):
        self.intents.append([kind, name, region, None])
        return len(self.intents) - 1

    def created(self, handle, resource_id):
        self.intents[handle][3] = resource_id

    def deleted(self, resource_id):
        self.deleted_ids.append(resource_id)

    def emit(self, event, **fields):
        self.events.append((event, fields))

    def resources(self):
        """What the run store would hand back to teardown()."""
        from launcher.providers.base import Resource

        return [Resource("aws", kind, rid or name, region=region, run_id=self.run_id)
                for kind, name, region, rid in self.intents]


def make_spec(**resources) -> Any:
    from launcher.spec import JobSpec

    limits = resources.pop("limits", {"max_duration": "2h"})
    return JobSpec.model_validate({"name": "test-job", "resources": resources, "limits": limits})


def make_ctx(run_id: str = "r1", **resources) -> FakeCtx:
    resources.setdefault("instance_type", "g5.xlarge")
    return FakeCtx(run_id=run_id, spec=make_spec(**resources))


def fake_catalog(offers: list[dict]):
    """A real launcher.catalog Catalog made of the given offers (fields default sensibly)."""
    from launcher.catalog.model import Catalog, Offer, make_provenance

    base = dict(provider="aws", instance_type="g5.xlarge", region="us-east-1", zones=("use1-az1",), gpu="A10G",
                gpu_count=1, vcpus=4, memory_gib=16, gpu_memory_gib=24, price=1.006, spot_price=0.45)
    return Catalog([Offer(**{**base, **o}) for o in offers], make_provenance("test", "2026-01-01"))


# --- placement groups: moto 5.2.1 has no EC2 placement-group API ------------------------------


def placement_groups():
    """Teach moto's EC2 Create/Describe/DeletePlacementGroup (tags and tag filters included) and
    make RunInstances honour Placement.GroupName: an unknown group fails, a cluster group holds
    one zone, and the group shows in DescribeInstances. Deleting a group that still has a
    non-terminated member fails with InvalidPlacementGroup.InUse, as on EC2."""
    from moto.core.responses import ActionResult
    from moto.ec2.exceptions import EC2ClientError
    from moto.ec2.responses import EC2Response

    groups: dict[tuple[str, str], dict] = {}  # (region, name) -> group
    members: dict[tuple[str, str], list] = {}  # (region, name) -> moto Instance objects
    ids = itertools.count(1)
    original_run = EC2Response.run_instances

    def live_members(key):
        return [i for i in members.get(key, []) if i.state != "terminated"]

    def create_placement_group(self):
        name = self._get_param("GroupName")
        key = (self.region, name)
        if key in groups:
            raise EC2ClientError("InvalidPlacementGroup.Duplicate", f"The Placement Group '{name}' already exists.")
        tags = self._parse_tag_specification("placement-group").get("placement-group", {})
        groups[key] = {"GroupName": name, "GroupId": f"pg-{next(ids):017x}", "State": "available",
                       "Strategy": self._get_param("Strategy"), "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}
        return ActionResult({"PlacementGroup": groups[key]})

    def describe_placement_groups(self):
        names = self._get_param("GroupNames", [])
        filters = self._filters_from_querystring()
        out = []
        for (region, name), g in groups.items():
            tags = {t["Key"]: t["Value"] for t in g["Tags"]}
            if region != self.region or (names and name not in names):
                continue
            ok = all((k == "tag-key" and any(t in tags for t in vals))
                     or (k.startswith("tag:") and tags.get(k[4:]) in vals)
                     or (k == "group-name" and name in vals) for k, vals in filters.items())
            if ok:
                out.append(g)
        missing = [n for n in names if (self.region, n) not in groups]
        if missing:
            raise EC2ClientError("InvalidPlacementGroup.Unknown", f"The Placement Group '{missing[0]}' is unknown.")
        return ActionResult({"PlacementGroups": out})

    def delete_placement_group(self):
        name = self._get_param("GroupName")
        key = (self.region, name)
        if key not in groups:
            raise EC2ClientError("InvalidPlacementGroup.Unknown", f"The Placement Group '{name}' is unknown.")
        if live_members(key):
            raise EC2ClientError("InvalidPlacementGroup.InUse", f"The Placement Group '{name}' is in use.")
        del groups[key]
        members.pop(key, None)
        return ActionResult({})

    def run_instances(self):
        name = self._get_param("Placement.GroupName")
        key = (self.region, name)
        if name:
            if key not in groups:
                raise EC2ClientError("InvalidPlacementGroup.Unknown", f"The Placement Group '{name}' is unknown.")
            zone = self._get_param("Placement.AvailabilityZone")
            held = {i.placement.zone for i in live_members(key)}
            if held and zone not in held:
                raise EC2ClientError("InvalidPlacementGroup.InUse",
                                     f"The Placement Group '{name}' holds instances in {held.pop()}, not {zone}.")
        result = original_run(self)
        if name:
            for inst in result.result.instances:
                inst.placement.group_name = name
                members.setdefault(key, []).append(inst)
        return result

    return _Both(*(mock.patch.object(EC2Response, fn.__name__, fn, create=True) for fn in (
        create_placement_group, describe_placement_groups, delete_placement_group, run_instances)))


def placement_groups_left(region: str = "us-east-1") -> list[str]:
    import boto3

    return [g["GroupName"] for g in boto3.client("ec2", region_name=region).describe_placement_groups()["PlacementGroups"]]


# --- fault injection -------------------------------------------------------------------------


def fail_run_instances(zone_codes: dict[str, str | tuple[str, str]]):
    """Patch moto so RunInstances in the given zones ("*": every zone) raises the given EC2
    error code, or (code, message). Use as a context manager; other zones launch normally."""
    from moto.ec2.exceptions import EC2ClientError
    from moto.ec2.models.instances import InstanceBackend

    original = InstanceBackend.run_instances

    def fake(self, image_id, count, user_data, security_group_names, **kwargs):
        code = zone_codes.get(kwargs.get("placement") or "") or zone_codes.get("*")
        if code:
            code, message = code if isinstance(code, tuple) else (code, f"simulated {code} in {kwargs.get('placement')}")
            raise EC2ClientError(code, message)
        return original(self, image_id, count, user_data, security_group_names, **kwargs)

    return mock.patch.object(InstanceBackend, "run_instances", fake)


def capacity_per_call(zone_max: dict[str, int]):
    """Patch moto so one RunInstances call in zone Z ("*": every other zone) can start at most
    zone_max[Z] instances: asking for more fails InsufficientInstanceCapacity and starts none,
    as EC2 does with MinCount above what it has."""
    from moto.ec2.exceptions import EC2ClientError
    from moto.ec2.models.instances import InstanceBackend

    original = InstanceBackend.run_instances

    def fake(self, image_id, count, user_data, security_group_names, **kwargs):
        zone = kwargs.get("placement") or ""
        limit = zone_max.get(zone, zone_max.get("*"))
        if limit is not None and count > limit:
            raise EC2ClientError("InsufficientInstanceCapacity",
                                 f"We currently do not have sufficient capacity in {zone}: {limit} of {count} available")
        return original(self, image_id, count, user_data, security_group_names, **kwargs)

    return mock.patch.object(InstanceBackend, "run_instances", fake)


def spot_interrupt(instance_id: str, region: str = "us-east-1") -> None:
    """What AWS does when it reclaims spot capacity: terminated, reason SpotInstanceTermination."""
    from moto.ec2.models import ec2_backends
    from moto.ec2.models.instances import StateReason

    inst = ec2_backends[ACCOUNT][region].get_instance(instance_id)
    inst.terminate()
    inst.state_reason = StateReason("Server.SpotInstanceTermination: Spot instance termination",
                                    "Server.SpotInstanceTermination")


# --- end-to-end support: loopback addresses and a real sshd ---------------------------------


def loopback_addresses(first: int = 2):
    """Patch moto (test only) so each new instance gets 127.0.0.N as public AND private IP.

    moto 5.2.1 draws the public IP from ``random_public_ip`` as imported into
    ``moto.ec2.models.elastic_network_interfaces`` and the private one from
    ``Subnet.get_available_subnet_ip``; both are called once per instance, in that order
    (private, then public), so the two counters stay in step. Use as a context manager
    inside ``mock_aws``."""
    from moto.ec2.models.subnets import Subnet

    public = itertools.count(first)
    private = itertools.count(first)

    def next_private(self, instance):
        ip = f"127.0.0.{next(private)}"
        self._subnet_ips[ip] = instance  # keeps moto's release bookkeeping (del_subnet_ip) working
        return ip

    stack = mock.patch.multiple(
        "moto.ec2.models.elastic_network_interfaces", random_public_ip=lambda: f"127.0.0.{next(public)}")
    return _Both(stack, mock.patch.object(Subnet, "get_available_subnet_ip", next_private))


class _Both:
    def __init__(self, *patches):
        self.patches = patches

    def __enter__(self):
        for p in self.patches:
            p.start()
        return self

    def __exit__(self, *exc):
        for p in reversed(self.patches):
            p.stop()
        return False


_HOST_KEY = re.compile(r"<<'GPUJOB_HOST_KEY_END'\n(.*?)\nGPUJOB_HOST_KEY_END", re.S)


def user_data_of(instance_id: str, region: str = "us-east-1") -> str:
    import boto3

    ec2 = boto3.client("ec2", region_name=region)
    raw = ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="userData")["UserData"]["Value"]
    return base64.b64decode(raw).decode()


def installed_host_key(instance_id: str, region: str = "us-east-1") -> str:
    """The host private key (OpenSSH PEM) the provider put into the instance's user data."""
    m = _HOST_KEY.search(user_data_of(instance_id, region))
    if not m:
        raise AssertionError(f"no host key in the user data of {instance_id}")
    return m.group(1).strip() + "\n"


def imported_public_key(instance_id: str, region: str = "us-east-1") -> str:
    """The public key of the key pair the instance was launched with, as moto stored it."""
    import boto3
    from moto.ec2.models import ec2_backends

    ec2 = boto3.client("ec2", region_name=region)
    inst = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    material = ec2_backends[ACCOUNT][region].key_pairs[inst["KeyName"]].material_public
    return material.decode() if isinstance(material, bytes) else material


def booted_sshd_for(instance_id: str, workdir, region: str = "us-east-1", port: int = 22):
    """"Boot" the instance: a real sshd on its (loopback) public IP and port, presenting the
    host key from its user data and accepting the imported client key. Returns the started
    ``tests.sshd.Sshd``; the caller stops it. Launch inside ``loopback_addresses()``.
    sshd logs in the *current* user (root), not the AMI's "ubuntu": point the machine there."""
    import boto3

    from tests.sshd import Sshd

    ec2 = boto3.client("ec2", region_name=region)
    inst = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    host = inst["PublicIpAddress"]
    if not host.startswith("127."):
        raise AssertionError(f"{instance_id} has public IP {host}: launch it inside loopback_addresses()")
    return Sshd(workdir, authorized_keys=[imported_public_key(instance_id, region)], host=host, port=port,
                host_key_pem=installed_host_key(instance_id, region)).start()


@contextmanager
def iam_enforced(after: int = 0):
    """moto checks every request's access key like IAM once ``after`` requests have passed:
    the fixtures' "testing" key is unknown, so AWS rejects it (InvalidClientTokenId / AuthFailure).
    ``after`` > 0 lets a run start and has its credentials rejected mid-way."""
    from moto import settings
    from moto.core.responses import ActionAuthenticatorMixin

    saved = settings.INITIAL_NO_AUTH_ACTION_COUNT, ActionAuthenticatorMixin.request_count
    settings.INITIAL_NO_AUTH_ACTION_COUNT, ActionAuthenticatorMixin.request_count = after, 0
    try:
        yield
    finally:
        settings.INITIAL_NO_AUTH_ACTION_COUNT, ActionAuthenticatorMixin.request_count = saved
