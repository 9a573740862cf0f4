"""Baseline and restaging: description markers first, then date order within the interval."""

from __future__ import annotations

from daemon.settings import PairingSettings
from dicom_io.pairing import (
    BASELINE,
    OTHER,
    RESTAGING,
    PairingPolicy,
    StudyFacts,
    assign_timepoints,
)

DEFAULTS = PairingSettings()
POLICY = PairingPolicy(
    DEFAULTS.restaging_pattern,
    DEFAULTS.baseline_pattern,
    DEFAULTS.min_interval_days,
    DEFAULTS.max_interval_days,
)


def _tp(studies: list[StudyFacts]) -> dict[str, str]:
    return {uid: tp for uid, (tp, _) in assign_timepoints(studies, POLICY).items()}


def test_date_order_makes_the_earlier_study_the_baseline() -> None:
    studies = [StudyFacts("2", "20250301", "MRI PELVIS"), StudyFacts("1", "20250101", "MRI PELVIS")]
    assert _tp(studies) == {"1": BASELINE, "2": RESTAGING}


def test_restaging_is_not_mistaken_for_staging() -> None:
    studies = [
        StudyFacts("a", "20250101", "MR Rectum Staging"),
        StudyFacts("b", "20250310", "MR Rectum Restaging"),
    ]
    assert _tp(studies) == {"a": BASELINE, "b": RESTAGING}


def test_a_study_too_soon_after_the_baseline_is_not_the_restaging() -> None:
    studies = [
        StudyFacts("a", "20250101", "MRI PELVIS"),
        StudyFacts("b", "20250110", "MRI PELVIS"),  # 9 days: a repeat, not a restaging
        StudyFacts("c", "20250320", "MRI PELVIS"),
    ]
    result = assign_timepoints(studies, POLICY)
    assert {k: v[0] for k, v in result.items()} == {"a": BASELINE, "b": OTHER, "c": RESTAGING}
    assert "9 days" in result["b"][1]


def test_a_lone_restaging_study_waits_for_its_baseline() -> None:
    result = assign_timepoints([StudyFacts("r", "20250320", "MR Rectum Restaging")], POLICY)
    assert result["r"][0] == RESTAGING
    assert "no baseline" in result["r"][1]


def test_a_study_without_a_date_is_set_aside_with_a_reason() -> None:
    result = assign_timepoints([StudyFacts("x", "", "MRI")], POLICY)
    assert result["x"][0] == OTHER
    assert "StudyDate" in result["x"][1]


def test_clinical_trial_time_point_id_wins_over_the_description() -> None:
    studies = [
        StudyFacts("a", "20250101", "MR Rectum Restaging", time_point_id="BASELINE"),
        StudyFacts("b", "20250310", "MRI PELVIS", time_point_id="POST-NCT"),
    ]
    result = assign_timepoints(studies, POLICY)
    assert {k: v[0] for k, v in result.items()} == {"a": BASELINE, "b": RESTAGING}
    assert "ClinicalTrialTimePointID 'BASELINE'" in result["a"][1]
