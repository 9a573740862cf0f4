"""``larc train segmentation`` on a small synthetic cohort: the U-Net learns the tumour from the
drawn masks (held-out Dice well above an untrained network's ~0.02; a half-width network, to
stay fast), and leaves the weights, the
training record with held-out figures and the quality gate's limits, and a model card."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch

from dicom_io.synthetic.cohort import CohortSpec, generate_cohort
from dicom_io.synthetic.vendors import Role
from pipeline.segmentation import GateLimits, SegmenterConfig
from tests.conftest import LARC

pytestmark = pytest.mark.integration


def test_the_segmenter_learns_the_tumour_from_the_drawn_masks(tmp_path: Path) -> None:
    spec = CohortSpec(patients=12, seed=4, matrix=48, slices=12, missing_fraction=0.0,
                      series=("t2w", "rtstruct"))  # fmt: skip
    generate_cohort(spec, tmp_path / "cohort", workers=2)
    out = tmp_path / "segmenter"
    run = subprocess.run(
        [LARC, "train", "segmentation", "--cohort", str(tmp_path / "cohort"), "--out", str(out),
         "--epochs", "12", "--steps-per-epoch", "20", "--batch-size", "8", "--patch", "48",
         "--patience", "12", "--test-fraction", "0.25", "--channels", "8,16,32,64",
         "--learning-rate", "2e-3"],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert "held-out Dice: mean" in run.stdout
    record = json.loads((out / "training.json").read_text())
    held = record["held_out"]
    assert held["n"] == 6  # 3 test patients x 2 studies
    assert held["dice_mean"] > 0.15, held  # an untrained network gets about 0.02
    assert 0.0 <= held["dice_p5"] <= held["dice_median"] <= 1.0
    assert held["hd95_mm_median"] is not None
    assert record["patients"] == {"train": 7, "validation": 2, "test": 3}
    assert record["skipped"] == []
    assert len(record["history"]) >= 1
    gate = GateLimits.from_json(record["gate"])
    assert 0 < gate.min_volume_ml < gate.max_volume_ml
    config = SegmenterConfig.from_json(record["network"])
    model = config.network()
    model.load_state_dict(torch.load(out / "t2w.pt", weights_only=True))
    card = (out / "model_card.md").read_text()
    assert "Research use only" in card
    assert f"{held['dice_mean']:.3f}" in card


def test_a_cohort_without_drawn_masks_is_refused_with_the_reason(tmp_path: Path) -> None:
    spec = CohortSpec(patients=2, seed=4, matrix=32, slices=6, missing_fraction=0.0,
                      series=("t2w", "rtstruct"))  # fmt: skip
    cohort = generate_cohort(spec, tmp_path / "cohort", workers=1)
    for patient in cohort.patients:  # routine studies: nobody drew the tumour
        for study in patient.studies.values():
            for path in study.series[Role.RTSTRUCT].files:
                path.unlink()
    run = subprocess.run(
        [LARC, "train", "segmentation", "--cohort", str(tmp_path / "cohort"), "--out",
         str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert run.returncode == 2
    assert "have a T2W with a drawn tumour mask" in run.stderr
