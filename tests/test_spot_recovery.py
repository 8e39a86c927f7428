"""Spot recovery end to end (issue 14, part 5): a reclaimed spot machine is released and replaced,
the payload resumes from the checkpoint the client pulled home, and every attempt is billed.

The real Runner, AwsProvider (moto) and GcpProvider (tests/fake_gce.py); each "instance" is a real
sshd on its 127.0.0.x address running the real trainer (payloads/train.py) on a tiny model whose
forward pass sleeps 50 ms, so a run lasts long enough (6 s or more) to be reclaimed between its first pulled
checkpoint and its end whatever the load. A reclaim is what the cloud does: the instance is
terminated with the spot reason (moto) or deleted (fake GCE), its sshd and processes vanish.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

pytest.importorskip("moto")
pytest.importorskip("google.cloud.compute_v1")
pytest.importorskip("google.cloud.storage")

from launcher.checkpoints import local_path  # noqa: E402
from launcher.errors import Interrupted, JobFailed, MachineGone  # noqa: E402
from launcher.estimate.billing import bill_usd  # noqa: E402
from launcher.providers.aws.launch import AwsProvider  # noqa: E402
from launcher.providers.gcp.launch import GcpProvider  # noqa: E402
from launcher.runner import RunOptions  # noqa: E402
from launcher.spec import parse_spec  # noqa: E402
from tests.aws_fixtures import (  # noqa: E402, F401
    aws,
    aws_env,
    booted_sshd_for,
    fast_session,
    loopback_addresses,
    spot_interrupt,
)
from tests.e2e_support import E2E, assert_store_released, guard_loopback, isolate, require_sshd  # noqa: E402
from launcher.providers.gcp.selection import STORAGE_RW_SCOPE  # noqa: E402
from tests.fake_gce import FakeGce  # noqa: E402
from tests.fake_gcs import FakeGcs  # noqa: E402
from tests.sshd import Sshd, free_port  # noqa: E402

R = "us-east-1"
PROJECT = "test-project"
STEPS = 120  # 7,680 samples / 64 per step: 6 s of 50 ms steps at least
SLOW_MODEL = ("import time\nimport torch\n\n\nclass Slow(torch.nn.Module):\n"
              "    def __init__(self):\n        super().__init__()\n"
              "        self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))\n\n"
              "    def forward(self, x):\n        time.sleep(0.05)\n        return self.net(x)\n\n\n"
              "def build():\n    return Slow()\n")


def spot_spec(name: str, accelerators: str, region: str, limits: str = "", resources: str = "", extra: str = ""):
    import sys

    return parse_spec(
        f"name: {name}\n{extra}"
        "workload: {model: 'slow.py:build', input_shape: [1, 8, 8], num_classes: 10, dataset: digits, "
        f"samples_per_epoch: {STEPS * 64}, epochs: 1, batch_size: 64, precision: fp32}}\n"
        f"payload: {{python: {sys.executable}}}\n"
        f"resources: {{accelerators: '{accelerators}', regions: [{region}], spot: true{resources}}}\n"
        f"limits: {{max_duration: 5m, checkpoint_every: 0.5s{limits}}}\n")


class Cloud:
    """An E2E run plus the test's hand on the cloud: reclaim the current machine on a trigger."""

    def __init__(self, e2e: E2E, reclaim_cloud):
        self.e2e, self.reclaim_cloud = e2e, reclaim_cloud
        self.reclaims = 0
        self.reclaim_attempts: set[int] = {1}  # which attempts get reclaimed (at their first pulled checkpoint)
        self.on: dict[str, object] = {}  # event kind -> extra action
        self.attempt = 0
        self.offset = 0.0  # added to the runner's clock: billed hours without waiting for them
        runner = e2e.runner
        runner.clock = lambda: time.time() + self.offset
        record = runner.on_event

        def on_event(kind, **f):
            record(kind, **f)
            if kind == "job-started":
                self.attempt += 1
            if kind == "checkpoint-pulled" and self.attempt in self.reclaim_attempts and self.reclaims < self.attempt:
                self.reclaim(f["run_id"])
            action = self.on.get(kind)
            if action is not None:
                action(**f)

        runner.on_event = on_event

    def reclaim(self, run_id: str) -> None:
        """The cloud takes the machine back: its record says why, its sshd and processes vanish."""
        self.reclaims += 1
        self.reclaim_cloud(self.e2e.machines[-1])
        self.e2e.sshds[-1].stop()
        pid = self.e2e.runner.store.get_run(run_id).machine["pid"]
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def reclaim_once_in_bucket(self, in_bucket) -> None:
        """checkpoint_store runs: reclaim attempt 1 at its first checkpoint once ``in_bucket(run_id)``
        says the machine's uploader put it in the bucket (it looks every checkpoint_every)."""
        def reclaim_once_uploaded(event, run_id, **_):
            if event.get("event") == "checkpoint" and self.attempt == 1 and not self.reclaims:
                for _ in range(200):
                    if in_bucket(run_id):
                        return self.reclaim(run_id)
                    time.sleep(0.05)

        self.on["payload"] = reclaim_once_uploaded

    def run(self, spec, **opts):
        config = {"ssh_cidr": "127.0.0.1/32"}
        return self.e2e.runner.run(spec, RunOptions(provider=self.e2e.provider.name, provider_config=config,
                                                    baseline=False, launch_deadline_s=60, ssh_deadline_s=30,
                                                    poll_every_s=0.2, **opts))

    def payload_events(self, kind: str) -> list[dict]:
        return [f["event"] for k, f in self.e2e.events if k == "payload" and f["event"].get("event") == kind]


@pytest.fixture
def on_aws(aws, tmp_path, monkeypatch):
    guard_loopback(monkeypatch)
    project = isolate(tmp_path, monkeypatch)
    (project / "slow.py").write_text(SLOW_MODEL)
    provider = AwsProvider(regions=[R], ssh_cidr="127.0.0.1/32", session=fast_session(),
                           sleep=lambda s: time.sleep(min(s, 0.05)),
                           detect_ip=lambda: pytest.fail("detect_ip must not be called with ssh_cidr set"))

    def boot(m):
        return booted_sshd_for(m.id, tmp_path / f"sshd-{m.id}", region=m.region, port=free_port(m.host))

    e2e = E2E(provider, boot)
    try:
        yield Cloud(e2e, lambda m: spot_interrupt(m.id, m.region))
    finally:
        e2e.stop()


def aws_nothing_left(cloud: Cloud, run_id: str) -> None:
    import boto3

    c = boto3.client("ec2", region_name=R)
    live = c.describe_instances(Filters=[{"Name": "instance-state-name", "Values": ["pending", "running"]}])
    assert [i["InstanceId"] for r in live["Reservations"] for i in r["Instances"]] == []
    assert [g["GroupName"] for g in c.describe_security_groups()["SecurityGroups"] if g["GroupName"] != "default"] == []
    assert c.describe_key_pairs()["KeyPairs"] == []
    assert cloud.e2e.provider.find([R]) == []
    assert_store_released(cloud.e2e.runner.store, run_id, {"key-pair", "security-group", "instance"})


def assert_resumed(cloud: Cloud, rec) -> None:
    """The last attempt started from the pulled checkpoint and trained to the full step count."""
    (start1, start2) = cloud.payload_events("start")
    assert start1.get("resumed_from_step") is None
    assert 0 < start2["resumed_from_step"] < STEPS
    end = rec.result["end"]
    assert end["status"] == "ok" and end["steps"] == STEPS and end["samples"] == STEPS * 64


@pytest.mark.sshd
def test_aws_reclaimed_spot_run_resumes_on_a_new_instance_and_bills_both(on_aws):
    require_sshd()
    with loopback_addresses(first=60):
        result = on_aws.run(spot_spec("spot-aws", "T4:1", R))
    rec = result.run
    assert rec.state == "succeeded", rec.reason
    first, second = on_aws.e2e.machines
    assert first.id != second.id and first.spot and second.spot
    assert second.zone != first.zone  # the next zone the provider offers
    assert_resumed(on_aws, rec)
    (att,) = rec.attempts
    assert att["instance_id"] == first.id and att["end_reason"] == "spot-interrupted" and att["market"] == "spot"
    assert rec.machine["id"] == second.id
    # every attempt billed at its own price and minimum, in the report, `gpujob cost` and `ls`
    rows = result.report["attempts"]
    assert [r["instance_id"] for r in rows] == [first.id, second.id]
    total = sum(bill_usd(r["seconds"], r["price_per_hour"], "aws") for r in rows)
    assert result.report["actual"]["usd"] == pytest.approx(total) and total >= 2 * bill_usd(1, second.price_per_hour, "aws")
    assert rec.billed_seconds() == pytest.approx(sum(r["seconds"] for r in rows))
    from launcher.costs import cost_report

    assert cost_report(on_aws.e2e.runner.store)["runs"][0]["actual_usd"] == pytest.approx(total)
    assert (local_path(on_aws.e2e.runner.store.run_dir(rec.id))).is_file()
    aws_nothing_left(on_aws, rec.id)


@pytest.mark.sshd
def test_aws_budget_counts_every_attempt(on_aws):
    """Attempt 1 bills one (virtual) hour, under the budget; attempt 2's hour crosses it: the
    budget watch stops the job because the two together reached it."""
    require_sshd()
    price = on_aws.e2e.provider.choose(spot_spec("x", "T4:1", R)).price
    budget = round(price * 1.5, 4)

    def hour_passes(final=False, **_):
        if not final:
            on_aws.offset += 3600.0

    on_aws.on["teardown"] = hour_passes  # attempt 1 ran an hour before its release
    on_aws.on["checkpoint-uploaded"] = hour_passes  # attempt 2 runs an hour
    with loopback_addresses(first=66), pytest.raises(JobFailed) as info:
        on_aws.run(spot_spec("budget-aws", "T4:1", R, limits=f", budget_usd: {budget}"), force=True)
    rec = on_aws.e2e.runner.store.get_run(info.value.run_id)
    assert rec.state == "failed" and "budget" in rec.reason, rec.reason
    (att,) = rec.attempts
    assert att["price_per_hour"] * att["seconds"] / 3600 < budget <= rec.spent_usd()
    assert len(on_aws.e2e.machines) == 2
    aws_nothing_left(on_aws, rec.id)


@pytest.mark.sshd
def test_aws_exhausted_restarts_exit_10_with_the_checkpoint_safe(on_aws):
    require_sshd()
    on_aws.reclaim_attempts = {1, 2}
    with loopback_addresses(first=72), pytest.raises(MachineGone) as info:
        on_aws.run(spot_spec("spent-aws", "T4:1", R, limits=", max_restarts: 1"))
    err = info.value
    rec = on_aws.e2e.runner.store.get_run(err.run_id)
    ckpt = local_path(on_aws.e2e.runner.store.run_dir(rec.id))
    assert err.exit_code == 10 and rec.state == "spot-interrupted"
    assert "2 attempts ran" in str(err) and "max_restarts (1) used" in str(err) and str(ckpt) in str(err)
    import torch

    assert torch.load(ckpt, weights_only=False)["step"] > 0  # a whole checkpoint, not a partial copy
    assert [a["end_reason"] for a in rec.attempts] == ["spot-interrupted", "spot-interrupted"]
    assert len(on_aws.e2e.machines) == 2
    aws_nothing_left(on_aws, rec.id)


@pytest.mark.sshd
def test_aws_signal_during_recovery_releases_everything(on_aws):
    require_sshd()

    def ctrl_c(final=True, **_):
        if not final:  # releasing the reclaimed machine: the release completes, nothing new starts
            os.kill(os.getpid(), signal.SIGINT)

    on_aws.on["teardown"] = ctrl_c
    with loopback_addresses(first=78), pytest.raises(Interrupted) as info:
        on_aws.run(spot_spec("sig-aws", "T4:1", R))
    assert info.value.exit_code == 130
    (rec,) = on_aws.e2e.runner.store.list_runs()
    assert rec.state == "interrupted" and len(on_aws.e2e.machines) == 1
    aws_nothing_left(on_aws, rec.id)


@pytest.fixture
def on_gcp(tmp_path, monkeypatch):
    """Fake GCE (tests/fake_gce.py): each VM a loopback sshd; a reclaim is a preemption (deleted)."""
    require_sshd()
    guard_loopback(monkeypatch)
    project = isolate(tmp_path, monkeypatch)
    (project / "slow.py").write_text(SLOW_MODEL)
    for var in ("GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT", "CLOUDSDK_CORE_PROJECT", "STORAGE_EMULATOR_HOST"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    fake = FakeGce(project=PROJECT, first_host=84).start()
    monkeypatch.setenv("GPUJOB_GCP_API_ENDPOINT", fake.url)
    provider = GcpProvider(project=PROJECT, ssh_cidr="127.0.0.1/32", sleep=lambda s: time.sleep(min(s, 0.05)),
                           detect_ip=lambda: pytest.fail("detect_ip must not be called with ssh_cidr set"))

    def boot(m):
        return Sshd(tmp_path / f"sshd-{m.id}-{m.zone}", authorized_keys=fake.authorized_keys(m.id), host=m.host,
                    port=free_port(m.host), host_key_pem=fake.host_key_pem(m.id)).start()

    e2e = E2E(provider, boot)
    cloud = Cloud(e2e, lambda m: fake.preempt(m.id))
    cloud.fake = fake
    try:
        yield cloud
    finally:
        e2e.stop()
        fake.stop()


@pytest.mark.sshd
def test_gcp_preempted_spot_run_resumes_on_demand_after_max_restarts(on_gcp):
    """Fake GCE: the spot VM is preempted (deleted); with max_restarts 1 and spot_fallback
    on-demand the replacement is an on-demand VM, in another zone, resuming from the checkpoint."""
    e2e, fake = on_gcp.e2e, on_gcp.fake
    result = on_gcp.run(spot_spec("spot-gcp", "T4:1", "us-central1", limits=", max_restarts: 1",
                                  resources=", spot_fallback: on-demand"))
    rec = result.run
    assert rec.state == "succeeded", rec.reason
    first, second = e2e.machines
    assert first.spot and not second.spot and second.zone != first.zone
    sched = [i.get("scheduling", {}).get("provisioningModel") for i in fake.inserted()]
    assert sched[0] == "SPOT" and sched[-1] != "SPOT"
    assert all(i.get("serviceAccounts", []) == [] for i in fake.inserted())  # no checkpoint_store: no credentials
    assert_resumed(on_gcp, rec)
    assert [a["market"] for a in result.report["attempts"]] == ["spot", "on-demand"]
    assert fake.leftovers() == [] and e2e.provider.find(None) == []
    assert_store_released(e2e.runner.store, rec.id, {"firewall", "instance"})


@pytest.fixture
def gcs(monkeypatch):
    """A fake Cloud Storage endpoint with bucket ckpt-bucket; this process reaches it through
    STORAGE_EMULATOR_HOST, the "machine" through the spec's env (``gcs.env``)."""
    fake = FakeGcs().start()
    fake.create_bucket("ckpt-bucket")
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", fake.url)
    fake.env = f"env: {{STORAGE_EMULATOR_HOST: '{fake.url}'}}\n"
    try:
        yield fake
    finally:
        fake.stop()


@pytest.mark.sshd
def test_gcp_checkpoint_store_keeps_the_checkpoint_in_gcs_and_the_restart_reads_it(on_gcp, gcs):
    """checkpoint_store: gs://...: the preempted VM's uploader put the checkpoint in the bucket
    (the real google-cloud-storage client against tests/fake_gcs.py), nothing is pulled home, the
    replacement VM restores it and trains to the full step count; the VMs carry the storage scope."""
    on_gcp.reclaim_once_in_bucket(lambda run_id: f"runs/{run_id}/last.pt" in gcs.buckets["ckpt-bucket"])
    result = on_gcp.run(spot_spec("gs-gcp", "T4:1", "us-central1",
                                  extra=gcs.env + "checkpoint_store: gs://ckpt-bucket/runs\n"))
    rec = result.run
    assert rec.state == "succeeded", rec.reason
    assert on_gcp.reclaims == 1 and len(on_gcp.e2e.machines) == 2
    assert_resumed(on_gcp, rec)
    log = on_gcp.e2e.runner.store.log_text(rec.id)
    assert "checkpoint_sync: bucket ckpt-bucket reachable" in log
    assert f"checkpoint_sync: restored gs://ckpt-bucket/runs/{rec.id}/last.pt" in log
    assert not local_path(on_gcp.e2e.runner.store.run_dir(rec.id)).exists()  # kept in the bucket, not pulled
    (ev,) = [d for _, k, d in on_gcp.e2e.runner.store.events(rec.id) if k == "recovering"]
    assert ev["checkpoint"] == f"gs://ckpt-bucket/runs/{rec.id}/last.pt"
    import torch

    ckpt = on_gcp.e2e.runner.store.run_dir(rec.id) / "from-bucket.pt"
    ckpt.write_bytes(gcs.buckets["ckpt-bucket"][f"runs/{rec.id}/last.pt"])
    assert torch.load(ckpt, weights_only=False)["step"] == STEPS  # the last upload: the finished run's checkpoint
    assert ("POST", "/upload/storage/v1/b/ckpt-bucket/o", "multipart") in gcs.requests
    scopes = [i.get("serviceAccounts") for i in on_gcp.fake.inserted()]
    assert scopes == [[{"email": "default", "scopes": [STORAGE_RW_SCOPE]}]] * 2
    assert on_gcp.fake.leftovers() == [] and on_gcp.e2e.provider.find(None) == []


@pytest.mark.sshd
def test_gcp_checkpoint_store_without_its_bucket_fails_fast_with_one_line(on_gcp, gcs):
    """A gs:// bucket that does not exist: the first attempt's check stops the job before training
    (exit 3) and the log says which bucket in one line; nothing is left running."""
    with pytest.raises(JobFailed) as info:
        on_gcp.run(spot_spec("gs-missing", "T4:1", "us-central1",
                             extra=gcs.env + "checkpoint_store: gs://no-such-bucket/runs\n"))
    rec = on_gcp.e2e.runner.store.get_run(info.value.run_id)
    assert rec.state == "failed" and on_gcp.attempt == 1 and len(on_gcp.e2e.machines) == 1
    lines = [ln for ln in on_gcp.e2e.runner.store.log_text(rec.id).splitlines() if "checkpoint_sync" in ln]
    assert len(lines) == 1 and lines[0].startswith("checkpoint_sync: cannot use bucket gs://no-such-bucket: 404"), lines
    assert on_gcp.payload_events("start") == []  # no step trained without a place for the checkpoint
    assert on_gcp.fake.leftovers() == [] and on_gcp.e2e.provider.find(None) == []


@pytest.mark.sshd
def test_aws_checkpoint_store_keeps_the_checkpoint_in_s3_and_the_restart_reads_it(on_aws):
    """checkpoint_store: s3://...: the machine uploads the checkpoint to the bucket (moto S3, reached
    from the "machine" through a moto server on loopback), nothing is pulled to the client, and the
    replacement machine restores it from the bucket before resuming."""
    require_sshd()
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    try:
        host, port = server.get_host_and_port()
        s3 = boto3.client("s3", region_name=R)
        s3.create_bucket(Bucket="ckpt-bucket")
        env = (f"env: {{AWS_ENDPOINT_URL: 'http://{host}:{port}', AWS_ACCESS_KEY_ID: testing, "
               f"AWS_SECRET_ACCESS_KEY: testing, AWS_DEFAULT_REGION: {R}}}\ncheckpoint_store: s3://ckpt-bucket/runs\n")

        def in_bucket(run_id: str) -> bool:
            return s3.list_objects_v2(Bucket="ckpt-bucket", Prefix=f"runs/{run_id}/").get("KeyCount", 0) > 0

        on_aws.reclaim_once_in_bucket(in_bucket)
        with loopback_addresses(first=90):
            result = on_aws.run(spot_spec("s3-aws", "T4:1", R, extra=env))
        rec = result.run
        assert rec.state == "succeeded", rec.reason
        assert on_aws.reclaims == 1 and len(on_aws.e2e.machines) == 2
        assert_resumed(on_aws, rec)
        log = on_aws.e2e.runner.store.log_text(rec.id)
        assert "checkpoint_sync: bucket ckpt-bucket reachable" in log and "checkpoint_sync: restored s3://" in log
        assert not local_path(on_aws.e2e.runner.store.run_dir(rec.id)).exists()  # kept in the bucket, not pulled
        (ev,) = [d for _, k, d in on_aws.e2e.runner.store.events(rec.id) if k == "recovering"]
        assert ev["checkpoint"] == f"s3://ckpt-bucket/runs/{rec.id}/last.pt"
        aws_nothing_left(on_aws, rec.id)
    finally:
        server.stop()

