"""`gpujob run --provider aws` end to end: the real Runner and AwsProvider under moto, the
"instance" a real sshd on its 127.0.0.x address presenting the host key from the user data."""

from __future__ import annotations

import time

import pytest

pytest.importorskip("boto3")
pytest.importorskip("moto")

from launcher.errors import QuotaError  # noqa: E402
from launcher.providers.aws.launch import AwsProvider  # noqa: E402
from launcher.providers.base import TAG_RUN  # noqa: E402
from tests.aws_fixtures import (  # noqa: E402, F401
    aws,
    aws_env,
    booted_sshd_for,
    fail_run_instances,
    fast_session,
    loopback_addresses,
)
from tests.e2e_support import (  # noqa: E402
    E2E,
    REPO,
    assert_store_released,
    assert_torn_down_cleanly,
    assert_trained,
    guard_loopback,
    isolate,
    require_sshd,
    run_failing_job,
    tiny_spec,
)
from tests.sshd import free_port  # noqa: E402

R = "us-east-1"
RESOURCES = "{accelerators: 'T4:1', regions: [us-east-1]}"  # g4dn.xlarge from the bundled catalog
AWS_KINDS = {"key-pair", "security-group", "instance"}


@pytest.fixture
def e2e(aws, tmp_path, monkeypatch):
    """An E2E runner on a moto-backed AwsProvider; machines boot as sshd on 127.0.0.x:<free port>."""
    guard_loopback(monkeypatch)
    isolate(tmp_path, monkeypatch)
    provider = AwsProvider(regions=[R], ssh_cidr="127.0.0.1/32", session=fast_session(),
                           sleep=lambda s: time.sleep(min(s, 0.05)),
                           detect_ip=lambda: pytest.fail("detect_ip must not be called with ssh_cidr set"))

    def boot(m):
        # the real machine listens on 22; a free port keeps tests parallel-safe
        return booted_sshd_for(m.id, tmp_path / f"sshd-{m.id}", region=m.region, port=free_port(m.host))

    run = E2E(provider, boot)
    try:
        yield run
    finally:
        run.stop()


def ec2():
    import boto3

    return boto3.client("ec2", region_name=R)


def assert_nothing_left(e2e: E2E, run_id: str) -> None:
    """moto holds no live instance, security group or key pair of ours; the store agrees."""
    assert e2e.provider.find([R]) == []
    c = ec2()
    live = c.describe_instances(Filters=[{"Name": "instance-state-name", "Values": ["pending", "running"]}])
    assert [i["InstanceId"] for r in live["Reservations"] for i in r["Instances"]] == []
    assert c.describe_security_groups(Filters=[{"Name": "tag-key", "Values": [TAG_RUN]}])["SecurityGroups"] == []
    assert [g["GroupName"] for g in c.describe_security_groups()["SecurityGroups"] if g["GroupName"] != "default"] == []
    assert c.describe_key_pairs()["KeyPairs"] == []
    assert_store_released(e2e.runner.store, run_id, AWS_KINDS)


@pytest.mark.sshd
def test_aws_run_trains_streams_fetches_and_tears_down(e2e):
    require_sshd()
    with loopback_addresses(first=150):
        result = e2e.run(tiny_spec("tiny-aws", RESOURCES), ssh_cidr="127.0.0.1/32")
    assert_trained(e2e, result)
    (m,) = e2e.machines
    assert m.host == "127.0.0.150" and m.instance_type == "g4dn.xlarge" and m.region == R
    assert result.run.machine["host"] == m.host
    assert_torn_down_cleanly(e2e)
    assert_nothing_left(e2e, result.run.id)


@pytest.mark.sshd
def test_aws_failing_job_is_reported_and_still_torn_down(e2e, tmp_path):
    require_sshd()
    with loopback_addresses(first=160):
        rec = run_failing_job(e2e, tmp_path / "project", "fail-aws", RESOURCES)
    assert_nothing_left(e2e, rec.id)


def test_aws_quota_error_leaves_nothing_and_says_which_quota(e2e):
    with loopback_addresses(first=170), fail_run_instances({"*": ("VcpuLimitExceeded", "You have requested more "
                                                                  "vCPU capacity than your current vCPU limit")}):
        with pytest.raises(QuotaError) as info:
            e2e.run(tiny_spec("quota-aws", RESOURCES))
    err = info.value
    assert "G and VT" in str(err) and "g4dn.xlarge" in str(err) and R in str(err)
    assert "quota" in (err.hint or "").lower()
    assert e2e.machines == [] and e2e.sshds == []  # it never "booted"
    assert [k for k in e2e.kinds() if k == "quota-failed"] == ["quota-failed"]
    rec = e2e.runner.store.list_runs()[0]
    assert rec.state == "launch-failed" and "quota" in rec.reason
    assert_nothing_left(e2e, rec.id)


def test_cli_dry_run_prints_the_plan_and_creates_nothing(aws, monkeypatch, tmp_path):
    """`gpujob run jobs/vgg16.yaml --provider aws --dry-run` with no usable credentials."""
    from typer.testing import CliRunner

    from launcher.cli import app

    guard_loopback(monkeypatch)
    monkeypatch.setenv("GPUJOB_HOME", str(tmp_path / "gpujob-home"))
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(var, "")
    calls: list[str] = []
    import botocore.client

    real_call = botocore.client.BaseClient._make_api_call

    def record(self, operation, params):
        calls.append(operation)
        return real_call(self, operation, params)

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", record)
    result = CliRunner().invoke(app, ["run", str(REPO / "jobs" / "vgg16.yaml"), "--provider", "aws", "--dry-run"])
    assert result.exit_code == 0, result.output
    out = result.output
    for needle in ("dry run", "p3.2xlarge", "us-east-1", "us-west-2", "use1-az1", "SSM parameter",
                   "3.06", "estimate", "22/tcp from your address /32", "watchdog", "shutdown -h",
                   "InstanceInitiatedShutdownBehavior=terminate"):
        assert needle in out, needle
    assert calls == []  # not even a describe
    import boto3

    for region in ("us-east-1", "us-west-2"):
        c = boto3.client("ec2", region_name=region, aws_access_key_id="x", aws_secret_access_key="x")
        assert c.describe_instances()["Reservations"] == []
        assert [g for g in c.describe_security_groups()["SecurityGroups"] if g["GroupName"] != "default"] == []
        assert c.describe_key_pairs()["KeyPairs"] == []


@pytest.mark.sshd
def test_credentials_rejected_mid_run_leave_a_leftovers_run_that_names_the_cause(e2e, monkeypatch):
    """The cloud starts refusing our key once the job runs (moto's IAM enforcement): teardown
    reports only what it could not confirm, with why; the run says `leftovers` with the gc
    command and keeps counting time; `down` with working credentials releases it."""
    require_sshd()
    from moto import settings

    from launcher.errors import TeardownError

    monkeypatch.setattr(settings, "INITIAL_NO_AUTH_ACTION_COUNT", float("inf"))
    emit = e2e.runner.on_event

    def on_event(kind, **fields):
        emit(kind, **fields)
        if kind == "job-started":  # from here on AWS rejects the fixtures' unknown key
            settings.INITIAL_NO_AUTH_ACTION_COUNT = 0

    e2e.runner.on_event = on_event
    with loopback_addresses(first=180):
        with pytest.raises(TeardownError) as info:
            e2e.run(tiny_spec("creds-aws", RESOURCES), ssh_cidr="127.0.0.1/32")
    (m,) = e2e.machines
    assert f"instance {m.id}" in str(info.value) and "AWS rejected our credentials" in str(info.value)
    rec = e2e.runner.store.list_runs()[0]
    assert rec.state == "leftovers" and not rec.state == "interrupted"
    assert "AWS rejected our credentials" in rec.reason and f"cannot confirm {m.id} is gone" in rec.reason
    assert "run: gpujob gc --provider aws --region us-east-1 --yes" in rec.reason
    assert rec.ended_at is None and rec.billed_seconds(rec.launched_at + 3600) == 3600  # still counting
    settings.INITIAL_NO_AUTH_ACTION_COUNT = float("inf")  # the user fixes the credentials
    e2e.runner.down(rec.id)
    rec = e2e.runner.store.get_run(rec.id)
    assert rec.state == "released" and rec.ended_at is not None
    assert_nothing_left(e2e, rec.id)


def test_ls_shows_a_leftovers_run_with_its_gc_command(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from launcher.cli import app
    from launcher.store import Store

    monkeypatch.setenv("GPUJOB_HOME", str(tmp_path))
    store = Store()
    store.create_run("rleft1", "job", "aws", spec_path=None, spec_text=None, spec={}, provider_config={})
    store.update_run("rleft1", launched_at=time.time() - 120, price_per_hour=3.6)
    reason = ("1 resource(s) not confirmed gone; instance i-0abc: AWS rejected our credentials (AuthFailure): "
              "cannot confirm i-0abc is gone; run: gpujob gc --provider aws --region us-east-1 --yes")
    store.set_state("rleft1", "leftovers", reason)
    out = CliRunner().invoke(app, ["ls"], env={"COLUMNS": "200"}).output
    assert "leftovers" in out and "gpujob gc --provider aws --region us-east-1 --yes" in out
    rows = __import__("json").loads(CliRunner().invoke(app, ["ls", "--json"]).output)
    assert rows[0]["state"] == "leftovers" and rows[0]["elapsed_s"] >= 120 and rows[0]["spent_usd"] > 0.1
