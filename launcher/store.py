"""Run records in SQLite.

Every resource is recorded as *intent* before the create call and gets its cloud id after,
so a crash between the two still leaves a trace that ``gpujob down``/``gc`` can act on.
WAL mode plus a busy timeout lets several gpujob processes share the file safely; every
write is its own short transaction.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from launcher import state
from launcher.errors import StoreError
from launcher.states import is_terminal


_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    provider TEXT NOT NULL,
    state TEXT NOT NULL,
    spec_path TEXT,
    spec_text TEXT,
    spec_json TEXT,
    provider_config TEXT,     -- what is needed to reach the provider again (no secrets)
    estimate_json TEXT,       -- the estimate and the prices used at launch
    machine_json TEXT,
    price_per_hour REAL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    launched_at REAL,         -- billing starts
    job_started_at REAL,
    job_ended_at REAL,
    ended_at REAL,            -- billing ends (teardown done)
    exit_status INTEGER,
    reason TEXT,
    artifacts_dir TEXT,
    result_json TEXT          -- the payload's end event and actual numbers
);
CREATE TABLE IF NOT EXISTS resources (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL REFERENCES runs(id),
    provider TEXT NOT NULL,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    region TEXT,
    resource_id TEXT,
    state TEXT NOT NULL,      -- intent | created | deleted
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    ts REAL NOT NULL,
    kind TEXT NOT NULL,
    detail TEXT
);
CREATE TABLE IF NOT EXISTS logs (
    run_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    text TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
);
CREATE INDEX IF NOT EXISTS resources_run ON resources(run_id);
CREATE INDEX IF NOT EXISTS events_run ON events(run_id);
"""

# Versioned migrations: MIGRATIONS[i] takes the schema from version i+1 to i+2 (PRAGMA user_version).
# Version 1 is _SCHEMA above; never edit a shipped step, append a new one.
MIGRATIONS: tuple[str, ...] = (
    # 2: where the results go (chosen at launch), when they were home, and the attached client's lease
    "ALTER TABLE runs ADD COLUMN fetched_at REAL;"
    "ALTER TABLE runs ADD COLUMN lease_json TEXT;",
    # 3: the earlier attempts of a run whose spot machine was reclaimed and replaced (a JSON list)
    "ALTER TABLE runs ADD COLUMN attempts_json TEXT;",
)
SCHEMA_VERSION = 1 + len(MIGRATIONS)
BUSY_TIMEOUT_S = 10.0


def new_run_id() -> str:
    # Starts with a letter and stays short: usable in GCP names/labels and AWS tags.
    return "r" + secrets.token_hex(4)


@dataclass
class RunRecord:
    id: str
    name: str
    provider: str
    state: str
    created_at: float
    updated_at: float
    spec_path: str | None = None
    spec_text: str | None = None
    spec: dict[str, Any] = field(default_factory=dict)
    provider_config: dict[str, Any] = field(default_factory=dict)
    estimate: dict[str, Any] | None = None
    machine: dict[str, Any] | None = None
    price_per_hour: float | None = None
    launched_at: float | None = None
    job_started_at: float | None = None
    job_ended_at: float | None = None
    ended_at: float | None = None
    exit_status: int | None = None
    reason: str | None = None
    artifacts_dir: str | None = None
    result: dict[str, Any] | None = None
    fetched_at: float | None = None  # the results are home (artifacts_dir holds them)
    lease: dict[str, Any] | None = None  # the attached client: {"pid", "host", "started", "refreshed"}
    # Earlier attempts, closed (a reclaimed spot machine, released): dicts with attempt, provider,
    # region, zone, instance_id, instance_type, market, start, end, end_reason, price_per_hour,
    # seconds, cost_usd. The run's own fields (machine, launched_at, price_per_hour) are the last attempt.
    attempts: list[dict[str, Any]] | None = None

    @property
    def finished(self) -> bool:
        return is_terminal(self.state)

    def _current_seconds(self, now: float | None) -> float:
        if self.launched_at is None:
            return 0.0
        end = self.ended_at or (now if now is not None else time.time())
        return max(0.0, end - self.launched_at)

    def billed_seconds(self, now: float | None = None) -> float:
        """Seconds billed over every attempt (each from its launch to its release)."""
        return sum(a["seconds"] for a in self.attempts or ()) + self._current_seconds(now)

    def spent_usd(self, now: float | None = None) -> float:
        """Dollars so far over every attempt: seconds x that attempt's price (no billing minimum)."""
        done = sum(a["price_per_hour"] * a["seconds"] / 3600.0 for a in self.attempts or () if a.get("price_per_hour"))
        return done + (self.price_per_hour or 0.0) * self._current_seconds(now) / 3600.0

    def billed_usd(self, now: float | None = None) -> float | None:
        """Dollars as the cloud bills them (estimate.billing: per second, one-minute minimum), summed
        over every attempt; None when the last machine has no price."""
        from launcher.estimate.billing import bill_usd

        current = bill_usd(self._current_seconds(now), self.price_per_hour, self.provider) if self.launched_at else 0.0
        if current is None:
            return None
        return sum(a.get("cost_usd") or 0.0 for a in self.attempts or ()) + current

    def charged_usd(self, now: float | None = None) -> float:
        """Dollars so far as `ls` shows them: billed_usd (minimums included, what `show` and `cost`
        say), else spent_usd where the machine has no price."""
        billed = self.billed_usd(now)
        return self.spent_usd(now) if billed is None else billed

    def attempt_rows(self, now: float | None = None) -> list[dict[str, Any]]:
        """Every attempt, the last one (still going, or how the run ended) included."""
        if self.launched_at is None:  # no machine yet, or none after the last reclaimed one
            return list(self.attempts or ())
        m = self.machine or {}
        last = {"attempt": len(self.attempts or ()) + 1, "provider": m.get("provider") or self.provider,
                "region": m.get("region"), "zone": m.get("zone"), "instance_id": m.get("id"),
                "instance_type": m.get("instance_type"), "market": "spot" if m.get("spot") else "on-demand",
                "start": self.launched_at, "end": self.ended_at, "end_reason": self.state,
                "price_per_hour": self.price_per_hour, "seconds": self._current_seconds(now)}
        from launcher.estimate.billing import bill_usd

        last["cost_usd"] = bill_usd(last["seconds"], self.price_per_hour, last["provider"])
        return [*(self.attempts or ()), last]


@dataclass(frozen=True)
class ResourceRow:
    id: int
    run_id: str
    provider: str
    kind: str
    name: str
    region: str | None
    resource_id: str | None
    state: str


_JSON_COLS = {"spec_json": "spec", "provider_config": "provider_config", "estimate_json": "estimate",
              "machine_json": "machine", "result_json": "result", "lease_json": "lease",
              "attempts_json": "attempts"}


class Store:
    """The run database (``runs.db`` in the state directory): runs, resources, events and logs.

    Raises StoreError with one clear line when the file is locked by another gpujob (naming
    its pid), damaged (moved aside, a new one made, `gpujob gc` suggested) or was deleted."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else state.db_path()
        marker = self.path.with_name(self.path.name + ".created")
        try:
            if path is None:
                state.ensure_home()
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            deleted = marker.exists() and not self.path.exists()
            state.create_private_file(self.path)  # SQLite gives its -wal/-shm files the same mode
            try:
                self._migrate()
            except sqlite3.DatabaseError as exc:
                if not ("malformed" in str(exc) or "not a database" in str(exc)):
                    raise
                broken = self._move_aside()
                state.create_private_file(self.path)
                self._migrate()
                marker.write_text(f"{time.time()}\n")
                raise StoreError(f"the run database {self.path} was damaged ({exc}): moved aside to {broken.name}, "
                                 "new database created",
                                 "runs that may still hold cloud resources: run `gpujob gc` (and `gpujob gc --yes`)"
                                 ) from None
            if not marker.exists() or deleted:
                marker.write_text(f"{time.time()}\n")
            if deleted:
                raise StoreError(f"the run database {self.path} was deleted: every run it recorded is forgotten; "
                                 "a new one was created",
                                 "runs that may still hold cloud resources: run `gpujob gc` (and `gpujob gc --yes`)")
        except sqlite3.OperationalError as exc:
            raise self._error(exc) from None
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open the run database {self.path}: {exc}",
                             "set GPUJOB_HOME to a writable directory") from None

    def _migrate(self) -> None:
        db = self._connect()
        try:
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()  # reads the header: damage shows here
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version >= SCHEMA_VERSION:
                return
            db.execute("BEGIN IMMEDIATE")
            try:
                version = db.execute("PRAGMA user_version").fetchone()[0]  # another process may have done it
                if version == 0:
                    for stmt in _SCHEMA.split(";"):
                        if stmt.strip():
                            db.execute(stmt)
                    version = 1
                    cols = {r[1] for r in db.execute("PRAGMA table_info(runs)")}
                    if "fetched_at" in cols:  # a database made before versions were recorded: schema 2
                        version = 2
                for step in MIGRATIONS[version - 1:]:
                    for stmt in step.split(";"):
                        if stmt.strip():
                            db.execute(stmt)
                db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                db.execute("COMMIT")
            except BaseException:
                _rollback(db)
                raise
        finally:
            db.close()

    def _move_aside(self) -> Path:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        broken = self.path.with_name(f"{self.path.name}.broken-{stamp}")
        for suffix in ("", "-wal", "-shm"):
            src = Path(str(self.path) + suffix)
            if src.exists():
                src.rename(Path(str(broken) + suffix))
        return broken

    def _error(self, exc: sqlite3.Error) -> StoreError:
        if _is_locked(exc):
            holders = [p for p in _holders(self.path) if p != os.getpid()]
            who = f"another gpujob (pid {', '.join(map(str, holders))})" if holders else "another process"
            return StoreError(f"the run database {self.path} is locked by {who}",
                              f"waited {BUSY_TIMEOUT_S:.0f}s; retry when it is done, or stop it")
        return StoreError(f"the run database {self.path} failed: {exc}",
                          "if this repeats, move the file aside and run `gpujob gc`")

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        db.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")  # WAL: still never corrupt; a power cut may drop the last commit
        db.row_factory = sqlite3.Row
        return db

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One short write transaction; sqlite errors become one clear StoreError."""
        with self._read() as db:
            try:
                db.execute("BEGIN IMMEDIATE")
                yield db
                db.execute("COMMIT")
            except BaseException:
                _rollback(db)  # a failed rollback must not hide what failed
                raise

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        try:
            db = self._connect()
        except sqlite3.Error as exc:
            raise self._error(exc) from None
        try:
            yield db
        except sqlite3.Error as exc:
            raise self._error(exc) from None
        finally:
            db.close()

    def run_dir(self, run_id: str) -> Path:
        d = self.path.parent / "runs" / run_id
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        return d

    # --- runs -----------------------------------------------------------------------------

    def create_run(self, run_id: str, name: str, provider: str, *, spec_path: str | None,
                   spec_text: str | None, spec: dict, provider_config: dict) -> RunRecord:
        now = time.time()
        with self._tx() as db:
            db.execute(
                "INSERT INTO runs (id, name, provider, state, spec_path, spec_text, spec_json,"
                " provider_config, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (run_id, name, provider, "created", spec_path, spec_text, json.dumps(spec),
                 json.dumps(provider_config), now, now))
            db.execute("INSERT INTO events (run_id, ts, kind, detail) VALUES (?,?,?,?)",
                       (run_id, now, "state", json.dumps({"state": "created"})))
        return self.get_run(run_id)

    def update_run(self, run_id: str, **fields: Any) -> None:
        cols, vals = [], []
        for key, value in fields.items():
            col = next((c for c, f in _JSON_COLS.items() if f == key), key)
            if col in _JSON_COLS:
                value = json.dumps(value)
            cols.append(f"{col}=?")
            vals.append(value)
        now = time.time()
        with self._tx() as db:
            db.execute(f"UPDATE runs SET {', '.join(cols)}, updated_at=? WHERE id=?", (*vals, now, run_id))
            if "state" in fields:
                db.execute("INSERT INTO events (run_id, ts, kind, detail) VALUES (?,?,?,?)",
                           (run_id, now, "state", json.dumps({"state": fields["state"],
                                                              "reason": fields.get("reason")})))

    def set_state(self, run_id: str, state: str, reason: str | None = None, **fields: Any) -> None:
        if reason is not None:
            fields["reason"] = reason
        self.update_run(run_id, state=state, **fields)

    def get_run(self, run_id: str) -> RunRecord:
        with self._read() as db:
            row = db.execute("SELECT * FROM runs WHERE id=?", (run_id,)).fetchone()
            if row is None:
                # let users type a unique prefix
                rows = db.execute("SELECT * FROM runs WHERE id LIKE ?", (run_id + "%",)).fetchall()
                if len(rows) != 1:
                    raise StoreError(f"no run with id '{run_id}'", "list runs with `gpujob ls`")
                row = rows[0]
        return self._record(row)

    def list_runs(self, limit: int = 50) -> list[RunRecord]:
        with self._read() as db:
            rows = db.execute("SELECT * FROM runs ORDER BY created_at DESC LIMIT ?", (limit,)).fetchall()
        return [self._record(r) for r in rows]

    @staticmethod
    def _record(row: sqlite3.Row) -> RunRecord:
        data = dict(row)
        for col, name in _JSON_COLS.items():
            raw = data.pop(col)
            data[name] = json.loads(raw) if raw else ({} if name in ("spec", "provider_config") else None)
        return RunRecord(**data)

    def delete_run(self, run_id: str) -> None:
        with self._tx() as db:
            for table in ("resources", "events", "logs"):
                db.execute(f"DELETE FROM {table} WHERE run_id=?", (run_id,))
            db.execute("DELETE FROM runs WHERE id=?", (run_id,))

    # --- resources ------------------------------------------------------------------------

    def intent(self, run_id: str, provider: str, kind: str, name: str, region: str | None) -> int:
        now = time.time()
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO resources (run_id, provider, kind, name, region, state, created_at, updated_at)"
                " VALUES (?,?,?,?,?,?,?,?)", (run_id, provider, kind, name, region, "intent", now, now))
            return int(cur.lastrowid)

    def created(self, handle: int, resource_id: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE resources SET resource_id=?, state='created', updated_at=? WHERE id=?",
                       (resource_id, time.time(), handle))

    def deleted(self, run_id: str, resource_id: str) -> None:
        # Match the cloud id; a bare name only matches rows that never got an id (several
        # resources of a run may share the name gpujob-<run>).
        with self._tx() as db:
            db.execute("UPDATE resources SET state='deleted', updated_at=? WHERE run_id=? AND"
                       " (resource_id=? OR (resource_id IS NULL AND name=?))",
                       (time.time(), run_id, resource_id, resource_id))

    def all_deleted(self, run_id: str) -> None:
        """The provider swept the run by tag and found nothing left: close every row."""
        with self._tx() as db:
            db.execute("UPDATE resources SET state='deleted', updated_at=? WHERE run_id=? AND state!='deleted'",
                       (time.time(), run_id))

    def resources(self, run_id: str, live_only: bool = True) -> list[ResourceRow]:
        with self._read() as db:
            q = "SELECT * FROM resources WHERE run_id=?" + (" AND state!='deleted'" if live_only else "")
            rows = db.execute(q + " ORDER BY id", (run_id,)).fetchall()
        return [ResourceRow(r["id"], r["run_id"], r["provider"], r["kind"], r["name"], r["region"],
                            r["resource_id"], r["state"]) for r in rows]

    # --- events and logs ------------------------------------------------------------------

    def add_event(self, run_id: str, kind: str, detail: dict | None = None) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO events (run_id, ts, kind, detail) VALUES (?,?,?,?)",
                       (run_id, time.time(), kind, json.dumps(detail or {})))

    def events(self, run_id: str) -> list[tuple[float, str, dict]]:
        with self._read() as db:
            rows = db.execute("SELECT ts, kind, detail FROM events WHERE run_id=? ORDER BY id", (run_id,)).fetchall()
        return [(r["ts"], r["kind"], json.loads(r["detail"] or "{}")) for r in rows]

    def append_log(self, run_id: str, offset: int, text: str) -> None:
        """Store a chunk that starts at byte `offset` of the remote log (idempotent per offset)."""
        with self._tx() as db:
            last = db.execute("SELECT seq, offset FROM logs WHERE run_id=? ORDER BY seq DESC LIMIT 1",
                              (run_id,)).fetchone() or (None, None)
            if last[1] is not None and offset <= last[1]:
                return
            db.execute("INSERT INTO logs (run_id, seq, offset, text) VALUES (?,?,?,?)",
                       (run_id, (last[0] or 0) + 1, offset, text))

    def log_text(self, run_id: str) -> str:
        with self._read() as db:
            rows = db.execute("SELECT text FROM logs WHERE run_id=? ORDER BY seq", (run_id,)).fetchall()
        return "".join(r["text"] for r in rows)


def _is_locked(exc: sqlite3.Error) -> bool:
    return "locked" in str(exc) or "busy" in str(exc)


def _rollback(db: sqlite3.Connection) -> None:
    """Roll back if a transaction is open; a failed rollback must not hide the error that caused it."""
    try:
        if db.in_transaction:
            db.execute("ROLLBACK")
    except sqlite3.Error:
        pass


def _holders(path: Path) -> list[int]:
    """Pids of processes with the database file open (Linux /proc; [] elsewhere)."""
    target = str(path.resolve())
    pids = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if any(os.readlink(fd) in (target, target + "-wal") for fd in (proc / "fd").iterdir()):
                pids.append(int(proc.name))
        except OSError:
            continue
    return sorted(pids)
