"""A series of DICOM images to a SimpleITK volume with its true physical geometry."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk  # noqa: N813  (the name the SimpleITK world uses)
from pydicom.dataset import Dataset

from dicom_io.diffusion import b_value
from dicom_io.errors import InvalidInputError
from dicom_io.geometry import SliceStack, stack_from_datasets


def read_headers(paths: Sequence[Path]) -> list[Dataset]:
    """Read the instances of a series (pixel data included: decoded only when asked)."""
    return [pydicom.dcmread(path) for path in paths]


def image_from_stack(volume: np.ndarray, stack: SliceStack) -> sitk.Image:
    """A SimpleITK image of ``volume`` (slices, rows, columns) placed as ``stack`` says."""
    image = sitk.GetImageFromArray(volume)
    image.SetOrigin(stack.origin)
    spacing_r, spacing_c = stack.pixel_spacing_mm
    image.SetSpacing((spacing_c, spacing_r, stack.slice_spacing_mm))
    row = np.asarray(stack.row_direction)
    col = np.asarray(stack.column_direction)
    direction = np.column_stack([row, col, stack.normal])
    image.SetDirection(tuple(float(v) for v in direction.ravel()))
    return image


def _real_values(ds: Dataset) -> np.ndarray:
    pixels = ds.pixel_array.astype(np.float32)
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    return pixels * slope + intercept


def _stacked(datasets: Sequence[Dataset]) -> tuple[list[Dataset], SliceStack]:
    """The images ordered by position along the normal, and their stack."""
    try:
        stack = stack_from_datasets(datasets)
    except ValueError as exc:
        raise InvalidInputError(f"series cannot be stacked: {exc}") from exc
    normal = stack.normal
    ordered = sorted(
        datasets,
        key=lambda ds: float(np.dot([float(v) for v in ds.ImagePositionPatient], normal)),
    )
    return ordered, stack


def by_position(datasets: Sequence[Dataset]) -> list[Dataset]:
    """Single-frame images of one stack in the order :func:`read_series` puts their slices (by
    position along the normal): slice ``k`` of the volume is ``by_position(...)[k]``.
    :class:`InvalidInputError` as for :func:`read_series`."""
    return _stacked(datasets)[0]


def read_series(datasets: Sequence[Dataset]) -> sitk.Image:
    """Single-frame images of one series (one b-value for DWI) as a float32 volume.

    Slices are ordered by position along the normal (never by InstanceNumber) and rescale
    slope/intercept are applied. Raises :class:`InvalidInputError` for images that do not form
    one evenly spaced stack (mixed orientations, repeated positions: split DWI by b-value first).
    """
    if len(datasets) == 1 and int(datasets[0].get("NumberOfFrames", 1) or 1) > 1:
        return read_enhanced(datasets[0])
    ordered, stack = _stacked(datasets)
    volume = np.stack([_real_values(ds) for ds in ordered])
    return image_from_stack(volume, stack)


def read_enhanced(ds: Dataset) -> sitk.Image:
    """An enhanced (multi-frame) MR image as a volume, frames ordered along the normal."""
    shared = ds.get("SharedFunctionalGroupsSequence", [Dataset()])[0]
    frames = ds.get("PerFrameFunctionalGroupsSequence", [])
    if not frames:
        raise InvalidInputError("enhanced image has no per-frame functional groups")

    def group(frame: Dataset, name: str) -> Dataset:
        value = frame.get(name) or shared.get(name)
        if not value:
            raise InvalidInputError(f"enhanced image lacks {name}")
        return value[0]  # type: ignore[no-any-return]

    iop = [float(v) for v in group(frames[0], "PlaneOrientationSequence").ImageOrientationPatient]
    measures = group(frames[0], "PixelMeasuresSequence")
    normal = np.cross(iop[:3], iop[3:])
    positions = [
        np.asarray([float(v) for v in group(f, "PlanePositionSequence").ImagePositionPatient])
        for f in frames
    ]
    order = np.argsort([float(p @ normal) for p in positions])
    pixels = ds.pixel_array.astype(np.float32)
    transformation = (
        group(frames[0], "PixelValueTransformationSequence")
        if (
            frames[0].get("PixelValueTransformationSequence")
            or shared.get("PixelValueTransformationSequence")
        )
        else None
    )
    if transformation is not None:
        pixels = pixels * float(transformation.RescaleSlope) + float(
            transformation.RescaleIntercept
        )
    locations = np.asarray([float(positions[i] @ normal) for i in order])
    gaps = np.diff(locations)
    spacing = float(gaps.mean()) if len(gaps) else float(measures.get("SliceThickness", 1.0))
    stack = SliceStack(
        origin=tuple(float(v) for v in positions[order[0]]),  # type: ignore[arg-type]
        row_direction=(iop[0], iop[1], iop[2]),
        column_direction=(iop[3], iop[4], iop[5]),
        rows=int(ds.Rows),
        columns=int(ds.Columns),
        slices=len(frames),
        pixel_spacing_mm=(float(measures.PixelSpacing[0]), float(measures.PixelSpacing[1])),
        slice_spacing_mm=spacing,
        slice_thickness_mm=float(measures.get("SliceThickness", spacing) or spacing),
    )
    return image_from_stack(pixels[order], stack)


def split_by_b_value(datasets: Sequence[Dataset]) -> dict[float, list[Dataset]]:
    """DWI images grouped by b-value (standard tag first, then GE / Siemens / Philips).

    Raises :class:`InvalidInputError` naming how many images carry no b-value at all.
    """
    groups: dict[float, list[Dataset]] = defaultdict(list)
    missing = 0
    for ds in datasets:
        value = b_value(ds)
        if value is None:
            missing += 1
        else:
            groups[value].append(ds)
    if missing:
        raise InvalidInputError(
            f"{missing} of {len(datasets)} DWI images carry no b-value (standard or vendor tag)"
        )
    return dict(sorted(groups.items()))
