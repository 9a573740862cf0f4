"""Training and use of science A's signature networks (one per sequence and timepoint).

Training follows the study: SGD (lr 0.01, batch 32), random resized crop (scale 0.8-1.0,
aspect 0.9-1.1) and horizontal flip (p 0.5). Early stopping on a stratified validation split of
the training patients keeps the best epoch. :func:`cross_validate` gives out-of-fold signatures
(the only ones the second-stage classifier may see, see the leakage warning in science A) and,
when asked, a final network trained on every patient. The final network has no patients left to
stop on: it is trained for the mean of the fold networks' best epochs (rounded up) (an early
stop of its own on a fifth of the patients picked epoch 1 for some).

``larc train models`` scores with the fold networks themselves (their mean, see
:mod:`pipeline.training.bundle`): the classifier on top learned from out-of-fold signatures,
and a final network's signatures are not distributed like those (measured on the demo cohort:
the held-out pre_DWI signature's mean 0.71 from the final network against 0.45 out-of-fold;
the mean of the fold networks 0.50).
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812  (the name the torch world uses)
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field
from sklearn.model_selection import StratifiedKFold, train_test_split
from torch import nn

from pipeline.networks import Backbone, device, predict_probability, response_network, save_weights

log = logging.getLogger(__name__)

# called after every epoch with (what is being trained, epoch, epochs, validation loss)
Progress = Callable[[str, int, int, float], None]


class SignatureTraining(BaseModel):
    """How a signature network is trained. Defaults are science A's where it gives them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backbone: Backbone = Field(default="densenet121", description="Network of each signature.")
    width: float = Field(
        default=1.0, gt=0, le=4, description="Channel width factor (1.0: the published size)."
    )
    epochs: int = Field(default=60, ge=1, description="Most epochs per network.")
    patience: int = Field(
        default=10, ge=1, description="Stop after this many epochs without a better validation."
    )
    batch_size: int = Field(default=32, ge=1, description="Images per SGD step (science A: 32).")
    learning_rate: float = Field(default=0.01, gt=0, description="SGD learning rate (A: 0.01).")
    momentum: float = Field(default=0.9, ge=0, lt=1, description="SGD momentum.")
    weight_decay: float = Field(default=1e-4, ge=0, description="SGD weight decay.")
    folds: int = Field(
        default=5, ge=2, description="Folds for the out-of-fold signatures (stratified)."
    )
    validation_fraction: float = Field(
        default=0.2, gt=0, lt=0.5, description="Share of training patients for early stopping."
    )
    crop_scale: tuple[float, float] = Field(
        default=(0.8, 1.0), description="Random resized crop: range of the area kept."
    )
    crop_aspect: tuple[float, float] = Field(
        default=(0.9, 1.1), description="Random resized crop: range of the aspect ratio."
    )
    flip_probability: float = Field(default=0.5, ge=0, le=1, description="Horizontal flip.")
    seed: int = Field(default=0, description="Seed of splits, initial weights and augmentation.")


def augment(
    batch: torch.Tensor, config: SignatureTraining, generator: torch.Generator
) -> torch.Tensor:
    """Random resized crop and horizontal flip of a batch (N, C, H, W), one draw per image."""
    n = batch.shape[0]

    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(n, generator=generator)

    area = uniform(*config.crop_scale)
    aspect = torch.exp(uniform(math.log(config.crop_aspect[0]), math.log(config.crop_aspect[1])))
    width = torch.clamp(torch.sqrt(area * aspect), max=1.0)
    height = torch.clamp(torch.sqrt(area / aspect), max=1.0)
    centre_x = (1 - width) * (2 * torch.rand(n, generator=generator) - 1)
    centre_y = (1 - height) * (2 * torch.rand(n, generator=generator) - 1)
    flip = torch.where(torch.rand(n, generator=generator) < config.flip_probability, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = width * flip
    theta[:, 0, 2] = centre_x
    theta[:, 1, 1] = height
    theta[:, 1, 2] = centre_y
    grid = F.affine_grid(theta.to(batch.device), list(batch.shape), align_corners=False)
    return F.grid_sample(batch, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _class_weights(labels: NDArray[np.integer]) -> torch.Tensor:
    counts = np.bincount(labels, minlength=2).astype(np.float64)
    counts[counts == 0] = 1
    return torch.as_tensor(len(labels) / (2 * counts), dtype=torch.float32)


def _loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        total = 0.0
        for start in range(0, len(x), 64):
            logits = model(x[start : start + 64])
            total += float(
                F.cross_entropy(logits, y[start : start + 64], weight=weights, reduction="sum")
            )
    return total / max(len(x), 1)


@dataclass
class TrainedNetwork:
    """A trained network and how its training went."""

    model: nn.Module
    best_epoch: int
    best_validation_loss: float
    history: list[dict[str, float]] = field(default_factory=list)


def train_network(
    inputs: NDArray[np.float32],
    labels: NDArray[np.integer],
    config: SignatureTraining,
    seed: int,
    name: str = "signature",
    progress: Progress | None = None,
    build: Callable[[], nn.Module] | None = None,
    fixed_epochs: int | None = None,
) -> TrainedNetwork:
    """Train one network on ``inputs`` (N, C, H, W) with early stopping.

    ``build`` makes the untrained network (default: science A's response network at the
    configured backbone and width).

    A stratified ``validation_fraction`` of the inputs is held back to pick the best epoch;
    the returned model holds that epoch's weights and is in eval mode. With ``fixed_epochs``,
    every input is trained on for exactly that many epochs instead (no validation split, no
    early stop; the validation loss is then NaN).
    """
    labels = np.asarray(labels, dtype=np.int64)
    if len(np.unique(labels)) < 2:
        raise ValueError(f"{name}: the training patients hold only one class")
    if fixed_epochs is not None:
        train_idx, val_idx = np.arange(len(labels)), np.arange(0)
    else:
        train_idx, val_idx = train_test_split(
            np.arange(len(labels)),
            test_size=config.validation_fraction,
            stratify=labels,
            random_state=seed,
        )
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    where = device()
    model = (
        build()
        if build is not None
        else response_network(config.backbone, inputs.shape[-1], config.width)
    ).to(where)
    optimiser = torch.optim.SGD(
        model.parameters(),
        lr=config.learning_rate,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
    )
    x = torch.as_tensor(inputs)
    y = torch.as_tensor(labels)
    x_val, y_val = x[val_idx].to(where), y[val_idx].to(where)
    weights = _class_weights(labels[train_idx]).to(where)
    best = TrainedNetwork(copy.deepcopy(model), 0, math.inf)
    stale = 0
    for epoch in range(1, (fixed_epochs or config.epochs) + 1):
        model.train()
        order = torch.as_tensor(train_idx)[torch.randperm(len(train_idx), generator=generator)]
        running = 0.0
        for start in range(0, len(order), config.batch_size):
            chosen = order[start : start + config.batch_size]
            if len(chosen) < 2:  # batch norm needs two images
                continue
            batch = augment(x[chosen], config, generator).to(where)
            loss = F.cross_entropy(model(batch), y[chosen].to(where), weight=weights)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            running += loss.item() * len(chosen)
        val_loss = _loss(model, x_val, y_val, weights) if len(val_idx) else math.nan
        best.history.append(
            {"epoch": epoch, "train_loss": running / len(order), "validation_loss": val_loss}
        )
        if progress is not None:
            progress(name, epoch, fixed_epochs or config.epochs, val_loss)
        if fixed_epochs is not None:
            if epoch == fixed_epochs:
                best.model, best.best_epoch, best.best_validation_loss = model, epoch, val_loss
            continue
        if val_loss < best.best_validation_loss - 1e-4:
            best.model, best.best_epoch, best.best_validation_loss = (
                copy.deepcopy(model),
                epoch,
                val_loss,
            )
            stale = 0
        else:
            stale += 1
            if stale >= config.patience:
                log.info("%s: early stop after epoch %d (best %d)", name, epoch, best.best_epoch)
                break
    best.model.eval()
    return best


def final_epochs(best_epochs: list[int]) -> int:
    """Epochs of the final network: the mean of the folds' best epochs, rounded up, at least 1."""
    return max(1, math.ceil(sum(best_epochs) / max(len(best_epochs), 1)))


@dataclass
class CrossValidated:
    """Out-of-fold signatures, the fold of each patient, the fold networks and the final
    network (None when not asked for)."""

    out_of_fold: NDArray[np.float32]
    fold: NDArray[np.int64]
    final: TrainedNetwork | None
    folds: list[TrainedNetwork]


def cross_validate(
    inputs: NDArray[np.float32],
    labels: NDArray[np.integer],
    config: SignatureTraining,
    name: str = "signature",
    checkpoints: Path | None = None,
    progress: Progress | None = None,
    build: Callable[[], nn.Module] | None = None,
    final: bool = True,
) -> CrossValidated:
    """k-fold training: each patient's signature comes from the network that did not see it.

    Then, with ``final``, one final network on all patients, trained for the mean of the fold
    networks' best epochs rounded up (see the module's note). With ``checkpoints``, each fold's
    best weights and the final weights are written there as ``fold<k>.pt`` / ``final.pt``.
    """
    labels = np.asarray(labels, dtype=np.int64)
    splitter = StratifiedKFold(n_splits=config.folds, shuffle=True, random_state=config.seed)
    oof = np.full(len(labels), np.nan, dtype=np.float32)
    fold_of = np.full(len(labels), -1, dtype=np.int64)
    trained = []
    for k, (train_idx, test_idx) in enumerate(splitter.split(inputs, labels)):
        net = train_network(
            inputs[train_idx],
            labels[train_idx],
            config,
            seed=config.seed + 1 + k,
            name=f"{name} fold {k + 1}/{config.folds}",
            progress=progress,
            build=build,
        )
        oof[test_idx] = predict_probability(net.model, inputs[test_idx])
        fold_of[test_idx] = k
        trained.append(net)
        if checkpoints is not None:
            checkpoints.mkdir(parents=True, exist_ok=True)
            save_weights(net.model, checkpoints / f"fold{k + 1}.pt")
    if not final:
        return CrossValidated(oof, fold_of, None, trained)
    epochs = final_epochs([net.best_epoch for net in trained])
    log.info(
        "%s final: %d epochs on every patient (the folds' best: %s)",
        name,
        epochs,
        ", ".join(str(net.best_epoch) for net in trained),
    )
    last = train_network(
        inputs,
        labels,
        config,
        seed=config.seed,
        name=f"{name} final",
        progress=progress,
        build=build,
        fixed_epochs=epochs,
    )
    if checkpoints is not None:
        save_weights(last.model, checkpoints / "final.pt")
    return CrossValidated(oof, fold_of, last, trained)
