"""Price catalog: CSV parsing, GCP join, aggregation, queries, provenance, refresh."""

from __future__ import annotations

import datetime as dt
import gzip

import pytest

from launcher.catalog import Catalog, Offer, load_catalog, show, update_catalog
from launcher.catalog.build import build_offers, gcp_hosts, parse_aws, parse_gcp
from launcher.catalog.model import make_provenance
from launcher.catalog.store import REFERENCE_URLS, SOURCE_URLS, bundled_path, user_catalog_path
from launcher.errors import CatalogError

GI = "\"{'Gpus': [{'Name': 'V100', 'MemoryInfo': {'SizeInMiB': 16384}}], 'TotalGpuMemoryInMiB': 16384}\""
AWS_CSV = f"""InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,GpuInfo,Price,SpotPrice,Region,AvailabilityZone,Arch
p3.2xlarge,V100,1.0,8.0,61.0,{GI},3.06,0.5197,us-east-1,use1-az4,x86_64
p3.2xlarge,V100,1.0,8.0,61.0,{GI},3.06,,us-east-1,use1-az1,x86_64
p3.2xlarge,V100,1.0,8.0,61.0,{GI},3.10,0.61,us-east-1,use1-az2,x86_64
p3.2xlarge,V100,1.0,8.0,61.0,{GI},3.823,,eu-central-1,euc1-az1,x86_64
g6f.large,L4,0.125,2.0,8.0,,0.2,0.1,us-east-1,use1-az1,x86_64
trn1.2xlarge,Trainium,1.0,8.0,32.0,,1.34,0.4,us-east-1,use1-az1,x86_64
g5g.xlarge,T4g,1.0,4.0,8.0,,0.42,,us-east-1,use1-az1,arm64
p5e.48xlarge,H200,8.0,192.0,2048.0,,,,us-east-1,use1-az1,x86_64
"""
# GCP: other column order, no Arch; host rows and accelerator rows apart.
GCP_CSV = """InstanceType,vCPUs,MemoryGiB,AcceleratorName,AcceleratorCount,GpuInfo,Region,AvailabilityZone,Price,SpotPrice
a2-highgpu-1g,12.0,85.0,,,,us-central1,us-central1-a,0.73948,0.29576
a2-highgpu-1g,12.0,85.0,,,,us-central1,us-central1-b,0.73948,0.29576
n1-standard-8,8.0,30.0,,,,us-central1,us-central1-a,0.38,0.08
n1-standard-8,8.0,30.0,,,,us-central1,us-central1-b,0.38,
,,,A100,1,{'Gpus': [{'MemoryInfo': {'SizeInMiB': 40960}}]},us-central1,us-central1-a,2.93391,1.1472
,,,A100,1,{'Gpus': [{'MemoryInfo': {'SizeInMiB': 40960}}]},us-central1,us-central1-c,2.93391,1.1472
,,,T4,1,{'Gpus': [{'MemoryInfo': {'SizeInMiB': 16384}}]},us-central1,us-central1-a,0.35,0.14
,,,T4,1,{'Gpus': [{'MemoryInfo': {'SizeInMiB': 16384}}]},us-central1,us-central1-b,0.30,0.12
,,,tpu-v6e-1,1,,us-central1,us-central1-a,700.0,700.0
"""


def _one(offers, **kw):
    hits = [o for o in offers if all(getattr(o, k) == v for k, v in kw.items())]
    assert len(hits) == 1, hits
    return hits[0]


def test_aws_parse_by_header_aggregates_zones_and_blank_spot():
    offers = parse_aws(AWS_CSV)
    o = _one(offers, instance_type="p3.2xlarge", region="us-east-1")
    assert o.zones == ("use1-az1", "use1-az2", "use1-az4")  # sorted
    assert o.spot_zones == ("use1-az2", "use1-az4")
    assert o.price == 3.06 and o.spot_price == 0.5197  # cheapest across zones
    assert (o.gpu, o.gpu_count, o.vcpus, o.memory_gib, o.gpu_memory_gib) == ("V100", 1, 8.0, 61.0, 16.0)
    eu = _one(offers, instance_type="p3.2xlarge", region="eu-central-1")
    assert eu.spot_price is None and eu.spot_zones == ()


def test_aws_drops_fractional_and_non_gpu_and_keeps_arch():
    offers = parse_aws(AWS_CSV)
    assert not [o for o in offers if o.instance_type in ("g6f.large", "trn1.2xlarge")]
    assert _one(offers, gpu="T4g").arch == "arm64"
    h200 = _one(offers, gpu="H200")
    assert h200.price is None and h200.spot_price is None


def test_gcp_join_host_plus_accelerator_same_zone():
    offers = parse_gcp(GCP_CSV)
    a100 = _one(offers, gpu="A100")
    # us-central1-c has the GPU but no a2 host row: no VM there.
    assert a100.instance_type == "a2-highgpu-1g" and a100.zones == ("us-central1-a",)
    assert a100.price == pytest.approx(3.67339)
    assert a100.spot_price == pytest.approx(0.29576 + 1.1472)
    assert (a100.host_price, a100.accelerator_price) == (0.73948, 2.93391)
    assert (a100.vcpus, a100.memory_gib, a100.gpu_memory_gib) == (12.0, 85.0, 40.0)


def test_gcp_attached_gpu_uses_n1_host_and_cheapest_zone():
    t4 = _one(parse_gcp(GCP_CSV), gpu="T4")
    assert t4.instance_type == "n1-standard-8"
    assert t4.zones == ("us-central1-a", "us-central1-b")
    assert t4.price == pytest.approx(0.38 + 0.30)  # zone b is cheaper
    assert (t4.host_price, t4.accelerator_price) == (0.38, 0.30)
    # zone b's host has no spot price, so only zone a offers spot
    assert t4.spot_price == pytest.approx(0.08 + 0.14) and t4.spot_zones == ("us-central1-a",)
    assert not [o for o in parse_gcp(GCP_CSV) if o.gpu.startswith("tpu")]


def test_gcp_host_rules():
    assert gcp_hosts("A100", 8) == ("a2-highgpu-8g",)
    assert gcp_hosts("A100-80GB", 2) == ("a2-ultragpu-2g",)
    assert gcp_hosts("H200", 8) == ("a3-ultragpu-8g",)
    assert gcp_hosts("V100", 4) == ("n1-standard-32",)
    assert "g2-standard-4" in gcp_hosts("L4", 1) and gcp_hosts("L4", 8) == ("g2-standard-96",)
    assert gcp_hosts("H100", 3) == ()


def test_missing_column_is_a_catalog_error():
    with pytest.raises(CatalogError, match="missing column"):
        parse_aws("InstanceType,Price\nx,1\n")


def _catalog():
    return Catalog(build_offers(AWS_CSV, GCP_CSV), make_provenance("test", "2026-01-01"))


def test_query_filters():
    cat = _catalog()
    assert {o.provider for o in cat.query(provider="gcp")} == {"gcp"}
    assert {o.gpu for o in cat.query(gpu="v100")} == {"V100"}
    assert cat.query(gpu="A100-40GB") == cat.query(gpu="A100")
    assert all(o.spot_price is not None for o in cat.query(spot=True))
    assert all(o.price is not None for o in cat.query(spot=False))
    assert {o.region for o in cat.query(regions=["EU-central-1"])} == {"eu-central-1"}
    assert cat.query(gpu="T4", count=2) == []
    assert "T4g" in cat.gpus() and "Trainium" not in cat.gpus()


def test_show_sorts_cheapest_first_unpriced_last():
    rows = show(catalog=_catalog())
    priced = [o.price for o in rows if o.price is not None]
    assert priced == sorted(priced) and rows[-1].price is None


def test_provenance_age_and_stale():
    now = dt.datetime(2026, 6, 1, 12, tzinfo=dt.timezone.utc)
    fresh = make_provenance("s", "2026-05-20", now=now)
    assert fresh.age_days == pytest.approx(12.5) and not fresh.stale
    assert make_provenance("s", "2026-04-01", now=now).stale


# --- the real bundled snapshot -------------------------------------------------------------

def test_bundled_snapshot_is_small_and_cached(monkeypatch, tmp_path):
    # Load time is measured by bench/cli_speed.py, never asserted here.
    monkeypatch.setenv("GPUJOB_HOME", str(tmp_path))
    assert bundled_path().stat().st_size < 2_000_000
    from launcher.catalog import store
    store._cache.clear()
    cat = load_catalog()
    assert load_catalog() is cat  # cached
    assert cat.provenance.details["gcp"]["commit"].startswith("62ff0a98")
    assert cat.provenance.snapshot == "2026-05-20"


def test_bundled_snapshot_contents(monkeypatch, tmp_path):
    monkeypatch.setenv("GPUJOB_HOME", str(tmp_path))
    cat = load_catalog()
    p4d = cat.query(provider="aws", gpu="A100", count=8, regions="us-east-1")
    assert [o.instance_type for o in p4d] == ["p4d.24xlarge"] and p4d[0].price > 0
    a2 = [o for o in cat.query(provider="gcp", gpu="A100", count=1) if o.instance_type == "a2-highgpu-1g"]
    assert a2 and all(o.price == pytest.approx(o.host_price + o.accelerator_price) for o in a2 if o.price)
    assert {"A100", "A100-80GB", "H100", "L4", "T4", "V100"} <= set(cat.gpus())
    assert {o.gpu_memory_gib for o in cat.query(gpu="A100-80GB")} == {80.0}


# --- refresh --------------------------------------------------------------------------------

def test_update_catalog_writes_user_copy_that_load_prefers(monkeypatch, tmp_path):
    monkeypatch.setenv("GPUJOB_HOME", str(tmp_path))
    asked = []

    def fake_fetch(url):
        asked.append(url)
        if url in REFERENCE_URLS.values():
            raise OSError("404")  # a reference cloud that fails keeps its rows
        return (AWS_CSV if "/aws/" in url else GCP_CSV).encode()

    prov = update_catalog(fetch=fake_fetch)
    assert sorted(asked) == sorted([*SOURCE_URLS.values(), *REFERENCE_URLS.values()])
    assert prov.details["azure"]["kept"] == "2026-05-20" and "404" in prov.details["azure"]["error"]
    assert prov.snapshot == dt.datetime.now(dt.timezone.utc).date().isoformat() and not prov.stale
    assert user_catalog_path().is_file()
    cat = load_catalog()
    assert cat.provenance.source.startswith("downloaded")
    kept = [o for o in load_catalog(bundled_path()).offers if o.provider in REFERENCE_URLS]
    assert len(cat.offers) == len(build_offers(AWS_CSV, GCP_CSV)) + len(kept)
    assert not list(user_catalog_path().parent.glob(".*"))  # no temp files left


def test_update_catalog_offline_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("GPUJOB_HOME", str(tmp_path))

    def offline(url):
        raise OSError("Name or service not known")

    with pytest.raises(CatalogError) as err:
        update_catalog(fetch=offline)
    msg = str(err.value)
    assert "cannot reach https://raw.githubusercontent.com" in msg and "offline" in msg
    assert "2026-05-20" in msg and "\n" not in msg
    assert not user_catalog_path().exists()


def test_update_catalog_rejects_garbage(monkeypatch, tmp_path):
    monkeypatch.setenv("GPUJOB_HOME", str(tmp_path))
    with pytest.raises(CatalogError):
        update_catalog(fetch=lambda url: b"<html>rate limited</html>")
    assert not user_catalog_path().exists()


def test_corrupt_user_copy_is_a_catalog_error(monkeypatch, tmp_path):
    monkeypatch.setenv("GPUJOB_HOME", str(tmp_path))
    user_catalog_path().parent.mkdir(parents=True)
    user_catalog_path().write_bytes(gzip.compress(b"{not json"))
    with pytest.raises(CatalogError, match="unreadable"):
        load_catalog()


def test_offer_is_frozen():
    o = parse_aws(AWS_CSV)[0]
    assert isinstance(o, Offer)
    with pytest.raises(AttributeError):
        o.price = 0.0  # type: ignore[misc]
