"""The index's schema: an index written by an older larc is upgraded in place and keeps its
cases."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from daemon.index import SCHEMA_VERSION, Index


def test_an_index_of_schema_1_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite3"
    Index(path).close()
    db = sqlite3.connect(path)  # make it look like what the previous larc wrote
    db.execute("ALTER TABLE cases DROP COLUMN work_key")
    db.execute("ALTER TABLE cases DROP COLUMN task")
    db.execute("UPDATE schema_version SET version = 1")
    db.commit()
    db.close()
    index = Index(path)
    try:
        columns = {r["name"] for r in index.query("PRAGMA table_info(cases)")}
        assert {"work_key", "task"} <= columns
        assert index.query("SELECT version FROM schema_version")[0]["version"] == SCHEMA_VERSION
    finally:
        index.close()


def test_an_index_of_schema_2_gains_readings_and_keeps_its_cases(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite3"
    Index(path).close()
    db = sqlite3.connect(path)  # what larc wrote before readings existed
    db.execute("DROP TABLE reading_audit")
    db.execute("DROP TABLE readings")
    db.execute("INSERT INTO patients VALUES ('P1', 'DOE^J', '', '', 0)")
    db.execute("INSERT INTO cases (case_id, patient_id, kind, version, state, inputs, "
               "fingerprint, updated_at) VALUES ('resp-1', 'P1', 'response', 3, 'exported', "
               "'{}', 'fp', 0)")  # fmt: skip
    db.execute("UPDATE schema_version SET version = 2")
    db.commit()
    db.close()
    index = Index(path)
    try:
        assert index.query("SELECT version FROM schema_version")[0]["version"] == SCHEMA_VERSION
        saved = index.save_readings("resp-1", {"post_crm": "1"}, "dr", "token")
        assert (saved.version, saved.rescore) == (4, True)
    finally:
        index.close()


def test_an_index_of_schema_5_gains_the_mask_program_column(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite3"
    Index(path).close()
    db = sqlite3.connect(path)  # what larc wrote before third-party automatic masks were told
    db.execute("ALTER TABLE series DROP COLUMN machine_made_by")
    db.execute("UPDATE schema_version SET version = 5")
    db.commit()
    db.close()
    index = Index(path)
    try:
        columns = {r["name"] for r in index.query("PRAGMA table_info(series)")}
        assert "machine_made_by" in columns
        assert index.query("SELECT version FROM schema_version")[0]["version"] == SCHEMA_VERSION
    finally:
        index.close()


def test_an_index_of_schema_6_gains_the_commitment_columns(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite3"
    Index(path).close()
    db = sqlite3.connect(path)  # what larc wrote before storage commitment
    db.execute("ALTER TABLE exports DROP COLUMN transaction_uid")
    db.execute("ALTER TABLE exports DROP COLUMN committed_by")
    db.execute("UPDATE schema_version SET version = 6")
    db.commit()
    db.close()
    index = Index(path)
    try:
        columns = {r["name"] for r in index.query("PRAGMA table_info(exports)")}
        assert {"transaction_uid", "committed_by"} <= columns
        assert index.query("SELECT version FROM schema_version")[0]["version"] == SCHEMA_VERSION
    finally:
        index.close()


def test_an_index_of_schema_7_gains_the_read_back_column(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite3"
    Index(path).close()
    db = sqlite3.connect(path)  # what larc wrote before read-back confirmation
    db.execute("ALTER TABLE exports DROP COLUMN verified_by")
    db.execute("UPDATE schema_version SET version = 7")
    db.commit()
    db.close()
    index = Index(path)
    try:
        columns = {r["name"] for r in index.query("PRAGMA table_info(exports)")}
        assert "verified_by" in columns
        assert index.query("SELECT version FROM schema_version")[0]["version"] == SCHEMA_VERSION
    finally:
        index.close()
