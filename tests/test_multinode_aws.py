"""EC2 multi-node launch against moto: one zone, one placement group, node-to-node rule, partial launches."""

from __future__ import annotations

import pytest

pytest.importorskip("boto3")
pytest.importorskip("moto")

from launcher.errors import CapacityError  # noqa: E402
from launcher.providers.aws.launch import AwsProvider  # noqa: E402
from launcher.providers.aws.common import cluster_placement  # noqa: E402
from launcher.providers.base import TAG_RUN  # noqa: E402
from tests.aws_fixtures import (  # noqa: E402, F401
    aws,
    aws_env,
    capacity_per_call,
    fail_run_instances,
    fake_catalog,
    fast_session,
    make_ctx,
    placement_groups_left,
)
from tests.test_aws import no_outside_network  # noqa: E402, F401 - autouse: loopback only

R = "us-east-1"


# No AZ ids in the offer: zones come from EC2 (moto offers p4d in us-east-1a..d), tried in name order.
CATALOG = fake_catalog([dict(instance_type="p4d.24xlarge", zones=(), gpu="A100", gpu_count=8, vcpus=96, price=32.77),
                        dict(instance_type="g5.xlarge", zones=())])


def provider() -> AwsProvider:
    return AwsProvider(session=fast_session(), sleep=lambda s: None, catalog=CATALOG,
                       detect_ip=lambda: pytest.fail("detect_ip must not be called"))


def ec2():
    import boto3

    return boto3.client("ec2", region_name=R)


def describe(iids: list[str]) -> list[dict]:
    res = ec2().describe_instances(InstanceIds=iids)["Reservations"]
    return [i for r in res for i in r["Instances"]]


def nothing_left() -> None:
    live = ec2().describe_instances(Filters=[{"Name": "instance-state-name", "Values": ["pending", "running"]}])
    assert [i for r in live["Reservations"] for i in r["Instances"]] == []
    tagged = [{"Name": "tag-key", "Values": [TAG_RUN]}]
    assert ec2().describe_security_groups(Filters=tagged)["SecurityGroups"] == []
    assert ec2().describe_key_pairs(Filters=tagged)["KeyPairs"] == []
    assert placement_groups_left() == []


def test_two_nodes_share_a_zone_a_placement_group_and_a_node_only_rule(aws):
    ctx = make_ctx(instance_type="p4d.24xlarge", num_nodes=2)
    p = provider()
    nodes = p.launch_nodes(ctx.spec, ctx, 60, 2)
    assert len(nodes) == 2 and [m.extra["node_rank"] for m in nodes] == [0, 1]
    assert len({m.zone for m in nodes}) == 1 and all(m.private_ip and m.host for m in nodes)
    insts = {i["InstanceId"]: i for i in describe([m.id for m in nodes])}
    assert {i["AmiLaunchIndex"] for i in insts.values()} == {0, 1}
    assert insts[nodes[0].id]["AmiLaunchIndex"] == 0  # node 0 is the first one EC2 started
    pg = f"gpujob-r1-{nodes[0].zone}"
    assert {i["Placement"]["GroupName"] for i in insts.values()} == {pg}
    assert all({t["Key"]: t["Value"] for t in i["Tags"]}[TAG_RUN] == "r1" for i in insts.values())
    (group,) = ec2().describe_placement_groups(GroupNames=[pg])["PlacementGroups"]
    assert group["Strategy"] == "cluster" and {t["Key"]: t["Value"] for t in group["Tags"]}[TAG_RUN] == "r1"
    assert ["placement-group", pg, R, pg] in ctx.intents

    sg_id = nodes[0].extra["security_group"]
    perms = ec2().describe_security_groups(GroupIds=[sg_id])["SecurityGroups"][0]["IpPermissions"]
    ssh = [q for q in perms if q.get("IpRanges")]
    assert [(q["IpProtocol"], q["FromPort"], q["ToPort"], [r["CidrIp"] for r in q["IpRanges"]]) for q in ssh] == [
        ("tcp", 22, 22, ["203.0.113.7/32"])]
    assert not ssh[0].get("UserIdGroupPairs")
    own = sorted((q for q in perms if not q.get("IpRanges")), key=lambda q: q["IpProtocol"])
    assert [(q["IpProtocol"], q["FromPort"], q["ToPort"]) for q in own] == [("tcp", 0, 65535), ("udp", 0, 65535)]
    assert all([g["GroupId"] for g in q["UserIdGroupPairs"]] == [sg_id] and not q.get("Ipv6Ranges")
               and not q.get("PrefixListIds") for q in own)

    found = {(r.kind, r.id) for r in p.find([R])}
    assert {("instance", m.id) for m in nodes} | {("placement-group", pg), ("security-group", sg_id)} <= found
    assert p.teardown("r1", ctx.resources(), ctx) == []
    nothing_left()
    assert pg in ctx.deleted_ids
    assert p.teardown("r1", ctx.resources(), ctx) == []  # idempotent


def test_family_without_cluster_placement_launches_without_a_group(aws):
    ctx = make_ctx(instance_type="g5.xlarge", num_nodes=2)
    nodes = provider().launch_nodes(ctx.spec, ctx, 60, 2)
    assert all(not i["Placement"].get("GroupName") for i in describe([m.id for m in nodes]))
    assert "placement-group" not in {i[0] for i in ctx.intents} and placement_groups_left() == []
    assert not cluster_placement("g5.xlarge") and cluster_placement("g6e.12xlarge") and cluster_placement("p5.48xlarge")


def test_zone_that_can_give_only_one_of_two_moves_to_the_next_zone(aws):
    ctx = make_ctx(instance_type="p4d.24xlarge", num_nodes=2)
    p = provider()
    with capacity_per_call({"us-east-1a": 1}):
        nodes = p.launch_nodes(ctx.spec, ctx, 60, 2)
    assert {m.zone for m in nodes} == {"us-east-1b"}
    assert [e for e, f in ctx.events if e == "zone-failed"] == ["zone-failed"]
    # the first zone's (empty) group is recorded too, and goes with the rest
    assert {i[1] for i in ctx.intents if i[0] == "placement-group"} == {"gpujob-r1-us-east-1a", "gpujob-r1-us-east-1b"}
    assert p.teardown("r1", ctx.resources(), ctx) == []
    nothing_left()


@pytest.mark.parametrize("how", ["one-per-call", "none"])
def test_no_zone_has_every_node_is_a_capacity_error_and_teardown_leaves_nothing(aws, how):
    ctx = make_ctx(instance_type="p4d.24xlarge", num_nodes=2, regions=[R])
    p = provider()
    fault = capacity_per_call({"*": 1}) if how == "one-per-call" else fail_run_instances({"*": "InsufficientInstanceCapacity"})
    with fault, pytest.raises(CapacityError, match=r"only 0 of 2 nodes could be launched in us-east-1a; ") as err:
        p.launch_nodes(ctx.spec, ctx, 60, 2)
    assert "us-east-1d" in str(err.value)  # every zone was tried
    assert p.teardown("r1", ctx.resources(), ctx) == []
    nothing_left()


def test_node_lost_while_booting_frees_the_zone_and_says_how_many_were_had(aws, monkeypatch):
    """A spot node reclaimed at once: the survivor is terminated before the next zone is tried."""
    ctx = make_ctx(instance_type="p4d.24xlarge", num_nodes=2, regions=[R])
    p = provider()
    real = p.describe_instance
    victims: set[str] = set()

    def reclaim_second(region, iid):
        desc = real(region, iid)
        if desc and desc.get("AmiLaunchIndex") == 1 and desc["State"]["Name"] == "running" and iid not in victims:
            victims.add(iid)
            ec2().terminate_instances(InstanceIds=[iid])
            desc = real(region, iid)
        return desc

    monkeypatch.setattr(p, "describe_instance", reclaim_second)
    with pytest.raises(CapacityError, match=r"only 1 of 2 nodes could be launched in us-east-1a"):
        p.launch_nodes(ctx.spec, ctx, 60, 2)
    launched = [i[3] for i in ctx.intents if i[0] == "instance" and i[3]]
    assert len(launched) == 8 and all(i["State"]["Name"] != "running" for i in describe(launched))
    assert p.teardown("r1", ctx.resources(), ctx) == []
    nothing_left()


def test_plan_shows_nodes_placement_and_the_node_rule():
    ctx = make_ctx(instance_type="p4d.24xlarge", num_nodes=4, regions=[R])
    plan = AwsProvider(catalog=CATALOG).plan(ctx.spec, ctx)
    assert plan["num_nodes"] == 4
    assert plan["placement"].startswith("cluster placement group gpujob-r1-")
    assert "members of gpujob-r1" in plan["intra_node_rule"]
    single = make_ctx(instance_type="p4d.24xlarge", regions=[R])
    assert "num_nodes" not in AwsProvider(catalog=CATALOG).plan(single.spec, single)
