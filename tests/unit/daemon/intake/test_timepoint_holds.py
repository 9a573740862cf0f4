"""A patient whose study descriptions contradict date order is held, not scored; an operator's
choice (``larc pair`` or the worklist) resolves it as a new case version.

Real synthetic DICOM files (re-described and re-dated as a site would send them), a real index
and the assembler that ``larc serve`` runs; a CT study between the two MR studies is not a
rectal MR study and plays no part."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from daemon.cases import CaseKind, CaseState, case_id
from daemon.index import Index, InstanceRecord
from daemon.intake.assembly import Assembler
from daemon.settings import PairingSettings
from dicom_io.synthetic.cohort import CohortResult
from tests.conftest import LARC

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"


def _record(ds: pydicom.Dataset) -> InstanceRecord:
    return InstanceRecord(
        patient_id=str(ds.PatientID), patient_name=str(ds.PatientName),
        birth_date=str(ds.get("PatientBirthDate", "")), sex=str(ds.get("PatientSex", "")),
        study_uid=str(ds.StudyInstanceUID), study_date=str(ds.StudyDate),
        study_time=str(ds.get("StudyTime", "")), study_description=str(ds.StudyDescription),
        accession_number="", time_point_id=str(ds.get("ClinicalTrialTimePointID", "")),
        series_uid=str(ds.SeriesInstanceUID), modality=str(ds.Modality),
        series_number=int(ds.get("SeriesNumber", 0)),
        series_description=str(ds.get("SeriesDescription", "")),
        frame_of_reference_uid=str(ds.get("FrameOfReferenceUID", "")),
        sop_class_uid=str(ds.SOPClassUID), sop_uid=str(ds.SOPInstanceUID),
        instance_number=int(ds.get("InstanceNumber", 0)), transfer_syntax_uid="1.2.840.10008.1.2.1",
    )  # fmt: skip


def _store(index: Index, files: list[Path], out: Path, **changes: str) -> str:
    """Store copies of ``files`` with ``changes`` to their headers; the study UID."""
    out.mkdir(parents=True, exist_ok=True)
    study_uid = ""
    for number, source in enumerate(files):
        ds = pydicom.dcmread(source)
        for keyword, value in changes.items():
            setattr(ds, keyword, value)
        path = out / f"{number}.dcm"
        ds.save_as(path)
        index.record_instance(_record(ds), path, path.stat().st_size, "0" * 64, "TEST")
        study_uid = str(ds.StudyInstanceUID)
    return study_uid


@pytest.fixture
def held(tmp_path: Path, cohort: CohortResult) -> tuple[Index, Assembler, dict[str, str], str]:
    """The issue's patient: baseline 'MR PELVIS W WO CONTRAST' 2016-10-17, a CT 2016-11-20,
    restaging 'MRI Rectum Staging' 2016-12-31."""
    patient = cohort.patients[0]
    index = Index(tmp_path / "index.sqlite3")
    studies = {}
    for timepoint, date, text in (
        ("baseline", "20161017", "MR PELVIS W WO CONTRAST"),
        ("restaging", "20161231", "MRI Rectum Staging"),
    ):
        study = patient.studies[timepoint]
        files = sorted(f for s in study.series.values() for f in s.files)
        studies[timepoint] = _store(
            index, files, tmp_path / timepoint, StudyDate=date, StudyDescription=text
        )
    t2w = next(s for s in patient.studies["baseline"].series.values() if "T2" in s.description)
    studies["ct"] = _store(
        index, t2w.files[:3], tmp_path / "ct", StudyDate="20161120",
        StudyDescription="CT ABDOMEN PELVIS", Modality="CT", SOPClassUID=CT_IMAGE,
        StudyInstanceUID=generate_uid(), SeriesInstanceUID=generate_uid(),
        SeriesDescription="AX ABD PEL 5mm",
    )  # fmt: skip
    assembler = Assembler(index, stable_age_s=1.0, policy=PairingSettings().policy())
    assembler.run_once(now=4e9)
    yield index, assembler, studies, patient.patient_id  # type: ignore[misc]
    index.close()


def test_a_description_against_date_order_holds_both_cases(
    held: tuple[Index, Assembler, dict[str, str], str],
) -> None:
    index, _, studies, patient_id = held
    for kind in CaseKind:
        case = index.case(case_id(patient_id, kind))
        assert case is not None
        assert case.state == CaseState.HELD
        assert case.reason.startswith("timepoints conflict: the 2016-12-31 study 'MRI Rectum")
        assert "2016-10-17 study 'MR PELVIS W WO CONTRAST' is 75 days earlier" in case.reason
        assert "CT ABDOMEN" not in case.reason
        assert case.baseline_study_uid is None
    timepoints = {s.study_uid: s.timepoint for s in index.studies_of_patient(patient_id)}
    assert timepoints == {studies["baseline"]: "undecided", studies["restaging"]: "undecided",
                          studies["ct"]: None}  # fmt: skip


def test_an_operators_choice_makes_a_new_version_paired_as_chosen(
    held: tuple[Index, Assembler, dict[str, str], str],
) -> None:
    index, assembler, studies, patient_id = held
    with pytest.raises(ValueError, match="must be dated after"):
        index.choose_timepoints(
            patient_id, studies["restaging"], studies["baseline"], "dr.lee", "test"
        )
    with pytest.raises(ValueError, match="not one of this patient's studies"):
        index.choose_timepoints(patient_id, "1.2.3", None, "dr.lee", "test")
    index.choose_timepoints(patient_id, studies["baseline"], studies["restaging"], "dr.lee", "test")
    assembler.run_once(now=4e9)
    response = index.case(case_id(patient_id, CaseKind.RESPONSE))
    baseline = index.case(case_id(patient_id, CaseKind.BASELINE))
    assert response is not None
    assert baseline is not None
    assert (response.state, response.version) == (CaseState.READY, 2)
    assert (baseline.state, baseline.version) == (CaseState.READY, 2)
    assert "timepoints chosen by dr.lee" in response.reason
    assert response.baseline_study_uid == studies["baseline"]
    assert response.restaging_study_uid == studies["restaging"]
    assert baseline.baseline_study_uid == studies["baseline"]
    found = {
        s.study_uid: (s.timepoint, s.timepoint_reason) for s in index.studies_of_patient(patient_id)
    }
    assert found[studies["restaging"]][0] == "restaging"
    assert "chosen by dr.lee" in (found[studies["restaging"]][1] or "")
    assert [c.who for c in index.timepoint_choices(patient_id)] == ["dr.lee"]
    assembler.run_once(now=4e9)  # applied once: the next pass changes nothing
    again = index.case(case_id(patient_id, CaseKind.RESPONSE))
    assert again is not None
    assert again.version == 2


def _larc(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [LARC, *args], capture_output=True, text=True, timeout=60, check=False,
        env={"LARC_STORAGE__DATA_DIR": str(data_dir), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip


def test_larc_pair_shows_the_conflict_and_records_a_choice_by_date(
    held: tuple[Index, Assembler, dict[str, str], str], tmp_path: Path
) -> None:
    index, assembler, studies, patient_id = held
    response = case_id(patient_id, CaseKind.RESPONSE)
    shown = _larc(tmp_path, "pair", response)
    assert shown.returncode == 0, shown.stderr
    assert "undecided (on hold: timepoints conflict" in shown.stdout
    assert f"case {response} response v1: held - timepoints conflict" in shown.stdout
    wrong = _larc(
        tmp_path, "pair", response, "--baseline", "2016-12-31", "--restaging", "2016-10-17"
    )
    assert wrong.returncode == 2
    assert "must be dated after the baseline" in wrong.stderr
    ok = _larc(tmp_path, "pair", response, "--baseline", "2016-10-17", "--restaging",
               "2016-12-31", "--by", "dr.ops", "--note", "descriptions mislabelled")  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assembler.run_once(now=4e9)
    case = index.case(response)
    assert case is not None
    assert case.state == CaseState.READY
    assert case.restaging_study_uid == studies["restaging"]
    audit = _larc(tmp_path, "pair", patient_id).stdout
    assert "by dr.ops via cli" in audit
    assert "(descriptions mislabelled)" in audit
