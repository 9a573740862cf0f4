"""Known failure modes: the subgroups of evaluated patients where an output did clearly worse."""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.training.bundle import failure_lines
from pipeline.training.validation import failure_modes, subgroups


def _cohort(seed: int = 0) -> tuple[dict[str, Any], dict[str, dict[str, str]], dict[str, Any]]:
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
            "baseline T2W": {
                "manufacturer": vendor,
                "field_strength_t": 3.0,
                "tumour_volume_ml": float(5 + (n * 7) % 40),
            }
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
    found = failure_modes(scores, rows, acquisition, "held_out")
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
    assert failure_modes(scores, rows, acquisition, "held_out") == []
    assert "None found" in "".join(failure_lines({"failure_modes": {"held_out": []}}))
    assert "older larc" in "".join(failure_lines({}))
