"""The SR (TID 1500) and Grad-CAM Secondary Capture writers: valid for dciodvfy, read back by
highdicom with the numbers put in, and the same objects again for the same key."""

from __future__ import annotations

import datetime as dt
import io
import subprocess
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest

from dicom_io.sc import blend, captioned, gradcam_capture, heat_overlay
from dicom_io.seg import TUMOUR_DISPLAY_RGB
from dicom_io.sr import (
    PRIVATE_SCHEME,
    RESEARCH_USE,
    Algorithm,
    AnalysisGroup,
    Reference,
    concept,
    derive_uid,
    measurement_report,
    read_report,
)
from dicom_io.synthetic.cohort import CohortResult
from tests.conftest import require_tool
from workers.results import envelope_comments, reading_comments, unavailable_comments

WHEN = dt.datetime(2026, 11, 23, 10, 30, 0)
ALGORITHM = Algorithm("larc-rectal", "1.2.3", "larc")


def dciodvfy_errors(ds: pydicom.Dataset, folder: Path) -> list[str]:
    """dicom3tools' dciodvfy on ``ds``: its error lines (warnings about our private coding
    scheme are expected: dciodvfy knows only the standard's)."""
    path = folder / f"{ds.SOPInstanceUID}.dcm"
    ds.save_as(path, enforce_file_format=True)
    run = subprocess.run(
        [require_tool("/usr/bin/dciodvfy"), str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return [line for line in (run.stdout + run.stderr).splitlines() if "Error" in line]


PIXELMED_JAR = Path("/usr/share/java/pixelmed.jar")  # Debian pixelmed-apps
# PixelMed's XSLT needs more than the JVM's default XPath limits
_JVM_LIMITS = [f"-Djdk.xml.{name}=0" for name in
               ("xpathExprOpLimit", "xpathExprGrpLimit", "xpathTotalOpLimit")]  # fmt: skip


def sr_template_errors(ds: pydicom.Dataset, folder: Path) -> list[str]:
    """PixelMed's DicomSRValidator on ``ds`` (the template itself: TID 1500 and the templates
    and context groups it includes, and content item order): its ``Error`` lines. Warnings
    (content items the template does not name, e.g. our private concepts) are not errors."""
    return sr_template_findings(ds, folder)[0]


def sr_template_findings(ds: pydicom.Dataset, folder: Path) -> tuple[list[str], list[str]]:
    """PixelMed's DicomSRValidator on ``ds``: its (``Error``, ``Warning``) lines."""
    if not PIXELMED_JAR.is_file():
        pytest.fail(f"{PIXELMED_JAR} not found: run `bash deploy/setup.sh --dev` to install it")
    path = folder / f"{ds.SOPInstanceUID}.sr.dcm"
    ds.save_as(path, enforce_file_format=True)
    run = subprocess.run(
        [require_tool("/usr/bin/java"), *_JVM_LIMITS, "-cp", str(PIXELMED_JAR),
         "com.pixelmed.validate.DicomSRValidator", "-checktemplateid",
         "-checkcontentitemorder", str(path)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    output = run.stdout + run.stderr
    # the validator got through the template (a crash would otherwise look like "no errors")
    assert "Found Root Template TID_1500" in output, output[-2000:]
    assert "Root Template Validation Complete" in output, output[-2000:]
    lines = output.splitlines()
    return (
        [line for line in lines if line.startswith("Error")],
        [line for line in lines if line.startswith("Warning")],
    )


def _headers(cohort: CohortResult) -> tuple[pydicom.Dataset, pydicom.Dataset, pydicom.Dataset]:
    """An image of the restaging T2W, one of the baseline T2W, and the restaging RTSTRUCT."""
    patient = cohort.patients[0]
    restaging, baseline = patient.studies["restaging"], patient.studies["baseline"]
    post = pydicom.dcmread(restaging.series["t2w"].files[5], stop_before_pixels=True)
    pre = pydicom.dcmread(baseline.series["t2w"].files[5], stop_before_pixels=True)
    mask = pydicom.dcmread(restaging.series["rtstruct"].files[0], stop_before_pixels=True)
    return post, pre, mask


def _ref(ds: pydicom.Dataset) -> Reference:
    return Reference(
        str(ds.SOPClassUID),
        str(ds.SOPInstanceUID),
        str(ds.SeriesInstanceUID),
        str(ds.StudyInstanceUID),
    )


def _report(
    cohort: CohortResult, key: str, predecessor: Reference | None = None
) -> hd.sr.Comprehensive3DSR:
    post, pre, mask = _headers(cohort)
    groups = [
        AnalysisGroup(
            "response-prediction",
            "restaging",
            measurements=[("p-good-response-fdl", 0.8125, "1"), ("signature-post-t2", 0.25, "1")],
            evaluations=[("predicted-response", "good-response")],
            source_images=[_ref(post), _ref(pre)],
            mask=_ref(mask),
        ),
        AnalysisGroup(
            "tumour-measurements",
            "restaging",
            measurements=[("long-axis", 31.5, "mm"), ("volume", 12.25, "ml")],
            source_images=[_ref(post)],
        ),
    ]
    return measurement_report([post, pre, mask], groups, ALGORITHM, key, WHEN,
                              predecessor=predecessor)  # fmt: skip


def test_sr_is_valid_and_reads_back_with_the_numbers(cohort: CohortResult, tmp_path: Path) -> None:
    sr = _report(cohort, "key-1")
    assert dciodvfy_errors(sr, tmp_path) == []
    assert sr_template_errors(sr, tmp_path) == []
    post = _headers(cohort)[0]
    assert sr.StudyInstanceUID == post.StudyInstanceUID  # in the source (restaging) study
    assert sr.SeriesInstanceUID != post.SeriesInstanceUID  # its own series
    assert sr.PatientID == post.PatientID
    assert sr.VerificationFlag == "UNVERIFIED"
    assert sr.CodingSchemeIdentificationSequence[0].CodingSchemeDesignator == PRIVATE_SCHEME

    read = hd.sr.srread(io.BytesIO(_bytes(sr)))
    groups = read.content.get_image_measurement_groups()
    assert len(groups) == 2
    probability = groups[0].get_measurements(name=concept("p-good-response-fdl"))[0]
    assert probability.value == pytest.approx(0.8125)
    assert probability.unit.value == "1"
    volume = groups[1].get_measurements(name=concept("volume"))[0]
    assert volume.value == pytest.approx(12.25)
    assert volume.unit.value == "mL"
    evaluation = groups[0].get_qualitative_evaluations(name=concept("predicted-response"))[0]
    assert evaluation.value == concept("good-response")
    assert groups[0].tracking_uid == groups[1].tracking_uid  # one tumour, tracked
    root = {i.ConceptNameCodeSequence[0].CodeMeaning: i for i in read.ContentSequence}
    assert root["Device Observer Model Name"].TextValue == "larc-rectal 1.2.3"
    assert root["Device Observer Manufacturer"].TextValue == "larc"
    evaluations = root["Qualitative Evaluations"]  # TID 1500 row 12: the text's place
    assert evaluations.ContentSequence[0].TextValue == RESEARCH_USE
    assert read_report(sr).comments == [RESEARCH_USE]
    mask_items = [
        i for i in groups[0][0].ContentSequence if i.ValueType == "COMPOSITE"
    ]  # the RTSTRUCT the inputs came from
    assert (
        mask_items[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID
        == _headers(cohort)[2].SOPInstanceUID
    )


def test_same_key_gives_the_same_object_and_a_new_version_names_its_predecessor(
    cohort: CohortResult, tmp_path: Path
) -> None:
    first, again = _report(cohort, "key-1"), _report(cohort, "key-1")
    assert _bytes(first) == _bytes(again)
    assert first.SOPInstanceUID == derive_uid("key-1", "sr")
    newer = _report(cohort, "key-2", predecessor=Reference(
        str(first.SOPClassUID), str(first.SOPInstanceUID), str(first.SeriesInstanceUID),
        str(first.StudyInstanceUID),
    ))  # fmt: skip
    assert newer.SOPInstanceUID != first.SOPInstanceUID
    ref = newer.PredecessorDocumentsSequence[0]
    assert ref.StudyInstanceUID == first.StudyInstanceUID
    assert ref.ReferencedSeriesSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == (
        first.SOPInstanceUID
    )
    assert dciodvfy_errors(newer, tmp_path) == []
    assert sr_template_errors(newer, tmp_path) == []


def test_a_baseline_risk_report_with_readings_passes_both_validators(
    cohort: CohortResult, tmp_path: Path
) -> None:
    """The groups the workers write for a baseline case (DM networks, DLRS, risk group,
    nomogram, subtype, recurrence score) and the text items listing the readings used and an
    input outside the training envelope (scoring.out_of_range: warn)."""
    _, pre, mask = _headers(cohort)
    groups = [
        AnalysisGroup(
            "dm-risk",
            "baseline",
            measurements=[
                ("dm-prob-t2w", 0.25, "1"),
                ("dm-prob-adc", 0.5, "1"),
                ("dl-prob", 0.375, "1"),
                ("dlrs", 0.125, "1"),
                ("dmfs-3y", 0.875, "1"),
                ("nomogram-dmfs-3y", 0.8125, "1"),
                ("rrs", -0.5, "1"),
                ("rfs-5y", 0.75, "1"),
            ],
            evaluations=[("dm-risk-group", "low-risk"), ("recurrence-subtype", "subtype-rdls2")],
            source_images=[_ref(pre)],
            mask=_ref(mask),
        ),
        AnalysisGroup(
            "tumour-measurements",
            "baseline",
            measurements=[
                ("long-axis", 41.0, "mm"),
                ("volume", 20.5, "ml"),
                ("max-wall-thickness", 14.0, "mm"),
            ],
            source_images=[_ref(pre)],
        ),
    ]
    warning = "baseline T2W slice thickness 6.0 mm is outside the training range 2.5-5.0 mm"
    why = "not available in this bundle: no recurrence outcome (rfs_time_months, rfs_event)"
    not_in_bundle = {"not_scored": {"recurrence": why}}
    comments = [*unavailable_comments(not_in_bundle, "baseline"),
                *envelope_comments([warning]), *reading_comments({"pre_emvi": "1"})]  # fmt: skip
    sr = measurement_report([pre, mask], groups, ALGORITHM, "key-b", WHEN, comments=comments)
    assert dciodvfy_errors(sr, tmp_path) == []
    errors, warnings = sr_template_findings(sr, tmp_path)
    assert errors == []
    # the text items sit in the template's own place (TID 1500 row 12 and 14); what remains
    # outside it: the private-coded risk group and subtype, and the mask reference
    assert not [w for w in warnings if "Comment" in w or "Qualitative Evaluations" in w], warnings
    assert len(warnings) == 3, warnings
    shown = read_report(sr).comments  # what the case page shows
    assert (
        "Warning: input outside the model's training envelope, scored anyway: " + warning in shown
    )
    assert "Radiologist-read inputs used: pre_emvi = 1" in shown
    assert (
        "recurrence subtype and RRS: not available in this bundle: no recurrence outcome "
        "(rfs_time_months, rfs_event)" in shown
    )


def test_measurements_on_a_segmented_tumour_reference_its_segment(
    cohort: CohortResult, tmp_path: Path
) -> None:
    """With DICOM SEG masks, every group is a TID 1411 volumetric group that references the
    segment and the series it segments (no private COMPOSITE stand-in), and both validators pass
    it; with an RTSTRUCT in the mix the report keeps TID 1501 groups."""
    restaging = cohort.patients[0].studies["restaging"]
    seg = pydicom.dcmread(restaging.series["seg"].files[0], stop_before_pixels=True)
    image = pydicom.dcmread(restaging.series["dwi"].files[0], stop_before_pixels=True)
    segmented = str(image.SeriesInstanceUID)
    mask = Reference(str(seg.SOPClassUID), str(seg.SOPInstanceUID), str(seg.SeriesInstanceUID),
                     str(seg.StudyInstanceUID), segment_number=1,
                     source_series_uid=segmented)  # fmt: skip
    assert mask.segment
    groups = [
        AnalysisGroup(
            "response-prediction",
            "restaging",
            measurements=[("p-good-response-fdl", 0.75, "1")],
            evaluations=[("predicted-response", "good-response")],
            source_images=[_ref(image)],
            mask=mask,
        ),
        AnalysisGroup(
            "tumour-measurements",
            "restaging",
            measurements=[("long-axis", 22.0, "mm"), ("volume", 6.5, "ml")],
            source_images=[_ref(image)],
            mask=mask,
        ),
    ]
    sr = measurement_report([image, seg], groups, ALGORITHM, "key-seg", WHEN)
    assert dciodvfy_errors(sr, tmp_path) == []
    errors, warnings = sr_template_findings(sr, tmp_path)
    assert errors == []
    assert not [w for w in warnings if "COMPOSITE" in w], warnings
    read = hd.sr.srread(io.BytesIO(_bytes(sr)))
    volumetric = read.content.get_volumetric_roi_measurement_groups()
    assert len(volumetric) == 2
    assert read.content.get_image_measurement_groups() == []
    segment = volumetric[1].referenced_segment
    assert segment.referenced_sop_instance_uid == seg.SOPInstanceUID
    assert segment.referenced_segment_numbers == [1]
    assert segment.source_series_for_segmentation.value == segmented
    assert volumetric[1].get_measurements(name=concept("volume"))[0].value == pytest.approx(6.5)
    assert volumetric[0].tracking_uid == volumetric[1].tracking_uid
    shown = read_report(sr)
    assert [g.segment for g in shown.groups] == [(str(seg.SOPInstanceUID), 1)] * 2
    assert shown.groups[0].evaluations[0][2] == "Good response"
    assert shown.groups[1].measurements[1][2] == pytest.approx(6.5)
    # an RTSTRUCT (or a SEG without its segment) in one group: TID 1501 groups throughout
    groups[0].mask = _ref(pydicom.dcmread(restaging.series["rtstruct"].files[0],
                                          stop_before_pixels=True))  # fmt: skip
    mixed = hd.sr.srread(io.BytesIO(_bytes(
        measurement_report([image, seg, pydicom.dcmread(restaging.series["rtstruct"].files[0],
                                                        stop_before_pixels=True)],
                           groups, ALGORITHM, "key-seg", WHEN)
    )))  # fmt: skip
    assert mixed.content.get_volumetric_roi_measurement_groups() == []
    assert len(mixed.content.get_image_measurement_groups()) == 2


def test_every_output_names_the_algorithm_as_contributing_equipment(
    cohort: CohortResult,
) -> None:
    """IHE AI Results: purpose Processing Algorithm, manufacturer, model = bundle name, software
    version = bundle version, device UID (the SR's observer device)."""
    post = _headers(cohort)[0]
    sr = _report(cohort, "key-1")
    pixels = captioned(blend(np.zeros((16, 16)), np.zeros((16, 16))), ["x"])
    sc = gradcam_capture(
        pixels, post, None, derive_uid("k", "sc-series"), derive_uid("k", "sc", "x"), 1,
        "larc", "Grad-CAM", WHEN, algorithm=ALGORITHM,
    )  # fmt: skip
    for ds in (sr, sc):
        algorithms = [
            e for e in ds.ContributingEquipmentSequence
            if e.PurposeOfReferenceCodeSequence[0].CodeValue == "109103"
        ]  # fmt: skip
        assert len(algorithms) == 1
        (item,) = algorithms
        assert item.PurposeOfReferenceCodeSequence[0].CodingSchemeDesignator == "DCM"
        assert (item.Manufacturer, item.ManufacturerModelName) == ("larc", "larc-rectal")
        assert item.SoftwareVersions == "1.2.3"
        assert item.DeviceUID == ALGORITHM.device_uid
        assert item.ContributionDateTime == "20261123103000"  # the case's time: reproducible
    root = {i.ConceptNameCodeSequence[0].CodeMeaning: i for i in sr.ContentSequence}
    assert ALGORITHM.device_uid == root["Device Observer UID"].UID
    procedure = root["Procedure reported"].ConceptCodeSequence[0]
    assert (procedure.CodeValue, procedure.CodingSchemeDesignator) == ("126020", "DCM")


def test_unknown_concept_is_refused() -> None:
    with pytest.raises(ValueError, match="no code for"):
        concept("not-a-concept")


CAPTION = "T2W restaging - LayerCAM: evidence for good response"


def test_gradcam_secondary_capture_is_valid_rgb_with_burned_in_text(
    cohort: CohortResult, tmp_path: Path
) -> None:
    post = _headers(cohort)[0]
    grey = np.tile(np.linspace(0, 255, 32), (32, 1))
    heat = np.zeros((32, 32))
    heat[8:16, 20:28] = 1.0
    rgb = blend(grey, heat)
    assert rgb.shape == (32, 32, 3)
    assert rgb[12, 24, 0] > rgb[12, 24, 1]  # hot: red over the grey
    assert rgb[28, 4, 0] == rgb[28, 4, 1] == rgb[28, 4, 2]  # cold: the grey shows through
    pixels = captioned(rgb, [CAPTION, "signature 0.71", RESEARCH_USE])
    band = pixels[384:]
    assert (band.max(axis=2) > 200).sum() > 200  # white caption text was drawn
    sc = gradcam_capture(
        pixels, post, _ref(post), derive_uid("k", "sc-series"), derive_uid("k", "sc", "post_T2"),
        1, "larc", "larc-rectal heat maps (research use)", WHEN, comment="T2W restaging",
    )  # fmt: skip
    assert dciodvfy_errors(sc, tmp_path) == []
    assert sc.BurnedInAnnotation == "YES"
    assert sc.PhotometricInterpretation == "RGB"
    assert sc.StudyInstanceUID == post.StudyInstanceUID
    assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == post.SOPInstanceUID
    read = pydicom.dcmread(io.BytesIO(_bytes(sc)))
    assert np.array_equal(read.pixel_array, pixels)


def test_the_heat_map_is_drawn_on_the_native_slice_with_its_outline_and_scale(
    cohort: CohortResult, tmp_path: Path
) -> None:
    """A 100 x 50 slice of 0.5 x 1.0 mm pixels (a 50 mm square): shown square, as a viewer
    would; the heat of the network's 8 x 8 grid lands where it lies on the slice; the tumour's
    outline is drawn in larc's yellow; a colour bar gives the scale."""
    rng = np.random.default_rng(0)
    plane = rng.normal(300, 20, (100, 50))
    plane[0, 0] = 10_000  # one outlier pixel: the window ignores it
    mask = np.zeros((100, 50), dtype=np.uint8)
    mask[40:60, 20:30] = 1  # 10 x 10 mm in the middle
    heat = np.zeros((8, 8))
    heat[0:2, 6:8] = 1.0  # the top right corner of the field of view
    drawn = heat_overlay(plane, heat, mask, (0.5, 1.0), TUMOUR_DISPLAY_RGB)
    assert drawn.shape == (384, 384 + 64, 3)
    image = drawn[:, :384].astype(int)
    yellow = np.all(image == TUMOUR_DISPLAY_RGB, axis=-1)
    hot = (image[..., 0] - image[..., 2] > 40) & ~yellow  # the blend's reds over the grey
    rows, cols = np.nonzero(hot)
    assert rows.mean() < 384 * 0.25
    assert cols.mean() > 384 * 0.75
    rows, cols = np.nonzero(yellow)
    # the outline of the 10 mm square, at 384 / 50 pixels per mm, centred
    assert rows.min() == pytest.approx(192 - 38, abs=4)
    assert rows.max() == pytest.approx(192 + 38, abs=4)
    assert cols.max() - cols.min() == pytest.approx(77, abs=4)
    grey = image[200:210, 60:70]  # windowed anatomy, not swamped by the outlier
    assert 60 < grey.mean() < 200
    bar = drawn[24:360, 384 + 8 + 7].astype(int)
    assert bar[0, 0] > 100 > bar[0, 2]  # red (high) at the top
    assert bar[-1, 2] > 100 > bar[-1, 0]  # blue (low) at the bottom
    assert (drawn[:, 384 + 24 :].max(axis=2) > 200).sum() > 50  # its labels
    pixels = captioned(drawn, [CAPTION, RESEARCH_USE])
    assert pixels.shape[:2] == (384 + 2 * 16 + 8, 384 + 64)
    post = _headers(cohort)[0]
    sc = gradcam_capture(
        pixels, post, _ref(post), derive_uid("k", "sc-series"), derive_uid("k", "sc", "pre_T2"),
        1, "larc", "larc-rectal heat maps (research use)", WHEN,
    )  # fmt: skip
    assert dciodvfy_errors(sc, tmp_path) == []


def _bytes(ds: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
