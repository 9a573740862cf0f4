"""End to end with scoring.require_validated at its default: a bundle whose distant-metastasis
model showed no discrimination in a hospital's external validation sends no DM risk - not in the
SR, not as a heat map, not in the worklist - and says why in each; the outputs its validation
backs are sent as usual."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import httpx
import pydicom
import pytest
import yaml

from daemon.harness.peers import stop_process
from dicom_io.sr import read_report
from dicom_io.synthetic.cohort import CohortResult
from pipeline.manifest import write_manifest
from pipeline.validation import Estimate, revalidate
from tests.conftest import GATE_OFF, TrainedBundle, free_port, larc_status, start_daemon, storescu
from tests.integration.scoring_checks import SR_CLASS, check_sr
from tests.integration.test_scoring import _all_finished, _cases, _wait
from tests.unit.dicom_io.test_result_objects import dciodvfy_errors, sr_template_errors

pytestmark = pytest.mark.slow
TOKEN = "validation-gate-token-0123456789"  # noqa: S105 (a test token)
DM_WITHHELD = (
    "distant-metastasis risk (DLRS, risk group, 3-year DMFS): not available - this bundle's "
    "model showed no discrimination in validation (C-index 0.49, 95% CI 0.40-0.59, external "
    "patients, n = 100, 30 events)"
)


def _validated_by_a_site(trained: Path, out: Path) -> Path:
    """The test bundle as a site's external validation leaves it (what larc evaluate --validate
    writes): the response models and the recurrence subtypes backed, the DLRS not."""
    shutil.copytree(trained, out)
    manifest = json.loads((out / "manifest.json").read_text())
    backed = Estimate("external", 0.80, 0.70, 0.90, 60, 20, 40)
    survival = Estimate("external", 0.71, 0.62, 0.80, 100, 30)
    estimates = {f"response_{m}": backed for m in ("FDL", "CR", "CRD")} | {
        "distant_metastasis": Estimate("external", 0.49, 0.40, 0.59, 100, 30),
        "nomogram": survival,
        "recurrence": survival,
    }
    record = {"date": "2026-12-06T00:00:00+00:00", "from_version": manifest["version"],
              "cohort_fingerprint": "test", "patients": 100}  # fmt: skip
    manifest = revalidate(manifest, estimates, record)
    manifest["version"] = "9.9.9+site"
    write_manifest(out, manifest)
    return out


def test_an_output_its_validation_does_not_back_is_not_sent(
    tmp_path: Path,
    cohort: CohortResult,
    trained_bundle: TrainedBundle,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in GATE_OFF:  # the default: scoring.require_validated true
        monkeypatch.delenv(name)
    bundle = _validated_by_a_site(trained_bundle.folder, tmp_path / "bundle")
    patient = cohort.patients[0]
    web_port = free_port()
    config = tmp_path / "larc.yaml"
    config.write_text(yaml.safe_dump({"web": {"token": TOKEN, "port": web_port}}))
    data_dir = tmp_path / "data"
    extra = ("--bundle", str(bundle), "--stable-age-s", "1")
    daemon = start_daemon(data_dir, config=config, extra=extra)
    try:
        sent = storescu(daemon.port, cohort.out_dir / patient.patient_id)
        assert sent.returncode == 0, sent.stderr
        _wait("both cases exported", lambda: _all_finished(data_dir, 2), 300, daemon.log)
        listed = httpx.get(
            f"http://127.0.0.1:{web_port}/api/cases",
            headers={"Authorization": f"Bearer {TOKEN}", "X-Larc-User": "dr.test"},
            timeout=60,
        )
        status = larc_status(data_dir)
    finally:
        stop_process(daemon.proc)
    assert {c["state"] for c in _cases(data_dir)} == {"exported"}

    objects = [pydicom.dcmread(p) for p in sorted((data_dir / "outbox").glob("*.dcm"))]
    srs = {o.StudyInstanceUID: o for o in objects if o.SOPClassUID == SR_CLASS}
    assert len(srs) == 2
    baseline = srs[patient.studies["baseline"].study_instance_uid]
    baseline_report = read_report(baseline)
    codes = {code for code, _, _, _ in baseline_report.groups[0].measurements}
    # no DM number at all; the backed recurrence subtype and RRS are there
    assert not codes & {"dl-prob", "dlrs", "dmfs-3y", "dm-prob-t2w", "dm-prob-adc"}, codes
    assert "rrs" in codes
    assert not any("risk" in str(e) for e in baseline_report.groups[0].evaluations)
    assert DM_WITHHELD in baseline_report.comments
    assert dciodvfy_errors(baseline, tmp_path) == []
    assert sr_template_errors(baseline, tmp_path) == []
    # the response SR carries the backed FDL, with the numbers the pipeline gives
    response = srs[patient.studies["restaging"].study_instance_uid]
    assert check_sr(response, trained_bundle, patient) == "response"
    assert not [c for c in read_report(response).comments if "not available" in c]
    # heat maps: the six response signatures, none of the DM networks whose risk is withheld
    captures = [o for o in objects if o.SOPClassUID != SR_CLASS]
    assert len(captures) == 6
    assert not [c for c in captures if "DM network" in str(c.get("ImageComments", ""))]
    for capture in captures:  # each says what its heat shows: the evidence for the prediction
        comment = str(capture.ImageComments)
        found = re.search(r"signature (\d\.\d\d)", comment)
        assert found, comment
        if found.group(1) != "0.50":  # rounded: either side
            shown = "good" if float(found.group(1)) > 0.5 else "poor"
            assert f"LayerCAM: evidence for {shown} response" in comment, comment

    # the worklist says the same
    assert listed.status_code == 200, listed.text
    by_kind = {c["kind"]: c for c in listed.json()["items"]}
    shown = by_kind["baseline"]["scores"]
    assert shown["risk_group"] is None
    assert shown["dlrs"] is None
    words, why = DM_WITHHELD.split(": ", 1)
    assert shown["unavailable"] == {words: why}
    assert by_kind["response"]["scores"]["p_good_fdl"] is not None
    assert by_kind["response"]["scores"]["unavailable"] == {}
    assert status.returncode == 0, status.stderr
    assert f"{words} not available" in status.stdout
