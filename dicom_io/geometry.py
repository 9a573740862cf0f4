"""Physical geometry of a stack of parallel image slices (DICOM patient coordinates, LPS, mm)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset

FloatArray = NDArray[np.float64]


def _unit(vector: FloatArray) -> FloatArray:
    norm = float(np.linalg.norm(vector))
    if norm == 0.0:
        raise ValueError("direction vector has zero length")
    return vector / norm


@dataclass(frozen=True)
class SliceStack:
    """A regular stack of ``slices`` images of ``rows`` x ``columns`` pixels.

    ``origin`` is the centre of the first pixel of the first slice (ImagePositionPatient of slice
    0); ``row_direction`` is the direction in which the column index grows along a row (first
    three values of ImageOrientationPatient), ``column_direction`` the direction in which the row
    index grows; slices advance along ``normal = row x column`` by ``slice_spacing_mm``.
    """

    origin: tuple[float, float, float]
    row_direction: tuple[float, float, float]
    column_direction: tuple[float, float, float]
    rows: int
    columns: int
    slices: int
    pixel_spacing_mm: tuple[float, float]  # (between rows, between columns), as PixelSpacing
    slice_spacing_mm: float
    slice_thickness_mm: float

    def __post_init__(self) -> None:
        row = np.asarray(self.row_direction, dtype=float)
        col = np.asarray(self.column_direction, dtype=float)
        if abs(np.linalg.norm(row) - 1) > 1e-6 or abs(np.linalg.norm(col) - 1) > 1e-6:
            raise ValueError("row and column directions must be unit vectors")
        if abs(float(row @ col)) > 1e-6:
            raise ValueError("row and column directions must be orthogonal")
        if min(self.rows, self.columns, self.slices) < 1:
            raise ValueError("rows, columns and slices must be positive")
        if min(*self.pixel_spacing_mm, self.slice_spacing_mm, self.slice_thickness_mm) <= 0:
            raise ValueError("spacings and thickness must be positive")

    @classmethod
    def centred(
        cls,
        centre: FloatArray,
        row_direction: FloatArray,
        column_direction: FloatArray,
        matrix: tuple[int, int],
        field_of_view_mm: tuple[float, float],
        slices: int,
        slice_spacing_mm: float,
        slice_thickness_mm: float,
    ) -> SliceStack:
        """Build a stack whose centre (between the middle pixels and slices) is ``centre``."""
        row = _unit(np.asarray(row_direction, dtype=float))
        col = _unit(np.asarray(column_direction, dtype=float))
        col = _unit(col - (col @ row) * row)
        rows, columns = matrix
        spacing_r = field_of_view_mm[0] / rows
        spacing_c = field_of_view_mm[1] / columns
        normal = np.cross(row, col)
        origin = (
            np.asarray(centre, dtype=float)
            - (columns - 1) / 2 * spacing_c * row
            - (rows - 1) / 2 * spacing_r * col
            - (slices - 1) / 2 * slice_spacing_mm * normal
        )
        return cls(
            origin=(float(origin[0]), float(origin[1]), float(origin[2])),
            row_direction=(float(row[0]), float(row[1]), float(row[2])),
            column_direction=(float(col[0]), float(col[1]), float(col[2])),
            rows=rows,
            columns=columns,
            slices=slices,
            pixel_spacing_mm=(spacing_r, spacing_c),
            slice_spacing_mm=slice_spacing_mm,
            slice_thickness_mm=slice_thickness_mm,
        )

    @property
    def normal(self) -> FloatArray:
        """Unit slice normal, ``row x column``."""
        return np.cross(np.asarray(self.row_direction), np.asarray(self.column_direction))

    def slice_position(self, index: int) -> FloatArray:
        """ImagePositionPatient of slice ``index``."""
        return np.asarray(self.origin) + index * self.slice_spacing_mm * self.normal

    def image_orientation(self) -> list[float]:
        """ImageOrientationPatient (row direction, then column direction)."""
        return [*self.row_direction, *self.column_direction]

    def slice_points(self, index: int, supersample: int = 1) -> FloatArray:
        """Patient coordinates of the pixel centres of one slice, shape (rows, columns, 3).

        With ``supersample`` = s > 1, each pixel is split into s x s sub-pixels whose centres are
        returned instead, shape (rows * s, columns * s, 3).
        """
        s = supersample
        r = (np.arange(self.rows * s) + 0.5) / s - 0.5
        c = (np.arange(self.columns * s) + 0.5) / s - 0.5
        return self.pixel_to_patient(index, r[:, None], c[None, :])

    def pixel_to_patient(self, index: float, row: FloatArray, column: FloatArray) -> FloatArray:
        """Map (fractional) pixel indices of slice ``index`` to patient coordinates (..., 3)."""
        spacing_r, spacing_c = self.pixel_spacing_mm
        row_arr, col_arr = np.broadcast_arrays(np.asarray(row, float), np.asarray(column, float))
        points = (
            np.asarray(self.origin)
            + index * self.slice_spacing_mm * self.normal
            + col_arr[..., None] * spacing_c * np.asarray(self.row_direction)
            + row_arr[..., None] * spacing_r * np.asarray(self.column_direction)
        )
        return np.asarray(points)

    def volume_points(self) -> FloatArray:
        """Pixel centres of every slice, shape (slices, rows, columns, 3)."""
        return np.stack([self.slice_points(k) for k in range(self.slices)])


def slice_normal(ds: Dataset) -> FloatArray:
    """Unit normal (row x column) of an image from its ImageOrientationPatient."""
    iop = np.asarray([float(v) for v in ds.ImageOrientationPatient])
    return np.asarray(np.cross(iop[:3], iop[3:]))


def sort_by_position(datasets: Sequence[Dataset]) -> list[Dataset]:
    """Images ordered by position along their common slice normal (never by InstanceNumber)."""
    if not datasets:
        return []
    normal = slice_normal(datasets[0])
    return sorted(datasets, key=lambda ds: float(np.dot(_position(ds), normal)))


def _position(ds: Dataset) -> FloatArray:
    return np.asarray([float(v) for v in ds.ImagePositionPatient])


def stack_from_datasets(datasets: Sequence[Dataset], tolerance_mm: float = 0.05) -> SliceStack:
    """The :class:`SliceStack` of single-frame images of one orientation, sorted by position.

    Raises ``ValueError`` when the images are not parallel, not of one size, repeat a position or
    are not evenly spaced (within ``tolerance_mm``).
    """
    ordered = sort_by_position(datasets)
    if not ordered:
        raise ValueError("no images to build a slice stack from")
    first = ordered[0]
    iop = np.asarray([float(v) for v in first.ImageOrientationPatient])
    for ds in ordered[1:]:
        other = np.asarray([float(v) for v in ds.ImageOrientationPatient])
        if not np.allclose(iop, other, atol=1e-4):
            raise ValueError("images are not parallel: ImageOrientationPatient differs")
        if (ds.Rows, ds.Columns) != (first.Rows, first.Columns):
            raise ValueError("images differ in size (Rows/Columns)")
    normal = slice_normal(first)
    locations = np.asarray([float(np.dot(_position(ds), normal)) for ds in ordered])
    gaps = np.diff(locations)
    if len(gaps) and gaps.min() < tolerance_mm:
        raise ValueError("two images share a slice position")
    if len(gaps) and np.ptp(gaps) > tolerance_mm:
        raise ValueError("slices are not evenly spaced")
    spacing = float(gaps.mean()) if len(gaps) else float(first.get("SliceThickness", 1.0) or 1.0)
    pixel = tuple(float(v) for v in first.PixelSpacing)
    origin = _position(first)
    return SliceStack(
        origin=(float(origin[0]), float(origin[1]), float(origin[2])),
        row_direction=(float(iop[0]), float(iop[1]), float(iop[2])),
        column_direction=(float(iop[3]), float(iop[4]), float(iop[5])),
        rows=int(first.Rows),
        columns=int(first.Columns),
        slices=len(ordered),
        pixel_spacing_mm=(pixel[0], pixel[1]),
        slice_spacing_mm=spacing,
        slice_thickness_mm=float(first.get("SliceThickness", spacing) or spacing),
    )
