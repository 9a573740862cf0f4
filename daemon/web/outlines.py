"""The automatic tumour outlines of a case, for a radiologist's review: which of the case's
masks are automatic and where each stands (made, failed its check, reviewed), and the outline
drawn over the T2W slice it covers most (or over the DWI it is carried to) as a PNG."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pydicom
import SimpleITK as sitk  # noqa: N813  (the name the SimpleITK world uses)
from numpy.typing import NDArray
from PIL import Image
from scipy import ndimage

from daemon.cases import CaseKind, RecordedSeries, recorded_series
from daemon.index import Index
from daemon.index.rows import AutoMaskRow, AutoMaskState
from dicom_io.masks import resample_mask, seg_mask
from dicom_io.roles import SeriesRole
from dicom_io.seg import TUMOUR_DISPLAY_RGB
from dicom_io.series import read_series, split_by_b_value

SEQUENCES = ("t2w", "dwi")
OUTLINE_RGB = TUMOUR_DISPLAY_RGB  # yellow, the colour larc's SEGs recommend to viewers
MIN_SIDE_PX = 320  # small matrices are enlarged so that the outline can be seen


class OutlineError(LookupError):
    """No outline to draw: the message says why (no such series in the case, not stored)."""


def _belongs(row: AutoMaskRow, masks: Mapping[str, str]) -> bool:
    """Whether the case is about this automatic mask: scored on it, declined because of it, or
    waiting because a radiologist rejected it (a drawn mask that came later replaces it)."""
    if any(on == row.image_series_uid and uid != row.seg_series_uid for uid, on in masks.items()):
        return False  # a drawn mask on the same T2W is what the case uses
    return bool(
        (row.seg_series_uid and row.seg_series_uid in masks)
        or row.state in (AutoMaskState.FAILED, AutoMaskState.REQUESTED, AutoMaskState.QUEUED)
        or row.review == "rejected"
    )


def _case_masks(
    index: Index, inputs: Mapping[str, str], kind: str
) -> Iterator[tuple[str, RecordedSeries, AutoMaskRow]]:
    """(timepoint, recorded series, automatic mask) per timepoint whose T2W has an automatic
    mask the case is about, baseline first."""
    for timepoint, recorded in recorded_series(inputs, CaseKind(kind)).items():
        t2w = recorded.images.get(SeriesRole.T2W_AX)
        row = index.auto_mask(t2w) if t2w else None
        if row is not None and _belongs(row, recorded.masks):
            yield str(timepoint), recorded, row


def case_outlines(index: Index, inputs: Mapping[str, str], kind: str) -> list[dict[str, Any]]:
    """The case's automatic outlines, one per timepoint whose T2W has one, baseline first:
    the T2W and DWI series, state, reason, volume, review and its audit."""
    out = []
    for timepoint, recorded, row in _case_masks(index, inputs, kind):
        out.append(
            {
                "timepoint": timepoint,
                "image_series_uid": row.image_series_uid,
                "dwi_series_uid": recorded.images.get(SeriesRole.DWI),
                "seg_series_uid": row.seg_series_uid,
                "model": row.model,
                "state": row.state,
                "reason": row.reason,
                "volume_ml": row.volume_ml,
                "mean_probability": row.mean_probability,
                "review": row.review,
                "reviewed_by": row.reviewed_by,
                "reviewed_at": row.reviewed_at,
                "review_note": row.review_note,
                "drawable": row.state == AutoMaskState.PASSED and bool(row.seg_series_uid),
                "reviews": [
                    {"decision": r.decision, "who": r.who, "via": r.via, "note": r.note, "at": r.at}
                    for r in index.auto_mask_reviews(row.image_series_uid)
                ],
            }
        )
    return out


def outline_marks(index: Index, cases: Sequence[Any]) -> dict[str, list[str]]:
    """Per case id, a short word per automatic outline it uses or waits on (the worklist's
    chips): ``unreviewed``, ``accepted``, ``rejected``, ``failed`` or ``pending``."""
    marks: dict[str, list[str]] = {}
    for case in cases:
        for _, _, row in _case_masks(index, json.loads(case["inputs"] or "{}"), case["kind"]):
            if row.state == AutoMaskState.FAILED:
                word = AutoMaskState.FAILED.value  # the mask's state, not a case's
            elif row.state != AutoMaskState.PASSED:
                word = "pending"
            else:
                word = row.review or "unreviewed"
            marks.setdefault(case["case_id"], []).append(word)
    return marks


def _datasets(index: Index, series_uid: str) -> list[pydicom.Dataset]:
    paths = index.instance_paths(series_uid)
    if not paths:
        raise OutlineError(f"series {series_uid} is not in the store")
    return [pydicom.dcmread(p) for p in paths]


def _grey(pixels: NDArray[np.floating[Any]]) -> NDArray[np.uint8]:
    """A slice windowed to its 1st-99th percentile, as 8 bits."""
    low, high = np.percentile(pixels, [1.0, 99.0])
    scaled = (pixels - low) / max(float(high - low), 1e-6)
    grey: NDArray[np.uint8] = (np.clip(scaled, 0.0, 1.0) * 255.0).astype(np.uint8)
    return grey


def render_outline(image: sitk.Image, mask: sitk.Image) -> bytes:
    """PNG of the slice of ``image`` the mask covers most, with the mask's outline drawn on
    it (enlarged to at least :data:`MIN_SIDE_PX` on its short side, nearest neighbour for the
    mask so that the outline follows its voxels)."""
    pixels = sitk.GetArrayFromImage(image).astype(np.float32)
    inside = sitk.GetArrayFromImage(mask) > 0
    if not inside.any():
        raise OutlineError("the outline does not lie on these images")
    z = int(np.argmax(inside.sum(axis=(1, 2))))
    grey, region = _grey(pixels[z]), inside[z]
    factor = max(1, -(-MIN_SIDE_PX // min(grey.shape)))
    size = (grey.shape[1] * factor, grey.shape[0] * factor)
    picture = Image.fromarray(grey).resize(size, Image.Resampling.BILINEAR).convert("RGB")
    big = np.kron(region, np.ones((factor, factor), dtype=bool))
    edge = big & ~ndimage.binary_erosion(big, iterations=max(1, factor // 3))
    rgb = np.asarray(picture).copy()
    rgb[edge] = OUTLINE_RGB
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def outline_png(index: Index, outline: Mapping[str, Any], sequence: str) -> bytes:
    """The outline of :func:`case_outlines` drawn on its T2W, or on the highest b-value of the
    case's DWI (the T2W mask carried through physical space, as scoring carries it)."""
    if sequence not in SEQUENCES:
        raise OutlineError(f"sequence={sequence!r}: use one of {', '.join(SEQUENCES)}")
    if not outline["drawable"]:
        raise OutlineError(f"the automatic outline is {outline['state']}: nothing to draw")
    t2w = _datasets(index, outline["image_series_uid"])
    seg = _datasets(index, outline["seg_series_uid"])[0]
    mask = seg_mask(seg, t2w)
    if sequence == "t2w":
        return render_outline(read_series(t2w), mask)
    if not outline["dwi_series_uid"]:
        raise OutlineError("the case has no DWI")
    by_b = split_by_b_value(_datasets(index, outline["dwi_series_uid"]))
    dwi = read_series(by_b[max(by_b)])
    return render_outline(dwi, resample_mask(mask, dwi))
