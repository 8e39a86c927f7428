"""`gpujob cost`: estimate vs actual per run, totals, --days, the estimator's track record."""

from __future__ import annotations

import json
import time

import pytest
from typer.testing import CliRunner

from launcher.cli import app
from launcher.costs import cost_report
from launcher.store import Store

cli = CliRunner()
DAY = 86400.0


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("GPUJOB_HOME", str(tmp_path / "home"))
    return tmp_path


def _record(store, run_id, provider, *, created, secs, est_secs, price, est_usd, gpu="V100", state="succeeded"):
    store.create_run(run_id, run_id, provider, spec_path=None, spec_text=None, spec={}, provider_config={})
    fields = {"created_at": created, "launched_at": created + 10, "price_per_hour": price,
              "estimate": {"total_seconds": est_secs, "total_usd": est_usd},
              "machine": {"provider": provider, "id": "m", "instance_type": "p3.2xlarge", "gpu": gpu, "gpu_count": 1}}
    if state != "running":
        fields["ended_at"] = created + 10 + secs
    store.update_run(run_id, state=state, **fields)


def test_per_run_totals_and_track_record():
    store, now = Store(), time.time()
    jan = time.mktime((2026, 1, 15, 12, 0, 0, 0, 0, 0))
    _record(store, "r-a", "aws", created=jan, secs=3600, est_secs=3000, price=3.06, est_usd=2.55)
    _record(store, "r-b", "gcp", created=now - 2 * DAY, secs=1800, est_secs=2000, price=2.0, est_usd=1.11, gpu="A100")
    _record(store, "r-c", "local", created=now - 1 * DAY, secs=100, est_secs=100, price=None, est_usd=0.0, gpu=None)
    rep = cost_report(store, now=now)
    rows = {r["run_id"]: r for r in rep["runs"]}
    assert [r["run_id"] for r in rep["runs"]] == ["r-c", "r-b", "r-a"]  # newest first
    a = rows["r-a"]
    assert a["actual_seconds"] == 3600 and a["actual_usd"] == pytest.approx(3.06)
    assert a["seconds_error_pct"] == 20.0 and a["usd_error_pct"] == pytest.approx(20.0)
    assert a["month"] == "2026-01" and a["gpu"] == "V100 x1"
    assert rows["r-b"]["seconds_error_pct"] == -10.0 and rows["r-c"]["actual_usd"] == 0.0
    assert rows["r-c"]["gpu"] == "CPU" and rows["r-c"]["usd_error_pct"] is None  # $0 predicted: no % error
    by_provider = {g["provider"]: g for g in rep["totals"]["provider"]}
    assert by_provider["aws"]["actual_usd"] == pytest.approx(3.06) and by_provider["gcp"]["runs"] == 1
    assert {g["month"] for g in rep["totals"]["month"]} >= {"2026-01"}
    assert {g["gpu"] for g in rep["totals"]["gpu"]} == {"V100 x1", "A100 x1", "CPU"}
    assert rep["total_usd"] == pytest.approx(3.06 + 1.0)
    tr = rep["track_record"]
    assert tr["runs"] == 3 and tr["median_abs_seconds_error_pct"] == 10.0 and tr["median_abs_usd_error_pct"] == pytest.approx(14.95, abs=0.1)
    assert "median error on your 3 finished runs: time 10%" in tr["sentence"]
    recent = cost_report(store, days=7, now=now)
    assert [r["run_id"] for r in recent["runs"]] == ["r-c", "r-b"]


def test_running_run_counts_up_to_now_and_has_no_error_yet():
    store, now = Store(), time.time()
    _record(store, "r-live", "aws", created=now - 3610, secs=0, est_secs=7200, price=3.6, est_usd=7.2, state="running")
    (row,) = cost_report(store, now=now)["runs"]
    assert row["actual_seconds"] == pytest.approx(3600, abs=1) and row["actual_usd"] == pytest.approx(3.6, abs=0.01)
    assert row["seconds_error_pct"] is None and not row["finished"]
    assert "no track record" in cost_report(store, now=now)["track_record"]["sentence"]


def test_cli_cost_table_json_and_bad_days():
    store, now = Store(), time.time()
    _record(store, "r-x", "aws", created=now - DAY, secs=600, est_secs=500, price=3.06, est_usd=0.5)
    res = cli.invoke(app, ["cost"])
    assert res.exit_code == 0, res.output
    assert "r-x" in res.output and "per provider" in res.output and "per month" in res.output
    assert "+20%" in res.output and "median error on your 1 finished run" in res.output
    data = json.loads(cli.invoke(app, ["cost", "--days", "30", "--json"]).output)
    assert data["runs"][0]["run_id"] == "r-x" and data["days"] == 30
    res = cli.invoke(app, ["cost", "--days", "-1"])
    assert res.exit_code == 2 and "--days" in res.output


def test_cli_cost_empty():
    res = cli.invoke(app, ["cost"])
    assert res.exit_code == 0 and "no runs yet" in res.output
