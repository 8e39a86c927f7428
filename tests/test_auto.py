"""`--provider auto`: the estimate's order across AWS and GCP, failover on capacity and quota
errors, under moto (AWS) and the fake GCE (real google-cloud-compute client)."""

from __future__ import annotations

import time

import pytest

pytest.importorskip("boto3")
pytest.importorskip("moto")
pytest.importorskip("google.cloud.compute_v1")

from launcher.errors import CapacityError, ProviderError  # noqa: E402
from launcher.providers.auto import AutoProvider  # noqa: E402
from launcher.providers.aws.launch import AwsProvider  # noqa: E402
from launcher.providers.gcp.launch import GcpProvider  # noqa: E402
from launcher.spec import parse_spec  # noqa: E402
from tests.aws_fixtures import (  # noqa: E402, F401
    aws,
    aws_env,
    booted_sshd_for,
    fail_run_instances,
    fake_catalog,
    fast_session,
    loopback_addresses,
)
from tests.e2e_support import (  # noqa: E402
    E2E,
    assert_store_released,
    assert_trained,
    guard_loopback,
    isolate,
    require_sshd,
    tiny_spec,
)
from tests.fake_gce import FakeGce  # noqa: E402
from tests.sshd import Sshd, free_port  # noqa: E402

WORK = "{model: resnet18, samples_per_epoch: 20000, batch_size: 64}"


def _spec(resources: str, limits: str = "{max_duration: 5h}"):
    return parse_spec(f"name: t\nworkload: {WORK}\nresources: {resources}\nlimits: {limits}\n")


def _catalog():
    return fake_catalog([
        dict(instance_type="g4dn.xlarge", gpu="T4", region="us-east-1", price=0.526, spot_price=0.2),
        dict(instance_type="g4dn.xlarge", gpu="T4", region="us-west-2", price=0.6, spot_price=0.25),
        dict(instance_type="g4dn.xlarge", gpu="T4", region="eu-west-1", price=0.55, spot_price=0.21),
        dict(provider="gcp", instance_type="n1-standard-8", gpu="T4", region="us-central1", zones=("us-central1-a",),
             price=0.73, spot_price=0.2),
        dict(instance_type="g5.xlarge", gpu="A10G", region="us-east-1", price=1.006, spot_price=0.45),
        dict(provider="azure", instance_type="Standard_NC4as_T4_v3", gpu="T4", region="eastus", zones=(),
             price=0.1, spot_price=0.05),
    ])


def test_order_is_the_estimates_ranking_within_the_spec():
    auto = AutoProvider(catalog=_catalog())
    order = auto.offers(_spec("{accelerators: 'T4:1'}"))
    # cheapest first, two regions per type, reference clouds (azure) never, A10G not asked for
    assert [(o["provider"], o["region"]) for o in order] == [
        ("aws", "us-east-1"), ("aws", "eu-west-1"), ("gcp", "us-central1")]
    assert [o["total_usd"] for o in order] == sorted(o["total_usd"] for o in order)
    spot = auto.offers(_spec("{accelerators: 'T4:1', spot: true}"))
    assert all(o["spot"] for o in spot) and spot[0]["price_per_hour"] == 0.2
    assert [o["region"] for o in auto.offers(_spec("{accelerators: 'T4:1', regions: [us-west-2, us-central1]}"))] \
        == ["us-west-2", "us-central1"]
    with pytest.raises(ProviderError, match="no on-demand AWS or GCP offer fits"):
        auto.offers(_spec("{accelerators: 'T4:1'}", "{max_duration: 5h, budget_usd: 0.0001}"))


def test_cli_dry_run_shows_the_order(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from launcher.cli import app

    monkeypatch.setenv("GPUJOB_HOME", str(tmp_path / "home"))
    spec = tmp_path / "t4.yaml"
    spec.write_text(f"name: t\nworkload: {WORK}\nresources: {{accelerators: 'T4:1'}}\n")
    res = CliRunner().invoke(app, ["run", str(spec), "--provider", "auto", "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "1. aws g4dn.xlarge" in res.output and "gcp n1-standard-8" in res.output
    assert "the next offer in this order" in res.output and "estimate" in res.output


PROJECT = "test-project"


@pytest.fixture
def clouds(aws, tmp_path, monkeypatch):
    """A Runner on AutoProvider over a moto AwsProvider and a fake-GCE GcpProvider; GCP machines
    boot as a real sshd on their natIP, AWS ones on their 127.0.0.x address."""
    guard_loopback(monkeypatch)
    isolate(tmp_path, monkeypatch)
    for var in ("GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT", "CLOUDSDK_CORE_PROJECT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    fake = FakeGce(project=PROJECT, first_host=230).start()
    monkeypatch.setenv("GPUJOB_GCP_API_ENDPOINT", fake.url)
    fast = dict(ssh_cidr="127.0.0.1/32", sleep=lambda s: time.sleep(min(s, 0.05)),
                detect_ip=lambda: pytest.fail("detect_ip must not be called with ssh_cidr set"))
    subs = {"aws": AwsProvider(session=fast_session(), **fast), "gcp": GcpProvider(project=PROJECT, **fast)}
    auto = AutoProvider(ssh_cidr="127.0.0.1/32", factory=lambda name, **cfg: subs[name])

    def boot(m):
        if m.provider == "gcp":
            return Sshd(tmp_path / f"sshd-{m.id}", authorized_keys=fake.authorized_keys(m.id), host=m.host,
                        port=free_port(m.host), host_key_pem=fake.host_key_pem(m.id)).start()
        return booted_sshd_for(m.id, tmp_path / f"sshd-{m.id}", region=m.region, port=free_port(m.host))

    e2e = E2E(auto, boot)
    try:
        yield fake, e2e
    finally:
        e2e.stop()
        fake.stop()


RESOURCES = "{accelerators: 'T4:1', regions: [us-east-1, us-west-2, us-central1]}"


@pytest.mark.sshd
def test_capacity_errors_on_aws_move_to_gcp_and_everything_is_released(clouds):
    require_sshd()
    fake, e2e = clouds
    with loopback_addresses(first=220), fail_run_instances({"*": "InsufficientInstanceCapacity"}):
        result = e2e.run(tiny_spec("auto-gcp", RESOURCES), ssh_cidr="127.0.0.1/32")
    assert_trained(e2e, result)
    tries = [(f["provider"], f["region"]) for k, f in e2e.events if k == "auto-try"]
    assert tries == [("aws", "us-east-1"), ("aws", "us-west-2"), ("gcp", "us-central1")]
    nexts = [f for k, f in e2e.events if k == "auto-next"]
    assert len(nexts) == 2 and "capacity" in nexts[0]["reason"].lower()
    assert nexts[-1]["next"] == "gcp n1-standard-8 in us-central1"
    (m,) = e2e.machines
    assert m.provider == "gcp" and m.instance_type == "n1-standard-8"
    rec = result.run
    assert rec.provider == "auto" and rec.estimate["provider"] == "gcp"  # re-estimated for the machine it got
    rows = e2e.runner.store.resources(rec.id, live_only=False)
    assert {r.provider for r in rows} == {"aws", "gcp"}  # the failed AWS attempts' resources, under AWS
    assert_store_released(e2e.runner.store, rec.id, {"instance", "firewall"})
    assert fake.leftovers() == []
    import boto3

    for region in ("us-east-1", "us-west-2"):
        c = boto3.client("ec2", region_name=region)
        assert [g["GroupName"] for g in c.describe_security_groups()["SecurityGroups"] if g["GroupName"] != "default"] == []
        assert c.describe_key_pairs()["KeyPairs"] == []


def test_every_offer_failing_is_one_capacity_error_and_nothing_is_left(clouds):
    fake, e2e = clouds
    fake.quota_exceeded("us-central1-a", metric="NVIDIA_T4_GPUS")
    fake.quota_exceeded("us-central1-b", metric="NVIDIA_T4_GPUS")
    fake.quota_exceeded("us-central1-c", metric="NVIDIA_T4_GPUS")
    fake.quota_exceeded("us-central1-f", metric="NVIDIA_T4_GPUS")
    with loopback_addresses(first=240), fail_run_instances({"*": "InsufficientInstanceCapacity"}):
        with pytest.raises(CapacityError, match="none of 6 offers") as info:
            e2e.run(tiny_spec("auto-none", RESOURCES))
    msg = str(info.value)
    assert "NVIDIA_T4_GPUS" in msg and "aws g4dn.xlarge in us-west-2 (no on-demand capacity" in msg
    assert len(msg) < 1200  # one line a person can read, not every zone's error
    assert e2e.machines == []
    rec = e2e.runner.store.list_runs()[0]
    assert rec.state == "launch-failed"
    assert all(r.state == "deleted" for r in e2e.runner.store.resources(rec.id, live_only=False))
    assert fake.leftovers() == []
