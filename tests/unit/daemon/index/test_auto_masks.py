"""The index's automatic masks: asked for once per series, moved on by the segmenter,
announced to the assembler, and reviewed by a radiologist (audited) with ``larc outline``."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from daemon.index import INDEX_FILE, AutoMaskState, Index, InstanceRecord
from tests.conftest import LARC


def _t2w(index: Index) -> None:
    record = InstanceRecord(
        patient_id="P1", patient_name="Doe^J", birth_date="", sex="", study_uid="1.2",
        study_date="20240101", study_time="", study_description="", accession_number="",
        time_point_id="", series_uid="1.2.3", modality="MR", series_number=3,
        series_description="T2W", frame_of_reference_uid="1.9",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.4",
        sop_uid="1.2.3.1", instance_number=1, transfer_syntax_uid="1.2.840.10008.1.2.1",
    )  # fmt: skip
    index.record_instance(record, Path("/nowhere"), 1, "0" * 64, "TEST")


def _outline(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [LARC, "outline", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"LARC_STORAGE__DATA_DIR": str(data_dir), "PATH": "/usr/bin:/bin"},
    )


def test_an_automatic_mask_is_asked_once_finished_announced_and_reviewed(tmp_path: Path) -> None:
    index = Index(tmp_path / INDEX_FILE)
    _t2w(index)
    assert index.request_auto_mask("1.2.3", "1.2", "P1", "m 1")
    assert not index.request_auto_mask("1.2.3", "1.2", "P1", "m 1")  # once per series
    assert index.take_finished_auto_masks() == []  # asked, not finished
    with pytest.raises(ValueError, match="no outline to review"):
        index.review_auto_mask("1.2.3", "accepted", "dr.a", "cli")
    index.set_auto_mask("1.2.3", AutoMaskState.QUEUED, "segmenting", task="t")
    index.set_auto_mask(
        "1.2.3", AutoMaskState.PASSED, "automatic outline 3.0 ml", seg_series_uid="1.2.9",
        volume_ml=3.0, mean_probability=0.8,
    )  # fmt: skip
    assert index.take_finished_auto_masks() == ["P1"]
    assert index.take_finished_auto_masks() == []
    row = index.auto_mask_of_seg("1.2.9")
    assert row is not None
    assert (row.state, row.volume_ml, row.review) == ("passed", 3.0, None)
    index.close()

    listed = _outline(tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "T2W 1.2.3: passed, 3.0 ml - automatic outline 3.0 ml [not reviewed]" in listed.stdout
    both = _outline(tmp_path, "--accept", "1.2.3", "--reject", "1.2.3")
    assert both.returncode == 2
    assert "not both" in both.stderr
    unknown = _outline(tmp_path, "--accept", "9.9")
    assert unknown.returncode == 2
    assert "no automatic mask on that series" in unknown.stderr
    review = _outline(tmp_path, "--reject", "1.2.3", "--by", "dr.b", "--note", "misses the tumour")
    assert review.returncode == 0, review.stderr

    index = Index(tmp_path / INDEX_FILE)
    row = index.auto_mask("1.2.3")
    assert row is not None
    assert (row.review, row.reviewed_by, row.review_note) == (
        "rejected",
        "dr.b",
        "misses the tumour",
    )
    assert index.take_finished_auto_masks() == ["P1"]  # the assembler decides the cases again
    audit = index.auto_mask_reviews("1.2.3")
    assert [(a.decision, a.who, a.via) for a in audit] == [("rejected", "dr.b", "cli")]
    with pytest.raises(ValueError, match="accepted' or 'rejected"):
        index.review_auto_mask("1.2.3", "maybe", "dr.a", "cli")
    index.close()
    assert "rejected by dr.b" in _outline(tmp_path, "P1").stdout
