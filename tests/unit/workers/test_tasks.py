"""Worker pieces that need no server: work keys, refused payloads, a bundle mismatch."""

from __future__ import annotations

import pytest

from tests.conftest import TrainedBundle
from workers.payload import CasePayload, idempotency_key
from workers.tasks import run_analyse


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
