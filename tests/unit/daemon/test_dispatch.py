"""Dispatch pieces that need no server: index upgrade, work keys, payloads, worker refusals."""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

import pytest

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
