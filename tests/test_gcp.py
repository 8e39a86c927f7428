"""GcpProvider against tests/fake_gce.py, through the real google-cloud-compute client."""

from __future__ import annotations

import ipaddress
import itertools
import socket
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from launcher.errors import CapacityError, CredentialsError, ProviderError, QuotaError
from launcher.providers.base import TAG_JOB, TAG_RUN, Resource
from launcher.providers.gcp.launch import GcpProvider
from launcher.spec import JobSpec
from tests.fake_gce import FakeGce

ZONES_C = ("us-central1-a", "us-central1-b")
ZONES_E = ("us-east1-c",)


@dataclass(frozen=True)
class Offer:
    provider: str
    instance_type: str
    region: str
    zones: tuple[str, ...]
    gpu: str
    gpu_count: int
    price: float
    spot_price: float | None
    host_price: float
    accelerator_price: float


class TinyCatalog:
    """Two regions of T4 on n1-standard-8 and one A100 row; cheapest region us-central1."""

    def __init__(self) -> None:
        self.rows = [
            Offer("gcp", "n1-standard-8", "us-east1", ZONES_E, "T4", 1, 0.73, 0.25, 0.38, 0.35),
            Offer("gcp", "n1-standard-8", "us-central1", ZONES_C, "T4", 1, 0.70, 0.22, 0.38, 0.32),
            Offer("gcp", "a2-highgpu-1g", "us-central1", ZONES_C, "A100", 1, 3.67, 1.10, 0.74, 2.93),
        ]
        self.queries: list[dict] = []

    def query(self, provider: str, gpu: str, count: int, regions: list[str] | None = None, spot: bool = False) -> list[Offer]:
        self.queries.append(dict(provider=provider, gpu=gpu, count=count, regions=regions, spot=spot))
        return [o for o in self.rows if o.provider == provider and o.gpu == gpu and o.gpu_count == count
                and (not regions or o.region in regions)]


def _keypair() -> tuple[str, str]:
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                            serialization.NoEncryption()).decode()
    pub = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return pem, pub


class Ctx:
    """A RunContext that records what the provider announces."""

    _handles = itertools.count(1)

    def __init__(self, spec: JobSpec, run_id: str = "r-abc123", ssh_cidr: str | None = "203.0.113.7/32"):
        self.run_id, self.spec, self.ssh_cidr, self.owner = run_id, spec, ssh_cidr, "alice@example.com"
        self.host_key_private, self.host_key_public = _keypair()
        self.ssh_private_pem, self.ssh_public_key = _keypair()
        self.ssh_private_key_path = "/tmp/none"
        self.intents: dict[int, tuple[str, str, str | None]] = {}
        self.created_ids: dict[str, str] = {}  # id -> kind
        self.deleted_ids: list[str] = []
        self.events: list[tuple[str, dict]] = []

    def intent(self, kind: str, name: str, region: str | None = None) -> int:
        h = next(self._handles)
        self.intents[h] = (kind, name, region)
        return h

    def created(self, handle: int, resource_id: str) -> None:
        self.created_ids[resource_id] = self.intents[handle][0]

    def deleted(self, resource_id: str) -> None:
        self.deleted_ids.append(resource_id)

    def emit(self, event: str, **fields: Any) -> None:
        self.events.append((event, fields))

    def resources(self) -> list[Resource]:
        return [Resource("gcp", kind, rid, run_id=self.run_id) for rid, kind in self.created_ids.items()
                if rid not in self.deleted_ids]


def _spec(gpu: str = "T4:1", spot: bool = False, **res: Any) -> JobSpec:
    return JobSpec.model_validate({"name": "tiny-job", "resources": {"accelerators": gpu, "spot": spot,
                                                                     "regions": ["us-central1", "us-east1"], **res},
                                   "limits": {"max_duration": "1h"}})


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any connection to a non-loopback address fails the test (e.g. compute.googleapis.com)."""
    real_connect = socket.socket.connect

    def connect(self: socket.socket, address: Any) -> Any:
        host = address[0] if isinstance(address, tuple) else None
        if host is not None and not ipaddress.ip_address(host).is_loopback:
            pytest.fail(f"dialled {address}: tests may only reach loopback")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch):
    with FakeGce(project="test-project") as f:
        monkeypatch.setenv("GPUJOB_GCP_API_ENDPOINT", f.url)
        yield f


@pytest.fixture
def provider(fake: FakeGce) -> GcpProvider:
    return GcpProvider(project="test-project", catalog=TinyCatalog(), sleep=lambda s: None)


def _launch(provider: GcpProvider, spec: JobSpec, ctx: Ctx):
    return provider.launch(spec, ctx, deadline_s=60)


# --- the contract --------------------------------------------------------------------------


def test_contract_launch_poll_find_teardown_twice(provider: GcpProvider, fake: FakeGce) -> None:
    spec = _spec()
    ctx = Ctx(spec)
    m = _launch(provider, spec, ctx)
    assert m.provider == "gcp" and m.zone == "us-central1-a" and m.instance_type == "n1-standard-8"
    assert m.host and m.host.startswith("127.0.0.") and m.port == 22 and m.user == "gpujob"
    assert m.host_keys == [ctx.host_key_public.strip()]
    assert m.price_per_hour == pytest.approx(0.70)
    assert provider.poll(m) is None
    assert set(ctx.created_ids) == {"gpujob-r-abc123", "us-central1-a/gpujob-r-abc123"}
    found = provider.find(["us-central1"])
    assert {(r.kind, r.id, r.run_id) for r in found} == {
        ("instance", "us-central1-a/gpujob-r-abc123", "r-abc123"), ("firewall", "gpujob-r-abc123", "r-abc123")}
    assert all("gcloud compute" in r.delete_command and "--project test-project" in r.delete_command for r in found)
    assert provider.teardown(ctx.run_id, ctx.resources(), ctx) == []
    assert fake.leftovers() == []
    assert provider.poll(m) == "terminated"
    assert provider.teardown(ctx.run_id, ctx.resources(), ctx) == []  # idempotent: 404 is success
    assert provider.find(None) == []


def test_insert_body_guards_the_machine(provider: GcpProvider, fake: FakeGce) -> None:
    spec = _spec()
    ctx = Ctx(spec)
    _launch(provider, spec, ctx)
    body = fake.inserted()[0]
    sched = body["scheduling"]
    assert sched["maxRunDuration"] == {"seconds": str(3600 + 600)}
    assert sched["instanceTerminationAction"] == "DELETE"
    assert sched["onHostMaintenance"] == "TERMINATE"
    assert sched["provisioningModel"] == "STANDARD"
    assert body["guestAccelerators"] == [{"acceleratorType": "zones/us-central1-a/acceleratorTypes/nvidia-tesla-t4",
                                          "acceleratorCount": 1}]
    assert body["machineType"] == "zones/us-central1-a/machineTypes/n1-standard-8"
    assert body["tags"]["items"] == ["gpujob-r-abc123"]
    assert body["labels"][TAG_RUN] == "r-abc123" and body["labels"][TAG_JOB] == "tiny-job"
    assert body["labels"]["gpujob-owner"] == "alice-example-com"
    assert all(c.isdigit() for c in body["labels"]["gpujob-created"])
    disk = body["disks"][0]["initializeParams"]
    assert disk["diskSizeGb"] == "100"
    assert disk["sourceImage"].endswith("/global/images/pytorch-2-9-cu129-ubuntu-2204-nvidia-580-v20260416")
    meta = fake.metadata("gpujob-r-abc123")
    assert meta["ssh-keys"] == f"gpujob:{ctx.ssh_public_key}"
    assert meta["block-project-ssh-keys"] == "true" and meta["enable-oslogin"] == "FALSE"
    assert fake.host_key_pem("gpujob-r-abc123").strip() == ctx.host_key_private.strip()
    assert fake.authorized_keys("gpujob-r-abc123") == [ctx.ssh_public_key]
    assert ctx.host_key_public.strip() in meta["startup-script"]
    assert fake.instance("gpujob-r-abc123")["labels"][TAG_RUN] == "r-abc123"


def test_firewall_is_one_address_and_gone_after_teardown(provider: GcpProvider, fake: FakeGce) -> None:
    spec = _spec()
    ctx = Ctx(spec, ssh_cidr="198.51.100.4")
    _launch(provider, spec, ctx)
    (rule,) = fake.inserted("firewalls")
    assert rule["sourceRanges"] == ["198.51.100.4/32"]
    assert rule["allowed"] == [{"IPProtocol": "tcp", "ports": ["22"]}]
    assert rule["targetTags"] == ["gpujob-r-abc123"] and rule["direction"] == "INGRESS"
    assert "gpujob-run=r-abc123" in rule["description"]
    provider.teardown(ctx.run_id, ctx.resources(), ctx)
    assert fake.firewalls == {}


def test_wide_ssh_source_is_refused_before_anything_is_made(provider: GcpProvider, fake: FakeGce) -> None:
    spec = _spec()
    with pytest.raises(ProviderError, match="only one host"):
        _launch(provider, spec, Ctx(spec, ssh_cidr="0.0.0.0/0"))
    assert fake.requests == []


def test_detect_ip_fills_in_a_missing_cidr(fake: FakeGce) -> None:
    p = GcpProvider(project="test-project", catalog=TinyCatalog(), sleep=lambda s: None, detect_ip=lambda: "192.0.2.9")
    spec = _spec()
    _launch(p, spec, Ctx(spec, ssh_cidr=None))
    assert fake.inserted("firewalls")[0]["sourceRanges"] == ["192.0.2.9/32"]


def test_spot_shape(provider: GcpProvider, fake: FakeGce) -> None:
    spec = _spec(spot=True)
    ctx = Ctx(spec)
    m = _launch(provider, spec, ctx)
    sched = fake.inserted()[0]["scheduling"]
    assert sched["provisioningModel"] == "SPOT" and sched["instanceTerminationAction"] == "DELETE"
    assert m.spot and m.price_per_hour == pytest.approx(0.22)
    fake.preempt(m.id)
    assert provider.poll(m) == "spot-interrupted"


def test_spot_stopped_is_interrupted_too(provider: GcpProvider, fake: FakeGce) -> None:
    spec = _spec(spot=True)
    m = _launch(provider, spec, Ctx(spec))
    fake.preempt(m.id, delete=False)
    assert provider.poll(m) == "spot-interrupted"


def test_a100_uses_its_fixed_type_without_guest_accelerators(provider: GcpProvider, fake: FakeGce) -> None:
    spec = _spec("A100:1")
    m = _launch(provider, spec, Ctx(spec))
    body = fake.inserted()[0]
    assert m.instance_type == "a2-highgpu-1g" and "guestAccelerators" not in body
    assert body["scheduling"]["onHostMaintenance"] == "TERMINATE"


def test_waits_through_running_operations_and_boot(fake: FakeGce) -> None:
    fake.op_polls, fake.boot_polls = 3, 3
    p = GcpProvider(project="test-project", catalog=TinyCatalog(), sleep=lambda s: None)
    spec = _spec()
    m = _launch(p, spec, Ctx(spec))
    assert m.host.startswith("127.0.0.")
    assert sum(r.path.endswith("/wait") for r in fake.requests) >= 4


# --- failover and errors -------------------------------------------------------------------


@pytest.mark.parametrize("code", ["ZONE_RESOURCE_POOL_EXHAUSTED", "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS"])
@pytest.mark.parametrize("http", [False, True], ids=["operation", "http"])
def test_stockout_moves_to_next_zone(provider: GcpProvider, fake: FakeGce, code: str, http: bool) -> None:
    fake.fail_insert("us-central1-a", code, http_status=503 if http else None)
    spec = _spec()
    ctx = Ctx(spec)
    m = _launch(provider, spec, ctx)
    assert m.zone == "us-central1-b"
    assert ("zone-failed", {"zone": "us-central1-a", "code": code}) in [
        (e, {k: v for k, v in f.items() if k != "message"}) for e, f in ctx.events]
    assert "us-central1-a/gpujob-r-abc123" in ctx.deleted_ids  # the failed attempt made nothing
    assert fake.leftovers() == ["instance us-central1-b/gpujob-r-abc123", "firewall gpujob-r-abc123"]


def test_zone_without_the_accelerator_moves_on_then_next_region(provider: GcpProvider, fake: FakeGce) -> None:
    fake.fail_insert("us-central1-a", "RESOURCE_NOT_FOUND", http_status=404)
    fake.fail_insert("us-central1-b", "UNSUPPORTED_OPERATION")
    spec = _spec()
    ctx = Ctx(spec)
    m = _launch(provider, spec, ctx)
    assert m.zone == "us-east1-c" and m.region == "us-east1"
    assert [f["zone"] for e, f in ctx.events if e == "zone-failed"] == ["us-central1-a", "us-central1-b"]


def test_all_zones_exhausted_is_capacity_error_and_teardown_cleans(provider: GcpProvider, fake: FakeGce) -> None:
    for z in ZONES_C + ZONES_E:
        fake.stockout(z)
    spec = _spec()
    ctx = Ctx(spec)
    with pytest.raises(CapacityError) as err:
        _launch(provider, spec, ctx)
    for z in ZONES_C + ZONES_E:
        assert z in str(err.value)
    assert "ZONE_RESOURCE_POOL_EXHAUSTED" in str(err.value)
    assert provider.teardown(ctx.run_id, ctx.resources(), ctx) == []
    assert fake.leftovers() == []


@pytest.mark.parametrize("http", [False, True], ids=["operation", "http-403"])
def test_quota_stops_names_the_quota_and_leaves_nothing(provider: GcpProvider, fake: FakeGce, http: bool) -> None:
    fake.quota_exceeded("us-central1-a", "NVIDIA_T4_GPUS", http=http)
    spec = _spec()
    ctx = Ctx(spec)
    with pytest.raises(QuotaError) as err:
        _launch(provider, spec, ctx)
    text = str(err.value)
    assert "NVIDIA_T4_GPUS" in text and "us-central1" in text
    assert "console.cloud.google.com/iam-admin/quotas" in text and "gcloud compute regions describe" in text
    assert len(fake.inserted()) == 1  # quota does not fail over to other zones
    assert provider.teardown(ctx.run_id, ctx.resources(), ctx) == []
    assert fake.leftovers() == []


def test_operation_error_without_http_status_is_reported(provider: GcpProvider, fake: FakeGce) -> None:
    fake.fail_next_operation("insert", "INTERNAL_ERROR", "disk image is corrupt")
    spec = _spec()
    ctx = Ctx(spec)
    with pytest.raises(ProviderError, match="INTERNAL_ERROR: disk image is corrupt"):
        _launch(provider, spec, ctx)
    assert provider.teardown(ctx.run_id, ctx.resources(), ctx) == []
    assert fake.leftovers() == []


def test_failed_delete_operation_is_a_leftover_with_its_command(provider: GcpProvider, fake: FakeGce) -> None:
    spec = _spec()
    ctx = Ctx(spec)
    _launch(provider, spec, ctx)
    fake.fail_next_operation("delete", "RESOURCE_IN_USE_BY_ANOTHER_RESOURCE", "in use")
    (left,) = provider.teardown(ctx.run_id, ctx.resources(), ctx)
    assert left.resource.delete_command == (
        "gcloud compute instances delete gpujob-r-abc123 --zone us-central1-a --project test-project --quiet")
    assert "RESOURCE_IN_USE_BY_ANOTHER_RESOURCE" in left.reason
    assert provider.teardown(ctx.run_id, ctx.resources(), ctx) == []  # a second try finishes the job


def test_sweep_by_label_when_local_record_is_lost(provider: GcpProvider, fake: FakeGce) -> None:
    spec = _spec()
    ctx = Ctx(spec, run_id="r-lost")
    _launch(provider, spec, ctx)
    other = Ctx(spec, run_id="r-keep")
    _launch(provider, spec, other)
    gc = GcpProvider(project="test-project", sleep=lambda s: None)  # a fresh process, no record
    runs = {r.run_id for r in gc.find(None)}
    assert runs == {"r-lost", "r-keep"}
    assert gc.teardown("r-lost", [], None) == []
    assert sorted(fake.leftovers()) == ["firewall gpujob-r-keep", "instance us-central1-a/gpujob-r-keep"]


def test_find_filters_by_region(provider: GcpProvider, fake: FakeGce) -> None:
    spec = _spec()
    _launch(provider, spec, Ctx(spec))
    assert [r.kind for r in provider.find(["us-east1"])] == ["firewall"]  # firewall rules are global


# --- endpoint, credentials, plan -----------------------------------------------------------


@pytest.mark.parametrize("url", ["http://compute.example.com", "http://10.0.0.5:8080", "ftp://127.0.0.1"])
def test_plain_http_to_a_remote_host_is_refused(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("GPUJOB_GCP_API_ENDPOINT", url)
    with pytest.raises(ProviderError, match="GPUJOB_GCP_API_ENDPOINT"):
        GcpProvider(project="p")


def test_every_client_uses_the_override(provider: GcpProvider, fake: FakeGce) -> None:
    c = provider._api()
    for client in (c.instances, c.zone_ops, c.global_ops, c.firewalls, c.images):
        assert client.api_endpoint == fake.url
        assert client._transport.__class__.__name__.endswith("RestTransport")


def test_missing_credentials_says_how_to_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    def no_adc(**_: Any):
        raise DefaultCredentialsError("Your default credentials were not found.")

    monkeypatch.delenv("GPUJOB_GCP_API_ENDPOINT", raising=False)
    monkeypatch.setattr(google.auth, "default", no_adc)
    spec = _spec()
    with pytest.raises(CredentialsError) as err:
        GcpProvider(catalog=TinyCatalog()).launch(spec, Ctx(spec), deadline_s=5)
    assert "gcloud auth application-default login" in str(err.value) and "--project" in str(err.value)


def test_missing_project_with_fake_endpoint(fake: FakeGce, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GOOGLE_CLOUD_PROJECT", raising=False)
    monkeypatch.delenv("CLOUDSDK_CORE_PROJECT", raising=False)
    with pytest.raises(CredentialsError, match="project"):
        GcpProvider().find(None)


def test_plan_needs_no_credentials_and_no_api(monkeypatch: pytest.MonkeyPatch) -> None:
    import google.auth

    monkeypatch.delenv("GPUJOB_GCP_API_ENDPOINT", raising=False)
    monkeypatch.setattr(google.auth, "default", lambda **_: pytest.fail("plan asked for credentials"))
    spec = _spec(spot=False)
    p = GcpProvider(catalog=TinyCatalog())
    plan = p.plan(spec, Ctx(spec))
    assert p._clients is None
    assert plan["machine_type"] == "n1-standard-8" and plan["accelerator_type"] == "nvidia-tesla-t4"
    assert plan["price_per_hour"] == pytest.approx(0.70)
    assert plan["host_price_per_hour"] + plan["accelerator_price_per_hour"] == pytest.approx(plan["on_demand_price_per_hour"])
    assert plan["zones"] == ["us-central1-a", "us-central1-b", "us-east1-c"]
    assert plan["image_family"] == "pytorch-2-9-cu129-ubuntu-2204-nvidia-580"
    assert plan["scheduling"] == {"maxRunDuration_s": 4200, "instanceTerminationAction": "DELETE",
                                  "onHostMaintenance": "TERMINATE"}
    assert plan["firewall_rule"]["source_ranges"] == ["203.0.113.7/32"]
    assert plan["labels"][TAG_RUN] == "r-abc123"


def test_plan_ignores_aws_regions_and_takes_image_override() -> None:
    spec = JobSpec.model_validate({"name": "v", "resources": {"accelerators": "T4:1", "regions": ["us-east-1"],
                                                              "image_id": "projects/mine/global/images/my-img",
                                                              "disk_gb": 250}})
    cat = TinyCatalog()
    plan = GcpProvider(catalog=cat).plan(spec, Ctx(spec))
    assert cat.queries[0]["regions"] is None
    assert plan["image"] == "projects/mine/global/images/my-img" and plan["image_family"] is None
    assert plan["boot_disk_gb"] == 250


def test_unknown_gpu_is_a_clear_error() -> None:
    spec = _spec("XYZ:1")
    with pytest.raises(ProviderError, match="not offered on GCP"):
        GcpProvider(catalog=TinyCatalog()).plan(spec, Ctx(spec))


def test_relaunch_reuses_this_runs_firewall_rule(provider: GcpProvider, fake: FakeGce) -> None:
    spec = _spec()
    fake.stockout("us-central1-a", times=None)
    fake.stockout("us-central1-b", times=None)
    fake.stockout("us-east1-c", times=1)
    ctx = Ctx(spec)
    with pytest.raises(CapacityError):
        _launch(provider, spec, ctx)
    m = _launch(provider, spec, ctx)  # same run id: the rule from the first try is ours
    assert m.zone == "us-east1-c" and len(fake.firewalls) == 1


def test_teardown_without_credentials_returns_leftovers_with_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUJOB_GCP_API_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.delenv("GOOGLE_CLOUD_PROJECT", raising=False)
    monkeypatch.delenv("CLOUDSDK_CORE_PROJECT", raising=False)
    recorded = [Resource("gcp", "instance", "us-central1-a/gpujob-r1", run_id="r1"),
                Resource("gcp", "firewall", "gpujob-r1", run_id="r1")]
    left = GcpProvider().teardown("r1", recorded, None)
    assert [lo.resource.delete_command for lo in left] == [
        "gcloud compute instances delete gpujob-r1 --zone us-central1-a --project PROJECT --quiet",
        "gcloud compute firewall-rules delete gpujob-r1 --project PROJECT --quiet"]
    assert all("project" in lo.reason for lo in left)


def test_names_and_labels_are_valid_for_gcp() -> None:
    from launcher.providers.gcp.selection import label_value, resource_name

    name = resource_name("Run_2024-01-01T10:00:00Z" + "x" * 80)
    assert len(name) <= 63 and name.startswith("gpujob-") and name[-1] != "-"
    assert all(ch.islower() or ch.isdigit() or ch == "-" for ch in name)
    assert label_value("Alice@Example.COM") == "alice-example-com"


def test_fake_endpoint_without_cidr_allows_loopback_only(provider: GcpProvider, fake: FakeGce) -> None:
    spec = _spec()
    _launch(provider, spec, Ctx(spec, ssh_cidr=None))
    assert fake.inserted("firewalls")[0]["sourceRanges"] == ["127.0.0.1/32"]


def test_failed_address_detection_asks_for_ssh_cidr(fake: FakeGce) -> None:
    def broken() -> str:
        raise OSError("no route to host")

    p = GcpProvider(project="test-project", catalog=TinyCatalog(), sleep=lambda s: None, detect_ip=broken)
    spec = _spec()
    with pytest.raises(ProviderError, match="--ssh-cidr"):
        _launch(p, spec, Ctx(spec, ssh_cidr=None))
    assert fake.requests == []


@pytest.mark.sshd
def test_fake_machine_can_be_a_real_sshd_presenting_the_pinned_key(tmp_path, fake: FakeGce) -> None:
    """What the end-to-end test needs: the fake's natIP, key and host key drive a local sshd."""
    import io

    import paramiko

    from tests.sshd import Sshd

    if Sshd.available():
        pytest.skip(Sshd.available())
    fake._host = itertools.count(200)  # stay clear of other tests' 127.0.0.2..
    p = GcpProvider(project="test-project", catalog=TinyCatalog(), sleep=lambda s: None)
    spec = _spec()
    ctx = Ctx(spec)
    m = _launch(p, spec, ctx)
    try:
        sshd = Sshd(tmp_path / "sshd", authorized_keys=fake.authorized_keys(m.id), host=m.host, port=m.port,
                    host_key_pem=fake.host_key_pem(m.id)).start()
    except RuntimeError as exc:
        pytest.skip(f"cannot listen on {m.host}:{m.port}: {exc}")
    try:
        with paramiko.Transport((m.host, m.port)) as t:
            t.start_client(timeout=10)
            seen = t.get_remote_server_key()
            assert f"{seen.get_name()} {seen.get_base64()}" == " ".join(m.host_keys[0].split()[:2])
            t.auth_publickey(sshd.user, paramiko.Ed25519Key.from_private_key(io.StringIO(ctx.ssh_private_pem)))
            assert t.is_authenticated()
    finally:
        sshd.stop()
    assert p.teardown(ctx.run_id, ctx.resources(), ctx) == [] and fake.leftovers() == []


@pytest.mark.parametrize("acc,spot,metric", [("nvidia-tesla-t4", False, "NVIDIA_T4_GPUS"),
                                             ("nvidia-tesla-t4", True, "PREEMPTIBLE_NVIDIA_T4_GPUS"),
                                             ("nvidia-a100-80gb", False, "NVIDIA_A100_80GB_GPUS"),
                                             ("nvidia-tesla-a100", False, "NVIDIA_A100_GPUS"),
                                             ("nvidia-h100-80gb", False, "NVIDIA_H100_GPUS"),
                                             ("nvidia-l4", True, "PREEMPTIBLE_NVIDIA_L4_GPUS")])
def test_quota_metric_names(acc: str, spot: bool, metric: str) -> None:
    from launcher.providers.gcp.selection import quota_metric

    assert quota_metric(acc, spot) == metric


def test_preflight_quota_short_everywhere_fails_before_anything(provider: GcpProvider, fake: FakeGce) -> None:
    spec = JobSpec.model_validate({"name": "q", "resources": {"accelerators": "T4:1", "regions": ["us-central1"]}})
    ctx = Ctx(spec)
    fake.region_quotas["us-central1"] = {"NVIDIA_T4_GPUS": (4.0, 4.0)}
    with pytest.raises(QuotaError, match="NVIDIA_T4_GPUS has room for fewer than 1 GPU"):
        provider.preflight(spec, ctx)
    assert fake.inserted("instances") == [] and fake.firewalls == {}
    fake.region_quotas["us-central1"] = {"NVIDIA_T4_GPUS": (4.0, 2.0)}
    assert provider.preflight(spec, ctx)["project"] == "test-project"
