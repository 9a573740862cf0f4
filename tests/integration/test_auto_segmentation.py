"""Automatic tumour segmentation end to end (``larc serve``, embedded workers, the test
bundle's segmenter, a real Orthanc as the PACS the results go to): studies sent with no
RTSTRUCT and no SEG at all are segmented, the mask is stored as an automatic DICOM SEG and
scored on, the SEG reaches Orthanc with the SR and the Grad-CAM captures, and the SR says
the outline is automatic and unverified; a drawn RTSTRUCT sent afterwards makes a new version
whose SR references the first. A mask that fails its quality gate declines the case with the
reason, and nothing is sent.

The test bundle's segmenter is trained for seconds (it checks plumbing, not quality:
bench/segmentation.py measures Dice), so the passing run sets a permissive gate
(``segmentation.gate``) and the failing run one no mask can pass; both let inputs outside the
training envelope through with a warning (its outlines are far too large).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import highdicom as hd
import httpx
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk  # noqa: N813  (the name the SimpleITK world uses)
import yaml
from PIL import Image

from daemon.harness import Redis, read_index
from daemon.harness.peers import Orthanc, stop_process
from daemon.web.outlines import OUTLINE_RGB
from dicom_io.masks import rtstruct_mask, seg_mask
from dicom_io.sr import read_report
from dicom_io.synthetic.cohort import CohortResult
from tests.conftest import TrainedBundle, free_port, larc_status, start_daemon, storescu
from tests.integration.scoring_checks import SR_CLASS, orthanc_dataset, orthanc_instances
from tests.integration.test_scoring import _config, _worker
from tests.unit.dicom_io.test_result_objects import dciodvfy_errors, sr_template_errors

pytestmark = pytest.mark.slow

SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
PERMISSIVE = {
    "min_volume_ml": 0.0,
    "max_volume_ml": 100000.0,
    "min_mean_probability": 0.0,
    "max_components": 1000,
    "allow_edge": True,
    "max_dwi_lesion_ratio": 0.0,
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


TOKEN = "outline-review-token-0123456789"  # noqa: S105 (a test token)


class Web:
    """The daemon's web API, as a radiologist's client calls it (token and a name)."""

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.headers = {"Authorization": f"Bearer {TOKEN}", "X-Larc-User": "dr.test"}

    def get(self, path: str) -> httpx.Response:
        answer = httpx.get(self.url + path, headers=self.headers, timeout=60)
        assert answer.status_code == 200, (path, answer.status_code, answer.text[:500])
        return answer

    def put(self, path: str, body: dict[str, Any]) -> httpx.Response:
        return httpx.put(self.url + path, headers=self.headers, json=body, timeout=60)


def _start(
    tmp_path: Path,
    bundle: TrainedBundle,
    gate: dict[str, Any],
    pacs: Orthanc | None = None,
    port: int | None = None,
) -> tuple[Any, Web]:
    """``larc serve`` with the test bundle; results to ``pacs`` with storage commitment
    required (the PACS must know larc's AE title at ``port``), else to the outbox."""
    config = tmp_path / "larc.yaml"
    # scoring.out_of_range: warn - the seconds-trained segmenter outlines far too much, which
    # the training envelope rightly refuses (tumour volume); the SR then lists the warnings
    web_port = free_port()
    sections = {
        "segmentation": {"gate": gate},
        "scoring": {"out_of_range": "warn"},
        "web": {"token": TOKEN, "port": web_port},
    }
    if pacs is not None:
        sections["export"] = {
            "destinations": [{"ae_title": pacs.aet, "host": "127.0.0.1", "port": pacs.dicom_port,
                              "commitment": "required"}]
        }  # fmt: skip
    config.write_text(yaml.safe_dump(sections))
    extra = ("--bundle", str(bundle.folder), "--stable-age-s", "1")
    return start_daemon(tmp_path / "data", port, config=config, extra=extra), Web(web_port)


def _yellow(png: bytes) -> int:
    """How many pixels of a PNG are the outline's colour."""
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    return int(np.all(rgb == OUTLINE_RGB, axis=-1).sum())


def _in_pacs(pacs: Orthanc) -> list[pydicom.Dataset]:
    """Every instance Orthanc holds (only larc sends to it here: the results)."""
    return [orthanc_dataset(pacs, i) for ids in orthanc_instances(pacs).values() for i in ids]


def _srs(pacs: Orthanc) -> dict[str, pydicom.Dataset]:
    return {o.SOPInstanceUID: o for o in _in_pacs(pacs) if o.SOPClassUID == SR_CLASS}


def _review_outlines_on_the_web(web: Web, data_dir: Path, daemon: Any) -> None:
    """The worklist marks the automatic outlines unreviewed; the case page draws them on the
    T2W and the DWI; a radiologist accepts the baseline's and rejects the restaging's: the
    baseline case is scored again with the outline recorded as reviewed, the response case
    waits for a drawn mask with the reason. Both reviews are in the audit."""
    by_kind = {c["kind"]: c for c in web.get("/api/cases").json()["items"]}
    assert by_kind["baseline"]["automatic_outlines"] == ["unreviewed"]
    assert by_kind["response"]["automatic_outlines"] == ["unreviewed", "unreviewed"]
    assert 'data-outline="unreviewed"' in web.get("/").text
    response_id = by_kind["response"]["case_id"]
    outlines = {o["timepoint"]: o for o in web.get(f"/api/cases/{response_id}").json()["outlines"]}
    assert set(outlines) == {"baseline", "restaging"}
    page = web.get(f"/cases/{response_id}").text
    for o in outlines.values():
        assert o["drawable"]
        assert o["review"] is None
        assert o["dwi_series_uid"]
        path = f"/api/cases/{response_id}/outlines/{o['image_series_uid']}.png"
        assert f'src="{path}"' in page
        for query in ("", "?sequence=dwi"):
            png = web.get(path + query)
            assert png.headers["content-type"] == "image/png"
            assert _yellow(png.content) > 0, query
    baseline, restaging = outlines["baseline"], outlines["restaging"]
    outline_path = f"/api/cases/{response_id}/outlines/"
    wrong = web.put(outline_path + baseline["image_series_uid"], {"decision": "maybe"})
    assert wrong.status_code == 422
    assert "accepted' or 'rejected" in wrong.json()["detail"]
    assert web.put(outline_path + "1.2.3.4", {"decision": "accepted"}).status_code == 404
    before = {c["kind"]: c["version"] for c in _cases(data_dir)}
    done = web.put(outline_path + baseline["image_series_uid"], {"decision": "accepted"})
    assert done.status_code == 200, done.text
    assert done.json()["recorded"] is True
    rejected = web.put(
        outline_path + restaging["image_series_uid"],
        {"decision": "rejected", "note": "misses the tumour"},
    )
    assert rejected.status_code == 200, rejected.text

    def settled() -> bool:
        now = {c["kind"]: c for c in _cases(data_dir)}
        baseline = now["baseline"]
        return (
            baseline["version"] > before["baseline"]
            and baseline["state"] == "exported"
            and now["response"]["state"] == "waiting"
            and now["response"]["version"] > before["response"]  # its v1 results stand as v1
        )

    _wait("the baseline case scored again, the response case waiting for a drawn mask",
          settled, daemon)  # fmt: skip
    response = next(c for c in _cases(data_dir) if c["kind"] == "response")
    assert (
        "restaging: automatic tumour outline rejected by dr.test (misses the tumour)"
        in (response["reason"])
    )
    marks = {c["kind"]: c["automatic_outlines"] for c in web.get("/api/cases").json()["items"]}
    assert marks == {"baseline": ["accepted"], "response": ["accepted", "rejected"]}
    shown = {o["timepoint"]: o for o in web.get(f"/api/cases/{response_id}").json()["outlines"]}
    assert [r["decision"] for r in shown["restaging"]["reviews"]] == ["rejected"]
    assert shown["restaging"]["reviews"][0]["who"] == "dr.test"
    assert shown["baseline"]["reviewed_by"] == "dr.test"


def _wait(what: str, ready: Callable[[], bool], daemon: Any, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}:\n{daemon.log()[-4000:]}")
        time.sleep(0.3)


def _cases(data_dir: Path) -> list[dict[str, Any]]:
    return read_index(data_dir, "SELECT * FROM cases ORDER BY kind")


def _study_uids(folder: Path) -> set[str]:
    return {pydicom.dcmread(p, stop_before_pixels=True).StudyInstanceUID
            for p in folder.glob("*/*/*.dcm")}  # fmt: skip


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


@pytest.fixture
def committing_orthanc(tmp_path: Path) -> Iterator[tuple[Orthanc, int]]:
    """A real Orthanc that knows larc (AE LARC at the returned port) for its storage
    commitment reports."""
    port = free_port()
    server = Orthanc.start(tmp_path / "orthanc", modalities={"LARC": ["LARC", "127.0.0.1", port]})
    try:
        yield server, port
    finally:
        server.stop()


def test_studies_without_masks_are_segmented_scored_and_superseded_by_a_drawn_mask(
    tmp_path: Path,
    cohort: CohortResult,
    trained_bundle: TrainedBundle,
    committing_orthanc: tuple[Orthanc, int],
) -> None:
    orthanc, larc_port = committing_orthanc
    patient = cohort.out_dir / cohort.patients[0].patient_id
    images = _copy(patient, tmp_path / "images", lambda name: not _is_mask(name))
    drawn = _copy(patient, tmp_path / "drawn", lambda name: name.endswith("_rtstruct"))
    daemon, web = _start(tmp_path, trained_bundle, PERMISSIVE, orthanc, larc_port)
    data_dir = daemon.data_dir
    try:
        assert storescu(daemon.port, images).returncode == 0
        _wait(
            "both cases exported on automatic masks",
            lambda: [c["state"] for c in _cases(data_dir)] == ["exported", "exported"],
            daemon,
        )
        first = {c["kind"]: c for c in _cases(data_dir)}
        for case in first.values():  # exported means Orthanc took responsibility (RAD-10)
            assert case["reason"].endswith("(committed by ORTHANC)"), case["reason"]
        objects = _in_pacs(orthanc)
        assert {o.StudyInstanceUID for o in objects} == _study_uids(images)
        assert len([o for o in objects if o.Modality == "OT"]) > 0  # the Grad-CAM captures
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

        _review_outlines_on_the_web(web, data_dir, daemon)
        reviewed = _srs(orthanc)
        assert len(reviewed) == 3  # the baseline case's new SR (the response case waits)
        (accepted_sr,) = (
            sr for uid, sr in reviewed.items() if uid not in {s.SOPInstanceUID for s in srs}
        )
        accepted = read_report(accepted_sr)
        assert any("reviewed and accepted by dr.test" in c for c in accepted.comments), (
            accepted.comments
        )
        assert set(accepted.predecessors) & {s.SOPInstanceUID for s in srs}

        assert storescu(daemon.port, drawn).returncode == 0  # the radiologist's masks, late
        _wait(
            "a new version of both cases on the drawn masks",
            lambda: (
                len(orthanc_instances(orthanc).get("SR", [])) == 5  # one more SR per case
                and all(
                    c["version"] > first[c["kind"]]["version"] and c["state"] == "exported"
                    for c in _cases(data_dir)
                )
            ),
            daemon,
        )
        marks = [c["automatic_outlines"] for c in web.get("/api/cases").json()["items"]]
        assert marks == [[], []]  # the drawn masks replace the automatic outlines
        status = larc_status(data_dir)
    finally:
        stop_process(daemon.proc)
    assert status.returncode == 0, status.stderr
    assert "sent, committed by ORTHANC" in status.stdout
    new_srs = _srs(orthanc)
    assert len(new_srs) == 5
    for uid, sr in new_srs.items():
        if uid in reviewed:
            continue
        report = read_report(sr)
        assert set(report.predecessors) & set(reviewed)  # supersedes an automatic-mask SR
        assert any("drawn RTSTRUCT" in c for c in report.comments), report.comments
        assert not any("automatic outline" in c for c in report.comments)
    for case in _cases(data_dir):  # the replaced automatic outlines are no inputs any more
        assert not [k for k in json.loads(case["inputs"]) if "extra_mask" in k], case["inputs"]
        (latest,) = read_index(
            data_dir,
            "SELECT files FROM results WHERE case_id = ? ORDER BY created_at DESC LIMIT 1",
            (case["case_id"],),
        )
        sent = [pydicom.dcmread(data_dir / f, stop_before_pixels=True)
                for f in latest["files"].split("\n") if f]  # fmt: skip
        assert SEG_CLASS not in {o.SOPClassUID for o in sent}  # not sent again with them
    masks = read_index(data_dir, "SELECT state, reason FROM auto_masks")
    assert [m["state"] for m in masks] == ["passed", "passed"]


def test_a_mask_that_fails_its_gate_declines_the_case_and_sends_nothing(
    tmp_path: Path, cohort: CohortResult, trained_bundle: TrainedBundle
) -> None:
    patient = cohort.out_dir / cohort.patients[1].patient_id
    images = _copy(patient, tmp_path / "images", lambda name: not _is_mask(name))
    daemon, web = _start(tmp_path, trained_bundle, IMPOSSIBLE)
    data_dir = daemon.data_dir
    try:
        assert storescu(daemon.port, images).returncode == 0
        _wait(
            "both cases declined",
            lambda: [c["state"] for c in _cases(data_dir)] == ["declined", "declined"],
            daemon,
        )
        marks = {c["kind"]: c["automatic_outlines"] for c in web.get("/api/cases").json()["items"]}
        assert marks == {"baseline": ["failed"], "response": ["failed", "failed"]}
        case_id = _cases(data_dir)[0]["case_id"]
        (failed,) = web.get(f"/api/cases/{case_id}").json()["outlines"]
        assert not failed["drawable"]
        assert failed["reason"].startswith("tumour volume")
        path = f"/api/cases/{case_id}/outlines/{failed['image_series_uid']}"
        missing = httpx.get(web.url + path + ".png", headers=web.headers, timeout=60)
        assert missing.status_code == 404
        assert "nothing to draw" in missing.json()["detail"]
        refused = web.put(path, {"decision": "accepted"})
        assert refused.status_code == 422
        assert "no outline to review" in refused.json()["detail"]
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


def test_segmentation_runs_on_redis_workers_that_cannot_read_the_storage(
    tmp_path: Path, cohort: CohortResult, trained_bundle: TrainedBundle, redis_server: Redis
) -> None:
    """The ``larc.segment`` task over a real Redis, on a ``larc worker`` that sees none of the
    daemon's storage (the T2W and DWI travel in the task): a study sent without masks is
    outlined there, and both cases are scored on the outlines and exported with their SEGs."""
    patient = cohort.out_dir / cohort.patients[2].patient_id
    images = _copy(patient, tmp_path / "images", lambda name: not _is_mask(name))
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    config = _config(
        tmp_path,
        broker={"url": redis_server.url},
        models={"bundle_dir": trained_bundle.folder},
        segmentation={"gate": PERMISSIVE},
        scoring={"out_of_range": "warn"},
    )
    daemon = start_daemon(data_dir, config=config, extra=("--stable-age-s", "1"))
    worker, worker_log = _worker(tmp_path, "worker", config, data_dir, stall=False)
    try:
        assert storescu(daemon.port, images).returncode == 0
        _wait(
            "both cases exported on automatic outlines made by the Redis worker",
            lambda: [c["state"] for c in _cases(data_dir)] == ["exported", "exported"],
            daemon,
        )
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(timeout=30)
        stop_process(daemon.proc)
    log = worker_log.read_text()
    assert log.count("larc.segment[") >= 2, log[-3000:]  # one per T2W, on the worker
    assert [m["state"] for m in read_index(data_dir, "SELECT state FROM auto_masks")] == [
        "passed",
        "passed",
    ]
    segs = [o for o in _outbox(data_dir) if o.SOPClassUID == SEG_CLASS]
    assert len({s.StudyInstanceUID for s in segs}) == 2
    assert {s.SegmentSequence[0].SegmentAlgorithmType for s in segs} == {"AUTOMATIC"}
