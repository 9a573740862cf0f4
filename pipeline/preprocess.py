"""Preprocessing after ../shared/science.md: N4, intensity normalisation, ADC, model inputs.

Every function takes SimpleITK images (patient geometry kept) or arrays and plain parameters;
defaults are the studies' values.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk  # noqa: N813  (the name the SimpleITK world uses)
from numpy.typing import NDArray
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError
from scipy.spatial.distance import pdist

from pipeline.errors import PipelineInputError

FloatArray = NDArray[np.float32]


@dataclass(frozen=True)
class N4Parameters:
    """N4 bias-field correction, kept fast: shrunk, few iterations, on a region around the VOI."""

    shrink_factor: int = 4
    iterations: tuple[int, ...] = (20, 20, 20, 20)
    margin_mm: float = 40.0


def _region(mask: sitk.Image, image: sitk.Image, margin_mm: float) -> tuple[list[int], list[int]]:
    array = sitk.GetArrayFromImage(mask)
    if not array.any():
        raise PipelineInputError("the tumour mask is empty")
    nz = np.argwhere(array > 0)  # (z, y, x)
    spacing = np.asarray(image.GetSpacing())[::-1]
    pad = np.ceil(margin_mm / spacing).astype(int)
    low = np.maximum(nz.min(axis=0) - pad, 0)
    high = np.minimum(nz.max(axis=0) + pad + 1, array.shape)
    return [int(v) for v in low[::-1]], [int(v) for v in (high - low)[::-1]]


def crop_to_voi(
    image: sitk.Image, mask: sitk.Image, margin_mm: float
) -> tuple[sitk.Image, sitk.Image, int]:
    """(image, mask, first slice) cropped to the mask's voxels plus ``margin_mm``.

    The mask must be on the image's grid; the first slice is the crop's offset along the
    image's third axis (to find a crop slice's source image)."""
    index, size = _region(mask, image, margin_mm)
    return (
        sitk.RegionOfInterest(image, size, index),
        sitk.RegionOfInterest(mask, size, index),
        index[2],
    )


def n4_correct(
    image: sitk.Image, mask: sitk.Image, params: N4Parameters = N4Parameters()
) -> sitk.Image:
    """N4-corrected copy of ``image`` within a box of ``margin_mm`` around the mask's voxels.

    The bias field is fitted on a shrunk copy of that region and applied at full resolution;
    outside the region the image is cropped away (the models only look near the tumour).
    """
    index, size = _region(mask, image, params.margin_mm)
    region = sitk.RegionOfInterest(sitk.Cast(image, sitk.sitkFloat32), size, index)
    shrink = [
        params.shrink_factor if s >= 4 * params.shrink_factor else 1 for s in region.GetSize()
    ]
    small = sitk.Shrink(region, shrink)
    head = sitk.OtsuThreshold(small, 0, 1, 200)
    corrector = sitk.N4BiasFieldCorrectionImageFilter()
    corrector.SetMaximumNumberOfIterations(list(params.iterations))
    corrector.Execute(small, head)
    log_field = corrector.GetLogBiasFieldAsImage(region)
    corrected: sitk.Image = region / sitk.Exp(log_field)
    return corrected


def normalise_0_255(values: NDArray[np.floating], bins: int = 256) -> FloatArray:
    """Discretise to ``bins`` levels and scale to 0-255 (science A), by the 0.5-99.5 percentiles."""
    low, high = np.percentile(values, [0.5, 99.5])
    if high <= low:
        return np.zeros(np.shape(values), dtype=np.float32)
    scaled = np.clip((values - low) / (high - low), 0, 1)
    levels = np.floor(scaled * (bins - 1) + 0.5) / (bins - 1)
    return np.asarray(levels * 255, dtype=np.float32)


def zscore(values: NDArray[np.floating]) -> FloatArray:
    """Zero mean, unit variance (science B); a constant input becomes zeros."""
    std = float(np.std(values))
    centred = values - float(np.mean(values))
    return (centred / std if std > 0 else centred).astype(np.float32)


def adc_from_dwi(
    b0: sitk.Image, high: sitk.Image, b_value: float, threshold: float = 1.0
) -> sitk.Image:
    """ADC (10^-3 mm^2/s) = ln(S0 / Sb) / b voxel-wise, clipped at 0 (science B).

    Voxels where S0 or Sb is not above ``threshold`` (background) are 0.
    """
    if b_value <= 0:
        raise PipelineInputError("the high b-value must be positive")
    s0 = sitk.GetArrayFromImage(b0).astype(np.float64)
    sb = sitk.GetArrayFromImage(high).astype(np.float64)
    if s0.shape != sb.shape:
        raise PipelineInputError("b=0 and high-b volumes differ in size")
    valid = (s0 > threshold) & (sb > threshold)
    adc = np.zeros_like(s0)
    adc[valid] = np.log(s0[valid] / sb[valid]) / b_value * 1e3
    out = sitk.GetImageFromArray(np.clip(adc, 0, None).astype(np.float32))
    out.CopyInformation(b0)
    return out


def largest_cross_section(mask: sitk.Image) -> int:
    """Index of the slice with the most mask voxels (science A)."""
    counts = sitk.GetArrayFromImage(mask).reshape(mask.GetSize()[2], -1).sum(axis=1)
    if not counts.any():
        raise PipelineInputError("the tumour mask is empty")
    return int(np.argmax(counts))


def _resize(plane: NDArray[np.floating], size: int) -> FloatArray:
    image = sitk.GetImageFromArray(np.asarray(plane, dtype=np.float32))
    factor = (plane.shape[1] / size, plane.shape[0] / size)
    out = sitk.Resample(
        image,
        (size, size),
        sitk.Transform(),
        sitk.sitkLinear,
        (-0.5 + factor[0] / 2, -0.5 + factor[1] / 2),
        factor,
    )
    return sitk.GetArrayFromImage(out).astype(np.float32)


def slice_input(image: sitk.Image, mask: sitk.Image, size: int = 256) -> FloatArray:
    """Science A's input: the largest-cross-section slice, normalised 0-255, resized to size^2."""
    k = largest_cross_section(mask)
    plane = sitk.GetArrayFromImage(image)[k]
    return _resize(normalise_0_255(plane), size)


def crop_stack(
    image: sitk.Image,
    mask: sitk.Image,
    size: int = 112,
    depth: int = 20,
    fov_mm: float | None = None,
) -> FloatArray:
    """Science B's input: per tumour slice, the mask's bounding box cropped, resized to size^2,
    z-scored over the stack; zero slices pad to ``depth`` (extra slices beyond it are dropped
    evenly around the largest cross-section). With ``fov_mm``, every slice's crop is instead
    one square of that many mm centred on the tumour (its in-plane centre over all slices),
    padded with the image's minimum where it leaves the image: the tumour keeps its size."""
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    labels = sitk.GetArrayFromImage(mask) > 0
    slices = [k for k in range(labels.shape[0]) if labels[k].any()]
    if not slices:
        raise PipelineInputError("the tumour mask is empty")
    if len(slices) > depth:
        centre = slices.index(largest_cross_section(mask))
        start = min(max(centre - depth // 2, 0), len(slices) - depth)
        slices = slices[start : start + depth]
    crops = []
    if fov_mm is not None:
        _, ys, xs = np.nonzero(labels[slices])
        spacing_x, spacing_y = image.GetSpacing()[:2]
        top, bottom = (round(float(ys.mean()) + s * fov_mm / 2 / spacing_y) for s in (-1, 1))
        left, right = (round(float(xs.mean()) + s * fov_mm / 2 / spacing_x) for s in (-1, 1))
        pad = max(0, -top, -left, bottom - array.shape[1], right - array.shape[2])
        padded = np.pad(array, ((0, 0), (pad, pad), (pad, pad)), constant_values=array.min())
        for k in slices:
            crops.append(
                _resize(padded[k, top + pad : bottom + pad, left + pad : right + pad], size)
            )
    for k in slices if fov_mm is None else ():
        rows, cols = np.nonzero(labels[k])
        crop = array[k, rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        crops.append(_resize(crop, size))
    stacked = zscore(np.stack(crops))
    out = np.zeros((depth, size, size), dtype=np.float32)
    out[: len(crops)] = stacked
    return out


@dataclass(frozen=True)
class TumourFeatures:
    """What a radiologist measures, from the VOI: volume, longest diameter, max wall thickness."""

    volume_ml: float
    longest_diameter_mm: float
    max_wall_thickness_mm: float


def measure(mask: sitk.Image) -> TumourFeatures:
    """Volume (voxel count x voxel volume), longest 3D diameter (convex hull of the voxel
    centres), and maximal in-plane thickness (twice the largest distance to the edge, per slice)."""
    array = sitk.GetArrayFromImage(mask) > 0
    if not array.any():
        raise PipelineInputError("the tumour mask is empty")
    spacing = np.asarray(mask.GetSpacing())  # x, y, z
    volume_ml = float(array.sum() * np.prod(spacing) / 1000.0)
    indices = np.argwhere(array)[:, ::-1].astype(float)
    points = np.asarray([mask.TransformContinuousIndexToPhysicalPoint(p) for p in indices])
    with contextlib.suppress(QhullError):  # flat (one slice) or tiny: use every point
        points = points[ConvexHull(points).vertices]
    longest = float(pdist(points).max()) if len(points) > 1 else float(spacing[:2].max())
    # the widest inscribed disc of any slice: twice the largest distance from a tumour voxel's
    # centre to the nearest background voxel's centre, less half a pixel (exact to half a pixel)
    pixel = float(spacing[:2].min())
    thickness = 0.0
    for plane in array:
        if plane.any():
            padded = np.pad(plane, 1)
            depth = ndimage.distance_transform_edt(padded, sampling=(spacing[1], spacing[0]))
            thickness = max(thickness, 2 * float(depth.max()) - pixel / 2)
    return TumourFeatures(volume_ml, longest, thickness)
