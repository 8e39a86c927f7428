"""Checkpoint safety and the spot recovery policy: spec fields, atomic pulls, restart decisions,
the attempts record (schema 3)."""

from __future__ import annotations

import sqlite3

import pytest

from launcher.checkpoints import Puller, local_path, parse_store, pull, pull_every
from launcher.errors import RemoteError, SpecError
from launcher.localhost import LocalHost
from launcher.recovery import closed_attempt, plan_next
from launcher.spec import parse_spec
from launcher.store import SCHEMA_VERSION, Store


def spec(extra: str = "", resources: str = "spot: true"):
    return parse_spec(f"name: s\nresources: {{{resources}}}\n{extra}")


@pytest.mark.parametrize("text,where,needle", [
    ("limits: {max_restarts: -1}\n", "limits.max_restarts", "greater than or equal to 0"),
    ("limits: {checkpoint_every: soon}\n", "limits.checkpoint_every", "not a duration"),
    ("resources: {spot_fallback: on-demand}\n", "resources", "spot_fallback applies to spot runs only"),
    ("resources: {spot: true, spot_fallback: reserved}\n", "resources.spot_fallback", "'reserved' is not allowed"),
    ("checkpoint_store: ftp://b/p\n", "checkpoint_store", "ftp:// is not a checkpoint store; write s3://bucket/prefix or gs://"),
    ("checkpoint_store: my-bucket\n", "checkpoint_store", "not a bucket URL"),
    ("checkpoint_store: s3://Bad_Bucket/p\n", "checkpoint_store", "not an S3 bucket name"),
    ("checkpoint_store: s3://my_bucket/p\n", "checkpoint_store", "not an S3 bucket name"),
    ("checkpoint_store: gs://Bad-Bucket/p\n", "checkpoint_store", "not a Cloud Storage bucket name"),
    ("checkpoint_store: gs://b/p\n", "checkpoint_store", "not a Cloud Storage bucket name"),
])
def test_bad_recovery_fields_are_one_clear_line(text, where, needle):
    with pytest.raises(SpecError) as info:
        parse_spec("name: s\n" + text)
    msg = str(info.value)
    assert f" {where}:" in msg and needle in msg and "\n" not in msg


def test_s3_store_names_the_object_per_run_and_pulls_nothing():
    s = spec("checkpoint_store: s3://my-bucket/team/ckpt/\n")
    assert s.checkpoint_store == "s3://my-bucket/team/ckpt"
    assert parse_store(s.checkpoint_store).key("r1") == "team/ckpt/r1/last.pt"
    assert parse_store("s3://my-bucket").key("r1") == "r1/last.pt"
    gs = parse_store(spec("checkpoint_store: gs://my_bucket/team/\n").checkpoint_store)
    assert (gs.root, gs.url, gs.key("r1")) == ("gs://my_bucket", "gs://my_bucket/team", "team/r1/last.pt")
    assert pull_every(s) is None  # the machine keeps it in the bucket


def test_defaults_and_pull_interval():
    s = spec()
    assert s.limits.max_restarts == 3 and s.resources.spot_fallback is None and s.checkpoint_store is None
    assert pull_every(s) == 600.0  # spot runs keep a checkpoint home by default
    assert pull_every(spec(resources="spot: false")) is None
    assert pull_every(spec("limits: {checkpoint_every: 90s}\n", resources="spot: false")) == 90.0


def test_restart_policy_spot_then_on_demand_then_give_up():
    s = spec("limits: {max_restarts: 2}\n", resources="spot: true, spot_fallback: on-demand")
    first, _ = plan_next(s, 1)
    assert first.number == 2 and first.spot and "--resume" in first.spec.payload.args
    assert first.spec.env["GPUJOB_RESUME"] == "1"
    second, _ = plan_next(s, 2)  # max_restarts spot failures: the next one is on-demand
    assert not second.spot and not second.spec.resources.spot
    none, why = plan_next(s, 3)
    assert none is None and why == "limits.max_restarts (2) used"
    plain = spec("limits: {max_restarts: 1}\n")
    assert plan_next(plain, 1)[0].spot and plan_next(plain, 2)[0] is None


class CutHost(LocalHost):
    """A machine whose link drops half way through a download."""

    def get_file(self, remote, local):
        data = open(remote, "rb").read()
        open(local, "wb").write(data[: len(data) // 2])
        raise RemoteError("connection lost during download")


def test_pull_is_atomic_and_only_when_changed(tmp_path):
    remote = tmp_path / "machine" / "last.pt"
    remote.parent.mkdir()
    remote.write_bytes(b"A" * 1000)
    home = local_path(tmp_path / "run")
    sig = pull(LocalHost(), str(remote), home, None)
    assert home.read_bytes() == b"A" * 1000 and sig[0] == 1000
    assert pull(LocalHost(), str(remote), home, sig) is None  # unchanged: nothing copied
    remote.write_bytes(b"B" * 2000)
    with pytest.raises(RemoteError):
        pull(CutHost(), str(remote), home, sig)
    assert home.read_bytes() == b"A" * 1000  # the good copy stays whole
    assert [p.name for p in home.parent.iterdir()] == ["last.pt"]  # no partial left behind
    assert pull(LocalHost(), str(remote), home, sig)[0] == 2000 and home.read_bytes() == b"B" * 2000
    assert pull(LocalHost(), str(tmp_path / "none.pt"), home, None) is None  # no checkpoint yet


def test_puller_reports_each_new_copy(tmp_path):
    remote = tmp_path / "last.pt"
    remote.write_bytes(b"x")
    got = []
    puller = Puller(LocalHost, str(remote), local_path(tmp_path / "run"), 0.05,
                    lambda path, size: got.append(size)).start()
    try:
        for _ in range(200):
            if got:
                break
            puller._done.wait(0.05)
    finally:
        puller.stop()
    assert got == [1]  # copied once, not again while unchanged


def test_attempts_survive_and_sum_in_the_record(tmp_path):
    store = Store(tmp_path / "runs.db")
    store.create_run("r1", "s", "aws", spec_path=None, spec_text=None, spec={}, provider_config={})
    store.update_run("r1", launched_at=1000.0, price_per_hour=0.36,
                     machine={"provider": "aws", "id": "i-1", "zone": "us-east-1a", "spot": True})
    first = closed_attempt(store.get_run("r1"), 1000.0 + 1800, "spot-interrupted")
    assert first["seconds"] == 1800 and first["cost_usd"] == pytest.approx(0.18) and first["market"] == "spot"
    store.update_run("r1", attempts=[first], launched_at=3000.0, price_per_hour=1.2, ended_at=3000.0 + 30,
                     machine={"provider": "aws", "id": "i-2", "zone": "us-east-1b", "spot": False})
    rec = store.get_run("r1")
    assert rec.billed_seconds() == 1830
    assert rec.spent_usd() == pytest.approx(0.18 + 1.2 * 30 / 3600)
    assert rec.billed_usd() == pytest.approx(0.18 + 1.2 * 60 / 3600)  # each attempt has AWS's one-minute minimum
    rows = rec.attempt_rows()
    assert [(r["attempt"], r["instance_id"], r["market"]) for r in rows] == [(1, "i-1", "spot"), (2, "i-2", "on-demand")]


def _two_attempts(first: tuple, second: tuple, second_spot: bool) -> None:
    """Run r1 in the store: a spot attempt reclaimed, then a second that succeeded; (price/h, seconds) each."""
    store = Store()
    store.create_run("r1", "spotty", "aws", spec_path=None, spec_text=None, spec={}, provider_config={})
    store.update_run("r1", launched_at=1000.0, price_per_hour=first[0],
                     machine={"provider": "aws", "id": "i-first", "zone": "us-east-1a", "spot": True})
    done = closed_attempt(store.get_run("r1"), 1000.0 + first[1], "spot-interrupted")
    store.update_run("r1", attempts=[done], launched_at=5000.0, price_per_hour=second[0], ended_at=5000.0 + second[1],
                     state="succeeded", machine={"provider": "aws", "id": "i-second", "zone": "us-east-1b",
                                                 "spot": second_spot})


def test_show_ls_and_cost_count_every_attempt(tmp_path, monkeypatch):
    import json

    from typer.testing import CliRunner

    from launcher.cli import app

    monkeypatch.setenv("GPUJOB_HOME", str(tmp_path / "home"))
    _two_attempts((0.36, 1800), (1.2, 1800), second_spot=False)
    cli = CliRunner()
    shown = cli.invoke(app, ["show", "r1"], env={"COLUMNS": "120"})
    assert shown.exit_code == 0, shown.output
    assert "attempts" in shown.output and "i-first" in shown.output and "i-second" in shown.output
    assert "spot-interrupted" in shown.output and "on-demand" in shown.output
    report = json.loads(cli.invoke(app, ["show", "r1", "--json"]).output)
    assert report["actual"]["usd"] == pytest.approx(0.18 + 0.6)
    listed = json.loads(cli.invoke(app, ["ls", "--json"]).output)
    row = listed[0] if isinstance(listed, list) else listed["runs"][0]
    assert row["spent_usd"] == pytest.approx(0.78) and row["elapsed_s"] == pytest.approx(3600)
    cost = json.loads(cli.invoke(app, ["cost", "--json"]).output)
    assert cost["total_usd"] == pytest.approx(0.78)


def test_schema_2_database_gains_the_attempts_column(tmp_path):
    path = tmp_path / "runs.db"
    Store(path).create_run("r1", "s", "aws", spec_path=None, spec_text=None, spec={}, provider_config={})
    db = sqlite3.connect(path)
    db.execute("ALTER TABLE runs DROP COLUMN attempts_json")
    db.execute("PRAGMA user_version=2")
    db.commit()
    db.close()
    store = Store(path)
    assert store.get_run("r1").attempts is None
    store.update_run("r1", attempts=[{"attempt": 1, "seconds": 5.0}])
    assert store.get_run("r1").attempts == [{"attempt": 1, "seconds": 5.0}]
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3


class Sticky:
    """A provider whose release of the reclaimed machine is not confirmed (or is, when ``ok``)."""

    name = "aws"

    def __init__(self, ok: bool = False):
        self.ok, self.calls = ok, []

    def teardown(self, run_id, resources, ctx):
        from launcher.providers.base import Leftover

        self.calls.append([r.id for r in resources])
        return [] if self.ok else [Leftover(r, "still shutting-down") for r in resources]


def _reclaimed_run(tmp_path, spec_text: str):
    from launcher.runner import Runner, _Ctx, _Live

    store = Store(tmp_path / "runs.db")
    spec = parse_spec(spec_text)
    store.create_run("r1", "s", "aws", spec_path=None, spec_text=None, spec={}, provider_config={})
    h = store.intent("r1", "aws", "instance", "gpujob-r1", "us-east-1")
    store.created(h, "i-1")
    store.update_run("r1", launched_at=1000.0, price_per_hour=0.5,
                     machine={"provider": "aws", "id": "i-1", "zone": "us-east-1a", "spot": True, "pid": 7})
    runner = Runner(store=store, clock=lambda: 1000.0 + 7200)
    return runner, spec, _Ctx(store, "r1", spec, "aws", lambda *a, **k: None, None), _Live()


def test_no_new_machine_while_the_reclaimed_one_is_not_confirmed_gone(tmp_path):
    from launcher.errors import MachineGone

    runner, spec, ctx, live = _reclaimed_run(tmp_path, "name: s\nresources: {spot: true}\n")
    provider = Sticky()
    with pytest.raises(MachineGone) as info:
        runner._recover("r1", spec, 1, provider, ctx, live)
    assert provider.calls == [["i-1"]]  # the release was tried, its result checked
    assert "not confirmed gone" in str(info.value) and info.value.exit_code == 10
    rec = runner.store.get_run("r1")
    assert [a["instance_id"] for a in rec.attempts] == ["i-1"]
    assert [r.resource_id for r in runner.store.resources("r1")] == ["i-1"]  # still recorded for teardown/gc


def test_no_new_machine_once_the_attempts_spent_the_budget(tmp_path):
    from launcher.errors import MachineGone

    runner, spec, ctx, live = _reclaimed_run(tmp_path, "name: s\nresources: {spot: true}\nlimits: {budget_usd: 0.9}\n")
    with pytest.raises(MachineGone) as info:  # two hours at $0.50/h: $1.00 of $0.90
        runner._recover("r1", spec, 1, Sticky(ok=True), ctx, live)
    assert "limits.budget_usd $0.90 reached ($1.00 over 1 attempt)" in str(info.value)
    assert runner.store.resources("r1") == []  # the reclaimed machine's rows are closed


def test_recovery_moves_the_reclaimed_zone_last_and_resumes(tmp_path):
    from launcher.providers.base import tried_last

    runner, spec, ctx, live = _reclaimed_run(tmp_path, "name: s\nresources: {spot: true}\n")
    nxt = runner._recover("r1", spec, 1, Sticky(ok=True), ctx, live)
    assert nxt.resources.spot and "--resume" in nxt.payload.args and ctx.spec is nxt
    assert tried_last(["us-east-1a", "us-east-1b", "us-east-1c"], ctx) == ["us-east-1b", "us-east-1c", "us-east-1a"]
    (ev,) = [d for _, k, d in runner.store.events("r1") if k == "recovering"]
    assert ev == {"attempt": 2, "spot": True, "reclaimed_zone": "us-east-1a", "checkpoint": None}


def test_the_plan_says_what_a_reclaim_does():
    from launcher.recovery import describe
    from launcher.runner import RunOptions, Runner

    assert describe(spec(resources="spot: false"), "aws") is None
    assert describe(spec("limits: {max_restarts: 0}\n"), "aws") == "a reclaimed machine ends the run (limits.max_restarts: 0)"
    assert describe(spec("checkpoint_store: s3://bkt/p\n"), "gcp") == (
        "a reclaimed machine is replaced up to 3 times, resuming from the checkpoint the machine keeps in s3://bkt/p")
    s = spec("limits: {max_restarts: 2, checkpoint_every: 5m}\n", resources="spot: true, spot_fallback: on-demand")
    line = "a reclaimed machine is replaced up to 2 times (the last on-demand), resuming from the checkpoint pulled home every 5 min"
    assert describe(s, "auto") == line
    local = Runner(store=Store()).plan(s, RunOptions(provider="local"))["plan"]["spot recovery"]
    assert local.startswith("does not apply: local machines are never reclaimed")  # nothing to replace here



@pytest.fixture
def gcs(monkeypatch):
    pytest.importorskip("google.cloud.storage")
    from tests.fake_gcs import FakeGcs

    fake = FakeGcs().start()
    fake.create_bucket("ckpt")
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", fake.url)
    try:
        yield fake
    finally:
        fake.stop()


def test_gs_store_uploads_large_checkpoints_resumably_and_restores_atomically(gcs, tmp_path, capsys):
    """payloads/checkpoint_sync.py with the real google-cloud-storage client: a 9 MiB checkpoint
    goes up in a resumable upload (a small one in one multipart request), only when it changed;
    a restore writes a temporary file, then renames it over the target."""
    from payloads import checkpoint_sync as sync

    store, ckpt = sync.open_store("gs://ckpt"), tmp_path / "last.pt"
    ckpt.write_bytes(b"x" * 100)
    sig = sync.upload_if_changed(store, "gs://ckpt", "r/last.pt", str(ckpt), None)
    assert sync.upload_if_changed(store, "gs://ckpt", "r/last.pt", str(ckpt), sig) == sig  # unchanged: no request
    big = bytes(range(256)) * (9 * 4096 + 1)  # 9 MiB + 256 B: above the client's 8 MiB multipart limit
    ckpt.write_bytes(big)
    sync.upload_if_changed(store, "gs://ckpt", "r/last.pt", str(ckpt), sig)
    assert [t for m, _, t in gcs.requests if m in ("POST", "PUT")] == ["multipart", "resumable", "resumable"]
    assert gcs.buckets["ckpt"]["r/last.pt"] == big and not list(tmp_path.glob("*.upload-*"))

    target = tmp_path / "job" / "last.pt"
    assert sync.main(["restore", "gs://ckpt", "r/last.pt", str(target)]) == 0
    assert target.read_bytes() == big and not list(target.parent.glob("*.restore-*"))
    assert "restored gs://ckpt/r/last.pt (9437440 bytes)" in capsys.readouterr().out
    assert sync.main(["restore", "gs://ckpt", "other/last.pt", str(tmp_path / "none.pt")]) == 0
    assert "no checkpoint at gs://ckpt/other/last.pt yet" in capsys.readouterr().out
    assert not (tmp_path / "none.pt").exists() and not list(tmp_path.glob("none.pt.*"))


def test_gs_store_check_says_in_one_line_what_is_missing(gcs, monkeypatch, capsys):
    from payloads import checkpoint_sync as sync

    assert sync.main(["check", "gs://ckpt", "k", "f"]) == 0
    assert sync.main(["check", "gs://absent", "k", "f"]) == sync.EXIT_UNUSABLE
    err = capsys.readouterr().err
    assert err.startswith("checkpoint_sync: cannot use bucket gs://absent: 404") and err.count("\n") == 1
    monkeypatch.setitem(__import__("sys").modules, "google.cloud.storage", None)  # the library not installed
    assert sync.main(["check", "gs://ckpt", "k", "f"]) == sync.EXIT_UNUSABLE
    assert capsys.readouterr().err == ("checkpoint_sync: checkpoint_store gs:// needs google-cloud-storage on the "
                                       "machine (add `pip install google-cloud-storage` to setup)\n")


def test_the_client_looks_for_the_checkpoint_in_the_gs_bucket(gcs):
    from launcher.checkpoints import latest_in_store

    assert latest_in_store("gs://ckpt/p", "r1") is None
    gcs.buckets["ckpt"]["p/r1/last.pt"] = b"c"
    gcs.generations[("ckpt", "p/r1/last.pt")] = 1
    assert latest_in_store("gs://ckpt/p", "r1") == "gs://ckpt/p/r1/last.pt"


def test_ls_shows_what_show_and_cost_bill_for_short_attempts(tmp_path, monkeypatch):
    """Two spot attempts under a minute each: `gpujob ls` said $0.0022 ($ per second, no minimum)
    while `gpujob show` and `gpujob cost` said $0.0067 (each attempt's one-minute minimum)."""
    import json

    from typer.testing import CliRunner

    from launcher.cli import app

    monkeypatch.setenv("GPUJOB_HOME", str(tmp_path / "home"))
    _two_attempts((0.2, 13), (0.2, 27), second_spot=True)
    cli = CliRunner()
    billed = 2 * 0.2 * 60 / 3600
    assert json.loads(cli.invoke(app, ["show", "r1", "--json"]).output)["actual"]["usd"] == pytest.approx(billed)
    assert json.loads(cli.invoke(app, ["cost", "--json"]).output)["total_usd"] == pytest.approx(billed, abs=1e-4)
    assert json.loads(cli.invoke(app, ["ls", "--json"]).output)[0]["spent_usd"] == pytest.approx(billed)
    listed = cli.invoke(app, ["ls"], env={"COLUMNS": "120"}).output
    assert "$0.0067" in listed, listed


def test_the_uploader_ends_with_the_job_not_an_interval_later(gcs, tmp_path):
    """The uploader slept a whole interval (10 min by default) before it looked whether the job
    had ended: the final checkpoint went up (if at all) after the run had fetched and released, and
    the uploader lingered on an ssh host. It now uploads once more as soon as the job is gone."""
    import subprocess
    import sys
    import threading

    from payloads import checkpoint_sync as sync

    ckpt = tmp_path / "last.pt"
    ckpt.write_bytes(b"final")
    job = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE,
                           start_new_session=True)
    done = threading.Thread(target=sync.watch, args=("gs://ckpt", "r/last.pt", str(ckpt), 3600.0, job.pid),
                            daemon=True)
    done.start()
    assert "r/last.pt" not in gcs.buckets["ckpt"]  # no upload before the interval while the job runs
    job.communicate(b"")  # the job ends
    done.join(120)  # a bound so a regression fails instead of hanging for the hour
    assert not done.is_alive() and gcs.buckets["ckpt"]["r/last.pt"] == b"final"
