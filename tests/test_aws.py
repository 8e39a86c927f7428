"""EC2 provider against moto: launch, hardening, failover, quotas, spot, teardown, gc, plan."""

from __future__ import annotations

import base64
import socket
import subprocess
import sys

import pytest

pytest.importorskip("boto3")
pytest.importorskip("moto")

from launcher.errors import CapacityError, CredentialsError, ProviderError, QuotaError, WaitTimeout  # noqa: E402
from launcher.providers.aws.launch import AwsProvider  # noqa: E402
from launcher.providers.aws.common import DLAMI_SSM_PARAMETER, family_of, quota_for  # noqa: E402
from launcher.providers.base import TAG_CREATED, TAG_JOB, TAG_OWNER, TAG_RUN  # noqa: E402
from tests.aws_fixtures import (  # noqa: E402, F401
    aws,
    aws_env,
    fail_run_instances,
    fake_catalog,
    fast_session,
    imported_public_key,
    installed_host_key,
    loopback_addresses,
    make_ctx,
    booted_sshd_for,
    spot_interrupt,
    user_data_of,
)

R = "us-east-1"


@pytest.fixture(autouse=True)
def no_outside_network(monkeypatch):
    """Any connection to a non-loopback address fails the test."""
    real = socket.socket.connect

    def guarded(self, address):
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and not (host.startswith("127.") or host in ("::1", "localhost")):
            raise AssertionError(f"test tried to reach {address}")
        return real(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)


def provider(**kw) -> AwsProvider:
    kw.setdefault("session", fast_session())
    kw.setdefault("sleep", lambda s: None)
    kw.setdefault("detect_ip", lambda: pytest.fail("detect_ip must not be called"))
    return AwsProvider(**kw)


def ec2(region=R):
    import boto3

    return boto3.client("ec2", region_name=region)


def tags_of(obj) -> dict:
    return {t["Key"]: t["Value"] for t in obj.get("Tags", [])}


def instance(iid, region=R):
    return ec2(region).describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]


def our_groups(region=R):
    return ec2(region).describe_security_groups(Filters=[{"Name": "tag-key", "Values": [TAG_RUN]}])["SecurityGroups"]


def our_keys(region=R):
    return ec2(region).describe_key_pairs(Filters=[{"Name": "tag-key", "Values": [TAG_RUN]}])["KeyPairs"]


def live_instances(region=R):
    res = ec2(region).describe_instances(Filters=[{"Name": "instance-state-name", "Values": ["pending", "running"]}])
    return [i for r in res["Reservations"] for i in r["Instances"]]


# --- the contract ----------------------------------------------------------------------------


def test_launch_poll_find_teardown_twice(aws):
    ctx = make_ctx()
    p = provider()
    m = p.launch(ctx.spec, ctx, deadline_s=60)
    assert m.provider == "aws" and m.id.startswith("i-") and m.host and m.port == 22
    assert m.user == "ubuntu" and m.key_path == ctx.ssh_private_key_path
    assert m.host_keys == [ctx.host_key_public]
    assert m.region == R and m.zone.startswith(R) and m.instance_type == "g5.xlarge"
    assert p.poll(m) is None
    # every create was announced first and confirmed after
    assert [i[0] for i in ctx.intents] == ["key-pair", "security-group", "instance"]
    assert all(i[3] for i in ctx.intents)

    found = p.find([R])
    assert {(r.kind, r.run_id) for r in found} == {("instance", "r1"), ("security-group", "r1"), ("key-pair", "r1")}
    assert all(r.delete_command and r.delete_command.endswith(f"--region {R}") for r in found)

    assert p.teardown("r1", ctx.resources(), ctx) == []
    assert instance(m.id)["State"]["Name"] == "terminated"
    assert our_groups() == [] and our_keys() == []
    assert set(ctx.deleted_ids) >= {i[3] for i in ctx.intents}
    assert p.poll(m) == "terminated"
    assert p.teardown("r1", ctx.resources(), ctx) == []  # idempotent
    assert p.find([R]) == []


def test_security_group_allows_only_ssh_from_one_address(aws):
    ctx = make_ctx()
    m = provider().launch(ctx.spec, ctx, 60)
    sg_id = m.extra["security_group"]
    sg = ec2().describe_security_groups(GroupIds=[sg_id])["SecurityGroups"][0]
    assert sg["GroupName"] == "gpujob-r1"
    perms = sg["IpPermissions"]
    assert len(perms) == 1
    perm = perms[0]
    assert (perm["IpProtocol"], perm["FromPort"], perm["ToPort"]) == ("tcp", 22, 22)
    assert [r["CidrIp"] for r in perm["IpRanges"]] == ["203.0.113.7/32"]
    assert not perm.get("Ipv6Ranges") and not perm.get("UserIdGroupPairs") and not perm.get("PrefixListIds")
    assert instance(m.id)["SecurityGroups"] == [{"GroupId": sg_id, "GroupName": "gpujob-r1"}]


def test_detected_address_becomes_a_slash_32(aws):
    ctx = make_ctx()
    ctx.ssh_cidr = None
    m = provider(detect_ip=lambda: "198.51.100.9\n").launch(ctx.spec, ctx, 60)
    sg = ec2().describe_security_groups(GroupIds=[m.extra["security_group"]])["SecurityGroups"][0]
    assert [r["CidrIp"] for r in sg["IpPermissions"][0]["IpRanges"]] == ["198.51.100.9/32"]


def test_failed_detection_asks_for_ssh_cidr_and_creates_nothing(aws):
    ctx = make_ctx()
    ctx.ssh_cidr = None

    def offline():
        raise OSError("network unreachable")

    with pytest.raises(ProviderError, match="--ssh-cidr"):
        provider(detect_ip=offline).launch(ctx.spec, ctx, 60)
    assert ctx.intents == []


def test_instance_guards_itself(aws):
    ctx = make_ctx(disk_gb=150, limits={"max_duration": "2h"})
    m = provider().launch(ctx.spec, ctx, 60)
    attr = ec2().describe_instance_attribute(InstanceId=m.id, Attribute="instanceInitiatedShutdownBehavior")
    assert attr["InstanceInitiatedShutdownBehavior"]["Value"] == "terminate"
    ud = user_data_of(m.id)
    assert "shutdown -h +130 " in ud  # ceil((7200 + 600) / 60)
    assert "sleep 8100;" in ud  # fallback sleeper, 5 minutes later
    assert ctx.host_key_private.strip() in ud and ctx.host_key_public.strip() in ud
    assert "rm -f /etc/ssh/ssh_host_*" in ud and "systemctl restart ssh" in ud
    assert ud.index("shutdown -h") < ud.index("ssh_host_ed25519_key")  # the timer is armed first
    desc = instance(m.id)
    assert desc["MetadataOptions"]["HttpTokens"] == "required"
    assert desc["KeyName"] == "gpujob-r1"
    vols = ec2().describe_volumes(Filters=[{"Name": "attachment.instance-id", "Values": [m.id]}])["Volumes"]
    assert vols and vols[0]["Size"] == 150


def test_everything_is_tagged(aws):
    ctx = make_ctx()
    m = provider().launch(ctx.spec, ctx, 60)
    want = {TAG_RUN: "r1", TAG_JOB: "test-job", TAG_OWNER: "tester"}
    vols = ec2().describe_volumes(Filters=[{"Name": "attachment.instance-id", "Values": [m.id]}])["Volumes"]
    things = [instance(m.id), vols[0], our_groups()[0], our_keys()[0]]
    for obj in things:
        tags = tags_of(obj)
        assert want.items() <= tags.items(), obj
        assert tags[TAG_CREATED].endswith("Z") and "T" in tags[TAG_CREATED]


# --- failure handling --------------------------------------------------------------------------


def a10g_catalog():
    # us-east-1: use1-az6 = us-east-1a, use1-az1 = us-east-1b in moto
    return fake_catalog([
        {"region": "us-east-1", "zones": ("use1-az6", "use1-az1"), "price": 1.0, "spot_price": 0.4},
        {"region": "us-west-2", "zones": ("usw2-az1",), "price": 1.2, "spot_price": 0.5},
        {"instance_type": "g5.2xlarge", "region": "us-east-1", "zones": ("use1-az6",), "price": 1.2},
    ])


def test_capacity_failure_moves_to_the_next_zone(aws):
    ctx = make_ctx(instance_type=None, accelerators="A10G:1", regions=["us-east-1", "us-west-2"])
    p = provider(catalog=a10g_catalog())
    with fail_run_instances({"us-east-1a": "InsufficientInstanceCapacity"}):
        m = p.launch(ctx.spec, ctx, 60)
    assert (m.region, m.zone, m.instance_type, m.price_per_hour) == ("us-east-1", "us-east-1b", "g5.xlarge", 1.0)
    assert m.gpu == "A10G" and m.gpu_count == 1
    failed = [f for e, f in ctx.events if e == "zone-failed"]
    assert failed == [{"zone": "us-east-1a", "code": "InsufficientInstanceCapacity",
                       "message": failed[0]["message"]}]
    assert len(live_instances()) == 1


def test_closed_zone_moves_on_but_other_bad_parameters_stop(aws):
    ctx = make_ctx(instance_type=None, accelerators="A10G:1")
    p = provider(catalog=a10g_catalog())
    closed = ("InvalidParameterValue", "Invalid availability zone: [us-east-1a]")
    with fail_run_instances({"us-east-1a": closed}):
        assert p.launch(ctx.spec, ctx, 60).zone == "us-east-1b"
    ctx = make_ctx(run_id="r2", instance_type=None, accelerators="A10G:1")
    with fail_run_instances({"*": ("InvalidParameterValue", "Value (x) for parameter userData is invalid")}):
        with pytest.raises(ProviderError, match="userData") as err:
            p.launch(ctx.spec, ctx, 60)
    assert not isinstance(err.value, CapacityError)


def test_capacity_failure_in_every_zone_moves_to_the_next_region(aws):
    ctx = make_ctx(instance_type=None, accelerators="A10G:1", regions=["us-east-1", "us-west-2"])
    p = provider(catalog=a10g_catalog())
    with fail_run_instances({"us-east-1a": "InsufficientInstanceCapacity", "us-east-1b": "Unsupported"}):
        m = p.launch(ctx.spec, ctx, 60)
    assert m.region == "us-west-2" and m.price_per_hour == 1.2
    # the per-run key pair and group exist per region; teardown removes both regions' copies
    assert p.teardown("r1", ctx.resources(), ctx) == []
    for region in ("us-east-1", "us-west-2"):
        assert our_groups(region) == [] and our_keys(region) == []


def test_no_capacity_anywhere_is_a_capacity_error_listing_the_zones(aws):
    ctx = make_ctx(instance_type=None, accelerators="A10G:1", regions=["us-east-1", "us-west-2"])
    p = provider(catalog=a10g_catalog())
    with fail_run_instances({"*": "InsufficientInstanceCapacity"}):
        with pytest.raises(CapacityError) as err:
            p.launch(ctx.spec, ctx, 60)
    text = str(err.value)
    assert "us-east-1a" in text and "us-east-1b" in text and "us-west-2" in text and "\n" not in text
    assert p.teardown("r1", ctx.resources(), ctx) == []
    assert our_groups() == [] and our_keys() == [] and our_groups("us-west-2") == []


def test_quota_error_names_the_quota_and_leaves_nothing_after_teardown(aws):
    ctx = make_ctx()
    p = provider()
    with fail_run_instances({"*": "VcpuLimitExceeded"}):
        with pytest.raises(QuotaError) as err:
            p.launch(ctx.spec, ctx, 60)
    text = str(err.value)
    assert "Running On-Demand G and VT instances" in text and "L-DB2E81BA" in text
    assert "request-service-quota-increase" in text and "\n" not in text
    assert p.teardown("r1", ctx.resources(), ctx) == []
    assert our_groups() == [] and our_keys() == [] and live_instances() == []


def test_spot_quota_names_the_spot_quota(aws):
    ctx = make_ctx(instance_type="p4d.24xlarge", spot=True)
    with fail_run_instances({"*": "MaxSpotInstanceCountExceeded"}):
        with pytest.raises(QuotaError, match="All P Spot Instance Requests.*L-7212CCBC"):
            provider().launch(ctx.spec, ctx, 60)


def test_service_quotas_precheck_stops_before_creating_anything(aws, monkeypatch):
    from moto.servicequotas.models import ServiceQuotasBackend

    asked = []

    def zero(self, service_code, quota_code):
        asked.append(quota_code)
        return {"ServiceCode": service_code, "QuotaCode": quota_code, "QuotaName": "x", "Value": 0.0}

    monkeypatch.setattr(ServiceQuotasBackend, "get_service_quota", zero)
    ctx = make_ctx()
    with pytest.raises(QuotaError, match="Running On-Demand G and VT instances"):
        provider().launch(ctx.spec, ctx, 60)
    assert asked == ["L-DB2E81BA"]
    assert ctx.intents == [] and live_instances() == []


def test_unavailable_service_quotas_means_unknown(aws):
    # moto answers NoSuchResource for ec2 quotas: the launch goes on
    ctx = make_ctx()
    assert provider().launch(ctx.spec, ctx, 60).id


@pytest.mark.parametrize("code", ["AuthFailure", "UnauthorizedOperation"])
def test_refused_credentials_are_one_line_with_the_fix(aws, code):
    ctx = make_ctx()
    with fail_run_instances({"*": code}):
        with pytest.raises(CredentialsError) as err:
            provider().launch(ctx.spec, ctx, 60)
    assert "aws configure" in str(err.value) and "\n" not in str(err.value)


def test_missing_credentials_are_one_line_with_the_fix(aws_env, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    ctx = make_ctx()
    with pytest.raises(CredentialsError) as err:
        provider().launch(ctx.spec, ctx, 60)
    text = str(err.value)
    assert text.startswith("aws: ") and "aws configure" in text and "AWS_PROFILE" in text and "\n" not in text
    assert ctx.intents == []


def test_wait_times_out_naming_the_instance_and_state(aws, monkeypatch):
    now = [0.0]
    p = provider(clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s))
    real = p.describe_instance

    def stuck(region, iid):
        d = real(region, iid)
        return {**d, "State": {"Name": "pending"}} if d else d

    monkeypatch.setattr(p, "describe_instance", stuck)
    ctx = make_ctx()
    with pytest.raises(WaitTimeout) as err:
        p.launch(ctx.spec, ctx, deadline_s=30)
    assert ctx.intents[-1][3] in str(err.value) and "pending" in str(err.value)
    assert ctx.intents[-1][0] == "instance" and ctx.intents[-1][3]  # recorded for teardown


# --- spot --------------------------------------------------------------------------------------


def test_spot_request_shape_and_interruption(aws):
    ctx = make_ctx(spot=True)
    p = provider()
    seen = {}
    client = p.client("ec2", R, fail_fast=True)
    client.meta.events.register("provide-client-params.ec2.RunInstances",
                                lambda params, **kw: seen.update(params))
    m = p.launch(ctx.spec, ctx, 60)
    assert seen["InstanceMarketOptions"] == {
        "MarketType": "spot",
        "SpotOptions": {"SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate"}}
    assert seen["InstanceInitiatedShutdownBehavior"] == "terminate"
    assert m.spot and instance(m.id).get("InstanceLifecycle") == "spot"
    assert p.poll(m) is None
    spot_interrupt(m.id)
    assert p.poll(m) == "spot-interrupted"


def test_on_demand_has_no_market_options(aws):
    ctx = make_ctx()
    p = provider()
    seen = {}
    p.client("ec2", R, fail_fast=True).meta.events.register(
        "provide-client-params.ec2.RunInstances", lambda params, **kw: seen.update(params))
    p.launch(ctx.spec, ctx, 60)
    assert "InstanceMarketOptions" not in seen


def test_user_terminated_instance_polls_as_terminated(aws):
    ctx = make_ctx()
    p = provider()
    m = p.launch(ctx.spec, ctx, 60)
    ec2().terminate_instances(InstanceIds=[m.id])
    assert p.poll(m) == "terminated"


# --- teardown and gc ---------------------------------------------------------------------------


def test_gc_cleans_a_run_whose_record_was_deleted(aws):
    ctx = make_ctx(run_id="lost1")
    provider().launch(ctx.spec, ctx, 60)
    # a fresh process: no record, no ctx, only tags
    gc = provider(regions=[R])
    found = [r for r in gc.find([R]) if r.run_id == "lost1"]
    assert {r.kind for r in found} == {"instance", "security-group", "key-pair"}
    assert gc.teardown("lost1", found, None) == []
    assert gc.find([R]) == [] and live_instances() == []


def test_teardown_without_records_still_finds_by_tag(aws):
    ctx = make_ctx(run_id="crash1")
    provider().launch(ctx.spec, ctx, 60)
    assert provider().teardown("crash1", [], ctx) == []  # crashed before created(): nothing recorded
    assert our_groups() == [] and our_keys() == [] and live_instances() == []


def test_teardown_leaves_other_runs_alone(aws):
    a, b = make_ctx(run_id="a1"), make_ctx(run_id="b1")
    p = provider()
    p.launch(a.spec, a, 60)
    mb = p.launch(b.spec, b, 60)
    assert p.teardown("a1", [], a) == []
    assert {r.run_id for r in p.find([R])} == {"b1"}
    assert p.poll(mb) is None


def test_undeletable_group_is_a_leftover_with_its_command(aws, monkeypatch):
    from moto.ec2.exceptions import EC2ClientError
    from moto.ec2.models.security_groups import SecurityGroupBackend

    def busy(self, name=None, group_id=None):
        raise EC2ClientError("DependencyViolation", "resource has a dependent object")

    ctx = make_ctx()
    slept = []
    p = provider(sleep=slept.append)
    m = p.launch(ctx.spec, ctx, 60)
    monkeypatch.setattr(SecurityGroupBackend, "delete_security_group", busy)
    left = p.teardown("r1", ctx.resources(), ctx)
    sg = m.extra["security_group"]
    assert [(lo.resource.kind, lo.resource.id) for lo in left] == [("security-group", sg)]
    assert left[0].resource.delete_command == f"aws ec2 delete-security-group --group-id {sg} --region {R}"
    assert "DependencyViolation" in left[0].reason
    assert len(slept) == p.sg_delete_attempts - 1  # retried with the injected sleep
    assert our_keys() == [] and instance(m.id)["State"]["Name"] == "terminated"


# --- plan --------------------------------------------------------------------------------------


def test_plan_needs_no_account_and_calls_nothing(monkeypatch):
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    import boto3

    monkeypatch.setattr(boto3.session, "Session", lambda *a, **k: pytest.fail("plan created an AWS session"))
    ctx = make_ctx(instance_type=None, accelerators="A10G:1", regions=["us-east-1", "us-west-2"], spot=True)
    ctx.ssh_cidr = None
    plan = AwsProvider(catalog=a10g_catalog()).plan(ctx.spec, ctx)
    assert plan["instance_type"] == "g5.xlarge" and plan["market"] == "spot" and plan["price_per_hour"] == 0.4
    assert plan["regions"] == ["us-east-1", "us-west-2"]
    assert plan["zones"]["us-east-1"] == ["use1-az6", "use1-az1"]
    assert DLAMI_SSM_PARAMETER in plan["image"]
    assert plan["security_group"] == "gpujob-r1: 22/tcp from your address /32 (detected at launch)"
    assert plan["watchdog"] == "shutdown -h +130 min, InstanceInitiatedShutdownBehavior=terminate"
    assert plan["tags"][TAG_RUN] == "r1" and plan["metadata"] == "IMDSv2 required"


def test_plan_with_explicit_type_image_and_cidr():
    ctx = make_ctx(instance_type="p4d.24xlarge", image_id="ami-0123456789abcdef0")
    plan = provider(catalog=fake_catalog([]), regions=["eu-west-1"]).plan(ctx.spec, ctx)
    assert plan["instance_type"] == "p4d.24xlarge" and plan["price_per_hour"] is None
    assert plan["regions"] == ["eu-west-1"] and plan["image"] == "ami-0123456789abcdef0"
    assert plan["security_group"].endswith("22/tcp from 203.0.113.7/32")
    assert "L-417A185B" in plan["quota"]


def test_plan_without_a_match_says_what_to_change():
    ctx = make_ctx(instance_type=None, accelerators="H100:8")
    with pytest.raises(ProviderError, match="no on-demand AWS offer for H100:8"):
        provider(catalog=fake_catalog([])).plan(ctx.spec, ctx)


# --- small pieces ------------------------------------------------------------------------------


@pytest.mark.parametrize("itype,spot,code", [
    ("p4d.24xlarge", False, "L-417A185B"), ("p5.48xlarge", True, "L-7212CCBC"),
    ("g5.xlarge", False, "L-DB2E81BA"), ("vt1.3xlarge", False, "L-DB2E81BA"), ("g6e.xlarge", True, "L-3819A6DF"),
    ("m5.large", False, "L-1216C47A"), ("inf2.xlarge", False, "L-1945791B"), ("dl1.24xlarge", False, "L-6E869C2A"),
])
def test_quota_codes_by_family(itype, spot, code):
    assert quota_for(itype, spot)[1] == code
    assert family_of("gr6.4xlarge") == "G"


def test_importing_the_provider_does_not_import_boto3():
    code = "import sys, launcher.providers.aws.launch; assert 'boto3' not in sys.modules and 'botocore' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_user_data_is_valid_shell(aws):
    ctx = make_ctx()
    m = provider().launch(ctx.spec, ctx, 60)
    subprocess.run(["bash", "-n"], input=user_data_of(m.id).encode(), check=True)
    assert base64.b64decode(base64.b64encode(b"x")) == b"x"


# --- end-to-end support ------------------------------------------------------------------------


def test_loopback_addresses_and_user_data_round_trip(aws):
    ctx = make_ctx()
    with loopback_addresses():
        m = provider().launch(ctx.spec, ctx, 60)
    assert m.host.startswith("127.0.0.") and m.private_ip.startswith("127.0.0.")
    assert installed_host_key(m.id).strip() == ctx.host_key_private.strip()
    assert imported_public_key(m.id).split()[:2] == ctx.ssh_public_key.split()[:2]
    assert provider().teardown("r1", ctx.resources(), ctx) == []


def test_ssh_reaches_a_real_sshd_presenting_the_pinned_host_key(aws, tmp_path):
    from tests.sshd import Sshd, free_port

    why_not = Sshd.available()
    if why_not:
        pytest.skip(why_not)
    from dataclasses import replace

    from launcher.keys import write_private_key
    from launcher.remote import Session
    from tests.aws_fixtures import ed25519_pair

    pem, public = ed25519_pair()
    ctx = make_ctx()
    ctx.ssh_public_key = public
    ctx.ssh_private_key_path = str(write_private_key(tmp_path / "id_ed25519", pem))
    with loopback_addresses():
        m = provider().launch(ctx.spec, ctx, 60)
    port = free_port(m.host)  # the real machine listens on 22; a free port keeps tests parallel-safe
    sshd = booted_sshd_for(m.id, tmp_path / "sshd", port=port)
    try:
        with Session.from_machine(replace(m, user=sshd.user, port=port)) as s:
            assert s.run("echo ok")[1].strip() == "ok"
    finally:
        sshd.stop()


def test_name_clash_with_someone_elses_key_pair_is_refused_with_its_delete_command(aws):
    ec2().create_key_pair(KeyName="gpujob-r1")  # not tagged with this run: not ours to replace
    ctx = make_ctx()
    with pytest.raises(ProviderError, match=f"a key pair named gpujob-r1 exists in {R} and is not this run's") as info:
        provider().launch(ctx.spec, ctx, 60)
    assert f"aws ec2 delete-key-pair --key-name gpujob-r1 --region {R}" in str(info.value.hint)
    assert [k["KeyName"] for k in ec2().describe_key_pairs()["KeyPairs"]] == ["gpujob-r1"]  # left untouched


def test_name_clash_with_someone_elses_security_group_is_refused(aws):
    vpc = ec2().describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    gid = ec2().create_security_group(GroupName="gpujob-r1", Description="not gpujob's", VpcId=vpc)["GroupId"]
    ctx = make_ctx()
    with pytest.raises(ProviderError, match=f"a security group named gpujob-r1 exists in {R} and is not this") as info:
        provider().launch(ctx.spec, ctx, 60)
    assert f"aws ec2 delete-security-group --group-id {gid} --region {R}" in str(info.value.hint)
