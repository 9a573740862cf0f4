"""The synthetic cohort as DICOM: complete, consistent, masks on the tumour, reproducible."""

from __future__ import annotations

import csv
import datetime
import hashlib
import re
from collections import defaultdict
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import MRImageStorage, RTStructureSetStorage, SegmentationStorage

from dicom_io.diffusion import b_value
from dicom_io.geometry import SliceStack, stack_from_datasets
from dicom_io.masks import rasterise_planar_contours
from dicom_io.synthetic.anatomy import Tissue
from dicom_io.synthetic.biology import draw_patient
from dicom_io.synthetic.cohort import (
    CohortResult,
    CohortSpec,
    PatientResult,
    generate_cohort,
    patient_rng,
    patient_scenes,
)
from dicom_io.synthetic.study import Identity, StudyOptions, StudyRecord, StudyWriter
from dicom_io.synthetic.vendors import VENDORS, BValueStyle, Role

TUMOUR_ROI = re.compile(r"tumou?r|gtv|lesion", re.IGNORECASE)


def _read(record: StudyRecord, role: Role) -> list[Dataset]:
    return [pydicom.dcmread(path) for path in record.series[role].files]


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * np.logical_and(a, b).sum() / (a.sum() + b.sum()))


def _truth(
    cohort: CohortResult, patient: PatientResult, timepoint: str, stack: SliceStack
) -> np.ndarray:
    scene = patient_scenes(cohort.spec, patient.index, patient.biology)[timepoint]
    return np.stack(
        [scene.labels(stack.slice_points(k)) == Tissue.TUMOUR for k in range(stack.slices)]
    )


def _studies(cohort: CohortResult) -> list[tuple[PatientResult, str, StudyRecord]]:
    return [(p, t, s) for p in cohort.patients for t, s in p.studies.items()]


def test_every_file_reads_back_and_belongs_to_its_patient_and_study(cohort: CohortResult) -> None:
    sop_uids: set[str] = set()
    for patient, _, study in _studies(cohort):
        for series in study.series.values():
            for path in series.files:
                ds = pydicom.dcmread(path)
                assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
                assert ds.PatientID == patient.patient_id
                assert ds.StudyInstanceUID == study.study_instance_uid
                assert ds.SeriesInstanceUID == series.series_instance_uid
                assert ds.StudyDate == f"{study.study_date:%Y%m%d}"
                assert len(ds.SOPInstanceUID) <= 64
                assert ds.SOPInstanceUID not in sop_uids
                sop_uids.add(ds.SOPInstanceUID)
                if ds.SOPClassUID == MRImageStorage:
                    assert ds.pixel_array.shape == (ds.Rows, ds.Columns)
    assert len(sop_uids) == sum(s.instance_count for _, _, s in _studies(cohort))


def test_each_study_has_every_series_with_the_right_sop_class(cohort: CohortResult) -> None:
    for _, _, study in _studies(cohort):
        assert set(study.series) == set(Role)
        for role, series in study.series.items():
            sop_class = pydicom.dcmread(series.files[0], stop_before_pixels=True).SOPClassUID
            expected = {Role.RTSTRUCT: RTStructureSetStorage, Role.SEG: SegmentationStorage}
            assert sop_class == expected.get(role, MRImageStorage)


def test_frame_of_reference_is_shared_within_a_study_and_new_for_each_study(
    cohort: CohortResult,
) -> None:
    frames = []
    for _, _, study in _studies(cohort):
        uids = {
            pydicom.dcmread(s.files[0], stop_before_pixels=True).FrameOfReferenceUID
            for role, s in study.series.items()
            if role not in (Role.RTSTRUCT, Role.SEG)
        }
        assert len(uids) == 1
        frames.append(uids.pop())
    assert len(set(frames)) == len(frames)


def test_t2w_is_an_evenly_spaced_oblique_axial_stack(cohort: CohortResult) -> None:
    for _, _, study in _studies(cohort):
        t2w = _read(study, Role.T2W)
        stack = stack_from_datasets(t2w)
        normal = stack.normal
        assert 0.85 < abs(normal[2]) < 0.999, "oblique axial: mostly cranio-caudal, not straight"
        assert stack.slices == cohort.spec.slices
        assert stack.pixel_spacing_mm == pytest.approx((200 / 48, 200 / 48))
        assert 2.5 - 1e-3 <= stack.slice_spacing_mm <= 4.0 + 1e-3
        assert float(t2w[0].SliceThickness) <= stack.slice_spacing_mm


def test_dwi_holds_b0_and_high_b_on_a_coarser_grid(cohort: CohortResult) -> None:
    for _, _, study in _studies(cohort):
        dwi = _read(study, Role.DWI)
        by_b: dict[float | None, list[Dataset]] = defaultdict(list)
        for ds in dwi:
            by_b[b_value(ds)].append(ds)
        high = VENDORS[study.vendor].high_b
        assert set(by_b) == {0.0, float(high)}
        assert len(by_b[0.0]) == len(by_b[float(high)])
        stack = stack_from_datasets(by_b[float(high)])
        t2w = stack_from_datasets(_read(study, Role.T2W))
        assert stack.pixel_spacing_mm[0] > t2w.pixel_spacing_mm[0]


@pytest.mark.parametrize("vendor", sorted(VENDORS))
def test_every_vendor_carries_the_b_value_its_own_way(vendor: str, tmp_path: Path) -> None:
    spec = CohortSpec(patients=1, seed=1, matrix=32, slices=6)
    biology = draw_patient(patient_rng(spec.seed, 0, 0))
    identity = Identity("V1", "SYNTHETIC^V1", datetime.date(1960, 1, 1), "F", seed=1)
    profile = VENDORS[vendor]
    record = StudyWriter(
        out_dir=tmp_path,
        identity=identity,
        scene=patient_scenes(spec, 0, biology)["baseline"],
        vendor=profile,
        timepoint="baseline",
        study_datetime=datetime.datetime(2025, 3, 3, 9, 0),
        rng=np.random.default_rng(0),
        options=StudyOptions(matrix=32, slices=6),
        study_description="MRI PELVIS",
    ).write("Tumour")
    dwi = _read(record, Role.DWI)
    assert {b_value(ds) for ds in dwi} == {0.0, float(profile.high_b)}
    ds = next(ds for ds in dwi if b_value(ds))
    where = {
        BValueStyle.STANDARD: "DiffusionBValue" in ds,
        BValueStyle.SIEMENS: (0x0019, 0x100C) in ds
        and ds[0x0019, 0x0010].value == "SIEMENS MR HEADER",
        BValueStyle.GE: (0x0043, 0x1039) in ds and ds[0x0043, 0x0010].value == "GEMS_PARM_01",
        BValueStyle.PHILIPS: (0x2001, 0x1003) in ds
        and ds[0x2001, 0x0010].value == "Philips Imaging DD 001",
    }
    assert where[profile.b_value_style]
    if profile.b_value_style is not BValueStyle.STANDARD:
        assert "DiffusionBValue" not in ds
    assert ds.SeriesDescription == profile.descriptions[Role.DWI]


def test_ce_t1_declares_its_contrast_agent(cohort: CohortResult) -> None:
    for _, _, study in _studies(cohort):
        ds = _read(study, Role.CE_T1)[0]
        assert "Gadoterate" in ds.ContrastBolusAgent
        assert ds.MRAcquisitionType == "3D"


def test_rtstruct_contours_land_on_the_tumour(cohort: CohortResult) -> None:
    for patient, timepoint, study in _studies(cohort):
        t2w = _read(study, Role.T2W)
        stack = stack_from_datasets(t2w)
        index_of = {
            ds.SOPInstanceUID: round(
                float(
                    np.dot(np.asarray(ds.ImagePositionPatient, float) - stack.origin, stack.normal)
                )
                / stack.slice_spacing_mm
            )
            for ds in t2w
        }
        rtstruct = _read(study, Role.RTSTRUCT)[0]
        (roi,) = rtstruct.StructureSetROISequence
        assert TUMOUR_ROI.search(roi.ROIName)
        per_slice: dict[int, list[np.ndarray]] = defaultdict(list)
        for item in rtstruct.ROIContourSequence[0].ContourSequence:
            assert item.ContourGeometricType == "CLOSED_PLANAR"
            uid = item.ContourImageSequence[0].ReferencedSOPInstanceUID
            points = np.asarray(item.ContourData, dtype=float).reshape(-1, 3)
            # planar, on the plane of the image it references
            heights = (points - stack.slice_position(index_of[uid])) @ stack.normal
            assert np.abs(heights).max() < 1e-3
            per_slice[index_of[uid]].append(points)
        drawn = np.stack(
            [rasterise_planar_contours(per_slice[k], stack, k) for k in range(stack.slices)]
        )
        truth = _truth(cohort, patient, timepoint, stack)
        assert truth.sum() > 0
        assert _dice(drawn, truth) >= 0.9, (patient.patient_id, timepoint)


def test_seg_on_dwi_high_b_lands_on_the_tumour(cohort: CohortResult) -> None:
    for patient, timepoint, study in _studies(cohort):
        high = [ds for ds in _read(study, Role.DWI) if b_value(ds)]
        stack = stack_from_datasets(high)
        ordered = sorted(
            high,
            key=lambda ds: float(np.dot(np.asarray(ds.ImagePositionPatient, float), stack.normal)),
        )
        seg = hd.seg.segread(study.series[Role.SEG].files[0])
        uids = [ds.SOPInstanceUID for ds in ordered]
        referenced = {uid for _, _, uid in seg.get_source_image_uids()}
        assert referenced <= set(uids), "the SEG references DWI high-b images only"
        mask = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=uids,
            segment_numbers=[1],
            ignore_spatial_locations=True,
            assert_missing_frames_are_empty=True,
        )[..., 0].astype(bool)
        truth = _truth(cohort, patient, timepoint, stack)
        assert _dice(mask, truth) >= 0.75, (patient.patient_id, timepoint)
        signal = np.stack([ds.pixel_array for ds in ordered]).astype(float)
        assert signal[mask].mean() > 1.5 * signal[~mask & (signal > 20)].mean()


def test_images_show_the_response(cohort: CohortResult) -> None:
    """ADC inside the tumour rises with regression; fibrosis darkens T2W."""
    for patient in cohort.patients:
        adc_median = {}
        for timepoint, study in patient.studies.items():
            high = [ds for ds in _read(study, Role.DWI) if b_value(ds)]
            stack = stack_from_datasets(high)
            adc = sorted(
                _read(study, Role.ADC),
                key=lambda ds: float(
                    np.dot(np.asarray(ds.ImagePositionPatient, float), stack.normal)
                ),
            )
            values = np.stack([ds.pixel_array * float(ds.get("RescaleSlope", 1)) for ds in adc])
            truth = _truth(cohort, patient, timepoint, stack)
            adc_median[timepoint] = float(np.median(values[truth])) / 1000.0
            expected = getattr(patient.biology, timepoint).adc
            assert adc_median[timepoint] == pytest.approx(expected, rel=0.25)
        bio = patient.biology
        if bio.restaging.adc / bio.baseline.adc > 1.15:
            assert adc_median["restaging"] > adc_median["baseline"]


def test_labels_csv_matches_the_files(cohort: CohortResult) -> None:
    with cohort.labels_path.open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["patient_id"] for r in rows] == [p.patient_id for p in cohort.patients]
    for row, patient in zip(rows, cohort.patients, strict=True):
        for timepoint, study in patient.studies.items():
            assert row[f"{timepoint}_study_uid"] == study.study_instance_uid
            t2w = pydicom.dcmread(study.series[Role.T2W].files[0], stop_before_pixels=True)
            assert row[f"{timepoint}_t2w_series_uid"] == t2w.SeriesInstanceUID
        assert 0 <= float(row["oracle_p_good"]) <= 1
        assert int(row["good_response"]) == (int(row["trg"]) <= 1)
        for column in ("pre_mwt_mm", "post_mwt_mm", "pre_ld_mm", "cea_ng_ml", "dm_time_months"):
            assert float(row[column]) > 0


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_same_seed_gives_identical_files_and_another_seed_does_not(tmp_path: Path) -> None:
    spec = CohortSpec(patients=1, seed=4, matrix=32, slices=6, seg_fraction=1.0)
    first = _digest(generate_cohort(spec, tmp_path / "a", workers=1).out_dir)
    again = _digest(generate_cohort(spec, tmp_path / "b", workers=1).out_dir)
    assert first == again
    other = CohortSpec(patients=1, seed=5, matrix=32, slices=6, seg_fraction=1.0)
    third = _digest(generate_cohort(other, tmp_path / "c", workers=1).out_dir)
    assert set(first.values()).isdisjoint(third.values())


def test_missing_pieces_are_really_missing(tmp_path: Path) -> None:
    spec = CohortSpec(
        patients=2, seed=3, matrix=32, slices=6, missing_fraction=1.0, seg_fraction=0.0
    )
    result = generate_cohort(spec, tmp_path / "sparse", workers=1)
    with result.labels_path.open() as handle:
        rows = list(csv.DictReader(handle))
    for row, patient in zip(rows, result.patients, strict=True):
        assert len(patient.studies) == 1
        assert int(row["has_baseline"]) + int(row["has_restaging"]) == 1
        (study,) = patient.studies.values()
        assert Role.ADC not in study.series
        assert Role.SEG not in study.series
        folders = {p.name.split("_", 1)[1] for p in study.directory.iterdir()}
        assert "adc" not in folders
        assert "seg" not in folders
        assert row[f"{study.timepoint}_adc_series_uid"] == ""


def test_refuses_to_write_into_a_folder_holding_something_else(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not empty"):
        generate_cohort(CohortSpec(patients=1, matrix=32, slices=6), tmp_path)
    assert (tmp_path / "precious.txt").read_text() == "keep me"
