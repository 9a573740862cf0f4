"""Acceptance of the imaging issue: a post_DWI signature network trained with `larc train
signatures` on 120 synthetic patients (matrix 64) separates good from poor responders on
patients it never saw (AUC >= 0.75), and what it writes is consistent and reusable; its heat
maps (LayerCAM, what the Secondary Captures show) put the heat by the tumour.

The settings are small to fit CI (2 CPU cores): 64 x 64 slices, DenseNet121 at half width,
3 folds, at most 30 epochs, early stop after 5 without improvement (measured: test AUC 0.844,
out-of-fold 0.826). The same command with defaults trains the published sizes.
"""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from dicom_io.synthetic.cohort import CohortSpec, generate_cohort
from pipeline.case import CaseInputs
from pipeline.gradcam import heat_near_mask, layercam
from pipeline.networks import (
    heat_map_layer,
    load_weights,
    predict_probability,
    response_network,
    to_tensor,
)
from tests.conftest import LARC

pytestmark = pytest.mark.slow


def test_post_dwi_signature_separates_held_out_patients(tmp_path: Path) -> None:
    spec = CohortSpec(
        patients=120,
        seed=7,
        matrix=64,
        slices=12,
        missing_fraction=0.0,
        series=("t2w", "dwi", "rtstruct"),  # what the post_DWI signature reads
    )
    cohort = generate_cohort(spec, tmp_path / "cohort", workers=2)
    out = tmp_path / "model"
    args = [
        LARC,
        "train",
        "signatures",
        "--cohort",
        str(cohort.out_dir),
        "--out",
        str(out),
        "--signatures",
        "post_DWI",
        "--test-fraction",
        "0.3",
        "--folds",
        "3",
        "--epochs",
        "30",
        "--patience",
        "5",
        "--width",
        "0.5",
        "--image-size",
        "64",
        "--seed",
        "1",
    ]
    done = subprocess.run(args, capture_output=True, text=True, timeout=480, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "post_DWI: out-of-fold AUC" in done.stdout

    summary = json.loads((out / "training.json").read_text())
    result = summary["signatures"]["post_DWI"]
    assert summary["patients"] == {"prepared": 120, "train": 84, "test": 36}
    assert result["test_auc"] >= 0.75, result
    assert result["out_of_fold_auc"] > 0.6, result  # networks trained on 56 patients each

    with (out / "signatures.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    train = [r for r in rows if r["split"] == "train"]
    test = [r for r in rows if r["split"] == "test"]
    assert len(train) == 84
    assert len(test) == 36
    assert {r["fold"] for r in train} == {"1", "2", "3"}  # every training value is out-of-fold
    assert all(r["fold"] == "" for r in test)
    labels = {r["patient_id"]: r for r in csv.DictReader(cohort.labels_path.open())}
    assert all(r["good_response"] == labels[r["patient_id"]]["good_response"] for r in rows)
    scores = [float(r["post_DWI"]) for r in test]
    assert roc_auc_score([int(r["good_response"]) for r in test], scores) == pytest.approx(
        result["test_auc"]
    )

    # the saved final network, loaded from its file, gives the test patients' signatures again
    model = load_weights(
        response_network("densenet121", image_size=64, width=0.5), out / "weights" / "post_DWI.pt"
    )
    cached = [CaseInputs.load(p) for p in sorted((out / "prepared").glob("*.npz"))]
    assert len(cached) == 120
    assert {c.config_fingerprint for c in cached} == {summary["preprocess_fingerprint"]}
    by_series = {c.slices["post_DWI"].series_uid: c for c in cached}
    inputs = [by_series[labels[r["patient_id"]]["restaging_dwi_series_uid"]] for r in test]
    again = predict_probability(
        model, to_tensor(np.stack([c.slices["post_DWI"].array for c in inputs]))
    )
    assert np.allclose(again, scores, atol=1e-5)
    assert (out / "checkpoints" / "post_DWI" / "fold3.pt").is_file()

    # the heat maps of the held-out patients lie by the tumour: on the slice the network saw
    # (the tumour's region with a 40 mm margin) the tumour with 10 mm around it covers about
    # 11 %; measured 47 % of the heat there (52 % for poor responders, whose residual tumour
    # is the evidence; 35 % for good responders, whose evidence is the tumour's absence). A
    # map with no place in it scores 0, one spread evenly about the region's area share.
    layer = heat_map_layer("densenet121", 64)
    near = [
        heat_near_mask(
            layercam(model, to_tensor(item.array[None])[0], layer),
            item.native_mask,
            item.native_spacing,
        )
        for item in (c.slices["post_DWI"] for c in inputs)
        if item.native_mask is not None and item.native_spacing is not None
    ]
    assert len(near) == 36
    shares, areas = np.array(near).T
    assert shares.mean() >= 0.40, (shares.mean(), areas.mean())
    assert shares.mean() >= 3 * areas.mean(), (shares.mean(), areas.mean())
    poor = np.array([r["good_response"] == "0" for r in test])
    assert shares[poor].mean() >= 0.45, shares[poor].mean()
