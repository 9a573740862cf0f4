"""End to end as a hospital runs larc: a real Orthanc PACS (deploy/orthanc configuration and Lua
forwarding), Redis, ``larc serve`` and a ``larc worker``, all started by the harness.

- A mixed cohort pushed into Orthanc with dcmtk storescu, as scanners do: a complete patient
  with an extra CT study, a patient with only a baseline study, a patient whose masks never
  come, and a patient whose masks arrive after the images. Orthanc forwards, larc scores, the
  SR and Grad-CAM SCs come back into the right studies with the right scores; the others get
  nothing and ``larc status`` says why.
- Prior retrieval: only the restaging studies go to larc while Orthanc holds the baselines
  (no forwarding); larc pulls them with C-FIND/C-MOVE and scores both cases.
"""

from __future__ import annotations

import copy
import os
import re
import subprocess
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from daemon.harness import Harness, HarnessSpec
from dicom_io.synthetic.cohort import CohortResult, PatientResult
from dicom_io.synthetic.vendors import Role
from tests.conftest import LARC, TrainedBundle, require_tool
from tests.integration.scoring_checks import (
    SR_CLASS,
    check_sr,
    orthanc_dataset,
    orthanc_instances,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]
MASKS = (Role.RTSTRUCT, Role.SEG)
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"


def _series_dirs(patient: PatientResult, masks: bool, timepoints: tuple[str, ...]) -> list[Path]:
    """Folders of the patient's image series (``masks`` False) or mask series (True)."""
    return [
        series.files[0].parent
        for t in timepoints
        if t in patient.studies
        for role, series in patient.studies[t].series.items()
        if (role in MASKS) == masks
    ]


def _ct_study(patient: PatientResult, folder: Path, slices: int = 3) -> tuple[Path, str]:
    """A CT study of the same patient (another department's), a few slices."""
    template = pydicom.dcmread(patient.studies["baseline"].series[Role.T2W].files[0])
    study_uid, series_uid = generate_uid(), generate_uid()
    folder.mkdir(parents=True)
    for n in range(slices):
        ds = copy.deepcopy(template)
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = CT_IMAGE
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.Modality, ds.StudyDescription, ds.SeriesDescription = "CT", "CT THORAX", "Thorax 1.0"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.RescaleIntercept, ds.RescaleSlope, ds.KVP = -1024, 1, 120
        ds.InstanceNumber, ds.SeriesNumber = n + 1, 2
        ds.save_as(folder / f"ct{n}.dcm", enforce_file_format=True)
    return folder, study_uid


def _larc(command: str, harness: Harness) -> subprocess.CompletedProcess[str]:
    return subprocess.run([LARC, command, "--config", str(harness.config_path)],
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip


def _results_by_study(harness: Harness) -> dict[str, dict[str, int]]:
    """SR and SC counts in Orthanc per StudyInstanceUID."""
    counts: dict[str, dict[str, int]] = {}
    for series in harness.pacs.get("/series?expand"):
        modality = series["MainDicomTags"].get("Modality", "")
        if modality in ("SR", "OT"):
            study = harness.pacs.get(f"/studies/{series['ParentStudy']}")
            uid = study["MainDicomTags"]["StudyInstanceUID"]
            per = counts.setdefault(uid, {"SR": 0, "OT": 0})
            per[modality] += len(series["Instances"])
    return counts


def test_pacs_forwards_a_mixed_cohort_and_gets_results_in_the_right_studies(
    tmp_path: Path, cohort: CohortResult, trained_bundle: TrainedBundle
) -> None:
    require_tool("/usr/sbin/Orthanc")
    require_tool("/usr/bin/redis-server")
    complete, baseline_only, never_masked, late_masks = cohort.patients
    ct_folder, ct_uid = _ct_study(complete, tmp_path / "ct")
    # drawn masks only: this run is about masks that never come or come late (automatic
    # segmentation has its own end-to-end test, tests/integration/test_auto_segmentation.py)
    spec = HarnessSpec(tmp_path / "harness", trained_bundle.folder, workers=1,
                       orthanc_stable_age_s=1,
                       settings={"segmentation": {"mode": "manual"}})  # fmt: skip
    with Harness(spec) as harness:
        both = ("baseline", "restaging")
        harness.send_to_pacs(cohort.out_dir / complete.patient_id, ct_folder)
        harness.send_to_pacs(baseline_only.studies["baseline"].directory)
        harness.send_to_pacs(*_series_dirs(never_masked, masks=False, timepoints=both))
        harness.send_to_pacs(*_series_dirs(late_masks, masks=False, timepoints=both))
        harness.wait_settled(timeout_s=300)
        before = harness.query(
            "SELECT state, reason FROM cases WHERE patient_id = ?", (late_masks.patient_id,)
        )
        harness.send_to_pacs(*_series_dirs(late_masks, masks=True, timepoints=both))
        harness.wait_settled(timeout_s=300)
        status = harness.status()
        health = [_larc("echo", harness), _larc("ping-workers", harness)]
        cases = harness.query("SELECT * FROM cases")
        larc_studies = {r["study_uid"] for r in harness.query("SELECT study_uid FROM studies")}
        stored = orthanc_instances(harness.pacs)
        srs = [orthanc_dataset(harness.pacs, i) for i in stored.get("SR", [])]
        per_study = _results_by_study(harness)
        groups = [p.proc.pid for p in [harness.daemon, *harness.workers] if p is not None]
    assert all(p.poll() is not None for p in harness.processes()), "a process was left behind"
    for group in groups:  # nor a worker's pool process
        with pytest.raises(ProcessLookupError):
            os.killpg(group, 0)

    for run in health:  # the healthchecks of deploy/ see a live daemon and worker
        assert run.returncode == 0, run.stderr
    assert "success" in health[0].stdout
    assert ": ok" in health[1].stdout

    assert len(before) == 2
    assert all((c["state"], "no tumour mask" in c["reason"]) == ("waiting", True) for c in before)
    uid = {(p.patient_id, t): s.study_instance_uid for p in cohort.patients
           for t, s in p.studies.items()}  # fmt: skip
    # results in the right studies: response -> restaging study, baseline -> baseline study
    expected = {
        uid[(complete.patient_id, "restaging")]: {"SR": 1, "OT": 6},
        uid[(complete.patient_id, "baseline")]: {"SR": 1, "OT": 2},
        uid[(baseline_only.patient_id, "baseline")]: {"SR": 1, "OT": 2},
        uid[(late_masks.patient_id, "restaging")]: {"SR": 1, "OT": 6},
        uid[(late_masks.patient_id, "baseline")]: {"SR": 1, "OT": 2},
    }
    assert per_study == expected  # none in the CT study, none for the never-masked patient
    assert ct_uid not in larc_studies  # the Lua script forwards MR studies only
    assert len(srs) == 5
    for sr in srs:
        assert sr.SOPClassUID == SR_CLASS
        check_sr(
            sr, trained_bundle, next(p for p in cohort.patients if p.patient_id == sr.PatientID)
        )

    states = {(c["patient_id"], c["kind"]): c for c in cases}
    for key in [(complete.patient_id, "response"), (complete.patient_id, "baseline"),
                (baseline_only.patient_id, "baseline"), (late_masks.patient_id, "response"),
                (late_masks.patient_id, "baseline")]:  # fmt: skip
        assert states[key]["state"] == "exported", states[key]
        assert states[key]["reason"].endswith("(committed by ORTHANC)"), states[key]  # RAD-10
    waiting = states[(baseline_only.patient_id, "response")]
    assert (waiting["state"], "no restaging study" in waiting["reason"]) == ("waiting", True)
    for kind in ("response", "baseline"):
        case = states[(never_masked.patient_id, kind)]
        assert (case["state"], "no tumour mask" in case["reason"]) == ("waiting", True), case
    # larc status explains each patient: what it waits for, or its scores and where they went
    blocks = status.split("patient ")
    for patient, needle in [
        (baseline_only, "no restaging study"),
        (never_masked, "no tumour mask on the T2W"),
        (complete, "P(good response) FDL"),
        (late_masks, "export to ORTHANC"),
    ]:
        block = next(b for b in blocks if b.startswith(patient.patient_id))
        assert needle in block, block
    # what was committed, by kind of object (IHE RAD-10: the PACS took responsibility)
    assert re.search(r"export to ORTHANC\S*: sent, committed by ORTHANC \(SR, \d+ heat-map SC\)",
                     status), status  # fmt: skip


def test_restaging_studies_alone_pull_their_baselines_from_the_pacs(
    tmp_path: Path, cohort: CohortResult, trained_bundle: TrainedBundle
) -> None:
    require_tool("/usr/sbin/Orthanc")
    patients = cohort.patients[:2]
    spec = HarnessSpec(tmp_path / "harness", trained_bundle.folder, workers=0, forward=False,
                       orthanc_stable_age_s=1)  # fmt: skip
    with Harness(spec) as harness:
        harness.send_to_pacs(*(p.studies["baseline"].directory for p in patients))
        harness.send_to_larc(*(p.studies["restaging"].directory for p in patients))
        harness.wait_settled(timeout_s=300)
        cases = harness.query("SELECT * FROM cases")
        studies = harness.query("SELECT study_uid, timepoint FROM studies")
        callers = harness.query(
            "SELECT DISTINCT st.study_uid, i.calling_ae FROM instances i "
            "JOIN series se ON se.series_uid = i.series_uid "
            "JOIN studies st ON st.study_uid = se.study_uid"
        )
        per_study = _results_by_study(harness)
        log = harness.daemon.log() if harness.daemon else ""
    baselines = {p.studies["baseline"].study_instance_uid for p in patients}
    assert {s["study_uid"] for s in studies if s["timepoint"] == "baseline"} == baselines
    moved = {c["study_uid"] for c in callers if c["calling_ae"] == "ORTHANC"}
    assert moved == baselines  # they came from the PACS, by C-MOVE
    assert "prior retrieval fetched" in log
    assert sorted(c["state"] for c in cases) == ["exported"] * 4
    restaging = {p.studies["restaging"].study_instance_uid for p in patients}
    assert {uid for uid, n in per_study.items() if n["SR"] == 1} == baselines | restaging
