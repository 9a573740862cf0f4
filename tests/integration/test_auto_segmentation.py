"""Automatic tumour segmentation end to end (``larc serve``, embedded workers, the test
bundle's segmenter): studies sent with no RTSTRUCT and no SEG at all are segmented, the mask
is stored as an automatic DICOM SEG and scored on, the SEG goes out with the SR and the
Grad-CAM captures, and the SR says the outline is automatic and unverified; a drawn RTSTRUCT
sent afterwards makes a new version whose SR references the first. A mask that fails its
quality gate declines the case with the reason, and nothing is sent.

The test bundle's segmenter is trained for seconds (it checks plumbing, not quality:
bench/segmentation.py measures Dice), so the passing run sets a permissive gate
(``segmentation.gate``) and the failing run one no mask can pass; both let inputs outside the
training envelope through with a warning (its outlines are far too large).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk  # noqa: N813  (the name the SimpleITK world uses)
import yaml

from daemon.harness import read_index
from daemon.harness.peers import stop_process
from dicom_io.masks import rtstruct_mask, seg_mask
from dicom_io.sr import read_report
from dicom_io.synthetic.cohort import CohortResult
from tests.conftest import TrainedBundle, larc_status, start_daemon, storescu
from tests.integration.scoring_checks import SR_CLASS
from tests.unit.dicom_io.test_result_objects import dciodvfy_errors, sr_template_errors

pytestmark = pytest.mark.slow

SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
PERMISSIVE = {
    "min_volume_ml": 0.0,
    "max_volume_ml": 100000.0,
    "min_mean_probability": 0.0,
    "max_components": 1000,
    "allow_edge": True,
}
IMPOSSIBLE = {"min_volume_ml": 50000.0, "max_volume_ml": 60000.0}


def _copy(patient: Path, out: Path, keep: Callable[[str], bool]) -> Path:
    """The patient's series folders that ``keep`` accepts (by folder name), copied."""
    for series in sorted(patient.glob("*/*")):
        if keep(series.name):
            shutil.copytree(series, out / series.parent.name / series.name)
    return out


def _is_mask(name: str) -> bool:
    return name.endswith(("_rtstruct", "_seg"))


def _start(tmp_path: Path, bundle: TrainedBundle, gate: dict[str, Any]) -> Any:
    config = tmp_path / "larc.yaml"
    # scoring.out_of_range: warn - the seconds-trained segmenter outlines far too much, which
    # the training envelope rightly refuses (tumour volume); the SR then lists the warnings
    sections = {"segmentation": {"gate": gate}, "scoring": {"out_of_range": "warn"}}
    config.write_text(yaml.safe_dump(sections))
    extra = ("--bundle", str(bundle.folder), "--stable-age-s", "1")
    return start_daemon(tmp_path / "data", config=config, extra=extra)


def _wait(what: str, ready: Callable[[], bool], daemon: Any, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}:\n{daemon.log()[-4000:]}")
        time.sleep(0.3)


def _cases(data_dir: Path) -> list[dict[str, Any]]:
    return read_index(data_dir, "SELECT * FROM cases ORDER BY kind")


def _outbox(data_dir: Path) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(p) for p in sorted((data_dir / "outbox").glob("*.dcm"))]


def _t2w(patient: Path, study_uid: str) -> list[pydicom.Dataset]:
    for folder in sorted(patient.glob("*/*_t2w")):
        datasets = [pydicom.dcmread(p) for p in sorted(folder.glob("*.dcm"))]
        if datasets[0].StudyInstanceUID == study_uid:
            return datasets
    raise AssertionError(f"no T2W for study {study_uid}")


def _true_tumour(patient: Path, t2w: list[pydicom.Dataset]) -> np.ndarray:
    study = t2w[0].StudyInstanceUID
    for path in patient.glob("*/*_rtstruct/*.dcm"):
        rt = pydicom.dcmread(path)
        if rt.StudyInstanceUID == study:
            return sitk.GetArrayFromImage(rtstruct_mask(rt, t2w)) > 0
    raise AssertionError("no drawn RTSTRUCT for the study")


def test_studies_without_masks_are_segmented_scored_and_superseded_by_a_drawn_mask(
    tmp_path: Path, cohort: CohortResult, trained_bundle: TrainedBundle
) -> None:
    patient = cohort.out_dir / cohort.patients[0].patient_id
    images = _copy(patient, tmp_path / "images", lambda name: not _is_mask(name))
    drawn = _copy(patient, tmp_path / "drawn", lambda name: name.endswith("_rtstruct"))
    daemon = _start(tmp_path, trained_bundle, PERMISSIVE)
    data_dir = daemon.data_dir
    try:
        assert storescu(daemon.port, images).returncode == 0
        _wait(
            "both cases exported on automatic masks",
            lambda: [c["state"] for c in _cases(data_dir)] == ["exported", "exported"],
            daemon,
        )
        first = {c["kind"]: c for c in _cases(data_dir)}
        objects = _outbox(data_dir)
        segs = [o for o in objects if o.SOPClassUID == SEG_CLASS]
        srs = [o for o in objects if o.SOPClassUID == SR_CLASS]
        assert len(srs) == 2
        assert len({s.SOPInstanceUID for s in segs}) == 2  # one per study (baseline, restaging)
        assert len({s.StudyInstanceUID for s in segs}) == 2
        for seg in segs:
            assert dciodvfy_errors(seg, tmp_path) == []
            read = hd.seg.Segmentation.from_dataset(seg)
            segment = read.SegmentSequence[0]
            assert segment.SegmentAlgorithmType == "AUTOMATIC"
            assert segment.SegmentAlgorithmName == "larc-rectal"
            assert segment.SegmentedPropertyTypeCodeSequence[0].CodeValue == "108369006"
            t2w = _t2w(patient, seg.StudyInstanceUID)
            automatic = sitk.GetArrayFromImage(seg_mask(seg, t2w)) > 0
            assert automatic.any()
            assert np.logical_and(automatic, _true_tumour(patient, t2w)).any()
        seg_uids = {s.SOPInstanceUID for s in segs}
        for sr in srs:
            assert dciodvfy_errors(sr, tmp_path) == []
            assert sr_template_errors(sr, tmp_path) == []
            report = read_report(sr)
            # every measurement group is a TID 1411 group on segment 1 of one of the SEGs sent
            assert report.groups
            for group in report.groups:
                assert group.segment is not None, group
                assert group.segment[0] in seg_uids
                assert group.segment[1] == 1
            comments = report.comments
            assert any(
                c.startswith("Tumour outline (") and "automatic outline by larc-rectal" in c
                and "not reviewed" in c and "unverified" in c
                for c in comments
            ), comments  # fmt: skip

        assert storescu(daemon.port, drawn).returncode == 0  # the radiologist's masks, late
        _wait(
            "a new version of both cases on the drawn masks",
            lambda: all(
                c["version"] == first[c["kind"]]["version"] + 1 and c["state"] == "exported"
                for c in _cases(data_dir)
            ),
            daemon,
        )
        status = larc_status(data_dir)
    finally:
        stop_process(daemon.proc)
    assert status.returncode == 0, status.stderr
    new_srs = [o for o in _outbox(data_dir) if o.SOPClassUID == SR_CLASS]
    assert len(new_srs) == 4
    old = {s.SOPInstanceUID for s in srs}
    for sr in (s for s in new_srs if s.SOPInstanceUID not in old):
        report = read_report(sr)
        assert set(report.predecessors) & old  # supersedes the SR scored on the automatic mask
        assert any("drawn RTSTRUCT" in c for c in report.comments), report.comments
        assert not any("automatic outline" in c for c in report.comments)
    masks = read_index(data_dir, "SELECT state, reason FROM auto_masks")
    assert [m["state"] for m in masks] == ["passed", "passed"]


def test_a_mask_that_fails_its_gate_declines_the_case_and_sends_nothing(
    tmp_path: Path, cohort: CohortResult, trained_bundle: TrainedBundle
) -> None:
    patient = cohort.out_dir / cohort.patients[1].patient_id
    images = _copy(patient, tmp_path / "images", lambda name: not _is_mask(name))
    daemon = _start(tmp_path, trained_bundle, IMPOSSIBLE)
    data_dir = daemon.data_dir
    try:
        assert storescu(daemon.port, images).returncode == 0
        _wait(
            "both cases declined",
            lambda: [c["state"] for c in _cases(data_dir)] == ["declined", "declined"],
            daemon,
        )
        status = larc_status(data_dir)
    finally:
        stop_process(daemon.proc)
    for case in _cases(data_dir):
        assert case["reason"].startswith("baseline: automatic segmentation failed its check ("), (
            case
        )
    assert "automatic segmentation failed its check" in status.stdout
    assert _outbox(data_dir) == []  # no SR, no capture, no SEG
    log = daemon.log()
    assert "automatic tumour mask of series" in log
    assert json.dumps(read_index(data_dir, "SELECT state FROM auto_masks")).count("failed") == 2
