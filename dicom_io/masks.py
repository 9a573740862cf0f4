"""Masks to voxels: RTSTRUCT contours and DICOM SEG onto a series' grid, and between grids."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence

import highdicom as hd
import numpy as np
import SimpleITK as sitk  # noqa: N813  (the name the SimpleITK world uses)
from matplotlib.path import Path as PolygonPath
from numpy.typing import NDArray
from pydicom.dataset import Dataset

from dicom_io.errors import InvalidInputError
from dicom_io.geometry import SliceStack, stack_from_datasets
from dicom_io.series import image_from_stack


def rasterise_planar_contours(
    contours: Sequence[NDArray[np.float64]], stack: SliceStack, index: int
) -> NDArray[np.bool_]:
    """Pixels of slice ``index`` whose centres lie inside ``contours`` (each (n, 3), mm).

    Several contours on one slice combine by the even-odd rule, as RTSTRUCT readers do: a contour
    inside another is a hole. Points are projected onto the slice plane.
    """
    spacing_r, spacing_c = stack.pixel_spacing_mm
    origin = stack.slice_position(index)
    row_dir = np.asarray(stack.row_direction)
    col_dir = np.asarray(stack.column_direction)
    rr, cc = np.mgrid[0 : stack.rows, 0 : stack.columns]
    centres = np.column_stack([cc.ravel(), rr.ravel()]).astype(float)
    mask = np.zeros(stack.rows * stack.columns, dtype=bool)
    for points in contours:
        if len(points) < 3:
            continue
        rel = np.asarray(points, dtype=float) - origin
        polygon = np.column_stack([rel @ row_dir / spacing_c, rel @ col_dir / spacing_r])
        mask ^= PolygonPath(polygon, closed=False).contains_points(centres)
    return mask.reshape(stack.rows, stack.columns)


DEFAULT_ROI_PATTERN = r"tumou?r|gtv|lesion"


def select_roi(rtstruct: Dataset, pattern: str = DEFAULT_ROI_PATTERN) -> tuple[int, str]:
    """(ROI number, name) of the first ROI whose name matches ``pattern`` (case-insensitive)."""
    names = [
        (int(r.ROINumber), str(r.ROIName)) for r in rtstruct.get("StructureSetROISequence", [])
    ]
    for number, name in names:
        if re.search(pattern, name, re.IGNORECASE):
            return number, name
    listed = ", ".join(repr(n) for _, n in names) or "none"
    raise InvalidInputError(f"no ROI name matches {pattern!r} (ROIs: {listed})")


def _slice_index(stack: SliceStack, points: np.ndarray) -> int | None:
    heights = (points - np.asarray(stack.origin)) @ stack.normal / stack.slice_spacing_mm
    index = round(float(np.mean(heights)))
    if not 0 <= index < stack.slices or np.abs(heights - index).max() > 0.5:
        return None
    return index


def rtstruct_mask(
    rtstruct: Dataset, series: Sequence[Dataset], roi_pattern: str = DEFAULT_ROI_PATTERN
) -> sitk.Image:
    """The ROI matching ``roi_pattern`` as a uint8 mask on the grid of ``series``.

    Contours combine per slice by the even-odd rule (holes). A contour on an image that is not
    in ``series`` (or off its slices) is an error that names the ROI.
    """
    number, name = select_roi(rtstruct, roi_pattern)
    stack = stack_from_datasets(series)
    index_of = {}
    for ds in series:
        found = _slice_index(stack, np.asarray([[float(v) for v in ds.ImagePositionPatient]]))
        if found is not None:
            index_of[str(ds.SOPInstanceUID)] = found
    per_slice: dict[int, list[np.ndarray]] = defaultdict(list)
    for roi in rtstruct.get("ROIContourSequence", []):
        if int(roi.ReferencedROINumber) != number:
            continue
        for contour in roi.get("ContourSequence", []):
            points = np.asarray([float(v) for v in contour.ContourData]).reshape(-1, 3)
            refs = [
                str(r.ReferencedSOPInstanceUID) for r in contour.get("ContourImageSequence", [])
            ]
            if refs and refs[0] not in index_of:
                raise InvalidInputError(
                    f"ROI {name!r}: a contour references an image that is not in the series"
                )
            index = index_of[refs[0]] if refs else _slice_index(stack, points)
            if index is None:
                raise InvalidInputError(f"ROI {name!r}: a contour lies off the series' slices")
            per_slice[index].append(points)
    if not per_slice:
        raise InvalidInputError(f"ROI {name!r} has no contours")
    volume = np.zeros((stack.slices, stack.rows, stack.columns), dtype=np.uint8)
    for index, contours in per_slice.items():
        volume[index] = rasterise_planar_contours(contours, stack, index)
    return image_from_stack(volume, stack)


def seg_mask(seg: Dataset, series: Sequence[Dataset], segment_number: int = 1) -> sitk.Image:
    """Segment ``segment_number`` of a DICOM SEG as a uint8 mask on the grid of ``series``."""
    stack = stack_from_datasets(series)
    ordered = sorted(
        series,
        key=lambda ds: float(np.dot([float(v) for v in ds.ImagePositionPatient], stack.normal)),
    )
    segmentation = hd.seg.Segmentation.from_dataset(seg, copy=False)
    try:
        pixels = segmentation.get_pixels_by_source_instance(
            source_sop_instance_uids=[str(ds.SOPInstanceUID) for ds in ordered],
            segment_numbers=[segment_number],
            ignore_spatial_locations=True,
            assert_missing_frames_are_empty=True,
        )
    except (KeyError, ValueError) as exc:
        raise InvalidInputError(f"SEG does not fit the series it references: {exc}") from exc
    return image_from_stack(pixels[..., 0].astype(np.uint8), stack)


def resample_mask(mask: sitk.Image, reference: sitk.Image) -> sitk.Image:
    """Carry a mask to another image's grid through physical space (linear, threshold 0.5)."""
    moved = sitk.Resample(
        sitk.Cast(mask, sitk.sitkFloat32),
        reference,
        sitk.Transform(),
        sitk.sitkLinear,
        0.0,
        sitk.sitkFloat32,
    )
    binary: sitk.Image = sitk.Cast(moved >= 0.5, sitk.sitkUInt8)
    return binary
