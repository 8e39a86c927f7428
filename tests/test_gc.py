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
