"""Offers that can launch: every offer carries its CPU architecture and the image matches it
(the arm64 Deep Learning AMI for Graviton types); what no image of ours can boot is left out."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

pytest.importorskip("boto3")
pytest.importorskip("moto")

from launcher.catalog.gpus import get_gpu  # noqa: E402
from launcher.catalog.model import Catalog, Offer, make_provenance  # noqa: E402
from launcher.errors import ProviderError  # noqa: E402
from launcher.estimate.table import estimate  # noqa: E402
from launcher.providers.aws.common import DLAMI_SSM_PARAMETERS, arch_of  # noqa: E402
from launcher.providers.aws.launch import AwsProvider  # noqa: E402
from tests.aws_fixtures import ACCOUNT, aws, aws_env, fast_session, make_ctx, set_image_arch  # noqa: E402, F401


def _register_arm64_dlami(region: str = "us-east-1") -> str:
    import boto3
    from moto.ssm.models import Parameter, ssm_backends

    ami = boto3.client("ec2", region_name=region).register_image(
        Name="gpujob-test-dlami-arm64", RootDeviceName="/dev/sda1", Architecture="arm64",
        VirtualizationType="hvm")["ImageId"]
    set_image_arch(region, ami, "arm64")
    name = DLAMI_SSM_PARAMETERS["arm64"]
    ssm_backends[ACCOUNT][region]._parameters[name] = [Parameter(
        account_id=ACCOUNT, name=name, value=ami, parameter_type="String", description=None, allowed_pattern=None,
        keyid=None, last_modified_date=datetime.now(timezone.utc), version=1, data_type="aws:ec2:image")]
    return ami


def test_arch_from_catalog_or_family_name():
    assert arch_of("g5g.xlarge") == "arm64" and arch_of("c7gd.large") == "arm64"
    assert arch_of("g5.xlarge") == "x86_64" and arch_of("p4d.24xlarge") == "x86_64" and arch_of("g4dn.xlarge") == "x86_64"
    assert arch_of("anything.large", "arm64") == "arm64"


def test_graviton_dry_run_plan_uses_the_arm64_dlami():
    from launcher.catalog import load_catalog

    ctx = make_ctx(instance_type="g5g.xlarge", regions=["us-east-1"])
    plan = AwsProvider(regions=["us-east-1"], catalog=load_catalog()).plan(ctx.spec, ctx)
    assert plan["arch"] == "arm64" and "/arm64/" in plan["image"] and "x86_64" not in plan["image"]
    ctx = make_ctx(instance_type="g5.xlarge", regions=["us-east-1"])
    plan = AwsProvider(regions=["us-east-1"], catalog=load_catalog()).plan(ctx.spec, ctx)
    assert plan["arch"] == "x86_64" and "/x86_64/" in plan["image"]


def test_graviton_launch_boots_the_arm64_image(aws):
    ami = _register_arm64_dlami()
    ctx = make_ctx(instance_type="g5g.xlarge", regions=["us-east-1"])
    m = AwsProvider(regions=["us-east-1"], session=fast_session()).launch(ctx.spec, ctx, 60)
    assert m.extra["image_id"] == ami
    import boto3

    inst = boto3.client("ec2", region_name="us-east-1").describe_instances(InstanceIds=[m.id])
    assert inst["Reservations"][0]["Instances"][0]["ImageId"] == ami


def test_an_image_of_the_other_arch_is_refused_before_anything_is_created(aws):
    from tests.aws_fixtures import known_ami

    ctx = make_ctx(instance_type="g5g.xlarge", regions=["us-east-1"], image_id=known_ami("us-east-1"))
    with pytest.raises(ProviderError, match="is x86_64 but g5g.xlarge is arm64"):
        AwsProvider(regions=["us-east-1"], session=fast_session()).launch(ctx.spec, ctx, 60)
    assert ctx.intents == []


def _offer(provider, itype, gpu, price, arch="x86_64", region="us-east-1"):
    return Offer(provider, itype, region, (f"{region}-a",), gpu, 1, 8, 64, get_gpu(gpu).memory_gib, price, price / 3,
                 arch=arch)


def test_estimate_rows_carry_arch_and_leave_out_what_cannot_boot():
    from launcher.spec import parse_spec

    cat = Catalog([_offer("aws", "g5g.xlarge", "T4g", 0.42, "arm64"), _offer("aws", "g4dn.xlarge", "T4", 0.526),
                   _offer("gcp", "imaginary-arm-1", "T4", 0.10, "arm64", "us-central1"),
                   _offer("gcp", "n1-standard-4", "T4", 0.55, region="us-central1")],
                  make_provenance("t", "2026-01-01"))
    spec = parse_spec("name: t\nworkload: {model: resnet18, batch_size: 64}\n", check_catalog=False)
    est = estimate(spec, catalog=cat, show_all=True)
    arch = {c.instance_type: c.arch for c in est.candidates}
    assert arch["g5g.xlarge"] == "arm64" and arch["g4dn.xlarge"] == "x86_64"
    assert "imaginary-arm-1" not in arch and any("gcp arm64 offers left out" in n for n in est.notes)


def test_gcp_never_picks_an_arm64_machine_type():
    from launcher.providers.gcp.selection import choose_shape
    from launcher.spec import parse_spec

    cat = Catalog([_offer("gcp", "imaginary-arm-1", "T4", 0.10, "arm64", "us-central1"),
                   _offer("gcp", "n1-standard-4", "T4", 0.55, region="us-central1")], make_provenance("t", "2026-01-01"))
    spec = parse_spec("name: t\nresources: {accelerators: 'T4:1'}\n", check_catalog=False)
    assert choose_shape(spec, cat, ["us-central1"]).machine_type == "n1-standard-4"
