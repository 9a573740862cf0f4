"""Series to volumes and masks to voxels, on geometry where the right answer is known."""

from __future__ import annotations

import datetime

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk  # noqa: N813
from pydicom.dataset import Dataset
from pydicom.uid import MRImageStorage, generate_uid

from dicom_io.diffusion import b_value
from dicom_io.errors import InvalidInputError
from dicom_io.geometry import SliceStack, stack_from_datasets
from dicom_io.masks import resample_mask, rtstruct_mask, seg_mask
from dicom_io.roles import classify_series, machine_made_by
from dicom_io.seg import TUMOUR_DISPLAY_RGB, binary_segmentation
from dicom_io.series import read_series, split_by_b_value
from dicom_io.synthetic.anatomy import Tissue
from dicom_io.synthetic.cohort import CohortResult, patient_scenes
from dicom_io.synthetic.rtstruct import Contour, build_rtstruct
from dicom_io.synthetic.vendors import Role


def _oblique_stack() -> SliceStack:
    a, b = np.deg2rad(20), np.deg2rad(10)
    row = np.array([np.cos(b), np.sin(b), 0.0])
    col = np.array([-np.sin(b) * np.cos(a), np.cos(b) * np.cos(a), -np.sin(a)])
    return SliceStack.centred(
        np.array([5.0, -12.0, 40.0]), row, col, (96, 96), (96.0, 96.0), 30, 2.0, 2.0
    )


def _series(stack: SliceStack, order: list[int] | None = None) -> list[Dataset]:
    series_uid, frame = generate_uid(), generate_uid()
    out = []
    for n, k in enumerate(order or range(stack.slices), start=1):
        ds = Dataset()
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = generate_uid()
        ds.StudyInstanceUID = "1.2.3"
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame
        ds.InstanceNumber = n
        ds.ImagePositionPatient = [float(v) for v in stack.slice_position(k)]
        ds.ImageOrientationPatient = stack.image_orientation()
        ds.PixelSpacing = list(stack.pixel_spacing_mm)
        ds.SliceThickness = stack.slice_thickness_mm
        ds.Rows, ds.Columns = stack.rows, stack.columns
        out.append(ds)
    return out


def _rtstruct(series: list[Dataset], contours: list[Contour]) -> Dataset:
    return build_rtstruct(
        referenced=series,
        contours=contours,
        roi_name="GTV",
        series_instance_uid=generate_uid(),
        series_number=99,
        sop_instance_uid=generate_uid(),
        when=datetime.datetime(2025, 1, 1),
        series_description="test",
    )


def _physical(mask: sitk.Image) -> tuple[float, np.ndarray]:
    array = sitk.GetArrayFromImage(mask)
    voxel = float(np.prod(mask.GetSpacing()))
    indices = np.argwhere(array > 0)[:, ::-1].astype(float)  # (x, y, z) index order
    points = np.asarray([mask.TransformContinuousIndexToPhysicalPoint(p) for p in indices])
    return array.sum() * voxel, points.mean(axis=0)


def test_sphere_at_oblique_orientation_matches_volume_and_centroid() -> None:
    stack = _oblique_stack()
    series = _series(stack)
    middle = stack.pixel_to_patient(14, np.asarray(47.5), np.asarray(47.5)).reshape(3)
    centre, radius = middle + 0.7 * stack.normal + np.asarray([4.0, -3.0, 2.0]), 15.0
    row, col = np.asarray(stack.row_direction), np.asarray(stack.column_direction)
    contours = []
    for k, ds in enumerate(series):
        d = float((stack.slice_position(k) - centre) @ stack.normal)
        if abs(d) >= radius:
            continue
        r = np.sqrt(radius**2 - d**2)
        theta = np.linspace(0, 2 * np.pi, 90, endpoint=False)
        foot = centre + d * stack.normal
        points = foot + r * (np.cos(theta)[:, None] * row + np.sin(theta)[:, None] * col)
        contours.append(Contour(ds.SOPClassUID, ds.SOPInstanceUID, points))
    mask = rtstruct_mask(_rtstruct(series, contours), series)
    volume, centroid = _physical(mask)
    assert volume == pytest.approx(4 / 3 * np.pi * radius**3, rel=0.03)
    assert np.linalg.norm(centroid - centre) < 2.0  # one voxel: 1 x 1 x 2 mm


def test_box_with_a_hole_at_oblique_orientation() -> None:
    stack = _oblique_stack()
    series = _series(stack, order=list(range(29, -1, -1)))  # InstanceNumber runs backwards
    row, col = np.asarray(stack.row_direction), np.asarray(stack.column_direction)
    centre = stack.pixel_to_patient(10, np.asarray(47.5), np.asarray(47.5)).reshape(3)
    contours = []
    for k in range(10, 20):  # 10 slices x 2 mm = 20 mm deep
        ds = next(
            d
            for d in series
            if np.allclose([float(v) for v in d.ImagePositionPatient], stack.slice_position(k))
        )
        foot = centre + (k - 10) * 2.0 * stack.normal
        for half in (15.0, 5.0):  # outer square 30 mm, inner square 10 mm: a hole
            corners = [(-1, -1), (1, -1), (1, 1), (-1, 1)]
            points = np.asarray([foot + half * (u * row + v * col) for u, v in corners])
            contours.append(Contour(ds.SOPClassUID, ds.SOPInstanceUID, points))
    mask = rtstruct_mask(_rtstruct(series, contours), series)
    volume, centroid = _physical(mask)
    assert volume == pytest.approx((30 * 30 - 10 * 10) * 20, rel=0.03)
    expected = centre + 9.0 * stack.normal
    assert np.linalg.norm(centroid - expected) < 2.0


def test_contour_on_a_missing_image_names_the_roi() -> None:
    stack = _oblique_stack()
    series = _series(stack)
    stranger = _series(stack)[5]
    points = np.asarray([stack.slice_position(5) + v for v in ([0, 0, 0], [5, 0, 0], [0, 5, 0])])
    rtstruct = _rtstruct(series, [Contour(MRImageStorage, series[5].SOPInstanceUID, points)])
    rtstruct.ROIContourSequence[0].ContourSequence[0].ContourImageSequence[
        0
    ].ReferencedSOPInstanceUID = stranger.SOPInstanceUID
    with pytest.raises(InvalidInputError, match="'GTV'"):
        rtstruct_mask(rtstruct, series)


def _read(cohort: CohortResult, patient: int, timepoint: str, role: Role) -> list[Dataset]:
    files = cohort.patients[patient].studies[timepoint].series[role].files
    return [pydicom.dcmread(p) for p in files]


def test_read_series_places_every_slice_where_its_header_says(cohort: CohortResult) -> None:
    t2w = _read(cohort, 0, "baseline", Role.T2W)
    image = read_series(t2w)
    assert image.GetSize() == (48, 48, 12)
    for ds in t2w:
        position = np.asarray([float(v) for v in ds.ImagePositionPatient])
        index = image.TransformPhysicalPointToIndex(tuple(position))
        assert np.allclose(image.TransformIndexToPhysicalPoint(index), position, atol=1e-3)
        slope = float(ds.get("RescaleSlope", 1))
        assert np.allclose(
            sitk.GetArrayFromImage(image)[index[2]], ds.pixel_array * slope, atol=1e-3
        )


def test_dwi_splits_into_one_volume_per_b_value(cohort: CohortResult) -> None:
    for patient in cohort.patients:
        for study in patient.studies.values():
            groups = split_by_b_value([pydicom.dcmread(p) for p in study.series[Role.DWI].files])
            assert len(groups) == 2
            volumes = [read_series(g) for g in groups.values()]
            assert volumes[0].GetSize() == volumes[1].GetSize()


def test_masks_carry_from_t2w_to_dwi_and_match_the_seg(cohort: CohortResult) -> None:
    patient = cohort.patients[1]
    study = patient.studies["baseline"]
    t2w = _read(cohort, 1, "baseline", Role.T2W)
    rtstruct = pydicom.dcmread(study.series[Role.RTSTRUCT].files[0])
    dwi = _read(cohort, 1, "baseline", Role.DWI)
    high = split_by_b_value(dwi)
    high_b = high[max(high)]
    dwi_image = read_series(high_b)
    carried = sitk.GetArrayFromImage(resample_mask(rtstruct_mask(rtstruct, t2w), dwi_image))
    seg = sitk.GetArrayFromImage(seg_mask(pydicom.dcmread(study.series[Role.SEG].files[0]), high_b))
    scene = patient_scenes(cohort.spec, patient.index, patient.biology)["baseline"]
    stack = stack_from_datasets(high_b)
    truth = np.stack(
        [scene.labels(stack.slice_points(k)) == Tissue.TUMOUR for k in range(stack.slices)]
    )

    def dice(a: np.ndarray, b: np.ndarray) -> float:
        return float(2 * np.logical_and(a, b).sum() / (a.sum() + b.sum()))

    assert dice(seg > 0, truth) >= 0.75
    assert dice(carried > 0, truth) >= 0.6  # T2W mask through physical space onto 5 mm voxels
    assert all(b_value(ds) == max(high) for ds in high_b)


def test_a_mask_a_program_made_on_its_own_names_the_program(cohort: CohortResult) -> None:
    study = cohort.patients[0].studies["baseline"]
    t2w = sorted(_read(cohort, 0, "baseline", Role.T2W), key=lambda ds: int(ds.InstanceNumber))
    mask = np.zeros((len(t2w), int(t2w[0].Rows), int(t2w[0].Columns)), dtype=bool)
    mask[5, 20:26, 20:26] = True
    made = {}
    for manual in (True, False):
        made[manual] = binary_segmentation(
            t2w, mask, series_instance_uid=generate_uid(), series_number=99,
            sop_instance_uid=generate_uid(), manufacturer="Vendor", model="M",
            software_version="1", manual=manual, algorithm="VendorSeg", algorithm_version="2.1",
        )  # fmt: skip
    for seg in made.values():  # viewers show the tumour in larc's colour (OHIF warns without)
        lab = seg.SegmentSequence[0].RecommendedDisplayCIELabValue
        rgb = hd.color.CIELabColor.from_dicom_value(lab).to_rgb()
        assert np.allclose(rgb, TUMOUR_DISPLAY_RGB, atol=2)
    assert machine_made_by(made[False]) == "VendorSeg"
    assert machine_made_by(made[True]) is None  # drawn
    assert classify_series([made[False]]).machine_made_by == "VendorSeg"
    semi = made[False]
    semi.SegmentSequence[0].SegmentAlgorithmType = "SEMIAUTOMATIC"  # a person corrected it
    assert machine_made_by(semi) is None
    # an RTSTRUCT: automatic when every ROI says so (the synthetic one has one, MANUAL)
    rtstruct = pydicom.dcmread(study.series[Role.RTSTRUCT].files[0])
    assert machine_made_by(rtstruct) is None
    roi = rtstruct.StructureSetROISequence[0]
    roi.ROIGenerationAlgorithm = "AUTOMATIC"
    roi.ROIGenerationDescription = "AutoContour 3"
    assert machine_made_by(rtstruct) == "AutoContour 3"
    second = Dataset()
    second.ROIGenerationAlgorithm = "MANUAL"
    rtstruct.StructureSetROISequence.append(second)  # one ROI a person drew: drawn
    assert machine_made_by(rtstruct) is None
