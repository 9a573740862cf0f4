"""Stability, roles, pairing and cases in a running daemon fed by dcmtk storescu."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pydicom
import pytest

from dicom_io.synthetic.cohort import CohortResult
from dicom_io.synthetic.vendors import Role
from tests.conftest import DaemonProcess, larc_status, start_daemon, stop_process, storescu

pytestmark = pytest.mark.integration


def _rows(daemon: DaemonProcess, sql: str, params: tuple[object, ...] = ()) -> list[sqlite3.Row]:
    with sqlite3.connect(daemon.data_dir / "index.sqlite3") as db:
        db.row_factory = sqlite3.Row
        return db.execute(sql, params).fetchall()


def _wait_for(daemon: DaemonProcess, sql: str, expected: object, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        rows = _rows(daemon, sql)
        if rows and tuple(rows[0]) == expected:
            return
        time.sleep(0.3)
    pytest.fail(f"{sql} never gave {expected}; last: {[tuple(r) for r in _rows(daemon, sql)]}")


@pytest.fixture
def quick_daemon(tmp_path: Path) -> DaemonProcess:
    daemon = start_daemon(tmp_path / "data", extra=("--stable-age-s", "1"))
    yield daemon  # type: ignore[misc]
    stop_process(daemon.proc)


def test_a_complete_patient_is_paired_into_two_ready_cases(
    quick_daemon: DaemonProcess, cohort: CohortResult
) -> None:
    patient = cohort.patients[2]
    run = storescu(quick_daemon.port, cohort.out_dir / patient.patient_id)
    assert run.returncode == 0, run.stderr
    _wait_for(quick_daemon, "SELECT COUNT(*) FROM cases WHERE state = 'ready'", (2,))
    studies = {r["study_uid"]: r["timepoint"] for r in _rows(quick_daemon, "SELECT * FROM studies")}
    assert studies == {s.study_instance_uid: t for t, s in patient.studies.items()}
    roles = {r["series_uid"]: r["role"] for r in _rows(quick_daemon, "SELECT * FROM series")}
    expected = {
        Role.T2W: "T2W_AX",
        Role.DWI: "DWI",
        Role.ADC: "ADC",
        Role.CE_T1: "CE_T1",
        Role.RTSTRUCT: "RTSTRUCT",
        Role.SEG: "SEG",
        Role.LOCALIZER: "IGNORED",
        Role.T2W_SAG: "IGNORED",
        Role.T2W_COR: "IGNORED",
    }
    for study in patient.studies.values():
        for role, series in study.series.items():
            assert roles[series.series_instance_uid] == expected[role]
    status = larc_status(quick_daemon.data_dir)
    assert "response v1: ready" in status.stdout
    assert "timepoint restaging" in status.stdout


def test_a_late_mask_reopens_the_study_and_readies_the_case(
    quick_daemon: DaemonProcess, cohort: CohortResult
) -> None:
    patient = cohort.patients[3]
    baseline = patient.studies["baseline"]
    images = [
        p
        for role, s in baseline.series.items()
        if role not in (Role.RTSTRUCT, Role.SEG)
        for p in s.files
    ]
    assert storescu(quick_daemon.port, *images).returncode == 0
    _wait_for(
        quick_daemon,
        "SELECT state, reason FROM cases WHERE kind = 'baseline'",
        ("waiting", "baseline: no tumour mask on the T2W"),
    )
    assert storescu(quick_daemon.port, *baseline.series[Role.RTSTRUCT].files).returncode == 0
    _wait_for(
        quick_daemon, "SELECT state, version FROM cases WHERE kind = 'baseline'", ("ready", 1)
    )
    # a SEG drawn later still is a change of inputs: a new version of the ready case
    assert storescu(quick_daemon.port, *baseline.series[Role.SEG].files).returncode == 0
    _wait_for(
        quick_daemon, "SELECT state, version FROM cases WHERE kind = 'baseline'", ("ready", 2)
    )
    history = _rows(quick_daemon, "SELECT version, state FROM case_history ORDER BY id")
    assert [tuple(r) for r in history if r["state"] == "ready"] == [(1, "ready"), (2, "ready")]


def test_a_vendor_automatic_outline_is_not_scored_as_if_drawn(
    quick_daemon: DaemonProcess, cohort: CohortResult, tmp_path: Path
) -> None:
    """Another program's outline (RTSTRUCT ROIs AUTOMATIC) arrives with the study: larc (no
    segmenter here, so manual mode) does not score on it, and says why."""
    baseline = cohort.patients[1].studies["baseline"]
    images = [
        p
        for role, s in baseline.series.items()
        if role not in (Role.RTSTRUCT, Role.SEG)
        for p in s.files
    ]
    rtstruct = pydicom.dcmread(baseline.series[Role.RTSTRUCT].files[0])
    for roi in rtstruct.StructureSetROISequence:
        roi.ROIGenerationAlgorithm = "AUTOMATIC"
        roi.ROIGenerationDescription = "VendorContour 4"
    vendor = tmp_path / "vendor-rtstruct.dcm"
    rtstruct.save_as(vendor, enforce_file_format=True)
    assert storescu(quick_daemon.port, *images, vendor).returncode == 0
    reason = (
        "baseline: no tumour mask on the T2W (an automatic outline by 'VendorContour 4' is not "
        "used: nobody drew or reviewed it; draw the tumour, or let larc's own segmenter "
        "outline it)"
    )
    _wait_for(quick_daemon, "SELECT state, reason FROM cases WHERE kind = 'baseline'",
              ("waiting", reason))  # fmt: skip
    made_by = _rows(quick_daemon, "SELECT machine_made_by FROM series WHERE role = 'RTSTRUCT'")
    assert [r[0] for r in made_by] == ["VendorContour 4"]
