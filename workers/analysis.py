"""The network part of scoring a case (the ``gpu`` queue): signatures, model scores and
heat maps (LayerCAM) from the prepared inputs, with the worker's model bundle."""

from __future__ import annotations

import base64
import io
import json
import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from pipeline.bundle import Bundle
from pipeline.case import CaseInputs
from pipeline.kinds import SIGNATURES, STACK_SEQUENCES
from workers.base import ModelMismatchError
from workers.payload import CasePayload

logger = logging.getLogger(__name__)

RESPONSE = "response"  # the case kind scored from both timepoints

_cache: dict[tuple[str, float], Bundle] = {}
_cache_lock = threading.Lock()


def bundle_at(folder: Path) -> Bundle:
    """The bundle in ``folder``, loaded once per process (again when its manifest changes)."""
    manifest = folder / "manifest.json"
    key = (str(folder.resolve()), manifest.stat().st_mtime if manifest.exists() else 0.0)
    with _cache_lock:
        if key not in _cache:
            _cache.clear()
            _cache[key] = Bundle.load(folder)
            logger.info("loaded model bundle %s from %s", _cache[key].version, folder)
        return _cache[key]


def encode_maps(maps: dict[str, NDArray[np.floating]]) -> str:
    """Heat maps (0-1) as base64 ``.npz`` of uint8 arrays."""
    buffer = io.BytesIO()
    quantised = {k: np.round(np.clip(v, 0, 1) * 255).astype(np.uint8) for k, v in maps.items()}
    np.savez_compressed(buffer, **quantised)
    return base64.b64encode(buffer.getvalue()).decode()


def decode_maps(text: str) -> dict[str, NDArray[np.float32]]:
    """Inverse of :func:`encode_maps` (values back in 0-1)."""
    with np.load(io.BytesIO(base64.b64decode(text)), allow_pickle=False) as data:
        return {k: (data[k].astype(np.float32) / 255.0) for k in data.files}


def _plain(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def analyse(payload: CasePayload, bundle: Bundle) -> dict[str, Any]:
    """Scores and heat maps of the case. Raises a permanent error when the case cannot be
    scored with this bundle (inputs missing, another bundle version)."""
    if payload.model_version != bundle.version:
        raise ModelMismatchError(
            f"this worker has model bundle {bundle.version!r}, the case was queued for "
            f"{payload.model_version!r}: give daemon and workers the same models.bundle_dir"
        )
    inputs = CaseInputs.from_bytes(payload.inputs)
    if payload.kind == RESPONSE:
        inputs.require(slices=SIGNATURES)
    else:
        inputs.require(stacks=STACK_SEQUENCES)
    scores = bundle.score(inputs, payload.clinical, payload.require_validated)
    maps = bundle.heat_maps(inputs, payload.require_validated)
    return {
        "scores": json.loads(json.dumps(scores, default=_plain)),
        "heat_maps": encode_maps(maps),
    }
