"""Checkpoints of ``larc train models``: each trained network stage (its out-of-fold values,
the fold networks' weights, and the final network's when there is one) is written as soon as it
is done, so that a run that fails late (an outcome model that cannot be fitted, a full disk, a
killed process) loses no network: run the same command again and the stages already trained
are read back instead of trained again.

A stage is reused only when its key matches: the stage's name, its training settings, and the
patients, labels and input arrays it was trained on. Anything else changed: trained afresh.
"""

from __future__ import annotations

import hashlib
import logging
import pickle
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)


def stage_key(
    name: str, settings: Mapping[str, Any], patients: Sequence[str], labels: Sequence[int],
    inputs: Mapping[str, np.ndarray],
) -> str:  # fmt: skip
    """What a stage's training depended on, as a digest."""
    digest = hashlib.sha256(repr((name, sorted(settings.items()))).encode())
    for patient, label in zip(patients, labels, strict=True):
        digest.update(f"{patient}={label};".encode())
    for patient in sorted(inputs):
        array = np.ascontiguousarray(inputs[patient], dtype=np.float32)
        digest.update(patient.encode() + str(array.shape).encode() + array.tobytes())
    return digest.hexdigest()


def _path(folder: Path, name: str) -> Path:
    return folder / (re.sub(r"[^A-Za-z0-9_.-]+", "_", name) + ".pt")


def save_stage(
    folder: Path,
    name: str,
    key: str,
    values: Mapping[str, float],
    members: Sequence[nn.Module],
    final: nn.Module | None = None,
) -> None:
    """Write the stage (atomically: a stage half written is never read back)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = _path(folder, name)
    partial = path.with_suffix(".partial")
    torch.save(
        {
            "key": key,
            "values": dict(values),
            "members": [m.state_dict() for m in members],
            "final": None if final is None else final.state_dict(),
        },
        partial,
    )
    partial.replace(path)


def load_stage(
    folder: Path, name: str, key: str, build: Callable[[], nn.Module]
) -> tuple[dict[str, float], list[nn.Module], nn.Module | None] | None:
    """The stage's values, fold networks and final network (None when it has none), when a
    checkpoint with this key is there."""
    path = _path(folder, name)
    if not path.is_file():
        return None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if saved.get("key") != key:
            log.info("%s: checkpoint of other inputs or settings, trained again", name)
            return None
        members = [_built(build, state) for state in saved["members"]]
        final = None if saved["final"] is None else _built(build, saved["final"])
    except (RuntimeError, KeyError, ValueError, OSError, AttributeError, IndexError, EOFError,
            pickle.UnpicklingError, TypeError) as exc:  # fmt: skip
        log.warning("%s: checkpoint %s unreadable (%s), trained again", name, path, exc)
        return None
    log.info("%s: resumed from checkpoint %s (not trained again)", name, path)
    return {str(p): float(v) for p, v in saved["values"].items()}, members, final


def _built(build: Callable[[], nn.Module], state: Mapping[str, Any]) -> nn.Module:
    model = build()
    model.load_state_dict(state)
    model.eval()
    return model
