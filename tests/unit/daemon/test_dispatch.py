"""Dispatch pieces that need no server: index upgrade, work keys, payloads, worker refusals."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
from pathlib import Path

import pytest

from daemon.cases import case_fingerprint
from daemon.index import SCHEMA_VERSION, Index
from tests.conftest import LARC, TrainedBundle
from workers.payload import CasePayload, idempotency_key
from workers.tasks import run_analyse


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


def test_a_case_without_readings_keeps_the_fingerprint_of_larc_0_1() -> None:
    inputs = {"baseline_t2w_ax": "1.2.3:24", "baseline_mask": "1.2.4"}
    legacy = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]
    assert case_fingerprint(inputs, {}) == legacy  # no new versions after an upgrade
    assert case_fingerprint(inputs, {"post_crm": "1"}) != legacy
    assert case_fingerprint(inputs, {"post_crm": "1"}) != case_fingerprint(
        inputs, {"post_crm": "0"}
    )


def test_work_key_changes_with_inputs_and_model_only() -> None:
    key = idempotency_key("resp-1", "inputs-a", "larc-rectal 1.0")
    assert key == idempotency_key("resp-1", "inputs-a", "larc-rectal 1.0")
    assert key != idempotency_key("resp-1", "inputs-b", "larc-rectal 1.0")
    assert key != idempotency_key("resp-1", "inputs-a", "larc-rectal 1.1")
    assert key != idempotency_key("base-1", "inputs-a", "larc-rectal 1.0")


def test_a_payload_that_is_not_one_is_refused() -> None:
    with pytest.raises(ValueError, match="not a larc case payload"):
        CasePayload.from_json({"case_id": "x"})
    result = run_analyse({"case_id": "x"}, None)
    assert result["stage"] == "analyse"
    assert "not a larc case payload" in result["failed"]


def test_a_worker_with_another_bundle_fails_the_case_with_the_reason(
    trained_bundle: TrainedBundle,
) -> None:
    payload = CasePayload(
        case_id="resp-1", kind="response", version=1, key="k", model_version="other 2.0",
        algorithm={"name": "other", "version": "2.0", "manufacturer": "larc"},
        created_at="2026-11-23T10:00:00", inputs_b64="", target_study={},
    )  # fmt: skip
    result = run_analyse(payload.to_json(), trained_bundle.folder)
    assert "the case was queued for 'other 2.0'" in result["failed"]
    assert "same models.bundle_dir" in result["failed"]


def test_larc_worker_without_a_broker_says_what_to_set(tmp_path: Path) -> None:
    run = subprocess.run(
        [LARC, "worker"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        cwd=tmp_path,
    )
    assert run.returncode == 2
    assert "broker.url is not set" in run.stderr
