"""Signature training pieces: augmentation, input scaling, out-of-fold bookkeeping, labels."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from dicom_io.pairing import PairingPolicy
from pipeline.networks import predict_probability, to_tensor
from pipeline.training.cohort import Study, good_response, read_labels, timepoint_files
from pipeline.training.networks import (
    SignatureTraining,
    augment,
    cross_validate,
    final_epochs,
)


def _ramp(n: int = 2, size: int = 32) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32).repeat(size, 1)  # value = column
    return x.expand(n, 1, size, size).clone()


def test_augment_without_crop_or_flip_is_the_identity() -> None:
    config = SignatureTraining(crop_scale=(1.0, 1.0), crop_aspect=(1.0, 1.0), flip_probability=0)
    x = _ramp()
    out = augment(x, config, torch.Generator().manual_seed(0))
    assert torch.allclose(out, x, atol=1e-4)


def test_augment_flips_and_crops_as_configured() -> None:
    flip = SignatureTraining(crop_scale=(1.0, 1.0), crop_aspect=(1.0, 1.0), flip_probability=1)
    x = _ramp()
    assert torch.allclose(augment(x, flip, torch.Generator()), x.flip(-1), atol=1e-4)
    crop = SignatureTraining(crop_scale=(0.64, 0.64), crop_aspect=(1.0, 1.0), flip_probability=0)
    out = augment(_ramp(64), crop, torch.Generator().manual_seed(1))
    # a crop of 0.8 x 0.8 of the width is stretched back: the ramp's slope grows by 1/0.8
    slopes = (out[:, 0, :, -4] - out[:, 0, :, 3]).mean(dim=1) / (32 - 4 - 3)
    assert torch.allclose(slopes, torch.full_like(slopes, 0.8), atol=0.02)
    assert out.shape == (64, 1, 32, 32)


def test_inputs_are_scaled_the_same_way_everywhere() -> None:
    slices = np.stack([np.zeros((8, 8)), np.full((8, 8), 255.0)])
    x = to_tensor(slices)
    assert x.shape == (2, 1, 8, 8)
    assert x[0].max() == pytest.approx(-1)
    assert x[1].min() == pytest.approx(1)
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        to_tensor(np.zeros((2, 1, 8, 8)))


def test_training_settings_are_validated() -> None:
    assert SignatureTraining().learning_rate == 0.01
    assert SignatureTraining().batch_size == 32
    with pytest.raises(ValidationError):
        SignatureTraining(folds=1)
    with pytest.raises(ValidationError):
        SignatureTraining(backbone="alexnet")  # type: ignore[arg-type]


def test_out_of_fold_signatures_come_from_networks_that_did_not_see_the_patient(
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(0)
    labels = np.tile([0, 1], 12)
    slices = rng.normal(100, 20, (24, 32, 32))  # DenseNet needs 32 x 32 at least
    slices[labels == 1, 8:24, 8:24] += 80  # good responders carry a bright square
    config = SignatureTraining(width=0.25, epochs=3, patience=3, folds=3, batch_size=8)
    result = cross_validate(to_tensor(slices), labels, config, checkpoints=tmp_path)
    assert sorted(set(result.fold.tolist())) == [0, 1, 2]
    assert np.isfinite(result.out_of_fold).all()
    for k, net in enumerate(result.folds):
        # a patient's out-of-fold value is the prediction of its fold's network (the one
        # trained on the other folds), not of the final network that saw everyone
        held = result.fold == k
        again = predict_probability(net.model, to_tensor(slices[held]))
        assert np.allclose(again, result.out_of_fold[held], atol=1e-6)
    # the final network (no patients left to stop on) trains as long as the folds' best, on
    # every patient: never stopped at epoch 1 by a split of its own
    assert result.final.best_epoch == final_epochs([net.best_epoch for net in result.folds])
    assert len(result.final.history) == result.final.best_epoch
    assert all(math.isnan(h["validation_loss"]) for h in result.final.history)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "final.pt",
        "fold1.pt",
        "fold2.pt",
        "fold3.pt",
    ]


def test_outcome_labels_and_timepoints(tmp_path: Path) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text("patient_id,trg,good_response\nA,1,\nB,3,\nC,,1\nD,,\n")
    rows = read_labels(labels)
    assert [good_response(rows[p]) for p in "ABCD"] == [1, 0, 1, None]
    (tmp_path / "bad.csv").write_text("id,trg\nA,1\n")
    with pytest.raises(ValueError, match="no column 'patient_id'"):
        read_labels(tmp_path / "bad.csv")
    studies = {
        "1.1": Study("A", "1.1", "20250101", "MR rectum", "", [Path("a")]),
        "1.2": Study("A", "1.2", "20250320", "MR rectum", "", [Path("b")]),
        "1.3": Study("A", "1.3", "20260101", "MR follow-up", "", [Path("c")]),
    }
    policy = PairingPolicy("re-?stag", "baseline", 21, 200)
    assert timepoint_files(studies, {}, policy) == {
        "baseline": [Path("a")],
        "restaging": [Path("b")],
    }
    named = {"baseline_study_uid": "1.2", "restaging_study_uid": "1.3"}
    assert timepoint_files(studies, named, policy) == {
        "baseline": [Path("b")],
        "restaging": [Path("c")],
    }


def test_the_final_network_trains_as_long_as_the_folds_best() -> None:
    assert final_epochs([1, 9]) == 5
    assert final_epochs([4, 5, 5]) == 5  # 4.67 rounded up
    assert final_epochs([]) == 1
