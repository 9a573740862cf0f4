"""Baseline and restaging: date order is a hard fact, descriptions and time point IDs only label.

One table of realistic study sequences with the default settings, each with the pairing larc
must make or the hold it must put the patient on (and the words the hold must contain)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from daemon.settings import PairingSettings
from dicom_io.pairing import (
    BASELINE,
    OTHER,
    RESTAGING,
    UNDECIDED,
    PairingChoice,
    StudyFacts,
    assign_timepoints,
)

POLICY = PairingSettings().policy()
HOLD = "hold"


@dataclass(frozen=True)
class Sequence:
    name: str
    studies: tuple[tuple[str, str, str] | tuple[str, str, str, str], ...]  # uid, date, text[, id]
    expected: dict[str, str] | str  # uid -> timepoint, or HOLD
    words: tuple[str, ...] = ()  # in the hold's reason (or the named studies' reasons)


TABLE = (
    # -- the report that started this: both visits described as rectal "staging" MRs
    Sequence(
        "a later study described 'Staging' is not the baseline of an earlier one",
        (("a", "20161017", "MR PELVIS W WO CONTRAST"), ("b", "20161231", "MRI Rectum Staging")),
        HOLD,
        ("2016-12-31 study 'MRI Rectum Staging' is labelled baseline", "75 days earlier"),
    ),
    Sequence(
        "both visits described 'Staging': two baselines",
        (("a", "20161017", "MRI Rectum Staging"), ("b", "20161231", "MRI Rectum Staging")),
        HOLD,
        ("2 studies are labelled baseline",),
    ),
    Sequence(
        "a restaging dated before the baseline",
        (("a", "20170105", "MR Rectum Staging"), ("b", "20161110", "MR Rectum Restaging")),
        HOLD,
        ("a baseline cannot follow its restaging",),
    ),
    Sequence(
        "same-day staging and restaging labels",
        (("a", "20170105", "MR Rectum Staging"), ("b", "20170105", "MR Rectum Restaging")),
        HOLD,
        ("0 days earlier",),
    ),
    Sequence(
        "time point ID and description disagree",
        (("a", "20170105", "MR Rectum Restaging", "BASELINE"), ("b", "20170320", "MRI PELVIS")),
        HOLD,
        ("ClinicalTrialTimePointID 'BASELINE' (a baseline)", "says restaging"),
    ),
    # -- what can be decided
    Sequence(
        "staging then restaging",
        (("a", "20250101", "MR Rectum Staging"), ("b", "20250310", "MR Rectum Restaging")),
        {"a": BASELINE, "b": RESTAGING},
    ),
    Sequence(
        "no labels: date order",
        (("2", "20250301", "MRI PELVIS"), ("1", "20250101", "MRI PELVIS")),
        {"1": BASELINE, "2": RESTAGING},
    ),
    Sequence(
        "a labelled baseline with an unlabelled restaging",
        (("a", "20250101", "MR Rectum Staging"), ("b", "20250310", "MR PELVIS W/WO CONTRAST")),
        {"a": BASELINE, "b": RESTAGING},
    ),
    Sequence(
        "an unlabelled baseline with a labelled restaging",
        (("a", "20250101", "MRI PELVIS RECTUM"), ("b", "20250310", "MR Rectum Restaging")),
        {"a": BASELINE, "b": RESTAGING},
    ),
    Sequence(
        "time point IDs label studies whose descriptions say nothing",
        (
            ("a", "20250101", "MRI PELVIS", "BASELINE"),
            ("b", "20250310", "MRI PELVIS", "POST-NCT"),
        ),
        {"a": BASELINE, "b": RESTAGING},
        ("ClinicalTrialTimePointID 'BASELINE'",),
    ),
    Sequence(
        "a repeat 9 days after the baseline is too soon to be the restaging",
        (
            ("a", "20250101", "MRI PELVIS"),
            ("b", "20250110", "MRI PELVIS"),
            ("c", "20250320", "MRI PELVIS"),
        ),
        {"a": BASELINE, "b": OTHER, "c": RESTAGING},
        ("9 days after the baseline",),
    ),
    Sequence(
        "staging, mid-treatment, restaging",
        (
            ("a", "20250101", "MR Rectum Staging"),
            ("m", "20250205", "MRI rectum mid-treatment"),
            ("b", "20250401", "MR Rectum Restaging"),
        ),
        {"a": BASELINE, "m": OTHER, "b": RESTAGING},
        ("labels neither a baseline nor a restaging",),
    ),
    Sequence(
        "staging, restaging, a follow-up after surgery",
        (
            ("a", "20250101", "MR Rectum Staging"),
            ("b", "20250401", "MR Rectum Restaging"),
            ("f", "20250601", "MRI pelvis follow-up"),
        ),
        {"a": BASELINE, "b": RESTAGING, "f": OTHER},
    ),
    Sequence(
        "unlabelled follow-up beyond the interval",
        (
            ("a", "20250101", "MRI PELVIS"),
            ("b", "20250401", "MRI PELVIS"),
            ("f", "20251101", "MRI PELVIS"),
        ),
        {"a": BASELINE, "b": RESTAGING, "f": OTHER},
        ("304 days after the baseline",),
    ),
    Sequence(
        "three unlabelled studies in the interval: restaging ambiguous",
        (
            ("a", "20250101", "MRI PELVIS"),
            ("m", "20250215", "MRI PELVIS"),
            ("b", "20250411", "MRI PELVIS"),
        ),
        HOLD,
        ("several studies could be the restaging", "45 days", "100 days"),
    ),
    Sequence(
        "an unrelated study years before the treatment",
        (
            ("old", "20190301", "MRI PELVIS"),
            ("a", "20250101", "MRI PELVIS"),
            ("b", "20250401", "MRI PELVIS"),
        ),
        {"old": OTHER, "a": BASELINE, "b": RESTAGING},
        ("days before the baseline",),
    ),
    Sequence(
        "two unlabelled studies years apart: either could be the baseline",
        (("a", "20190301", "MRI PELVIS"), ("b", "20250101", "MRI PELVIS")),
        HOLD,
        ("could each be the baseline",),
    ),
    Sequence(
        "two unlabelled studies on the baseline day",
        (
            ("a1", "20250101", "MRI PELVIS"),
            ("a2", "20250101", "MRI RECTUM"),
            ("b", "20250401", "MRI PELVIS"),
        ),
        HOLD,
        ("same day",),
    ),
    Sequence(
        "a labelled restaging too long after the baseline",
        (("a", "20250101", "MR Rectum Staging"), ("b", "20250920", "MR Rectum Restaging")),
        {"a": BASELINE, "b": OTHER},
        ("262 days after the baseline", "labels a restaging"),
    ),
    Sequence(
        "a labelled restaging too soon after the baseline",
        (("a", "20250101", "MR Rectum Staging"), ("b", "20250111", "MR Rectum Restaging")),
        {"a": BASELINE, "b": OTHER},
        ("10 days after the baseline",),
    ),
    Sequence(
        "an undated study is set aside",
        (("a", "20250101", "MRI PELVIS"), ("x", "", "MRI PELVIS"), ("b", "20250401", "MRI")),
        {"a": BASELINE, "x": OTHER, "b": RESTAGING},
        ("no valid StudyDate",),
    ),
    Sequence(
        "a lone restaging waits for its baseline",
        (("r", "20250320", "MR Rectum Restaging"),),
        {"r": RESTAGING},
        ("no baseline on hand",),
    ),
    Sequence(
        "a labelled restaging whose only earlier study is years older",
        (("old", "20190301", "MRI PELVIS"), ("r", "20250320", "MR Rectum Restaging")),
        {"old": OTHER, "r": RESTAGING},
        ("no baseline on hand",),
    ),
    Sequence(
        "a lone unlabelled study is the baseline by date order",
        (("a", "20250101", "MRI PELVIS"),),
        {"a": BASELINE},
    ),
)


@pytest.mark.parametrize("sequence", TABLE, ids=[s.name for s in TABLE])
def test_study_sequences_pair_or_hold_as_the_table_says(sequence: Sequence) -> None:
    studies = [StudyFacts(*row) for row in sequence.studies]
    found = assign_timepoints(studies, POLICY)
    if sequence.expected == HOLD:
        assert found.conflict is not None, found.timepoints
        for words in sequence.words:
            assert words in found.conflict
        dated = {s.study_uid for s in studies if s.study_date}
        assert {
            uid: tp for uid, (tp, _) in found.timepoints.items() if uid in dated
        } == dict.fromkeys(dated, UNDECIDED)
        return
    assert found.conflict is None, found.conflict
    assert {uid: tp for uid, (tp, _) in found.timepoints.items()} == sequence.expected
    reasons = " | ".join(reason for _, reason in found.timepoints.values())
    for words in sequence.words:
        assert words in reasons


def test_a_study_is_never_the_baseline_of_an_earlier_one() -> None:
    """Whatever the descriptions say, a baseline precedes its restaging."""
    texts = ("MRI PELVIS", "MR Rectum Staging", "MR Rectum Restaging", "MRI follow-up", "")
    dates = ("20250101", "20250301", "20250601")
    for first in texts:
        for second in texts:
            for third in texts:
                studies = [
                    StudyFacts(f"s{i}", date, text)
                    for i, (date, text) in enumerate(
                        zip(dates, (first, second, third), strict=True)
                    )
                ]
                found = assign_timepoints(studies, POLICY).timepoints
                by_tp = {tp: uid for uid, (tp, _) in found.items()}
                if BASELINE in by_tp and RESTAGING in by_tp:
                    assert by_tp[BASELINE] < by_tp[RESTAGING], (first, second, third, found)


ISSUE_STUDIES = [
    StudyFacts("a", "20161017", "MR PELVIS W WO CONTRAST"),
    StudyFacts("b", "20161231", "MRI Rectum Staging"),
]


def test_an_operators_choice_resolves_a_hold() -> None:
    choice = PairingChoice("a", "b", "dr.lee", "2026-12-02 10:00")
    found = assign_timepoints(ISSUE_STUDIES, POLICY, choice)
    assert found.conflict is None
    assert found.timepoints["a"] == (BASELINE, "chosen by dr.lee on 2026-12-02 10:00")
    assert found.timepoints["b"][0] == RESTAGING
    assert "75 days after the baseline" in found.timepoints["b"][1]


def test_an_operators_choice_cannot_reverse_date_order() -> None:
    choice = PairingChoice("b", "a", "dr.lee", "2026-12-02 10:00")
    found = assign_timepoints(ISSUE_STUDIES, POLICY, choice)
    assert found.conflict is not None
    assert "is not dated after" in found.conflict


def test_a_choice_of_a_study_no_longer_on_hand_holds_again() -> None:
    choice = PairingChoice("gone", None, "dr.lee", "2026-12-02 10:00")
    found = assign_timepoints(ISSUE_STUDIES, POLICY, choice)
    assert found.conflict is not None
    assert "choose again" in found.conflict


def test_a_baseline_only_choice_leaves_no_restaging() -> None:
    choice = PairingChoice("b", None, "dr.lee", "2026-12-02 10:00")
    found = assign_timepoints(ISSUE_STUDIES, POLICY, choice).timepoints
    assert found == {
        "b": (BASELINE, "chosen by dr.lee on 2026-12-02 10:00"),
        "a": (OTHER, "not chosen (chosen by dr.lee on 2026-12-02 10:00)"),
    }
