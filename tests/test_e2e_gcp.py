"""`gpujob run --provider gcp` end to end: the real Runner and GcpProvider (google-cloud-compute)
against tests/fake_gce.py, the VM a real sshd on its natIP presenting the startup-script host key."""

from __future__ import annotations

import time

import pytest

pytest.importorskip("google.cloud.compute_v1")

from launcher.errors import QuotaError  # noqa: E402
from launcher.providers.gcp.launch import GcpProvider  # noqa: E402
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
from tests.fake_gce import FakeGce  # noqa: E402
from tests.sshd import Sshd, free_port  # noqa: E402

PROJECT = "test-project"
RESOURCES = "{accelerators: 'T4:1', regions: [us-central1]}"  # n1-standard-8 + T4 from the bundled catalog
GCP_KINDS = {"firewall", "instance"}


def fake_for(monkeypatch, first_host: int) -> FakeGce:
    """A started fake whose VMs get 127.0.0.<first_host>..; the provider is pointed at it."""
    fake = FakeGce(project=PROJECT, first_host=first_host).start()
    monkeypatch.setenv("GPUJOB_GCP_API_ENDPOINT", fake.url)  # loopback http: anonymous credentials
    return fake


def make_e2e(fake: FakeGce, tmp_path) -> E2E:
    provider = GcpProvider(project=PROJECT, ssh_cidr="127.0.0.1/32", sleep=lambda s: time.sleep(min(s, 0.05)),
                           detect_ip=lambda: pytest.fail("detect_ip must not be called with ssh_cidr set"))

    def boot(m):
        # the VM's sshd: its natIP, the key from ssh-keys, the host key from the startup script
        return Sshd(tmp_path / f"sshd-{m.id}", authorized_keys=fake.authorized_keys(m.id), host=m.host,
                    port=free_port(m.host), host_key_pem=fake.host_key_pem(m.id)).start()

    return E2E(provider, boot)


@pytest.fixture
def e2e_env(tmp_path, monkeypatch):
    guard_loopback(monkeypatch)
    isolate(tmp_path, monkeypatch)
    for var in ("GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT", "CLOUDSDK_CORE_PROJECT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))  # no ADC file either


@pytest.fixture
def start(e2e_env, tmp_path, monkeypatch):
    """start(first_host) -> (fake, e2e); each test takes its own 127.0.0.x block. Both stop at the end."""
    made: list[tuple[FakeGce, E2E]] = []

    def _start(first_host: int) -> tuple[FakeGce, E2E]:
        fake = fake_for(monkeypatch, first_host)
        made.append((fake, make_e2e(fake, tmp_path)))
        return made[-1]

    yield _start
    for fake, run in made:
        run.stop()
        fake.stop()


def assert_nothing_left(fake: FakeGce, e2e: E2E, run_id: str) -> None:
    assert fake.leftovers() == []
    assert e2e.provider.find(None) == []
    assert_store_released(e2e.runner.store, run_id, GCP_KINDS)


@pytest.mark.sshd
def test_gcp_run_trains_streams_fetches_and_tears_down(start):
    require_sshd()
    fake, e2e = start(180)
    result = e2e.run(tiny_spec("tiny-gcp", RESOURCES))
    assert_trained(e2e, result)
    (m,) = e2e.machines
    assert m.host == "127.0.0.180" and m.instance_type == "n1-standard-8" and m.zone.startswith("us-central1-")
    (fw,) = fake.inserted("firewalls")
    assert fw["sourceRanges"] == ["127.0.0.1/32"]
    (body,) = fake.inserted("instances")
    assert body["scheduling"]["instanceTerminationAction"] == "DELETE"
    assert_torn_down_cleanly(e2e)
    assert_nothing_left(fake, e2e, result.run.id)


@pytest.mark.sshd
def test_gcp_failing_job_is_reported_and_still_torn_down(start, tmp_path):
    require_sshd()
    fake, e2e = start(190)
    rec = run_failing_job(e2e, tmp_path / "project", "fail-gcp", RESOURCES)
    assert_nothing_left(fake, e2e, rec.id)


def test_gcp_quota_error_leaves_nothing_and_says_which_quota(start):
    fake, e2e = start(200)
    fake.quota_exceeded("us-central1-a", metric="NVIDIA_T4_GPUS")
    with pytest.raises(QuotaError) as info:
        e2e.run(tiny_spec("quota-gcp", RESOURCES))
    err = info.value
    assert "NVIDIA_T4_GPUS" in str(err) and "us-central1" in str(err)
    assert "quota" in (err.hint or "").lower()
    assert e2e.machines == [] and e2e.sshds == []
    assert len(fake.inserted("instances")) == 1  # a quota stops; it does not walk every zone
    rec = e2e.runner.store.list_runs()[0]
    assert rec.state == "launch-failed" and "NVIDIA_T4_GPUS" in rec.reason
    assert_nothing_left(fake, e2e, rec.id)


def test_cli_dry_run_prints_the_plan_and_calls_no_api(e2e_env, monkeypatch):
    """`gpujob run jobs/vgg16.yaml --provider gcp --dry-run` with no ADC: the plan, no request at all."""
    from typer.testing import CliRunner

    from launcher.cli import app

    fake = fake_for(monkeypatch, 210)
    try:
        result = CliRunner().invoke(app, ["run", str(REPO / "jobs" / "vgg16.yaml"), "--provider", "gcp", "--dry-run"])
        assert result.exit_code == 0, result.output
        out = result.output
        for needle in ("dry run", "n1-standard-8", "V100", "nvidia-tesla-v100", '["us-central1-a", "us-central1-b"',
                       "pytorch-2-9-cu129", "2.86", "tcp:22", "(your address)/32", "maxRunDuration_s",
                       '"instanceTerminationAction": "DELETE"', fake.url):
            assert needle in out, needle
        assert fake.requests == []  # no insert, not even a read
    finally:
        fake.stop()
