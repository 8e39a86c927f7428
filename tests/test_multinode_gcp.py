"""GcpProvider.launch_nodes against tests/fake_gce.py: one zone, node-to-node rule, compact placement, partial launches."""

from __future__ import annotations

import pytest

from launcher.errors import CapacityError
from launcher.providers.base import TAG_RUN
from launcher.providers.gcp.launch import GcpProvider
from tests.fake_gce import FakeGce
from tests.test_gcp import Ctx, TinyCatalog, _spec, fake, loopback_only, provider  # noqa: F401

TAG = "gpujob-r-abc123"


def test_two_nodes_in_one_zone_with_a_node_only_rule(provider: GcpProvider, fake: FakeGce) -> None:
    spec = _spec(num_nodes=2)
    ctx = Ctx(spec)
    nodes = provider.launch_nodes(spec, ctx, 60, 2)
    assert [m.id for m in nodes] == [f"{TAG}-0", f"{TAG}-1"] and [m.extra["node_rank"] for m in nodes] == [0, 1]
    assert {m.zone for m in nodes} == {"us-central1-a"}
    assert all(m.private_ip and m.host for m in nodes) and len({m.private_ip for m in nodes}) == 2
    for i, m in enumerate(nodes):
        inst = fake.instance(m.id)
        assert inst["labels"][TAG_RUN] == "r-abc123" and inst["labels"]["gpujob-node"] == str(i)
        assert inst["tags"]["items"] == [TAG] and "resourcePolicies" not in inst  # n1: no compact placement
    rules = {r["name"]: r for r in fake.inserted("firewalls")}
    assert set(rules) == {TAG, f"{TAG}-nodes"}
    assert rules[TAG]["sourceRanges"] == ["203.0.113.7/32"] and rules[TAG]["allowed"] == [{"IPProtocol": "tcp", "ports": ["22"]}]
    own = rules[f"{TAG}-nodes"]
    assert own["sourceTags"] == [TAG] and own["targetTags"] == [TAG] and "sourceRanges" not in own
    assert own["allowed"] == [{"IPProtocol": "tcp"}, {"IPProtocol": "udp"}] and "gpujob-run=r-abc123" in own["description"]

    assert {(r.kind, r.id) for r in provider.find(None)} == {
        ("instance", f"us-central1-a/{TAG}-0"), ("instance", f"us-central1-a/{TAG}-1"),
        ("firewall", TAG), ("firewall", f"{TAG}-nodes")}
    assert provider.teardown(ctx.run_id, ctx.resources(), ctx) == []
    assert fake.leftovers() == []
    assert provider.teardown(ctx.run_id, ctx.resources(), ctx) == []  # idempotent


def test_a100_nodes_share_a_compact_placement_policy(provider: GcpProvider, fake: FakeGce) -> None:
    spec = _spec("A100:1", num_nodes=2)
    ctx = Ctx(spec)
    nodes = provider.launch_nodes(spec, ctx, 60, 2)
    policy = f"{TAG}-us-central1-a"
    pol = fake.policies[("us-central1", policy)]
    assert pol["groupPlacementPolicy"] == {"collocation": "COLLOCATED", "vmCount": 2}
    assert all(fake.instance(m.id)["resourcePolicies"] == [f"projects/test-project/regions/us-central1/resourcePolicies/{policy}"]
               for m in nodes)
    assert ("resource-policy", f"us-central1/{policy}") in {(r.kind, r.id) for r in provider.find(["us-central1"])}
    # a fresh process without the record still finds and removes it (after its members)
    gc = GcpProvider(project="test-project", sleep=lambda s: None)
    assert gc.teardown(ctx.run_id, [], None) == []
    assert fake.leftovers() == []


def test_zone_with_one_machine_moves_on_and_frees_what_it_got(provider: GcpProvider, fake: FakeGce) -> None:
    spec = _spec("A100:1", num_nodes=2)
    ctx = Ctx(spec)
    fake.stockout("us-central1-a", after=1)  # the first insert there works, the second stocks out
    nodes = provider.launch_nodes(spec, ctx, 60, 2)
    assert {m.zone for m in nodes} == {"us-central1-b"}
    (failed,) = [f for e, f in ctx.events if e == "zone-failed"]
    assert failed["zone"] == "us-central1-a" and failed["message"].startswith("only 1 of 2 nodes")
    assert sorted(fake.leftovers()) == sorted([f"instance us-central1-b/{TAG}-0", f"instance us-central1-b/{TAG}-1",
                                               f"firewall {TAG}", f"firewall {TAG}-nodes",
                                               f"resource-policy us-central1/{TAG}-us-central1-a",
                                               f"resource-policy us-central1/{TAG}-us-central1-b"])
    assert provider.teardown(ctx.run_id, ctx.resources(), ctx) == []
    assert fake.leftovers() == []


@pytest.mark.parametrize("http", [False, True])
def test_no_zone_has_every_node_is_a_capacity_error_and_teardown_leaves_nothing(provider: GcpProvider, fake: FakeGce,
                                                                                 http: bool) -> None:
    spec = _spec(num_nodes=2)
    ctx = Ctx(spec)
    for zone in ("us-central1-a", "us-central1-b", "us-east1-c"):
        fake.stockout(zone, http=http, after=1)
    with pytest.raises(CapacityError, match=r"only 1 of 2 nodes could be launched in us-central1-a; ") as err:
        provider.launch_nodes(spec, ctx, 60, 2)
    assert "us-east1-c" in str(err.value)  # every zone was tried
    assert provider.teardown(ctx.run_id, ctx.resources(), ctx) == []
    assert fake.leftovers() == []


def test_teardown_removes_partial_nodes_that_launch_left_behind(provider: GcpProvider, fake: FakeGce) -> None:
    """A crash after one node was made: nothing but the label and the record lead to it."""
    spec = _spec(num_nodes=2)
    ctx = Ctx(spec)
    for zone in ("us-central1-a", "us-central1-b", "us-east1-c"):
        fake.stockout(zone, after=1)
    fake.fail_next_operation("delete")  # launch's own clean-up of the first zone fails
    with pytest.raises(CapacityError):
        provider.launch_nodes(spec, ctx, 60, 2)
    assert f"instance us-central1-a/{TAG}-0" in fake.leftovers()
    gc = GcpProvider(project="test-project", sleep=lambda s: None)
    assert gc.teardown(ctx.run_id, [], None) == []
    assert fake.leftovers() == []


def test_plan_shows_nodes_placement_and_the_node_rule() -> None:
    spec = _spec("A100:1", num_nodes=3)
    plan = GcpProvider(project="p", catalog=TinyCatalog()).plan(spec, Ctx(spec))
    assert plan["num_nodes"] == 3 and plan["instance_names"] == [f"{TAG}-0", f"{TAG}-1", f"{TAG}-2"]
    assert plan["placement"].startswith(f"compact resource policy {TAG}-<zone>")
    assert plan["intra_node_rule"]["source_tags"] == [TAG] == plan["intra_node_rule"]["target_tags"]
    single = _spec()
    assert "num_nodes" not in GcpProvider(project="p", catalog=TinyCatalog()).plan(single, Ctx(single))
