"""A training run that fails late loses no network: each stage is read back from its checkpoint
when the same command runs again, and trained afresh when anything it depends on changed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.networks import predict_probability, to_tensor
from pipeline.training.bundle import _network_stage
from pipeline.training.networks import SignatureTraining

CONFIG = SignatureTraining(width=0.25, epochs=2, patience=2, folds=2, batch_size=8)


def _cohort() -> tuple[dict[str, np.ndarray], pd.Series, list[str]]:
    rng = np.random.default_rng(0)
    patients = [f"P{i:02d}" for i in range(14)]
    labels = pd.Series([i % 2 for i in range(14)], index=patients, dtype=float)
    x = {p: to_tensor(rng.normal(100, 20, (1, 32, 32)))[0] for p in patients}
    return x, labels, patients[:12]  # two patients held out


def _never() -> Any:
    raise AssertionError("a stage with a matching checkpoint was trained again")


def test_a_stage_trained_before_is_read_back_not_trained_again(tmp_path: Path) -> None:
    x, labels, train = _cohort()
    first = _network_stage("pre_T2", x, labels, train, CONFIG, None, checkpoints=tmp_path,
                           final=True)  # fmt: skip
    assert (tmp_path / "pre_T2.pt").is_file()
    assert len(first.members) == CONFIG.folds
    assert first.final is not None
    again = _network_stage("pre_T2", x, labels, train, CONFIG, None,
                           build=_resumable(first.members[0]), checkpoints=tmp_path,
                           final=True)  # fmt: skip
    assert again.values == first.values
    assert again.final is not None
    for trained, restored in zip([*first.members, first.final], [*again.members, again.final],
                                 strict=True):  # fmt: skip
        for name, tensor in trained.state_dict().items():
            assert torch.equal(restored.state_dict()[name], tensor), name
    # other inputs, labels or settings: the checkpoint is not used
    changed = labels.copy()
    changed.iloc[0] = 1 - changed.iloc[0]
    for args in ((x, changed, CONFIG), (x, labels, CONFIG.model_copy(update={"epochs": 3}))):
        with pytest.raises(AssertionError, match="trained again"):
            _network_stage("pre_T2", args[0], args[1], train, args[2], None, build=_never,
                           checkpoints=tmp_path, final=True)  # fmt: skip
    with pytest.raises(AssertionError, match="trained again"):  # no final network asked for
        _network_stage("pre_T2", x, labels, train, CONFIG, None, build=_never,
                       checkpoints=tmp_path)  # fmt: skip


def test_held_out_values_are_the_mean_of_the_fold_networks(tmp_path: Path) -> None:
    # the classifier on top learned from out-of-fold values: the held-out patients get the
    # same networks' mean, not a network of their own
    x, labels, train = _cohort()
    stage = _network_stage("pre_T2", x, labels, train, CONFIG, None)
    assert stage.final is None
    assert len(stage.members) == CONFIG.folds
    held = [p for p in x if p not in train]
    each = [predict_probability(m, np.stack([x[p] for p in held])) for m in stage.members]
    assert [stage.values[p] for p in held] == pytest.approx(np.mean(each, axis=0).tolist())
    assert set(stage.values) == set(x)


def _resumable(model: torch.nn.Module) -> Any:
    """A build that makes a fresh network of the trained one's kind (its weights then loaded
    from the checkpoint) and nothing else: reading back must not train."""
    import copy  # noqa: PLC0415

    def build() -> torch.nn.Module:
        fresh = copy.deepcopy(model)
        for parameter in fresh.parameters():
            parameter.data.zero_()
        return fresh

    return build


def test_a_half_written_checkpoint_is_trained_again(tmp_path: Path) -> None:
    x, labels, train = _cohort()
    _network_stage("pre_T2", x, labels, train, CONFIG, None, checkpoints=tmp_path)
    (tmp_path / "pre_T2.pt").write_bytes(b"truncated")
    with pytest.raises(AssertionError, match="trained again"):
        _network_stage("pre_T2", x, labels, train, CONFIG, None, build=_never,
                       checkpoints=tmp_path)  # fmt: skip
