"""A radiologist's review in a real browser after an end-to-end run: Debian's chromium (headless,
driven by Playwright) signs in to the worklist of a harness (real Orthanc forwarding to larc
serve, embedded scoring, results back in Orthanc), filters to a patient, opens the response case,
sees the Grad-CAM images and the score, enters restaging readings, and sees the amended score;
the amended SR in Orthanc supersedes the first. A patient whose restaging study is described
"MRI Rectum Staging" is held with nothing sent until the radiologist chooses the timepoints on
the case page; then it is scored and its SR lands in the restaging study. A patient whose T2W
slices are thicker than any the bundle saw is declined with that reason and nothing is sent.
Screenshots go to test-artifacts/."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pydicom
import pytest

from daemon.harness import Harness, HarnessSpec
from dicom_io.synthetic.cohort import CohortResult, PatientResult
from dicom_io.synthetic.vendors import Role
from tests.conftest import TrainedBundle, require_tool
from tests.integration.scoring_checks import orthanc_dataset

pytestmark = [pytest.mark.integration, pytest.mark.slow]
CHROMIUM = "/usr/bin/chromium"
ARTEFACTS = Path("test-artifacts")
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run"]  # fmt: skip


def _srs_in(harness: Harness, study_uid: str) -> list[pydicom.Dataset]:
    query = {"Level": "Study", "Query": {"StudyInstanceUID": study_uid}}
    found = harness.pacs.post("/tools/find", query)
    out: list[pydicom.Dataset] = []
    if not found:
        return out
    for series in harness.pacs.get(f"/studies/{found[0]}/series"):
        if series["MainDicomTags"].get("Modality") == "SR":
            out += [orthanc_dataset(harness.pacs, i) for i in series["Instances"]]
    return out


def _described(patient: PatientResult, out: Path) -> Path:
    """The patient's studies as a site that calls every rectal MR "staging" sends them."""
    texts = {"baseline": "MR PELVIS W WO CONTRAST", "restaging": "MRI Rectum Staging"}
    for timepoint, study in patient.studies.items():
        for series in study.series.values():
            for source in series.files:
                ds = pydicom.dcmread(source)
                ds.StudyDescription = texts[timepoint]
                target = out / timepoint / source.parent.name / source.name
                target.parent.mkdir(parents=True, exist_ok=True)
                ds.save_as(target)
    return out


def _thick_t2w(patient: PatientResult, out: Path) -> Path:
    """The patient's studies with 6 mm axial T2W slices, thicker than any the bundle saw."""
    for timepoint, study in patient.studies.items():
        for series in study.series.values():
            for source in series.files:
                ds = pydicom.dcmread(source)
                if series.role is Role.T2W:  # the axial T2W
                    ds.SliceThickness = "6.0"
                target = out / timepoint / source.parent.name / source.name
                target.parent.mkdir(parents=True, exist_ok=True)
                ds.save_as(target)
    return out


def _resolve_the_held_patient(page: Any, harness: Harness, patient: PatientResult) -> None:
    """Held with its reason and nothing in the PACS; chosen on the case page; then scored."""
    baseline = patient.studies["baseline"].study_instance_uid
    restaging = patient.studies["restaging"].study_instance_uid
    assert _srs_in(harness, baseline) == []
    assert _srs_in(harness, restaging) == []
    page.goto(harness.web_url + f"?patient={patient.patient_id}")
    assert "timepoints conflict" in page.inner_text("#worklist")
    page.click("#worklist tbody a[data-kind=response]")
    assert page.inner_text("#case-state") == "held"
    assert "is labelled baseline" in page.inner_text("main")
    page.screenshot(path=str(ARTEFACTS / "case-held.png"), full_page=True)
    page.select_option("#tp-baseline", baseline)
    page.select_option("#tp-restaging", restaging)
    page.fill("#tp-note", "restaging described as staging")
    page.click("button:has-text('Pair these studies')")
    assert "Timepoints recorded" in page.inner_text("main")
    assert "Dr Reader" in page.inner_text("#pairing-audit")
    deadline = time.monotonic() + 180
    while page.inner_text("#case-state") != "exported":
        assert time.monotonic() < deadline, page.inner_text("main")[:2000]
        time.sleep(1)
        page.reload()
    assert "version 2" in page.inner_text("h1")
    assert "timepoints chosen by Dr Reader" in page.inner_text("main")


def test_radiologist_reviews_a_case_and_amends_it_in_the_browser(
    tmp_path: Path, cohort: CohortResult, trained_bundle: TrainedBundle
) -> None:
    require_tool("/usr/sbin/Orthanc")
    require_tool(CHROMIUM)
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    complete, baseline_only, unlike, mislabelled = cohort.patients
    restaging_uid = complete.studies["restaging"].study_instance_uid
    manifest = json.loads((trained_bundle.folder / "manifest.json").read_text())
    cr_features = manifest["response"].get("cr_features", [])
    ARTEFACTS.mkdir(exist_ok=True)
    spec = HarnessSpec(tmp_path / "harness", trained_bundle.folder, workers=0,
                       orthanc_stable_age_s=1)  # fmt: skip
    with Harness(spec) as harness, sync_playwright() as playwright:
        harness.send_to_pacs(cohort.out_dir / complete.patient_id)
        harness.send_to_pacs(baseline_only.studies["baseline"].directory)
        harness.send_to_pacs(_described(mislabelled, tmp_path / "mislabelled"))
        harness.send_to_pacs(_thick_t2w(unlike, tmp_path / "unlike"))
        harness.wait_settled(timeout_s=300)
        first = harness.query(
            "SELECT r.* FROM results r JOIN cases c USING (case_id) WHERE c.patient_id = ? "
            "AND c.kind = 'response'",
            (complete.patient_id,),
        )[0]
        fdl = json.loads(first["scores"])["response_FDL"]["p_good_response"]

        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        # signing in: the worklist answers 401 and links to the sign-in page
        answer = page.goto(harness.web_url)
        assert answer is not None
        assert answer.status == 401
        page.click("a:has-text('Sign in')")
        page.fill("#name", "Dr Reader")
        page.fill("#token", harness.web_token)
        page.click("button[type=submit]")
        rows = page.locator("#worklist tbody tr")
        page.wait_for_selector("#worklist tbody tr")  # the sign-in redirect has loaded it
        assert rows.count() == 8  # two cases per patient
        assert page.locator("#worklist .st-waiting").count() == 1  # baseline-only: no restaging
        assert page.locator("#worklist .st-held").count() == 2  # the mislabelled patient
        assert page.locator("#worklist .st-declined").count() == 2  # 6 mm T2W slices
        assert "T2W slice thickness 6.0 mm is outside the training range" in page.inner_text(
            "#worklist"
        )
        assert "no restaging study" in page.inner_text("#worklist")
        page.screenshot(path=str(ARTEFACTS / "worklist.png"), full_page=True)

        page.fill("input[name=patient]", complete.patient_id)
        page.click("button:has-text('Filter')")
        assert rows.count() == 2
        assert set(rows.locator("td:first-child strong").all_inner_texts()) == {complete.patient_id}
        page.click("#worklist tbody a[data-kind=response]")
        assert page.inner_text("#case-state") == "exported"
        assert page.inner_text("#score-fdl") == f"{fdl:.2f}"
        images = page.locator("#gradcam img")
        assert images.count() == 6  # one per response signature
        deadline = time.monotonic() + 30
        while not all(
            widths := images.evaluate_all("i => i.map(e => e.complete && e.naturalWidth)")
        ):
            assert time.monotonic() < deadline, widths  # every heat map loads
            time.sleep(0.3)
        assert "Probability of good response, fused deep-learning model" in page.inner_text(
            "#sr-numbers"
        )
        page.screenshot(path=str(ARTEFACTS / "case.png"), full_page=True)

        # the PACS viewer link opens this study in Orthanc Explorer
        link = page.locator("a:has-text('open in the PACS viewer')").last.get_attribute("href")
        assert link is not None
        uuid = parse_qs(urlparse(link).fragment.split("?", 1)[1])["uuid"][0]
        study = harness.pacs.get(f"/studies/{uuid}")
        assert study["MainDicomTags"]["StudyInstanceUID"] == restaging_uid

        # readings: restaging MWT and CRM (and whatever else the bundle's CR model uses)
        crd_before = page.inner_text("#score-crd") if page.locator("#score-crd").count() else ""
        page.fill("#f-post_mwt_mm", "2.5")
        page.select_option("#f-post_crm", "1")
        for name in cr_features:
            element = page.locator(f"#f-{name}")
            if name not in ("post_mwt_mm", "post_crm") and element.count():
                tag = element.evaluate("e => e.tagName")
                if tag == "SELECT":
                    element.select_option(index=2)
                else:
                    element.fill("1")
        page.click("button:has-text('Save readings')")
        assert "Readings saved" in page.inner_text("main")
        deadline = time.monotonic() + 180
        while "scores of version 2" not in page.inner_text("#scores"):
            assert time.monotonic() < deadline, page.inner_text("main")[:2000]
            time.sleep(1)
            page.reload()
        harness.wait_settled(timeout_s=120)
        page.reload()
        assert page.inner_text("#case-state") == "exported"
        audit = page.inner_text("#audit")
        assert all(word in audit for word in ("Dr Reader", "post_mwt_mm", "post_crm")), audit
        if {"post_mwt_mm", "post_crm"} & set(cr_features) and crd_before:
            assert page.inner_text("#score-crd") != crd_before  # the CRD model saw the readings
        assert "Radiologist-read inputs used" in page.inner_text("main")
        page.screenshot(path=str(ARTEFACTS / "case-amended.png"), full_page=True)
        _resolve_the_held_patient(page, harness, mislabelled)
        health = page.request.get(harness.web_url + "healthz")
        assert health.status == 200, health.text()
        assert re.search(r'larc_cases\{kind="response",state="exported"\} 2', page.request.get(
            harness.web_url + "metrics").text())  # fmt: skip
        browser.close()
        srs = _srs_in(harness, restaging_uid)
        paired = _srs_in(harness, mislabelled.studies["restaging"].study_instance_uid)
        declined = [_srs_in(harness, s.study_instance_uid) for s in unlike.studies.values()]

    assert len(srs) == 2  # the first report and the amended one, both in the PACS
    assert len(paired) == 1  # the response SR, in the study the radiologist chose
    assert declined == [[], []]  # declined: nothing of that patient reached the PACS
    amended = next(s for s in srs if "PredecessorDocumentsSequence" in s)
    original = next(s for s in srs if "PredecessorDocumentsSequence" not in s)
    reference = amended.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0]
    assert reference.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == original.SOPInstanceUID
    assert original.SOPInstanceUID == first["sr_sop_uid"]
