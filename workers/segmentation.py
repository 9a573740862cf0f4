"""The automatic tumour segmentation task (``larc.segment``, the ``gpu`` queue): the bundle's
segmenter (:mod:`pipeline.segmentation`) on one T2W volume, and its quality gate's verdict.

Like the scoring payload, the work order carries everything the worker needs: the T2W volume
(float32, in the slice order the daemon read it) and its geometry, as base64 ``.npz``, and the
study's highest-b DWI the same way when there is one (the gate's lesion-extent check). The
worker returns the mask on the same grid (uint8, same order) with the gate's reasons; the
daemon writes the DICOM SEG (it holds the source headers) or declines the case.
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk  # noqa: N813  (the name the SimpleITK world uses)
from numpy.typing import NDArray

from workers.base import NOT_RETRIED, ModelMismatchError, failure

logger = logging.getLogger(__name__)


def segmentation_key(image_series_uid: str, model_version: str) -> str:
    """The key of one automatic mask: same series, same model -> same key, same SEG UIDs."""
    return hashlib.sha256(f"{image_series_uid}\0{model_version}".encode()).hexdigest()[:32]


def encode_volume(image: sitk.Image) -> str:
    """A volume with its geometry as base64 ``.npz`` (float32 voxels)."""
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer,
        voxels=sitk.GetArrayFromImage(image).astype(np.float32),
        origin=np.asarray(image.GetOrigin()),
        spacing=np.asarray(image.GetSpacing()),
        direction=np.asarray(image.GetDirection()),
    )
    return base64.b64encode(buffer.getvalue()).decode()


def decode_volume(text: str) -> sitk.Image:
    """Inverse of :func:`encode_volume`."""
    with np.load(io.BytesIO(base64.b64decode(text)), allow_pickle=False) as data:
        image = sitk.GetImageFromArray(data["voxels"])
        image.SetOrigin(tuple(float(v) for v in data["origin"]))
        image.SetSpacing(tuple(float(v) for v in data["spacing"]))
        image.SetDirection(tuple(float(v) for v in data["direction"]))
    return image


def encode_mask(mask: NDArray[Any]) -> str:
    """A (Z, H, W) binary mask as base64 ``.npz`` (uint8)."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, mask=(np.asarray(mask) > 0).astype(np.uint8))
    return base64.b64encode(buffer.getvalue()).decode()


def decode_mask(text: str) -> NDArray[np.bool_]:
    """Inverse of :func:`encode_mask`."""
    with np.load(io.BytesIO(base64.b64decode(text)), allow_pickle=False) as data:
        mask: NDArray[np.bool_] = data["mask"] > 0
    return mask


@dataclass
class SegmentPayload:
    """One automatic mask's work order (JSON: the Celery message body)."""

    key: str
    image_series_uid: str
    model_version: str  # the bundle's "name version" the daemon asked with
    volume_b64: str  # encode_volume() of the T2W
    gate: dict[str, Any] = field(default_factory=dict)  # overrides of the bundle's gate limits
    dwi_b64: str | None = None  # encode_volume() of the study's highest-b DWI (extent check)

    def to_json(self) -> dict[str, Any]:
        """JSON-safe dict."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SegmentPayload:
        """Inverse of :meth:`to_json`; ``ValueError`` when fields are missing."""
        try:
            return cls(**data)
        except TypeError as exc:
            raise ValueError(f"not a larc segmentation payload: {exc}") from exc


def run_segment(payload_json: dict[str, Any], bundle_dir: Path | None) -> dict[str, Any]:
    """The mask and the gate's verdict: ``{"passed", "reasons", "volume_ml",
    "mean_probability", "mask"}``, or ``{"failed": reason}`` for a fault a retry cannot mend."""
    # imported here: torch loads with the first task, not with the worker module
    from pipeline.segmentation import GateLimits, segment  # noqa: PLC0415
    from workers.analysis import bundle_at  # noqa: PLC0415

    try:
        payload = SegmentPayload.from_json(payload_json)
        if bundle_dir is None:
            raise ValueError("this worker has no models.bundle_dir configured")
        bundle = bundle_at(bundle_dir)
        if payload.model_version != bundle.version:
            raise ModelMismatchError(
                f"this worker has model bundle {bundle.version!r}, the mask was asked of "
                f"{payload.model_version!r}: give daemon and workers the same models.bundle_dir"
            )
        if bundle.segmenter is None:
            raise ModelMismatchError(f"model bundle {bundle.version!r} has no segmenter")
        model, config, limits = bundle.segmenter
        known = GateLimits.__dataclass_fields__
        limits = replace(limits, **{k: v for k, v in payload.gate.items() if k in known})
        dwi = decode_volume(payload.dwi_b64) if payload.dwi_b64 else None
        found = segment(model, decode_volume(payload.volume_b64), config, limits, dwi)
    except NOT_RETRIED as exc:
        logger.error("series %s not segmented: %s", payload_json.get("image_series_uid"), exc)
        return failure("segment", exc)
    return {
        "passed": found.passed,
        "reasons": found.reasons,
        "volume_ml": found.volume_ml,
        "mean_probability": found.mean_probability,
        "dwi_lesion_ratio": found.dwi_lesion_ratio,
        "mask": encode_mask(sitk.GetArrayFromImage(found.mask)),
    }
