"""Slice-stack geometry: the coordinates every reader and writer depends on."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.dataset import Dataset

from dicom_io.geometry import SliceStack, sort_by_position, stack_from_datasets


def _oblique(slices: int = 5) -> SliceStack:
    tilt = np.deg2rad(20)
    return SliceStack.centred(
        centre=np.array([10.0, -20.0, 30.0]),
        row_direction=np.array([1.0, 0.0, 0.0]),
        column_direction=np.array([0.0, np.cos(tilt), -np.sin(tilt)]),
        matrix=(8, 10),
        field_of_view_mm=(80.0, 120.0),
        slices=slices,
        slice_spacing_mm=3.0,
        slice_thickness_mm=2.7,
    )


def test_centred_stack_is_centred_where_asked() -> None:
    stack = _oblique()
    points = stack.volume_points()
    assert np.allclose(points.reshape(-1, 3).mean(axis=0), [10.0, -20.0, 30.0])
    assert stack.pixel_spacing_mm == (10.0, 12.0)


def test_pixel_steps_follow_row_column_and_normal_directions() -> None:
    stack = _oblique()
    points = stack.volume_points()  # (slice, row, column, 3)
    assert np.allclose(points[0, 0, 1] - points[0, 0, 0], 12.0 * np.asarray(stack.row_direction))
    assert np.allclose(points[0, 1, 0] - points[0, 0, 0], 10.0 * np.asarray(stack.column_direction))
    assert np.allclose(points[1, 0, 0] - points[0, 0, 0], 3.0 * stack.normal)
    assert np.allclose(points[0, 0, 0], stack.origin)


def test_supersampled_points_average_to_pixel_centres() -> None:
    stack = _oblique()
    fine = stack.slice_points(2, supersample=3).reshape(8, 3, 10, 3, 3).mean(axis=(1, 3))
    assert np.allclose(fine, stack.slice_points(2))


def test_rejects_non_orthogonal_directions() -> None:
    with pytest.raises(ValueError, match="orthogonal"):
        SliceStack((0, 0, 0), (1, 0, 0), (0.6, 0.8, 0), 4, 4, 2, (1, 1), 1, 1)


def _datasets(stack: SliceStack, order: list[int]) -> list[Dataset]:
    out = []
    for number, k in enumerate(order, start=1):
        ds = Dataset()
        ds.ImagePositionPatient = list(stack.slice_position(k))
        ds.ImageOrientationPatient = stack.image_orientation()
        ds.PixelSpacing = list(stack.pixel_spacing_mm)
        ds.SliceThickness = stack.slice_thickness_mm
        ds.Rows, ds.Columns = stack.rows, stack.columns
        ds.InstanceNumber = number
        out.append(ds)
    return out


def test_stack_from_datasets_orders_by_position_not_instance_number() -> None:
    stack = _oblique()
    shuffled = _datasets(stack, [3, 0, 4, 1, 2])
    ordered = sort_by_position(shuffled)
    assert [int(ds.InstanceNumber) for ds in ordered] == [2, 4, 5, 1, 3]
    rebuilt = stack_from_datasets(shuffled)
    assert np.allclose(rebuilt.origin, stack.origin)
    assert rebuilt.slice_spacing_mm == pytest.approx(3.0)
    assert rebuilt.slices == 5


def test_stack_from_datasets_refuses_a_gap() -> None:
    stack = _oblique()
    with pytest.raises(ValueError, match="evenly spaced"):
        stack_from_datasets(_datasets(stack, [0, 1, 3, 4]))
