"""The index's tables and their upgrades: the schema every larc writes, and how an older
index becomes this one (in place, at open)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

SCHEMA_VERSION = 8

SCHEMA = """
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
    referenced_series_uid TEXT,
    machine_made_by TEXT
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
    transaction_uid TEXT,
    committed_by TEXT,
    verified_by TEXT,
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
CREATE TABLE IF NOT EXISTS timepoint_choices (
    id INTEGER PRIMARY KEY,
    patient_id TEXT NOT NULL REFERENCES patients(patient_id),
    baseline_study_uid TEXT,
    restaging_study_uid TEXT,
    who TEXT NOT NULL,
    via TEXT NOT NULL,
    note TEXT NOT NULL DEFAULT '',
    at REAL NOT NULL,
    applied_at REAL
);
CREATE TABLE IF NOT EXISTS auto_masks (
    image_series_uid TEXT PRIMARY KEY REFERENCES series(series_uid),
    study_uid TEXT NOT NULL REFERENCES studies(study_uid),
    patient_id TEXT NOT NULL REFERENCES patients(patient_id),
    model TEXT NOT NULL,
    state TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    task TEXT,
    seg_series_uid TEXT,
    volume_ml REAL,
    mean_probability REAL,
    review TEXT,
    reviewed_by TEXT,
    reviewed_at REAL,
    review_note TEXT NOT NULL DEFAULT '',
    requested_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    announced INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS auto_mask_reviews (
    id INTEGER PRIMARY KEY,
    image_series_uid TEXT NOT NULL REFERENCES auto_masks(image_series_uid),
    decision TEXT NOT NULL,
    who TEXT NOT NULL,
    via TEXT NOT NULL,
    note TEXT NOT NULL DEFAULT '',
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS auto_masks_by_patient ON auto_masks(patient_id);
CREATE INDEX IF NOT EXISTS cases_by_state ON cases(state);
CREATE INDEX IF NOT EXISTS cases_by_patient ON cases(patient_id);
CREATE INDEX IF NOT EXISTS results_by_case ON results(case_id, created_at);
CREATE INDEX IF NOT EXISTS history_by_case ON case_history(case_id);
CREATE INDEX IF NOT EXISTS exports_by_key ON exports(work_key);
"""


def create_or_upgrade(db: sqlite3.Connection, path: Path) -> None:
    """Create the tables, or upgrade an index an older larc wrote; ``RuntimeError`` for an
    index of a newer larc."""
    db.executescript(SCHEMA)
    row = db.execute("SELECT version FROM schema_version").fetchone()
    if row is None:
        db.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))
    elif row[0] in (1, 2, 3, 4, 5, 6, 7):
        if row[0] == 1:  # 1 -> 2: cases remember their work key and task
            db.execute("ALTER TABLE cases ADD COLUMN work_key TEXT")
            db.execute("ALTER TABLE cases ADD COLUMN task TEXT")
        # 2 -> 3: radiologist readings and their audit; 3 -> 4: operators' choices of
        # timepoints; 4 -> 5: automatic masks and their reviews (new tables, created above)
        # 5 -> 6: a mask series names the program that made it on its own (re-read when its
        # study is next classified; until then it counts as drawn, as it did before)
        if "machine_made_by" not in {r[1] for r in db.execute("PRAGMA table_info(series)")}:
            db.execute("ALTER TABLE series ADD COLUMN machine_made_by TEXT")
        # 6 -> 7: exports remember the storage commitment asked for and who committed;
        # 7 -> 8: and how a send was read back (C-FIND, QIDO-RS) where there is no commitment
        exports = {r[1] for r in db.execute("PRAGMA table_info(exports)")}
        for column in ("transaction_uid", "committed_by", "verified_by"):
            if column not in exports:
                db.execute(f"ALTER TABLE exports ADD COLUMN {column} TEXT")
        db.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))
    elif row[0] != SCHEMA_VERSION:
        raise RuntimeError(
            f"index {path} has schema version {row[0]}, this larc expects "
            f"{SCHEMA_VERSION}: upgrade larc or point storage.data_dir elsewhere"
        )
