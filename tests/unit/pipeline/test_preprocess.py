"""Preprocessing against answers known in advance: tissue ADC, shapes, measurements, N4."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk  # noqa: N813

from dicom_io.geometry import stack_from_datasets
from dicom_io.series import read_series, split_by_b_value
from dicom_io.synthetic.anatomy import Tissue
from dicom_io.synthetic.appearance import SIGNALS
from dicom_io.synthetic.cohort import CohortResult, patient_scenes
from dicom_io.synthetic.vendors import Role
from pipeline.errors import PipelineInputError
from pipeline.preprocess import (
    adc_from_dwi,
    crop_stack,
    largest_cross_section,
    measure,
    n4_correct,
    normalise_0_255,
    slice_input,
    zscore,
)


def _box_mask(shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> sitk.Image:
    array = np.zeros(shape, dtype=np.uint8)
    array[2:6, 10:30, 20:30] = 1  # 4 slices x 20 rows x 10 columns
    mask = sitk.GetImageFromArray(array)
    mask.SetSpacing(spacing)
    return mask


def test_measurements_of_a_box_are_exact() -> None:
    mask = _box_mask((10, 40, 40), (0.5, 1.0, 3.0))  # x 0.5 mm, y 1 mm, z 3 mm
    features = measure(mask)
    assert features.volume_ml == pytest.approx(4 * 20 * 10 * 0.5 * 1.0 * 3.0 / 1000)
    # corner to corner of the voxel centres: 9 x 0.5, 19 x 1, 3 x 3 mm
    assert features.longest_diameter_mm == pytest.approx(np.sqrt(4.5**2 + 19**2 + 9**2))
    assert 4.0 <= features.max_wall_thickness_mm <= 5.5  # the 5 mm side, to a voxel


def test_largest_cross_section_and_crop_stack_shapes() -> None:
    mask = _box_mask((10, 40, 40), (1.0, 1.0, 3.0))
    array = sitk.GetArrayFromImage(mask)
    array[4, 5:35, 5:35] = 1
    mask = sitk.GetImageFromArray(array)
    image = sitk.GetImageFromArray(np.random.default_rng(0).normal(100, 10, (10, 40, 40)))
    assert largest_cross_section(mask) == 4
    assert slice_input(image, mask).shape == (256, 256)
    stack = crop_stack(image, mask)
    assert stack.shape == (20, 112, 112)
    assert not stack[4:].any()  # four tumour slices, then zero padding
    assert abs(float(stack[:4].mean())) < 1e-3


def _disc(radius_mm: float) -> tuple[sitk.Image, sitk.Image]:
    """A bright disc of ``radius_mm`` on 3 slices of a 0.5 mm grid, and its mask."""
    yy, xx = np.mgrid[:160, :160]
    disc = ((yy - 70) ** 2 + (xx - 90) ** 2) * 0.25 <= radius_mm**2
    array = np.zeros((5, 160, 160), dtype=np.float32)
    array[1:4][:, disc] = 100.0
    image, mask = sitk.GetImageFromArray(array), sitk.GetImageFromArray((array > 0).astype("u1"))
    for item in (image, mask):
        item.SetSpacing((0.5, 0.5, 3.0))
    return image, mask


def test_a_fixed_field_of_view_keeps_the_tumours_size() -> None:
    small, large = _disc(6.0), _disc(12.0)
    # the published crop: each tumour fills its crop, whatever its size
    filled = [float((crop_stack(*d, size=32, depth=4)[:3] > 0).mean()) for d in (small, large)]
    assert filled[0] == pytest.approx(filled[1], abs=0.1)
    # a 40 mm field of view: the larger tumour covers four times the area (radius doubled)
    shown = [
        float((crop_stack(*d, size=32, depth=4, fov_mm=40.0)[:3] > 0).mean())
        for d in (small, large)
    ]
    assert shown[1] / shown[0] == pytest.approx(4.0, rel=0.15)
    assert shown[1] == pytest.approx(np.pi * 12**2 / 40**2, rel=0.15)
    # centred on the tumour: its brightest pixels lie in the middle of the crop
    stack = crop_stack(*small, size=32, depth=4, fov_mm=40.0)
    rows, cols = np.nonzero(stack[1] > 0)
    assert abs(rows.mean() - 15.5) < 1.0
    assert abs(cols.mean() - 15.5) < 1.0


def test_normalisations() -> None:
    values = np.random.default_rng(1).normal(500, 80, 10_000)
    scaled = normalise_0_255(values)
    assert scaled.min() == 0
    assert scaled.max() == 255
    assert len(np.unique(scaled)) <= 256
    z = zscore(values)
    assert z.mean() == pytest.approx(0, abs=1e-5)
    assert z.std() == pytest.approx(1, abs=1e-4)


def test_empty_mask_is_a_clear_error() -> None:
    empty = sitk.Image(8, 8, 4, sitk.sitkUInt8)
    with pytest.raises(PipelineInputError, match="empty"):
        largest_cross_section(empty)


def test_adc_computed_from_dwi_matches_the_tissue_adc(cohort: CohortResult) -> None:
    """Muscle has a fixed ADC in the phantom; ADC from b0 and b-high must find it."""
    patient = cohort.patients[0]
    study = patient.studies["baseline"]
    groups = split_by_b_value([pydicom.dcmread(p) for p in study.series[Role.DWI].files])
    (_, b0_images), (b_high, high_images) = sorted(groups.items())
    adc = sitk.GetArrayFromImage(
        adc_from_dwi(read_series(b0_images), read_series(high_images), b_high)
    )
    stack = stack_from_datasets(high_images)
    scene = patient_scenes(cohort.spec, patient.index, patient.biology)["baseline"]
    labels = np.stack([scene.labels(stack.slice_points(k)) for k in range(stack.slices)])
    muscle = adc[labels == Tissue.MUSCLE]
    assert np.median(muscle) == pytest.approx(SIGNALS[Tissue.MUSCLE].adc, rel=0.15)
    tumour = adc[labels == Tissue.TUMOUR]
    assert np.median(tumour) == pytest.approx(patient.biology.baseline.adc, rel=0.2)


def test_n4_removes_a_known_bias_field_around_the_mask() -> None:
    """A uniform ball under a strong smooth bias: N4 on the region must flatten it."""
    z, y, x = np.mgrid[0:40, 0:96, 0:96].astype(float)
    ball = ((x - 48) ** 2 + (y - 48) ** 2 + ((z - 20) * 2) ** 2) < 35**2
    rng = np.random.default_rng(3)
    truth = np.where(ball, 1000.0, 50.0) + rng.normal(0, 10, ball.shape)
    bias = np.exp(0.6 * (x - 48) / 48 + 0.3 * (y - 48) / 48)
    image = sitk.GetImageFromArray((truth * bias).astype(np.float32))
    image.SetSpacing((1.0, 1.0, 2.0))
    tumour = np.zeros(ball.shape, dtype=np.uint8)
    tumour[16:24, 40:56, 40:56] = 1
    mask = sitk.GetImageFromArray(tumour)
    mask.CopyInformation(image)
    corrected = n4_correct(image, mask)
    before = sitk.GetArrayFromImage(sitk.Resample(image, corrected))
    after = sitk.GetArrayFromImage(corrected)
    region_ball = sitk.GetArrayFromImage(
        sitk.Resample(_like(ball, image), corrected, sitk.Transform(), sitk.sitkNearestNeighbor)
    ).astype(bool)

    def spread(values: np.ndarray) -> float:
        return float(np.std(values) / np.mean(values))

    assert spread(after[region_ball]) < 0.5 * spread(before[region_ball])


def _like(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    image = sitk.GetImageFromArray(array.astype(np.uint8))
    image.CopyInformation(reference)
    return image
