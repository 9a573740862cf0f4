"""Checks shared by the scoring and end-to-end tests: an SR's numbers against a direct call of
the pipeline on the generated files, and what Orthanc holds."""

from __future__ import annotations

import io
from typing import Any

import pydicom
import pytest

from daemon.harness.peers import Orthanc
from dicom_io.selection import select_files
from dicom_io.sr import concept, read_report
from dicom_io.synthetic.cohort import PatientResult
from pipeline.bundle import Bundle
from pipeline.case import prepare_case
from pipeline.kinds import SIGNATURES
from tests.conftest import TrainedBundle

SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.34"


def direct_scores(bundle: TrainedBundle, patient: PatientResult, kind: str) -> dict[str, Any]:
    """The scores of a case computed by calling the pipeline on the generated files."""
    files = {
        t: select_files([f for s in study.series.values() for f in s.files])
        for t, study in patient.studies.items()
    }
    if kind == "baseline":
        files = {"baseline": files["baseline"]}
    inputs = prepare_case(
        files,
        bundle.preprocess,
        signatures=SIGNATURES if kind == "response" else (),
        stacks=kind == "baseline",
    )
    # every output, as the tests' daemons send with the gate off (tests/conftest.py: GATE_OFF)
    return Bundle.load(bundle.folder).score(inputs, require_validated=False)


def sr_numbers(sr: pydicom.Dataset) -> dict[str, float]:
    """Measurements of the SR's first (analysis) group by concept code."""
    return {code: value for code, _, value, _ in read_report(sr).groups[0].measurements}


def check_sr(sr: pydicom.Dataset, bundle: TrainedBundle, patient: PatientResult) -> str:
    """The SR holds the direct pipeline's scores for the case of the study it lies in (restaging:
    response case; baseline: distant-metastasis case). Returns that case's kind."""
    studies = {s.study_instance_uid: t for t, s in patient.studies.items()}
    assert sr.PatientID == patient.patient_id
    assert sr.StudyInstanceUID in studies, "the SR is not in one of the patient's MR studies"
    got = sr_numbers(sr)
    if studies[sr.StudyInstanceUID] == "restaging":
        expected = direct_scores(bundle, patient, "response")
        fdl = expected["response_FDL"]["p_good_response"]
        assert got["p-good-response-fdl"] == pytest.approx(fdl, abs=1e-6)
        for name, value in expected["signatures"].items():
            code = concept(f"signature-{name.lower().replace('_', '-')}").value
            assert got[code] == pytest.approx(value, abs=1e-6)
        return "response"
    expected = direct_scores(bundle, patient, "baseline")["distant_metastasis"]
    assert got["dl-prob"] == pytest.approx(expected["dl_prob"], abs=1e-6)
    assert got["dlrs"] == pytest.approx(expected["dlrs"], abs=1e-6)
    assert got["dmfs-3y"] == pytest.approx(expected["dmfs_3y"], abs=1e-6)
    return "baseline"


def orthanc_instances(orthanc: Orthanc) -> dict[str, list[str]]:
    """Instance ids in Orthanc by modality."""
    found: dict[str, list[str]] = {}
    for series in orthanc.get("/series?expand"):
        modality = series["MainDicomTags"].get("Modality", "")
        found.setdefault(modality, []).extend(series["Instances"])
    return found


def orthanc_dataset(orthanc: Orthanc, instance_id: str) -> pydicom.Dataset:
    """One instance from Orthanc, read with pydicom."""
    return pydicom.dcmread(io.BytesIO(orthanc.get_bytes(f"/instances/{instance_id}/file")[1]))
