"""A PACS takes the synthetic cohort as a scanner would send it: dcmtk storescu into Orthanc."""

from __future__ import annotations

import pytest

from daemon.harness.peers import Orthanc, store_files
from dicom_io.synthetic.cohort import CohortResult
from dicom_io.synthetic.vendors import Role
from tests.conftest import require_tool


@pytest.mark.integration
def test_storescu_into_orthanc_stores_every_object(cohort: CohortResult, orthanc: Orthanc) -> None:
    require_tool("/usr/bin/storescu")  # dcmtk's, not pynetdicom's in the venv
    patient = cohort.patients[0]
    folder = cohort.out_dir / patient.patient_id
    files = sorted(folder.rglob("*.dcm"))
    run = store_files(orthanc.dicom_port, orthanc.aet, folder)
    assert run.returncode == 0, run.stderr[-2000:]

    statistics = orthanc.get("/statistics")
    assert isinstance(statistics, dict)
    assert statistics["CountInstances"] == len(files)
    assert statistics["CountStudies"] == len(patient.studies)
    assert statistics["CountPatients"] == 1

    studies = orthanc.get("/studies?expand")
    assert isinstance(studies, list)
    found = {s["MainDicomTags"]["StudyInstanceUID"] for s in studies}
    assert found == {s.study_instance_uid for s in patient.studies.values()}
    for study in studies:
        assert study["PatientMainDicomTags"]["PatientID"] == patient.patient_id
        record = next(
            s
            for s in patient.studies.values()
            if s.study_instance_uid == study["MainDicomTags"]["StudyInstanceUID"]
        )
        assert len(study["Series"]) == len(record.series)

    # Orthanc decodes the pixel data of an MR image (what a viewer shows)
    t2w_uid = next(iter(patient.studies.values())).series[Role.T2W].series_instance_uid
    all_series = orthanc.get("/series?expand")
    assert isinstance(all_series, list)
    series = [s for s in all_series if s["MainDicomTags"]["SeriesInstanceUID"] == t2w_uid]
    assert len(series) == 1
    instance = series[0]["Instances"][0]
    content_type, png = orthanc.get_bytes(f"/instances/{instance}/preview")
    assert content_type == "image/png"
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
