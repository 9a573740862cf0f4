"""Contours and masks to voxels."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.path import Path as PolygonPath
from numpy.typing import NDArray

from dicom_io.geometry import SliceStack


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
