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


# --- issue 14, failure 9: a damaged, locked or deleted database ---------------------------


def test_damaged_database_is_moved_aside_with_a_gc_hint(tmp_path):
    path = tmp_path / "runs.db"
    Store(path)
    path.write_bytes(b"this is not a database" * 200)
    with pytest.raises(StoreError, match=r"damaged.*moved aside to runs\.db\.broken-.*gpujob gc"):
        Store(path)
    assert list(tmp_path.glob("runs.db.broken-*"))
    s = Store(path)  # the new one works
    _run(s)
    assert len(s.list_runs()) == 1


def test_locked_database_names_the_holder(tmp_path, monkeypatch):
    import sqlite3

    import launcher.store as store_mod

    monkeypatch.setattr(store_mod, "BUSY_TIMEOUT_S", 0.2)
    path = tmp_path / "runs.db"
    s = Store(path)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another writer holds the lock
    try:
        with pytest.raises(StoreError, match=r"is locked by another"):
            _run(s)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    _run(s)


def test_deleted_database_is_noticed(tmp_path):
    path = tmp_path / "runs.db"
    _run(Store(path))
    for p in tmp_path.glob("runs.db*"):
        if not p.name.endswith(".created"):
            p.unlink()
    with pytest.raises(StoreError, match=r"was deleted.*gpujob gc"):
        Store(path)
    assert Store(path).list_runs() == []  # said once; the new database works


def test_schema_migrates_from_version_1(tmp_path):
    import sqlite3

    import launcher.store as store_mod

    path = tmp_path / "runs.db"
    db = sqlite3.connect(path)
    db.executescript(store_mod._SCHEMA)
    db.execute("INSERT INTO runs (id, name, provider, state, created_at, updated_at) VALUES "
               "('rold', 'old', 'aws', 'succeeded', 1, 1)")
    db.execute("PRAGMA user_version=1")
    db.commit()
    db.close()
    s = Store(path)
    rec = s.get_run("rold")
    assert rec.name == "old" and rec.fetched_at is None and rec.lease is None
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == store_mod.SCHEMA_VERSION
    db.close()
