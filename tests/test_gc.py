"""`gpujob gc` end to end under moto: orphans are found by tag and deleted; live runs are kept."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("moto")

from typer.testing import CliRunner  # noqa: E402

from launcher.cli import app  # noqa: E402
from launcher.providers.aws.launch import AwsProvider  # noqa: E402
from launcher.store import Store  # noqa: E402
from tests.aws_fixtures import aws, aws_env, fast_session, make_ctx  # noqa: E402, F401

R = "us-east-1"


def _launch(run_id: str) -> None:
    ctx = make_ctx(run_id=run_id)
    AwsProvider(regions=[R], session=fast_session(), sleep=lambda s: None).launch(ctx.spec, ctx, 60)


def test_gc_dry_run_then_delete_keeps_live_runs(aws, tmp_path, monkeypatch):
    monkeypatch.setenv("GPUJOB_HOME", str(tmp_path / "home"))
    store = Store()
    store.create_run("rlive0001", "live", "aws", spec_path=None, spec_text=None, spec={}, provider_config={})
    store.set_state("rlive0001", "running")
    _launch("rlive0001")
    _launch("rlost0001")  # its laptop crashed and its record is gone: only the tags remain
    cli = CliRunner()

    res = cli.invoke(app, ["gc", "--provider", "aws", "--region", R, "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)
    assert {o["run_id"] for o in report["orphans"]} == {"rlost0001"}
    assert {o["kind"] for o in report["orphans"]} == {"instance", "security-group", "key-pair"}
    assert {o["run_id"] for o in report["live"]} == {"rlive0001"}

    res = cli.invoke(app, ["gc", "--provider", "aws", "--region", R, "--yes"])
    assert res.exit_code == 0 and "deleted 3 of 3" in res.output, res.output
    left = AwsProvider(regions=[R], session=fast_session()).find([R])
    assert left and {r.run_id for r in left} == {"rlive0001"}


def _failing(monkeypatch, op: str, code: str = "InternalError") -> None:
    """One EC2 operation fails in every region (the rest of the API works)."""
    from launcher.errors import ProviderError
    from launcher.providers.aws.api import AwsApi

    real = AwsApi.api

    def api(self, region, service, name, fail_fast=False, **kwargs):
        if name == op:
            raise ProviderError("aws", f"{name} in {region} failed: {code}: simulated", code=code)
        return real(self, region, service, name, fail_fast, **kwargs)

    monkeypatch.setattr(AwsApi, "api", api)


def test_gc_one_kind_unlistable_still_cleans_the_rest_and_exits_nonzero(aws, tmp_path, monkeypatch):
    monkeypatch.setenv("GPUJOB_HOME", str(tmp_path / "home"))
    _launch("rlost0002")
    _failing(monkeypatch, "describe_placement_groups")
    res = CliRunner().invoke(app, ["gc", "--provider", "aws", "--region", R, "--yes"])
    assert res.exit_code == 3, res.output
    assert "deleted 3 of 3" in res.output  # instance, security group and key pair
    assert "placement-group in us-east-1: could not list" in res.output
    left = AwsProvider(regions=[R], session=fast_session()).find_all([R])
    assert left[0] == []


def test_gc_one_kind_undeletable_is_reported_and_the_rest_deleted(aws, tmp_path, monkeypatch):
    monkeypatch.setenv("GPUJOB_HOME", str(tmp_path / "home"))
    _launch("rlost0003")
    _failing(monkeypatch, "delete_key_pair")
    res = CliRunner().invoke(app, ["gc", "--provider", "aws", "--region", R, "--yes", "--json"])
    assert res.exit_code == 6, res.output
    report = json.loads(res.output.splitlines()[0])
    assert len(report["leftovers"]) == 1 and report["leftovers"][0].startswith("key-pair ")
    kinds = {r.kind for r in AwsProvider(regions=[R], session=fast_session()).find([R])}
    assert kinds == {"key-pair"}


def test_gcp_one_kind_unlistable_still_lists_the_others(monkeypatch):
    pytest.importorskip("google.cloud.compute_v1")
    from launcher.providers.gcp.launch import GcpProvider
    from tests.fake_gce import FakeGce

    with FakeGce(project="test-project") as fake:
        monkeypatch.setenv("GPUJOB_GCP_API_ENDPOINT", fake.url)
        provider = GcpProvider(project="test-project", sleep=lambda s: None)
        c = provider._api()

        def refuse(*args, **kwargs):
            from google.api_core.exceptions import InternalServerError

            raise InternalServerError("simulated")

        monkeypatch.setattr(c.firewalls, "list", refuse)
        found, unchecked = provider.find_all(None)
        assert found == [] and len(unchecked) == 1 and unchecked[0].startswith("firewall: could not list")


def test_gc_without_the_aws_sdk_says_how_to_install_it(tmp_path, monkeypatch):
    """`pip install gpujob[train]` has no boto3: gc printed "internal error: ModuleNotFoundError(...)",
    exit 1. A local-only install (no aws run in its store) is told aws was not checked and why,
    exit 0; once a run of this machine used aws, the missing SDK means gc could not check: exit 3."""
    import sys

    monkeypatch.setenv("GPUJOB_HOME", str(tmp_path / "home"))
    for mod in ("boto3", "botocore", "botocore.session", "botocore.config"):
        monkeypatch.setitem(sys.modules, mod, None)  # import raises ImportError
    res = CliRunner().invoke(app, ["gc", "--provider", "aws"])
    assert res.exit_code == 0, res.output
    assert "not checked: aws: boto3 is not installed (pip install 'gpujob[aws]'); no run of this machine used aws" \
        in res.output and "nothing to collect" in res.output
    Store().create_run("raws00001", "old", "aws", spec_path=None, spec_text=None, spec={}, provider_config={})
    res = CliRunner().invoke(app, ["gc", "--provider", "aws"])
    assert res.exit_code == 3, res.output
    assert "boto3 is not installed (pip install 'gpujob[aws]')" in res.output
    assert "internal error" not in res.output and "Traceback" not in res.output
