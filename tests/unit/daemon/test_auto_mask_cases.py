"""Case decisions with automatic tumour masks (``segmentation.mode``): what a case waits for
while the segmenter works, when it is declined, which mask wins when a drawn one arrives, and
what a radiologist's review changes."""

from __future__ import annotations

from daemon.cases import (
    READY,
    WAITING,
    AutoMask,
    CaseDecision,
    CaseState,
    SeriesFacts,
    StudyInputs,
    decide_cases,
    t2w_without_mask,
)
from dicom_io.roles import SeriesRole
from dicom_io.selection import SeriesCandidate, masks_on


def _study(uid: str, timepoint: str, *masks: SeriesFacts) -> StudyInputs:
    series = [
        SeriesFacts(f"{uid}.t2", "T2W_AX", 24),
        SeriesFacts(f"{uid}.dwi", "DWI", 32),
        SeriesFacts(f"{uid}.ce", "CE_T1", 40),
        *masks,
    ]
    return StudyInputs(uid, timepoint, series)


def _auto_seg(uid: str) -> SeriesFacts:
    return SeriesFacts(f"{uid}.auto", "SEG", 1, f"{uid}.t2", automatic=True)


def _drawn(uid: str) -> SeriesFacts:
    return SeriesFacts(f"{uid}.rt", "RTSTRUCT", 1, f"{uid}.t2")


def _cases(studies: list[StudyInputs], auto: dict[str, AutoMask]) -> dict[str, CaseDecision]:
    return {d.kind: d for d in decide_cases(studies, auto)}


def test_a_t2w_without_a_mask_is_the_one_to_segment() -> None:
    assert t2w_without_mask(_study("1", "baseline")) == "1.t2"
    assert t2w_without_mask(_study("1", "baseline", _drawn("1"))) is None
    assert t2w_without_mask(_study("1", "baseline", _auto_seg("1"))) is None


def test_cases_wait_while_the_segmenter_works() -> None:
    for state in ("requested", "queued"):
        cases = _cases([_study("1", "baseline")], {"1.t2": AutoMask(state)})
        baseline = cases["baseline"]
        assert baseline.state == WAITING
        assert "automatic tumour segmentation of the T2W in progress" in baseline.reason


def test_a_mask_that_failed_its_gate_declines_the_case_with_the_reason() -> None:
    failed = AutoMask("failed", "2 separate tumour regions (at most 1)")
    cases = _cases(
        [_study("1", "baseline"), _study("2", "restaging", _drawn("2"))], {"1.t2": failed}
    )
    for kind in ("baseline", "response"):
        decision = cases[kind]
        assert decision.state == CaseState.DECLINED
        assert decision.reason == (
            "baseline: automatic segmentation failed its check "
            "(2 separate tumour regions (at most 1))"
        )
    # something else missing still says waiting, with both reasons
    waiting = _cases([_study("1", "baseline")], {"1.t2": failed})["response"]
    assert waiting.state == WAITING
    assert "no restaging study" in waiting.reason


def test_an_automatic_mask_is_scored_and_a_drawn_one_supersedes_it() -> None:
    passed = {"1.t2": AutoMask("passed")}
    auto_only = _cases([_study("1", "baseline", _auto_seg("1"))], passed)["baseline"]
    assert auto_only.state == READY
    assert auto_only.inputs["baseline_mask"] == "1.auto"
    both = _cases([_study("1", "baseline", _auto_seg("1"), _drawn("1"))], passed)["baseline"]
    assert both.inputs["baseline_mask"] == "1.rt"
    assert both.fingerprint != auto_only.fingerprint  # a new version
    # the same holds for a drawn SEG whose UID sorts after the automatic one
    drawn_seg = SeriesFacts("1.zzz", "SEG", 1, "1.t2")
    chosen = _cases([_study("1", "baseline", _auto_seg("1"), drawn_seg)], passed)["baseline"]
    assert chosen.inputs["baseline_mask"] == "1.zzz"


def test_selection_puts_a_drawn_mask_before_an_automatic_one() -> None:
    candidates = [
        SeriesCandidate("1.1", SeriesRole.T2W_AX, 10),
        SeriesCandidate("1.0", SeriesRole.RTSTRUCT, 1, "1.1", automatic=True),
        SeriesCandidate("1.9", SeriesRole.SEG, 1, "1.1"),
    ]
    assert [m.series_uid for m in masks_on(candidates, "1.1")] == ["1.9", "1.0"]


def test_a_review_changes_the_case() -> None:
    accepted = AutoMask("passed", review="accepted", reviewer="dr.a")
    unreviewed = _cases([_study("1", "baseline", _auto_seg("1"))], {"1.t2": AutoMask("passed")})
    reviewed = _cases([_study("1", "baseline", _auto_seg("1"))], {"1.t2": accepted})
    assert reviewed["baseline"].inputs["baseline_mask_review"] == "accepted by dr.a"
    assert reviewed["baseline"].fingerprint != unreviewed["baseline"].fingerprint
    # rejected: the assembler leaves the SEG out, and the case waits for a drawn mask
    rejected = AutoMask("passed", review="rejected", reviewer="dr.b", note="includes the wall")
    waiting = _cases([_study("1", "baseline")], {"1.t2": rejected})["baseline"]
    assert waiting.state == WAITING
    assert waiting.reason == (
        "baseline: automatic tumour outline rejected by dr.b (includes the wall); "
        "waiting for a drawn mask"
    )


def test_a_mask_another_program_made_on_its_own_is_not_taken_as_drawn() -> None:
    # e.g. a vendor's AI SEG (SegmentAlgorithmType AUTOMATIC) in the study: nobody drew or
    # reviewed it, and larc's quality gate never saw it
    foreign = SeriesFacts("1.ai", "SEG", 1, "1.t2", made_elsewhere_by="VendorSeg 2.1")
    study = _study("1", "baseline", foreign)
    assert t2w_without_mask(study) == "1.t2"  # larc's own segmenter is asked (auto modes)
    waiting = _cases([study], {})["baseline"]  # manual mode: nothing else to score on
    assert waiting.state == WAITING
    assert waiting.reason.startswith("baseline: no tumour mask on the T2W")
    assert "automatic outline by 'VendorSeg 2.1' is not used" in waiting.reason
    assert "1.ai" not in waiting.inputs.values()
    assert not any("1.ai" in key for key in waiting.inputs)
    # larc's own outline is used, and a drawn mask still wins over both
    passed = {"1.t2": AutoMask("passed")}
    with_own = _cases([_study("1", "baseline", foreign, _auto_seg("1"))], passed)
    assert with_own["baseline"].inputs["baseline_mask"] == "1.auto"
    drawn = _cases([_study("1", "baseline", foreign, _drawn("1"))], {})["baseline"]
    assert (drawn.state, drawn.inputs["baseline_mask"]) == (READY, "1.rt")
