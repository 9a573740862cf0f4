"""Known failure modes: the subgroups of evaluated patients where an output did clearly worse;
and a Cox model that cannot be fitted in a fold costs its estimate, not the training."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from pipeline.envelope import SequenceFacts
from pipeline.models import CoxFitError, CoxModel
from pipeline.training.bundle import failure_lines
from pipeline.training.validation import _cox_oof, failure_modes, score_estimates, subgroups


def _cohort(
    seed: int = 0,
) -> tuple[dict[str, Any], dict[str, dict[str, str]], dict[str, dict[str, SequenceFacts]]]:
    """60 patients: the FDL ranks the GE patients' outcomes well and the Siemens ones' not
    at all; the volumes spread evenly over both."""
    rng = np.random.default_rng(seed)
    scores, rows, acquisition = {}, {}, {}
    for n in range(60):
        patient = f"P{n:02d}"
        good = n % 3 == 0
        vendor = "GE" if n < 30 else "SIEMENS"
        p = (0.7 if good else 0.3) + rng.normal(0, 0.1) if vendor == "GE" else rng.random()
        scores[patient] = {"response_FDL": {"p_good_response": float(p)}}
        rows[patient] = {"good_response": str(int(good))}
        acquisition[patient] = {
            "baseline T2W": SequenceFacts(
                manufacturer=vendor, field_strength_t=3.0, tumour_volume_ml=float(5 + (n * 7) % 40)
            )
        }
    return scores, rows, acquisition


def test_subgroups_by_manufacturer_field_strength_and_volume() -> None:
    _, _, acquisition = _cohort()
    groups = subgroups(acquisition)
    assert len(groups["manufacturer GE"]) == len(groups["manufacturer SIEMENS"]) == 30
    assert len(groups["3 T"]) == 60
    small = next(g for g in groups if g.startswith("baseline tumour volume below"))
    large = next(g for g in groups if g.endswith("ml or more"))
    assert sorted(groups[small] + groups[large]) == sorted(acquisition)


def test_the_subgroup_where_the_model_fails_is_named_and_no_other() -> None:
    scores, rows, acquisition = _cohort()
    found = failure_modes(scores, rows, acquisition, score_estimates(scores, rows, "held_out"))
    assert len(found) == 1, found
    assert "manufacturer SIEMENS" in found[0]
    assert found[0].startswith("P(good response) FDL")
    assert "n = 30" in found[0]
    lines = failure_lines({"failure_modes": {"held_out": found}})
    assert any("manufacturer SIEMENS" in line for line in lines)
    # a model that ranks everyone well has none
    for patient, row in rows.items():
        scores[patient]["response_FDL"]["p_good_response"] = 0.8 * int(row["good_response"]) + (
            0.01 * int(patient[1:])
        )
    overall = score_estimates(scores, rows, "held_out")
    assert failure_modes(scores, rows, acquisition, overall) == []
    assert "None found" in "".join(failure_lines({"failure_modes": {"held_out": []}}))
    assert "older larc" in "".join(failure_lines({}))


def test_a_cox_model_that_does_not_converge_leaves_no_estimate_and_training_goes_on() -> None:
    # 8 patients, 4 covariates (one on a scale 100 times the others), 3 events: lifelines'
    # Newton steps turn NaN (seed found by search); the out-of-fold estimate is then missing
    # (the output is not validated) instead of the whole training failing
    rng = np.random.default_rng(3)
    table = pd.DataFrame(rng.normal(size=(8, 4)) * [1, 1, 100, 1], columns=list("abcd"))
    table["d"] = (table["d"] > 0).astype(float)
    table["time"] = rng.uniform(1, 60, 8)
    table["event"] = [1, 1, 1, 0, 0, 0, 0, 0]
    with pytest.raises(CoxFitError, match="did not converge on 8 patients with 3 events"):
        CoxModel.fit(table, "time", "event")
    assert _cox_oof(pd.concat([table] * 3, ignore_index=True), folds=3, seed=0) is None
