"""`larc train models` then `larc evaluate` end to end on a small synthetic cohort, with tiny
networks (this checks the plumbing, files and report; bench/models.py measures quality), and the
report opened in a real Chromium."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest

from pipeline.bundle import Bundle
from pipeline.config import PreprocessConfig
from pipeline.manifest import BundleError
from tests.conftest import LARC, TrainedBundle

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def _larc(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([LARC, *args], capture_output=True, text=True, timeout=600, check=False)


def test_train_models_then_evaluate_writes_a_bundle_and_a_report(
    tmp_path: Path, trained_bundle: TrainedBundle
) -> None:
    cohort, bundle_dir, trained = trained_bundle.cohort, trained_bundle.folder, trained_bundle.run
    assert "bundle larc-rectal 9.9.9 written" in trained.stdout

    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    assert manifest["schema_version"] == 1
    assert manifest["research_use_only"] is True
    assert manifest["training_data"]["patients"] == 48
    assert manifest["training_data"]["train"] + manifest["training_data"]["test"] == 48
    assert set(manifest["response"]["models"]) == {"FDL", "CR", "CRD"}
    assert manifest["response"]["cr_features"]  # at least one clinical-radiological feature
    assert manifest["metrics"]["patients"] == manifest["training_data"]["test"]
    assert "Research use only" in (bundle_dir / "model_card.md").read_text()
    # no patient id anywhere in the bundle
    text = " ".join(p.read_text(errors="ignore") for p in bundle_dir.rglob("*") if p.is_file())
    assert "SYN0001" not in text

    bundle = Bundle.load(bundle_dir, expected=PreprocessConfig(
        slice_size=32, stack_size=32, stack_depth=8, n4=False
    ))  # fmt: skip
    assert bundle.version == "larc-rectal 9.9.9"
    # the bundle carries the automatic segmenter, with its held-out figures and gate
    segmentation = manifest["segmentation"]
    assert segmentation["held_out"]["n"] > 0
    assert segmentation["weights"] in manifest["files"]  # hashed like every other file
    assert bundle.segmenter is not None
    assert bundle.segmenter[2].max_volume_ml > bundle.segmenter[2].min_volume_ml > 0
    card = (bundle_dir / "model_card.md").read_text()
    assert f"held-out Dice mean {segmentation['held_out']['dice_mean']:.3f}" in card
    assert "Training envelope" in card
    with pytest.raises(BundleError, match="other preprocessing"):
        Bundle.load(bundle_dir, expected=PreprocessConfig())

    report_dir = tmp_path / "report"
    evaluated = _larc(
        "evaluate", "--bundle", str(bundle_dir), "--cohort", str(cohort.out_dir),
        "--out", str(report_dir), "--held-out-only",
    )  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert "FDL: AUC" in evaluated.stdout
    metrics = json.loads((report_dir / "metrics.json").read_text())
    assert metrics["patients_scored"] == manifest["training_data"]["test"]
    fdl = metrics["response"]["models"]["FDL"]
    assert 0.0 <= fdl["auc_ci95_delong"][0] <= fdl["auc"] <= fdl["auc_ci95_delong"][1] <= 1.0
    assert set(fdl["at_threshold"]) >= {"accuracy", "sensitivity", "specificity", "f1"}
    assert "brier" in fdl
    assert "ece" in fdl
    assert "FDL vs CR" in metrics["response"]["delong"]
    figures = {**metrics["response"]["figures"], **metrics["survival"]["figures"]}
    assert {"roc", "calibration", "decision", "nomogram"} <= set(figures)
    for name in figures.values():
        image = mpimg.imread(report_dir / name)
        assert image.shape[0] > 100
        assert image.std() > 0.01  # drawn, not blank

    html = (report_dir / "report.html").read_text()
    for name in figures.values():
        assert f'src="{name}"' in html
    shot = tmp_path / "report.png"
    opened = subprocess.run(
        [
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
            "--disable-background-networking", "--disable-component-update", "--no-first-run",
            "--window-size=1200,2000", f"--screenshot={shot}",
            (report_dir / "report.html").as_uri(),
        ],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert shot.is_file(), opened.stderr[-2000:]
    pixels = mpimg.imread(shot)
    # the page shows text, tables and figures: many distinct colours, not a blank page
    assert len(np.unique(pixels.reshape(-1, pixels.shape[-1])[::7], axis=0)) > 200
    artefacts = Path("test-artifacts")
    if artefacts.is_dir():
        shutil.copy(shot, artefacts / "evaluation-report.png")
