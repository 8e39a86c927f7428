"""`gpujob gpus` and the reference clouds (Azure, Lambda, Vast.ai) in the price catalog."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from launcher.catalog import Catalog, load_catalog, show
from launcher.catalog.listing import filter_offers, gpu_offers, gpu_table
from launcher.catalog.model import in_family, make_provenance
from launcher.catalog.reference import NOTE, parse_reference
from launcher.cli import app
from launcher.errors import CatalogError, UsageError

cli = CliRunner()

AZURE = (
    "InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,GpuInfo,Price,SpotPrice,Region,Generation\n"
    "Standard_NC24ads_A100_v4,A100-80GB,1,24,220,A100-80GB,3.673,0.7346,eastus,V1,V2\n"
    "Standard_NC24ads_A100_v4,A100-80GB,1,24,220,A100-80GB,3.9,,westeurope,V2\n"
    "Standard_NV6ads_A10_v5,A10,0.167,6,55,A10,0.454,0.09,eastus,V2\n"
    "Standard_ND96isr_MI300X_v5,MI300X,8,96,1850,MI300X,48.0,,eastus,V2\n"
)
LAMBDA = (
    "InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,Price,Region,GpuInfo,SpotPrice\n"
    "gpu_8x_v100_n,V100,8.0,88.0,448.0,6.32,europe-central-1,\"{'Gpus': [{'Name': 'V100', 'Count': 8.0, "
    "'MemoryInfo': {'SizeInMiB': 16384}}], 'TotalGpuMemoryInMiB': 16384}\",\n"
)
VAST = (
    "InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,GpuInfo,Price,SpotPrice,Region\n"
    "2x-A100_SXM4-32-65536,A100,2,32,64.0,\"{'Gpus': [{'Name': 'A100', 'Count': 2, 'MemoryInfo': "
    "{'SizeInMiB': 163840}}], 'TotalGpuMemoryInMiB': 163840}\",1.87,0.00,\", US, NA\"\n"
)


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("GPUJOB_HOME", str(tmp_path / "home"))
    return tmp_path


def test_azure_unquoted_generation_and_dropped_rows():
    offers = parse_reference("azure", AZURE)
    # fractional A10 slices and the AMD MI300X are not trainable NVIDIA GPUs
    assert [(o.instance_type, o.region) for o in offers] == [
        ("Standard_NC24ads_A100_v4", "eastus"), ("Standard_NC24ads_A100_v4", "westeurope")]
    east = offers[0]
    assert (east.provider, east.gpu, east.gpu_count, east.price, east.spot_price) == \
        ("azure", "A100-80GB", 1, 3.673, 0.7346)  # "V1,V2" did not shift SpotPrice/Region
    assert offers[1].spot_price is None and east.gpu_memory_gib == 80.0  # memory from the GPU table


def test_lambda_and_vast_rows():
    (lam,) = parse_reference("lambda", LAMBDA)
    assert (lam.gpu, lam.gpu_count, lam.price, lam.spot_price, lam.gpu_memory_gib) == ("V100", 8, 6.32, None, 16.0)
    (vast,) = parse_reference("vast", VAST)
    # 0.00 spot = none; memory per GPU = total / count, which makes this an 80 GB A100; unknown city dropped
    assert (vast.gpu, vast.gpu_memory_gib, vast.spot_price, vast.region) == ("A100-80GB", 80.0, None, "US, NA")


def test_reference_parse_by_header_and_missing_column():
    reordered = "Region,Price,InstanceType,AcceleratorCount,AcceleratorName,vCPUs,MemoryGiB,GpuInfo,SpotPrice\n" \
                "us-east-1,1.29,gpu_1x_a10,1,A10,30,200,,\n"
    (o,) = parse_reference("lambda", reordered)
    assert (o.instance_type, o.region, o.price) == ("gpu_1x_a10", "us-east-1", 1.29)
    with pytest.raises(CatalogError, match="missing column"):
        parse_reference("azure", "InstanceType,Price\nx,1\n")


def test_bundled_catalog_has_reference_clouds():
    cat = load_catalog()
    providers = {o.provider for o in cat.offers}
    assert {"aws", "gcp", "azure", "lambda", "vast"} <= providers
    assert "anycloud-sh/catalog" in cat.provenance.source and "estimate only" in cat.provenance.source
    assert cat.provenance.details["azure"]["commit"].startswith("62ff0a9")
    # the article's "as little as $0.25 per hour": a marketplace GPU hour under that exists
    assert min(o.price for o in cat.offers if o.provider == "vast" and o.price) < 0.25


def test_family_match():
    assert in_family("A100-80GB", "a100") and in_family("A100", "A100")
    assert not in_family("A100-80GB", "A100-40GB")  # an alias naming one part is exact
    assert not in_family("A10", "A100") and not in_family("T4g", "T4")
    gpus = {o.gpu for o in show(gpu="A100", provider="aws")}
    assert gpus == {"A100", "A100-80GB"}


def _small_catalog() -> Catalog:
    offers = parse_reference("azure", AZURE) + parse_reference("lambda", LAMBDA) + parse_reference("vast", VAST)
    return Catalog(offers, make_provenance("test", "2026-05-20"))


def test_gpu_table_cheapest_per_gpu_hour_and_filters():
    cat = _small_catalog()
    rows = {r.gpu: r for r in gpu_table(cat)}
    assert set(rows) == {"A100-80GB", "V100"}
    a100 = rows["A100-80GB"]
    assert a100.prices["azure"] == {"on_demand": 3.673, "spot": 0.7346}
    assert a100.prices["vast"] == {"on_demand": 0.935, "spot": None}  # 1.87 / 2 GPUs
    assert a100.regions == 3 and a100.offers == 3 and not a100.launchable
    assert a100.memory_gib == 80 and a100.bf16_tflops == 312
    assert rows["V100"].prices["lambda"]["on_demand"] == 0.79  # 6.32 / 8
    assert [r.gpu for r in gpu_table(cat, spot=True)] == ["A100-80GB"]
    assert [r.gpu for r in gpu_table(cat, max_price=1.0)] == ["A100-80GB", "V100"]
    assert [r.gpu for r in gpu_table(cat, max_price=0.8)] == ["V100"]
    assert [r.gpu for r in gpu_table(cat, max_price=1.0, min_memory=40)] == ["A100-80GB"]
    assert [o.region for o in filter_offers(cat, region="EASTUS")] == ["eastus"]
    # a flag reads as typed: "--spot", not "--spot True"
    with pytest.raises(UsageError, match=r"no offer matches --spot, --max-price 0\.1 "):
        gpu_table(cat, spot=True, max_price=0.1)
    with pytest.raises(UsageError, match="did you mean V100"):
        gpu_table(cat, gpu="V10O")


def test_gpu_offers_every_offer_cheapest_first():
    offers = gpu_offers(_small_catalog(), "A100")
    assert [o["price_per_gpu"] for o in offers] == [0.935, 3.673, 3.9]
    assert all(o["note"] == NOTE and not o["launchable"] for o in offers)


def test_cli_gpus_table_and_json():
    res = cli.invoke(app, ["gpus"])
    assert res.exit_code == 0, res.output
    assert "H100" in res.output and "azure*" in res.output and NOTE in res.output
    res = cli.invoke(app, ["gpus", "--gpu", "A100", "--provider", "aws", "--json"])
    data = json.loads(res.output)
    assert [r["gpu"] for r in data["rows"]] == ["A100", "A100-80GB"]
    assert all(set(r["prices"]) == {"aws"} and r["launchable"] for r in data["rows"])
    assert data["provenance"]["snapshot"]


def test_cli_gpus_one_gpu_lists_offers():
    res = cli.invoke(app, ["gpus", "H100", "--provider", "gcp", "--spot", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["gpu"] == "H100" and data["offers"]
    spots = [o["spot_price_per_gpu"] for o in data["offers"]]
    assert spots == sorted(spots) and all(o["provider"] == "gcp" for o in data["offers"])
    assert {o["gpu"] for o in data["offers"]} >= {"H100", "H100-MEGA"}
    res = cli.invoke(app, ["gpus", "H100", "--region", "us-central1"])
    assert res.exit_code == 0 and "a3-highgpu" in res.output and "offers of H100" in res.output


@pytest.mark.parametrize("args, text", [
    (["gpus", "--provider", "ibm"], "no provider 'ibm'"),
    (["gpus", "Z9"], "no GPU named 'Z9'"),
    (["gpus", "A100", "--gpu", "H100"], "two GPUs"),
    (["gpus", "--max-price", "0.0001"], "no offer matches"),
])
def test_cli_gpus_bad_input_one_line(args, text):
    res = cli.invoke(app, args)
    assert res.exit_code == 2 and text in res.output and "Traceback" not in res.output


def test_estimate_prices_reference_clouds_marked():
    from launcher.estimate import estimate
    from launcher.spec import parse_spec

    spec = parse_spec("name: t\nworkload: {model: resnet18, samples_per_epoch: 100000, batch_size: 64}\n")
    est = estimate(spec, providers=("aws", "gcp", "azure", "lambda", "vast"), top=None, all_regions=True)
    ref = [c for c in est.candidates if c.provider in ("azure", "lambda", "vast")]
    assert ref and not any(c.launchable for c in ref)
    assert all(c.launchable for c in est.candidates if c.provider in ("aws", "gcp"))
    cheapest = est.summary["cheapest"]
    if not cheapest["launchable"]:
        assert est.summary["cheapest_launchable"]["provider"] in ("aws", "gcp")
        assert NOTE in est.summary["reference_note"]


def test_estimate_summary_names_the_cheapest_row_gpujob_can_launch():
    """A Vast.ai V100 is cheaper than AWS's: the table prices it, but the sentence that says what
    the spec would launch names the AWS row (gpujob cannot launch on Vast), and the Vast row is
    the line below, marked estimate only; with no AWS/GCP offer at all the sentence says so."""
    from launcher.catalog import Catalog
    from launcher.catalog.gpus import get_gpu
    from launcher.catalog.model import Offer
    from launcher.estimate import estimate
    from launcher.estimate.baseline import Baseline
    from launcher.spec import parse_spec

    def offer(provider, itype, region, price):
        return Offer(provider, itype, region, (f"{region}-a",), "V100", 1, 8, 64, get_gpu("V100").memory_gib, price,
                     None)

    aws = offer("aws", "p3.2xlarge", "us-east-1", 3.06)
    vast = offer("vast", "1x-Tesla_V100-32-65536", "Oregon, US, NA", 0.2)
    spec = parse_spec("name: t\nworkload: {model: resnet18, samples_per_epoch: 100000, batch_size: 64}\n"
                      "resources: {accelerators: 'V100:1'}\n")
    base = Baseline("Test CPU", 4, 1.0, 100000.0, measured=True, cached=False, note="fake")
    providers = ("aws", "gcp", "azure", "lambda", "vast")
    est = estimate(spec, catalog=Catalog([aws, vast], make_provenance("test", "2026-05-20")), baseline=base,
                   providers=providers)
    s = est.summary
    assert s["cheapest"]["provider"] == "vast" and s["cheapest_launchable"]["instance_type"] == "p3.2xlarge"
    assert s["sentence"].startswith("The spec would launch p3.2xlarge (V100 x1, aws us-east-1)")
    assert "vast" not in s["sentence"] and "Tesla_V100" not in s["sentence"]
    assert s["reference_note"].startswith(f"cheaper, {NOTE}: 1x-Tesla_V100-32-65536 (V100 x1, vast Oregon")
    aws_sps = next(c for c in est.candidates if c.provider == "aws").samples_per_second
    assert s["speedup_vs_cpu"] == round(aws_sps / 1.0, 2)
    only = estimate(spec, catalog=Catalog([vast], make_provenance("test", "2026-05-20")), baseline=base,
                    providers=providers).summary
    assert only["sentence"].startswith("No offer gpujob can launch fits this job: the cheapest row, "
                                       "1x-Tesla_V100-32-65536") and "`gpujob gpus`" in only["sentence"]


def test_catalog_update_refreshes_reference_clouds_from_file_urls(tmp_path, monkeypatch):
    """The real fetch path (urllib) against file:// URLs: no internet, every cloud refreshed."""
    import launcher.catalog.store as store
    from tests.test_catalog import AWS_CSV, GCP_CSV

    files = {"aws": AWS_CSV, "gcp": GCP_CSV, "azure": AZURE, "lambda": LAMBDA, "vast": VAST}
    urls = {}
    for name, text in files.items():
        path = tmp_path / f"{name}.csv"
        path.write_text(text)
        urls[name] = path.as_uri()
    monkeypatch.setattr(store, "SOURCE_URLS", {k: urls[k] for k in ("aws", "gcp")})
    monkeypatch.setattr(store, "REFERENCE_URLS", {k: urls[k] for k in ("azure", "lambda", "vast")})
    res = cli.invoke(app, ["catalog", "update"])
    assert res.exit_code == 0, res.output
    assert "catalog updated" in res.output and "not refreshed" not in res.output
    cat = load_catalog()
    assert sorted((o.provider, o.instance_type) for o in cat.offers if o.provider not in ("aws", "gcp")) == [
        ("azure", "Standard_NC24ads_A100_v4"), ("azure", "Standard_NC24ads_A100_v4"),
        ("lambda", "gpu_8x_v100_n"), ("vast", "2x-A100_SXM4-32-65536")]
    assert cat.provenance.details["vast"]["url"] == urls["vast"]
    # one reference file broken: the others refresh, it keeps the previous rows and says so
    (tmp_path / "lambda.csv").write_text("garbage\n")
    res = cli.invoke(app, ["catalog", "update"])
    assert res.exit_code == 0 and "lambda: not refreshed" in res.output
    assert [o.instance_type for o in load_catalog().offers if o.provider == "lambda"] == ["gpu_8x_v100_n"]


def test_catalog_show_reference_provider_is_marked():
    res = cli.invoke(app, ["catalog", "show", "--provider", "lambda", "--gpu", "H100"])
    assert res.exit_code == 0, res.output
    assert "gpu_1x_h100" in res.output and f"lambda: {NOTE}" in " ".join(res.output.split())
