"""Run records: intent before create, state history, logs, and concurrent writers."""

from __future__ import annotations

import multiprocessing as mp

import pytest

from launcher.errors import StoreError
from launcher.store import Store, new_run_id


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path / "runs.db")


def _run(store, run_id=None):
    run_id = run_id or new_run_id()
    return store.create_run(run_id, "job", "aws", spec_path="j.yaml", spec_text="name: job\n", spec={"name": "job"},
                            provider_config={"regions": ["us-east-1"]})


def test_run_roundtrip_and_states(store):
    rec = _run(store)
    store.set_state(rec.id, "provisioning")
    store.update_run(rec.id, price_per_hour=3.06, launched_at=100.0, estimate={"total_usd": 1.5})
    store.set_state(rec.id, "succeeded", ended_at=100.0 + 3600)
    got = store.get_run(rec.id)
    assert got.state == "succeeded" and got.finished
    assert got.estimate == {"total_usd": 1.5} and got.provider_config == {"regions": ["us-east-1"]}
    assert got.spent_usd() == pytest.approx(3.06)
    states = [d["state"] for _, kind, d in store.events(rec.id) if kind == "state"]
    assert states == ["created", "provisioning", "succeeded"]


def test_prefix_lookup_and_unknown(store):
    rec = _run(store, "rabc12345")
    assert store.get_run("rabc1").id == rec.id
    with pytest.raises(StoreError, match="gpujob ls"):
        store.get_run("zzz")


def test_intent_then_created_then_deleted(store):
    rec = _run(store)
    h = store.intent(rec.id, "aws", "security-group", "gpujob-x", "us-east-1")
    [row] = store.resources(rec.id)
    assert row.state == "intent" and row.resource_id is None  # recorded before the cloud call
    store.created(h, "sg-123")
    assert store.resources(rec.id)[0].resource_id == "sg-123"
    store.deleted(rec.id, "sg-123")
    assert store.resources(rec.id) == [] and store.resources(rec.id, live_only=False)[0].state == "deleted"


def test_log_chunks_are_idempotent_by_offset(store):
    rec = _run(store)
    store.append_log(rec.id, 0, "a\n")
    store.append_log(rec.id, 2, "b\n")
    store.append_log(rec.id, 2, "b\n")  # a replay after reconnect must not duplicate
    assert store.log_text(rec.id) == "a\nb\n"


def _writer(path, n, tag):
    s = Store(path)
    for i in range(n):
        run_id = f"r{tag}{i:04d}"
        s.create_run(run_id, "job", "local", spec_path=None, spec_text=None, spec={}, provider_config={})
        s.intent(run_id, "local", "instance", f"i-{i}", None)
        s.set_state(run_id, "running")


def test_concurrent_processes_do_not_corrupt(tmp_path):
    path = tmp_path / "runs.db"
    Store(path)
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, 40, t)) for t in "abc"]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    s = Store(path)
    runs = s.list_runs(limit=1000)
    assert len(runs) == 120 and all(r.state == "running" for r in runs)


def test_unwritable_home_is_one_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="GPUJOB_HOME"):
        Store(blocker / "sub" / "runs.db")
