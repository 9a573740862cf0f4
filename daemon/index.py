"""The index: SQLite (WAL) record of patients, studies, series, instances, rejections and audit.

The index is the source of truth: a restarted daemon resumes from it. One connection is shared
by the listener's threads behind a lock; every write is one transaction, committed (and synced,
``synchronous=FULL``) before the caller acknowledges anything.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemon.cases import case_fingerprint

SCHEMA_VERSION = 3

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS patients (
    patient_id TEXT PRIMARY KEY,
    patient_name TEXT,
    birth_date TEXT,
    sex TEXT,
    first_seen REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS studies (
    study_uid TEXT PRIMARY KEY,
    patient_id TEXT NOT NULL REFERENCES patients(patient_id),
    study_date TEXT,
    study_time TEXT,
    description TEXT,
    accession_number TEXT,
    first_received REAL NOT NULL,
    last_received REAL NOT NULL,
    stable_at REAL,
    time_point_id TEXT,
    timepoint TEXT,
    timepoint_reason TEXT
);
CREATE TABLE IF NOT EXISTS series (
    series_uid TEXT PRIMARY KEY,
    study_uid TEXT NOT NULL REFERENCES studies(study_uid),
    modality TEXT,
    sop_class_uid TEXT,
    series_number INTEGER,
    description TEXT,
    frame_of_reference_uid TEXT,
    ignored_reason TEXT,
    role TEXT,
    role_reason TEXT,
    b_values TEXT,
    referenced_series_uid TEXT
);
CREATE TABLE IF NOT EXISTS instances (
    sop_uid TEXT PRIMARY KEY,
    series_uid TEXT NOT NULL REFERENCES series(series_uid),
    sop_class_uid TEXT NOT NULL,
    instance_number INTEGER,
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    transfer_syntax_uid TEXT,
    calling_ae TEXT,
    received_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS instances_by_series ON instances(series_uid);
CREATE INDEX IF NOT EXISTS series_by_study ON series(study_uid);
CREATE INDEX IF NOT EXISTS studies_by_patient ON studies(patient_id);
CREATE TABLE IF NOT EXISTS rejections (
    id INTEGER PRIMARY KEY,
    received_at REAL NOT NULL,
    calling_ae TEXT,
    sop_class_uid TEXT,
    sop_uid TEXT,
    status INTEGER NOT NULL,
    reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS cases (
    case_id TEXT PRIMARY KEY,
    patient_id TEXT NOT NULL REFERENCES patients(patient_id),
    kind TEXT NOT NULL,
    version INTEGER NOT NULL,
    state TEXT NOT NULL,
    reason TEXT,
    baseline_study_uid TEXT,
    restaging_study_uid TEXT,
    inputs TEXT,
    fingerprint TEXT,
    updated_at REAL NOT NULL,
    work_key TEXT,
    task TEXT
);
CREATE TABLE IF NOT EXISTS case_history (
    id INTEGER PRIMARY KEY,
    case_id TEXT NOT NULL REFERENCES cases(case_id),
    version INTEGER NOT NULL,
    state TEXT NOT NULL,
    reason TEXT,
    fingerprint TEXT,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS results (
    work_key TEXT PRIMARY KEY,
    case_id TEXT NOT NULL REFERENCES cases(case_id),
    version INTEGER NOT NULL,
    study_uid TEXT NOT NULL,
    sr_sop_uid TEXT NOT NULL,
    sr_series_uid TEXT NOT NULL,
    scores TEXT NOT NULL,
    files TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS exports (
    id INTEGER PRIMARY KEY,
    work_key TEXT NOT NULL REFERENCES results(work_key),
    destination TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL,
    last_error TEXT,
    sent_at REAL,
    UNIQUE (work_key, destination)
);
CREATE TABLE IF NOT EXISTS duplicates (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    sop_uid TEXT NOT NULL,
    old_sha256 TEXT NOT NULL,
    new_sha256 TEXT NOT NULL,
    policy TEXT NOT NULL,
    action TEXT NOT NULL,
    calling_ae TEXT
);
CREATE TABLE IF NOT EXISTS readings (
    case_id TEXT PRIMARY KEY REFERENCES cases(case_id),
    vals TEXT NOT NULL,
    updated_at REAL NOT NULL,
    updated_by TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS reading_audit (
    id INTEGER PRIMARY KEY,
    case_id TEXT NOT NULL REFERENCES cases(case_id),
    case_version INTEGER NOT NULL,
    field TEXT NOT NULL,
    old_value TEXT,
    new_value TEXT,
    who TEXT NOT NULL,
    via TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS cases_by_state ON cases(state);
CREATE INDEX IF NOT EXISTS cases_by_patient ON cases(patient_id);
CREATE INDEX IF NOT EXISTS results_by_case ON results(case_id, created_at);
CREATE INDEX IF NOT EXISTS history_by_case ON case_history(case_id);
CREATE INDEX IF NOT EXISTS exports_by_key ON exports(work_key);
"""


@dataclass(frozen=True)
class InstanceRecord:
    """What the index keeps of one received instance."""

    patient_id: str
    patient_name: str
    birth_date: str
    sex: str
    study_uid: str
    study_date: str
    study_time: str
    study_description: str
    accession_number: str
    time_point_id: str
    series_uid: str
    modality: str
    series_number: int | None
    series_description: str
    frame_of_reference_uid: str
    sop_class_uid: str
    sop_uid: str
    instance_number: int | None
    transfer_syntax_uid: str
    ignored_reason: str | None = None


def _append_history(db: sqlite3.Connection, case_id: str, at: float) -> None:
    """Add the case's current version, state and reason to its history (in a transaction)."""
    db.execute(
        "INSERT INTO case_history (case_id, version, state, reason, fingerprint, at) "
        "SELECT case_id, version, state, reason, fingerprint, ? FROM cases WHERE case_id = ?",
        (at, case_id),
    )


@dataclass(frozen=True)
class ReadingsSaved:
    """What saving a case's readings did."""

    version: int  # the case's version afterwards
    changes: list[tuple[str, str | None, str | None]]  # field, old, new
    rescore: bool  # a new version was made ready


class Index:
    """The SQLite index under the storage root."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(_SCHEMA)
        row = self._db.execute("SELECT version FROM schema_version").fetchone()
        if row is None:
            self._db.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))
        elif row["version"] in (1, 2):
            if row["version"] == 1:  # 1 -> 2: cases remember their work key and task
                self._db.execute("ALTER TABLE cases ADD COLUMN work_key TEXT")
                self._db.execute("ALTER TABLE cases ADD COLUMN task TEXT")
            # 2 -> 3: radiologist readings and their audit (new tables, created above)
            self._db.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))
        elif row["version"] != SCHEMA_VERSION:
            raise RuntimeError(
                f"index {path} has schema version {row['version']}, this larc expects "
                f"{SCHEMA_VERSION}: upgrade larc or point storage.data_dir elsewhere"
            )

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def instance(self, sop_uid: str) -> sqlite3.Row | None:
        """The index row of an instance, or ``None``."""
        with self._lock:
            row: sqlite3.Row | None = self._db.execute(
                "SELECT * FROM instances WHERE sop_uid = ?", (sop_uid,)
            ).fetchone()
        return row

    def record_instance(
        self, record: InstanceRecord, path: Path, size: int, sha256: str, calling_ae: str
    ) -> None:
        """Add (or replace) one stored instance and its patient, study and series, atomically.

        A study that was stable is re-opened: its ``stable_at`` is cleared.
        """
        now = time.time()
        with self._transaction() as db:
            db.execute(
                "INSERT INTO patients VALUES (?, ?, ?, ?, ?) ON CONFLICT(patient_id) DO UPDATE "
                "SET patient_name = excluded.patient_name",
                (record.patient_id, record.patient_name, record.birth_date, record.sex, now),
            )
            db.execute(
                "INSERT INTO studies (study_uid, patient_id, study_date, study_time, description, "
                "accession_number, first_received, last_received, time_point_id) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(study_uid) DO UPDATE SET last_received = excluded.last_received, "
                "stable_at = NULL",
                (
                    record.study_uid,
                    record.patient_id,
                    record.study_date,
                    record.study_time,
                    record.study_description,
                    record.accession_number,
                    now,
                    now,
                    record.time_point_id,
                ),
            )
            db.execute(
                "INSERT INTO series (series_uid, study_uid, modality, sop_class_uid, "
                "series_number, description, frame_of_reference_uid, ignored_reason) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(series_uid) DO NOTHING",
                (
                    record.series_uid,
                    record.study_uid,
                    record.modality,
                    record.sop_class_uid,
                    record.series_number,
                    record.series_description,
                    record.frame_of_reference_uid,
                    record.ignored_reason,
                ),
            )
            db.execute(
                "INSERT OR REPLACE INTO instances VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.sop_uid,
                    record.series_uid,
                    record.sop_class_uid,
                    record.instance_number,
                    str(path),
                    size,
                    sha256,
                    record.transfer_syntax_uid,
                    calling_ae,
                    now,
                ),
            )

    def record_rejection(
        self, calling_ae: str, sop_class_uid: str, sop_uid: str, status: int, reason: str
    ) -> None:
        """Remember an instance we refused, and why."""
        with self._transaction() as db:
            db.execute(
                "INSERT INTO rejections (received_at, calling_ae, sop_class_uid, sop_uid, "
                "status, reason) VALUES (?, ?, ?, ?, ?, ?)",
                (time.time(), calling_ae, sop_class_uid, sop_uid, status, reason),
            )

    def record_duplicate(
        self,
        sop_uid: str,
        old_sha256: str,
        new_sha256: str,
        policy: str,
        action: str,
        calling_ae: str,
    ) -> None:
        """Audit a SOP Instance UID received again with different content."""
        with self._transaction() as db:
            db.execute(
                "INSERT INTO duplicates (at, sop_uid, old_sha256, new_sha256, policy, action, "
                "calling_ae) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (time.time(), sop_uid, old_sha256, new_sha256, policy, action, calling_ae),
            )

    # -- assembly, roles, timepoints, cases ----------------------------------------------------

    def studies_due(self, quiet_since: float) -> list[sqlite3.Row]:
        """Studies not yet stable whose last instance arrived before ``quiet_since``."""
        return self.query(
            "SELECT * FROM studies WHERE stable_at IS NULL AND last_received <= ?", (quiet_since,)
        )

    def mark_stable(self, study_uid: str, at: float) -> None:
        """Record that a study became stable (unless an instance arrived meanwhile)."""
        with self._transaction() as db:
            db.execute(
                "UPDATE studies SET stable_at = ? WHERE study_uid = ? AND last_received <= ?",
                (at, study_uid, at),
            )

    def set_series_role(
        self, series_uid: str, role: str, reason: str, b_values: str, referenced: str | None
    ) -> None:
        """Store the role given to a series and why."""
        with self._transaction() as db:
            db.execute(
                "UPDATE series SET role = ?, role_reason = ?, b_values = ?, "
                "referenced_series_uid = ? WHERE series_uid = ?",
                (role, reason, b_values, referenced, series_uid),
            )

    def set_timepoints(self, timepoints: dict[str, tuple[str, str]]) -> None:
        """Store each study's timepoint and the reason: {study_uid: (timepoint, reason)}."""
        with self._transaction() as db:
            db.executemany(
                "UPDATE studies SET timepoint = ?, timepoint_reason = ? WHERE study_uid = ?",
                [(tp, reason, uid) for uid, (tp, reason) in timepoints.items()],
            )

    def upsert_case(self, row: dict[str, Any], new_version: bool) -> None:
        """Insert or update a case, adding a history entry for every state or version change."""
        now = time.time()
        with self._transaction() as db:
            db.execute(
                "INSERT INTO cases (case_id, patient_id, kind, version, state, reason, "
                "baseline_study_uid, restaging_study_uid, inputs, fingerprint, updated_at) "
                "VALUES (:case_id, :patient_id, :kind, :version, :state, :reason, "
                ":baseline_study_uid, :restaging_study_uid, :inputs, :fingerprint, :now) "
                "ON CONFLICT(case_id) DO UPDATE SET version = excluded.version, "
                "state = excluded.state, reason = excluded.reason, "
                "baseline_study_uid = excluded.baseline_study_uid, "
                "restaging_study_uid = excluded.restaging_study_uid, inputs = excluded.inputs, "
                "fingerprint = excluded.fingerprint, updated_at = excluded.updated_at",
                {**row, "now": now},
            )
            if new_version:
                db.execute(
                    "INSERT INTO case_history (case_id, version, state, reason, fingerprint, at) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        row["case_id"],
                        row["version"],
                        row["state"],
                        row["reason"],
                        row["fingerprint"],
                        now,
                    ),
                )

    def set_case_state(
        self,
        case_id: str,
        version: int,
        state: str,
        reason: str,
        work_key: str | None = None,
        task: str | None = None,
    ) -> bool:
        """Move one case version to ``state`` (with a history entry). ``False`` when the case
        has moved on to another version meanwhile (the change is then dropped)."""
        now = time.time()
        with self._transaction() as db:
            changed = db.execute(
                "UPDATE cases SET state = ?, reason = ?, updated_at = ?, "
                "work_key = COALESCE(?, work_key), task = COALESCE(?, task) "
                "WHERE case_id = ? AND version = ?",
                (state, reason, now, work_key, task, case_id, version),
            ).rowcount
            if changed:
                _append_history(db, case_id, now)
        return bool(changed)

    def record_result(self, row: dict[str, Any], destinations: list[str]) -> bool:
        """Store a case version's result and queue its exports; ``False`` when the work key
        has a result already (a redelivered task: nothing is added)."""
        now = time.time()
        with self._transaction() as db:
            added = db.execute(
                "INSERT INTO results (work_key, case_id, version, study_uid, sr_sop_uid, "
                "sr_series_uid, scores, files, created_at) VALUES (:work_key, :case_id, "
                ":version, :study_uid, :sr_sop_uid, :sr_series_uid, :scores, :files, :now) "
                "ON CONFLICT(work_key) DO NOTHING",
                {**row, "now": now},
            ).rowcount
            if added:
                db.executemany(
                    "INSERT INTO exports (work_key, destination, state, next_at) "
                    "VALUES (?, ?, 'pending', ?)",
                    [(row["work_key"], d, now) for d in destinations],
                )
        return bool(added)

    def update_export(self, export_id: int, state: str, attempts: int, next_at: float,
                      error: str | None) -> None:  # fmt: skip
        """Record the outcome of one try of an export."""
        with self._transaction() as db:
            db.execute(
                "UPDATE exports SET state = ?, attempts = ?, next_at = ?, last_error = ?, "
                "sent_at = CASE WHEN ? = 'sent' THEN ? ELSE sent_at END WHERE id = ?",
                (state, attempts, next_at, error, state, time.time(), export_id),
            )

    def series_of_study(self, study_uid: str) -> list[sqlite3.Row]:
        """A study's series in series-number order, each with its instance count (``n``)."""
        return self.query(
            "SELECT r.*, COUNT(i.sop_uid) AS n FROM series r LEFT JOIN instances i "
            "USING (series_uid) WHERE r.study_uid = ? GROUP BY r.series_uid "
            "ORDER BY r.series_number",
            (study_uid,),
        )

    def readings(self, case_id: str) -> dict[str, str]:
        """The radiologist-read values entered for a case (feature name -> value as entered)."""
        rows = self.query("SELECT vals FROM readings WHERE case_id = ?", (case_id,))
        return dict(json.loads(rows[0]["vals"])) if rows else {}

    def save_readings(
        self, case_id: str, values: dict[str, str], who: str, via: str
    ) -> ReadingsSaved:
        """Store a case's readings (an empty value removes one) with an audit row per change.

        A case past waiting gets a new version, ready again, so that it is re-scored with the
        readings (its new SR supersedes the last one); a waiting case keeps its version.
        ``KeyError`` when there is no such case.
        """
        now = time.time()
        with self._transaction() as db:
            case = db.execute("SELECT * FROM cases WHERE case_id = ?", (case_id,)).fetchone()
            if case is None:
                raise KeyError(case_id)
            row = db.execute("SELECT vals FROM readings WHERE case_id = ?", (case_id,)).fetchone()
            old: dict[str, str] = json.loads(row["vals"]) if row else {}
            new = {k: v for k, v in {**old, **values}.items() if v != ""}
            changes = [
                (name, old.get(name), new.get(name))
                for name in sorted(set(old) | set(new))
                if old.get(name) != new.get(name)
            ]
            version = int(case["version"])
            if not changes:
                return ReadingsSaved(version, [], False)
            db.execute(
                "INSERT INTO readings VALUES (?, ?, ?, ?) ON CONFLICT(case_id) DO UPDATE SET "
                "vals = excluded.vals, updated_at = excluded.updated_at, "
                "updated_by = excluded.updated_by",
                (case_id, json.dumps(new, sort_keys=True), now, who),
            )
            fingerprint = case_fingerprint(json.loads(case["inputs"] or "{}"), new)
            rescore = case["state"] != "waiting"
            if rescore:
                version += 1
                listed = ", ".join(f"{n} {o or '-'} -> {v or '-'}" for n, o, v in changes)
                db.execute(
                    "UPDATE cases SET version = ?, state = 'ready', reason = ?, fingerprint = ?, "
                    "updated_at = ? WHERE case_id = ?",
                    (version, f"re-scoring: readings changed ({listed})", fingerprint, now,
                     case_id),
                )  # fmt: skip
                _append_history(db, case_id, now)
            else:
                db.execute(
                    "UPDATE cases SET fingerprint = ? WHERE case_id = ?", (fingerprint, case_id)
                )
            db.executemany(
                "INSERT INTO reading_audit (case_id, case_version, field, old_value, new_value, "
                "who, via, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(case_id, version, n, o, v, who, via, now) for n, o, v in changes],
            )
        return ReadingsSaved(version, changes, rescore)

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        """Read-only query for status reports and tests."""
        with self._lock:
            return list(self._db.execute(sql, params).fetchall())
