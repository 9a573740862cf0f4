"""``larc train segmentation``: the T2W tumour segmenter (:mod:`pipeline.segmentation`) trained from
the masks a cohort already has (RTSTRUCT or SEG on the T2W, read with :mod:`dicom_io.masks`).

Patients are split (seeded) into training, validation (early stopping, best checkpoint kept) and
held-out test. Training samples 2.5D slices: every slice with tumour and as many without, as
random patches of ``patch`` pixels (most centred near the tumour), loss DiceCE (MONAI) with the
Dice term taken over the whole batch: a patch without tumour then adds its false positives to
the batch's Dice instead of scoring a Dice of 0 whatever the network does. Held-out
metrics are per volume: Dice (mean, median, 5th percentile), HD95 and volume error; they go into
``training.json`` and the model card. The quality gate's limits come from the training masks'
volumes. Runs on the GPU when there is one.
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk  # noqa: N813  (the name the SimpleITK world uses)
import torch
from monai.losses.dice import DiceCELoss
from pydantic import BaseModel, ConfigDict, Field, model_validator

from dicom_io.errors import InvalidInputError
from dicom_io.roles import DEFAULT_RULES, RoleRule, SeriesRole
from dicom_io.selection import select_files
from pipeline.case import image_and_mask
from pipeline.errors import PipelineInputError
from pipeline.networks import device
from pipeline.segmentation import (
    GateLimits,
    SegmenterConfig,
    dice,
    hd95,
    judge,
    normalise,
    predict_volume,
    with_neighbours,
)
from pipeline.training.cohort import patient_hash
from pipeline.training.networks import Progress

log = logging.getLogger(__name__)
WEIGHTS = "t2w.pt"
TRAINING_JSON = "training.json"
TUMOUR_SLICES = 0.7  # share of training patches from slices with tumour


class SegmentationTraining(BaseModel):
    """How the segmenter is trained."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: int = Field(default=40, ge=1, description="Most epochs.")
    patience: int = Field(default=8, ge=1, description="Stop after this many epochs without a "
                          "better validation Dice.")  # fmt: skip
    batch_size: int = Field(default=16, ge=1, description="Patches per step.")
    learning_rate: float = Field(default=1e-3, gt=0, description="Adam learning rate.")
    steps_per_epoch: int = Field(default=40, ge=1, description="Optimiser steps per epoch.")
    patch: int = Field(default=96, ge=16, description="In-plane patch side in pixels.")
    channels: tuple[int, ...] = Field(
        default=(16, 32, 64, 128), description="U-Net filters per level (the first is the "
        "full-resolution level's; (32, 64, 128, 256) costs about four times as much)."
    )  # fmt: skip
    validation_fraction: float = Field(default=0.15, gt=0, lt=0.5)
    test_fraction: float = Field(default=0.2, ge=0, lt=0.5)
    seed: int = 0

    @model_validator(mode="after")
    def _patch_fits_the_levels(self) -> SegmentationTraining:
        step = SegmenterConfig(tuple(self.channels), self.patch).downsampling  # checks levels
        if self.patch % step:
            raise ValueError(f"patch ({self.patch}) must be a multiple of {step} for "
                             f"{len(self.channels)} levels")  # fmt: skip
        return self


@dataclass(frozen=True)
class Volume:
    """One T2W with its drawn tumour mask."""

    key: str  # patient hash + timepoint
    image: sitk.Image
    array: np.ndarray  # normalised, (Z, H, W)
    mask: np.ndarray  # (Z, H, W) 0/1


def load_volumes(
    cases: Mapping[str, Mapping[str, Sequence[Path]]],
    rules: Sequence[RoleRule] = DEFAULT_RULES,
    roi_pattern: str | None = None,
) -> tuple[dict[str, list[Volume]], list[str]]:
    """{patient: [T2W volumes with a mask]} of a cohort, and what was skipped (and why)."""
    out: dict[str, list[Volume]] = {}
    skipped = []
    for patient, timepoints in sorted(cases.items()):
        for timepoint, paths in sorted(timepoints.items()):
            try:
                selected = select_files(list(paths), rules)
                image, mask = image_and_mask(selected, SeriesRole.T2W_AX, roi_pattern)
            except (PipelineInputError, InvalidInputError, OSError) as exc:
                skipped.append(f"{patient_hash(patient)[:8]} {timepoint}: {exc}")
                continue
            if mask is None:
                skipped.append(f"{patient_hash(patient)[:8]} {timepoint}: no mask on the T2W")
                continue
            volume = sitk.GetArrayFromImage(image)
            out.setdefault(patient, []).append(
                Volume(f"{patient_hash(patient)[:12]} {timepoint}", image, normalise(volume),
                       (sitk.GetArrayFromImage(mask) > 0).astype(np.uint8))
            )  # fmt: skip
    return out, skipped


def _split(patients: list[str], training: SegmentationTraining) -> tuple[list[str], ...]:
    rng = np.random.default_rng(training.seed)
    order = list(rng.permutation(sorted(patients)))
    n_test = round(len(order) * training.test_fraction)
    n_val = max(1, round(len(order) * training.validation_fraction))
    return order[n_test + n_val :], order[n_test : n_test + n_val], order[:n_test]


def _patch_side(volumes: list[Volume], training: SegmentationTraining) -> int:
    """The patch side: ``training.patch``, or less where every image is smaller (a patch
    larger than the image is all padding), a multiple of the network's downsampling."""
    step = SegmenterConfig(tuple(training.channels), training.patch).downsampling
    largest = max(max(v.array.shape[1:]) for v in volumes)
    return int(min(training.patch, math.ceil(largest / step) * step))


def _patch(
    volume: Volume, z: int, size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A (3, size, size) patch of slice ``z`` and its mask, padded where the image is smaller;
    centred near the tumour when the slice has some (jittered by half a patch)."""
    inputs = with_neighbours(volume.array[max(0, z - 1) : z + 2])
    slice_inputs = inputs[min(z, 1)]
    target = volume.mask[z]
    height, width = target.shape
    pad_h, pad_w = max(0, size - height), max(0, size - width)
    if pad_h or pad_w:
        slice_inputs = np.pad(slice_inputs, ((0, 0), (0, pad_h), (0, pad_w)))
        target = np.pad(target, ((0, pad_h), (0, pad_w)))
        height, width = target.shape
    if target.any() and rng.random() < 0.8:
        ys, xs = np.nonzero(target)
        cy = int(np.clip(ys.mean() + rng.integers(-size // 4, size // 4 + 1), 0, height - 1))
        cx = int(np.clip(xs.mean() + rng.integers(-size // 4, size // 4 + 1), 0, width - 1))
    else:
        cy, cx = int(rng.integers(0, height)), int(rng.integers(0, width))
    top = int(np.clip(cy - size // 2, 0, height - size))
    left = int(np.clip(cx - size // 2, 0, width - size))
    return (
        slice_inputs[:, top : top + size, left : left + size],
        target[top : top + size, left : left + size],
    )


def _batch(
    volumes: list[Volume], size: int, count: int, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = [], []
    for _ in range(count):
        volume = volumes[int(rng.integers(0, len(volumes)))]
        with_tumour = np.flatnonzero(volume.mask.reshape(len(volume.mask), -1).any(axis=1))
        z = (int(rng.choice(with_tumour)) if len(with_tumour) and rng.random() < TUMOUR_SLICES
             else int(rng.integers(0, len(volume.mask))))  # fmt: skip
        x, y = _patch(volume, z, size, rng)
        scale = float(rng.uniform(0.9, 1.1))  # intensity jitter
        xs.append(np.clip(x * scale + rng.normal(0, 0.02), 0, 1.2))
        ys.append(y[None])
    return torch.from_numpy(np.stack(xs).astype(np.float32)), torch.from_numpy(
        np.stack(ys).astype(np.float32)
    )


def _scores(
    model: torch.nn.Module, volumes: list[Volume], config: SegmenterConfig
) -> list[dict[str, float]]:
    rows = []
    for volume in volumes:
        probability = predict_volume(model, sitk.GetArrayFromImage(volume.image), config)
        found = judge(probability, volume.image, GateLimits(0.0, math.inf, 0.0, 1_000, True))
        predicted = sitk.GetArrayFromImage(found.mask)
        voxel_ml = float(np.prod(volume.image.GetSpacing())) / 1000.0
        true_ml = float(volume.mask.sum()) * voxel_ml
        rows.append({
            "dice": dice(predicted, volume.mask),
            "hd95_mm": hd95(predicted, volume.mask, volume.image.GetSpacing()),
            "volume_ml": true_ml,
            "volume_error_ml": found.volume_ml - true_ml,
            "mean_probability": found.mean_probability,
        })  # fmt: skip
    return rows


def summary(rows: list[dict[str, float]]) -> dict[str, Any]:
    """Held-out figures: Dice mean, median and 5th percentile, HD95 median, volume error."""
    if not rows:
        return {"n": 0}
    dices = np.array([r["dice"] for r in rows])
    hds = np.array([r["hd95_mm"] for r in rows])
    errors = np.array([r["volume_error_ml"] for r in rows])
    relative = np.array(
        [abs(r["volume_error_ml"]) / r["volume_ml"] for r in rows if r["volume_ml"]]
    )
    return {
        "n": len(rows),
        "dice_mean": round(float(dices.mean()), 4),
        "dice_median": round(float(np.median(dices)), 4),
        "dice_p5": round(float(np.percentile(dices, 5)), 4),
        "hd95_mm_median": round(float(np.median(hds[np.isfinite(hds)])), 2)
        if np.isfinite(hds).any() else None,
        "volume_error_ml_mean": round(float(errors.mean()), 3),
        "volume_error_abs_relative_median": round(float(np.median(relative)), 4)
        if len(relative) else None,
    }  # fmt: skip


def train_segmenter(
    cases: Mapping[str, Mapping[str, Sequence[Path]]],
    out: Path,
    training: SegmentationTraining,
    rules: Sequence[RoleRule] = DEFAULT_RULES,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Train, keep the best checkpoint, measure on held-out patients, write ``out``
    (``t2w.pt``, ``training.json``, ``model_card.md``); returns the training record."""
    started = time.perf_counter()
    torch.manual_seed(training.seed)
    rng = np.random.default_rng(training.seed)
    volumes, skipped = load_volumes(cases, rules)
    if len(volumes) < 3:
        raise PipelineInputError(
            f"only {len(volumes)} patients have a T2W with a drawn tumour mask: at least 3 "
            "are needed (train, validate, test)"
        )
    train_ids, val_ids, test_ids = _split(list(volumes), training)
    train = [v for p in train_ids for v in volumes[p]]
    val = [v for p in val_ids for v in volumes[p]]
    test = [v for p in test_ids for v in volumes[p]]
    config = SegmenterConfig(tuple(training.channels), _patch_side(train + val, training))
    model = config.network().to(device())
    loss = DiceCELoss(sigmoid=True, batch=True)
    optimiser = torch.optim.Adam(model.parameters(), lr=training.learning_rate)
    best, best_state, stale, history = -1.0, None, 0, []
    out.mkdir(parents=True, exist_ok=True)
    for epoch in range(1, training.epochs + 1):
        model.train()
        total = 0.0
        for _ in range(training.steps_per_epoch):
            x, y = _batch(train, config.patch, training.batch_size, rng)
            optimiser.zero_grad()
            value = loss(model(x.to(device())), y.to(device()))
            value.backward()
            optimiser.step()
            total += float(value.detach())
        validation = float(np.mean([r["dice"] for r in _scores(model, val, config)]))
        history.append({"epoch": epoch, "loss": round(total / training.steps_per_epoch, 4),
                        "validation_dice": round(validation, 4)})  # fmt: skip
        if progress is not None:
            progress("segmentation T2W", epoch, training.epochs, validation)
        if validation > best:
            best, stale = validation, 0
            best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            torch.save(best_state, out / WEIGHTS)  # the checkpoint
        else:
            stale += 1
            if stale >= training.patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    train_volumes = [
        float(v.mask.sum()) * float(np.prod(v.image.GetSpacing())) / 1000 for v in train
    ]
    held_out = _scores(model, test, config)
    probabilities = [r["mean_probability"] for r in _scores(model, val, config)]
    limits = GateLimits(
        min_volume_ml=round(0.5 * min(train_volumes), 3),
        max_volume_ml=round(1.5 * max(train_volumes), 3),
        min_mean_probability=round(
            max(0.5, min(0.75, float(np.percentile(probabilities, 5)) - 0.05)), 3
        ),
    )
    record = {
        "trained": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "network": {
            "name": "MONAI DynUNet 2.5D (slice and neighbours as channels)",
            **config.to_json(),
        },
        "training": training.model_dump(mode="json"),
        "patients": {"train": len(train_ids), "validation": len(val_ids), "test": len(test_ids)},
        "volumes": {"train": len(train), "validation": len(val), "test": len(test)},
        "skipped": skipped,
        "history": history,
        "best_validation_dice": round(best, 4),
        "held_out": summary(held_out),
        "held_out_volumes": [{"volume": v.key, **r} for v, r in zip(test, held_out, strict=True)],
        "gate": limits.to_json(),
        "device": str(device()),
        "seconds": round(time.perf_counter() - started, 1),
    }
    (out / TRAINING_JSON).write_text(json.dumps(record, indent=2, default=_plain))
    (out / "model_card.md").write_text(segmenter_card(record))
    return record


def _plain(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    raise TypeError(f"cannot serialise {type(value).__name__}")


def segmenter_card(record: Mapping[str, Any]) -> str:
    """The segmenter's model card (Markdown)."""
    held = record["held_out"]
    lines = [
        "# Model card: automatic tumour segmentation (T2W)",
        "",
        "**Research use only - not for diagnostic decisions.** Automatic outlines are unverified "
        "until a radiologist reviews them.",
        "",
        f"Network: {record['network']['name']}, channels {record['network']['channels']}, "
        f"patch {record['network']['patch']} px. Trained {record['trained']} on "
        f"{record['patients']['train']} patients ({record['volumes']['train']} T2W volumes), "
        f"validated on {record['patients']['validation']}, tested on "
        f"{record['patients']['test']}; {len(record['skipped'])} volumes skipped.",
        "",
        "## Held-out figures (per volume)",
    ]
    if held.get("n"):
        lines += [
            f"- Dice: mean {held['dice_mean']:.3f}, median {held['dice_median']:.3f}, "
            f"5th percentile {held['dice_p5']:.3f} (n = {held['n']})",
            f"- HD95 median: {held['hd95_mm_median']} mm",
            f"- volume error: mean {held['volume_error_ml_mean']:+.2f} ml, median |relative| "
            f"{held['volume_error_abs_relative_median']}",
        ]
    else:
        lines.append("No held-out patients.")
    gate = record["gate"]
    lines += [
        "",
        "## Quality gate",
        f"An automatic mask is declined when it is empty, its volume is outside "
        f"{gate['min_volume_ml']}-{gate['max_volume_ml']} ml, its mean tumour probability is "
        f"below {gate['min_mean_probability']}, it has more than {gate['max_components']} "
        "separate region(s), it touches the edge of the field of view, or (an outline that is "
        f"at least {gate.get('dwi_min_contrast', 2.0)} times as bright on the high-b DWI as the "
        "body) the DWI-bright lesion it lies in is more than "
        f"{gate.get('max_dwi_lesion_ratio', 2.0)} times its size (part of the tumour missed).",
    ]
    return "\n".join(lines) + "\n"
