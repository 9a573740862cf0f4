"""Second-stage models and bundle safety: Cox in JSON equals lifelines, the CR selection finds the
informative feature, the cut-off, nomogram points, skops refuses foreign types, and a bundle that
was changed, comes from another schema or another preprocessing is refused with a clear message."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from lifelines import CoxPHFitter
from sklearn.linear_model import LogisticRegression

from pipeline.bundle import Bundle
from pipeline.config import PreprocessConfig
from pipeline.features import feature_row, parse_value, select_cr_features
from pipeline.manifest import BundleError, write_manifest
from pipeline.models import (
    CoxModel,
    ModelFileError,
    RiskCutoff,
    feature_columns,
    fit_response_svm,
    horizon_outcome,
    load_estimator,
    nomogram_points,
    save_estimator,
)
from pipeline.preprocess import TumourFeatures


def _survival_frame(n: int = 150, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, n)
    z = rng.integers(0, 2, n)
    t = rng.exponential(40 * np.exp(-0.9 * x - 0.5 * z))
    c = rng.uniform(10, 90, n)
    return pd.DataFrame({"x": x, "z": z, "time": np.minimum(t, c), "event": (t <= c).astype(int)})


def test_cox_model_in_json_predicts_what_lifelines_predicts(tmp_path: Path) -> None:
    frame = _survival_frame()
    model = CoxModel.fit(frame, "time", "event")
    model.save(tmp_path / "cox.json")
    again = CoxModel.load(tmp_path / "cox.json")
    reference = CoxPHFitter(penalizer=0.01).fit(frame, "time", "event")
    # at the baseline's own event times (between them lifelines interpolates, we keep Breslow's
    # step function)
    for t in (again.times[10], again.times[40], again.times[-5]):
        expected = reference.predict_survival_function(frame.iloc[:10], times=[t]).to_numpy()[0]
        assert np.allclose(again.survival_at(frame[["x", "z"]].to_numpy()[:10], t), expected)
    assert again.coefficients[0] > 0.5  # the true log-hazard ratio is 0.9


def test_horizon_outcome_and_youden_cutoff() -> None:
    time = np.array([10.0, 50.0, 20.0, 40.0, 30.0])
    event = np.array([1, 1, 0, 0, 1])
    known = horizon_outcome(time, event, 36.0)
    assert known.tolist()[:2] == [1.0, 0.0]
    assert known.tolist()[3:] == [0.0, 1.0]
    assert math.isnan(known[2])  # censored at 20 months: unknown at 36
    cut = RiskCutoff.fit(np.array([2.0, -1.0, 0.0, -2.0, 1.5]), time, event, 36.0)
    assert cut.group(np.array([1.5, -1.0])) == ["high", "low"]


def test_cr_selection_keeps_the_informative_feature() -> None:
    rng = np.random.default_rng(1)
    n = 200
    table = pd.DataFrame(
        {
            "post_mwt_mm": rng.normal(12, 4, n),
            "post_crm": rng.integers(0, 2, n).astype(float),
            "age": rng.normal(60, 10, n),
            "pre_ld_mm": rng.normal(45, 8, n),
        }
    )
    logit = -0.5 * (table["post_mwt_mm"] - 12) / 4 - 1.0 * table["post_crm"]
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    selection = select_cr_features(table, y, candidates=list(table))
    assert "post_mwt_mm" in selection.selected
    assert "age" not in selection.selected
    assert selection.univariate_p["post_mwt_mm"] < 0.10


def test_features_parse_stages_and_fall_back_to_measurements() -> None:
    assert parse_value("pre_mrt", "T4b") == 4.0
    assert parse_value("ypn_stage", "N1") == 1.0
    assert parse_value("sex", "F") == 0.0
    assert math.isnan(parse_value("post_crm", ""))
    with pytest.raises(ValueError, match="stage"):
        parse_value("pre_mrn", "Nx")
    measured = {"restaging": TumourFeatures(3.0, 21.0, 7.5)}
    values, filled = feature_row({"post_mwt_mm": "9.0"}, measured)
    assert values["post_mwt_mm"] == 9.0  # the radiologist's value wins
    assert values["post_ld_mm"] == 21.0
    assert sorted(filled) == ["post_ld_mm", "post_volume_ml"]


def test_feature_sets_by_name() -> None:
    assert feature_columns("FDL") == [
        "pre_T2",
        "pre_DWI",
        "pre_CE",
        "post_T2",
        "post_DWI",
        "post_CE",
    ]
    assert feature_columns("DWI") == ["pre_DWI", "post_DWI", "delta_DWI"]
    assert feature_columns("post_DWI+pre_T2") == ["post_DWI", "pre_T2"]
    assert feature_columns("CRD", ["post_mwt_mm"])[-1] == "post_mwt_mm"
    with pytest.raises(ValueError, match="unknown feature set"):
        feature_columns("XYZ")


def test_svm_round_trips_through_skops_and_foreign_types_are_refused(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(0, 1, (60, 3))
    y = (x[:, 0] + rng.normal(0, 0.5, 60) > 0).astype(int)
    model = fit_response_svm(x, y)
    save_estimator(model, tmp_path / "svm.skops")
    again = load_estimator(tmp_path / "svm.skops")
    assert np.allclose(again.predict_proba(x), model.predict_proba(x))
    sio.dump(LogisticRegression().fit(x, y), tmp_path / "other.skops")
    load_estimator(tmp_path / "other.skops")  # only default-trusted types: fine
    sio.dump({"f": np.vectorize(abs)}, tmp_path / "bad.skops")
    with pytest.raises(ModelFileError, match="types larc does not write"):
        load_estimator(tmp_path / "bad.skops")


def test_nomogram_points_give_the_widest_effect_100() -> None:
    model = CoxModel(["a", "b"], [1.0, -0.5], [0.0, 0.0], [1.0], [0.9], 0.7)
    points = nomogram_points(model, {"a": (0.0, 2.0), "b": (0.0, 10.0)})
    assert max(points["variables"]["b"]["points"]) == pytest.approx(100.0)
    assert points["variables"]["b"]["points"][-1] == pytest.approx(0.0)  # protective: high = 0
    assert points["variables"]["a"]["points"][-1] == pytest.approx(40.0)


def _minimal_bundle(folder: Path) -> None:
    folder.mkdir()
    (folder / "models").mkdir()
    (folder / "models" / "note.txt").write_text("x")
    preprocess = PreprocessConfig()
    manifest = {
        "schema_version": 1,
        "name": "t",
        "version": "1",
        "created": "2026-11-23",
        "preprocess": preprocess.model_dump(mode="json"),
        "preprocess_fingerprint": preprocess.fingerprint,
        "networks": {
            "response": {"backbone": "densenet121", "width": 1.0, "signatures": []},
            "dm": {"backbone": "resnet18", "width": 1.0, "sequences": []},
        },
        "response": {"models": {}},
        "training_data": {},
    }
    write_manifest(folder, manifest)


def test_bundle_checks_schema_files_and_preprocessing(tmp_path: Path) -> None:
    folder = tmp_path / "bundle"
    _minimal_bundle(folder)
    assert Bundle.load(folder, expected=PreprocessConfig()).version == "t 1"
    with pytest.raises(BundleError, match=r"other preprocessing \(n4_margin_mm 40.0 != 30.0\)"):
        Bundle.load(folder, expected=PreprocessConfig(n4_margin_mm=30))
    (folder / "models" / "note.txt").write_text("changed")
    with pytest.raises(BundleError, match=r"note\.txt was changed"):
        Bundle.load(folder)
    (folder / "models" / "note.txt").write_text("x")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["schema_version"] = 99
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="bundle schema 99, this larc reads schema 1"):
        Bundle.load(folder)
    with pytest.raises(BundleError, match="not a larc model bundle"):
        Bundle.load(tmp_path)
