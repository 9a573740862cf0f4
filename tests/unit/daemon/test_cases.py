"""Cases: complete inputs make a ready case; missing ones are named; a new mask is a new version."""

from __future__ import annotations

from daemon.cases import READY, WAITING, SeriesFacts, StudyInputs, case_id, decide_cases


def _study(uid: str, timepoint: str, mask: bool = True, ce: bool = True) -> StudyInputs:
    series = [
        SeriesFacts(f"{uid}.t2", "T2W_AX", 24),
        SeriesFacts(f"{uid}.dwi", "DWI", 32),
        SeriesFacts(f"{uid}.loc", "IGNORED", 3),
    ]
    if ce:
        series.append(SeriesFacts(f"{uid}.ce", "CE_T1", 40))
    if mask:
        series.append(SeriesFacts(f"{uid}.rt", "RTSTRUCT", 1, f"{uid}.t2"))
    return StudyInputs(uid, timepoint, series)


def _by_kind(studies: list[StudyInputs]) -> dict[str, tuple[str, str]]:
    return {d.kind: (d.state, d.reason) for d in decide_cases(studies)}


def test_complete_pair_makes_both_cases_ready() -> None:
    cases = _by_kind([_study("1", "baseline"), _study("2", "restaging")])
    assert cases == {"baseline": (READY, "inputs complete"), "response": (READY, "inputs complete")}


def test_missing_pieces_are_named() -> None:
    cases = _by_kind([_study("1", "baseline", ce=False), _study("2", "restaging", mask=False)])
    assert cases["baseline"][0] == READY
    state, reason = cases["response"]
    assert state == WAITING
    assert "baseline: no CE_T1 series" in reason
    assert "restaging: no tumour mask on the T2W" in reason
    assert _by_kind([_study("2", "restaging")])["response"] == (WAITING, "no baseline study")


def test_a_mask_on_another_series_does_not_count_for_the_t2w() -> None:
    study = _study("1", "baseline", mask=False)
    study = StudyInputs("1", "baseline", [*study.series, SeriesFacts("1.seg", "SEG", 1, "1.dwi")])
    state, reason = _by_kind([study])["baseline"]
    assert state == WAITING
    assert "no tumour mask on the T2W" in reason


def test_a_new_mask_changes_the_fingerprint() -> None:
    before = decide_cases([_study("1", "baseline")])[0]
    extra = _study("1", "baseline")
    extra = StudyInputs("1", "baseline", [*extra.series, SeriesFacts("1.seg", "SEG", 1, "1.dwi")])
    after = decide_cases([extra])[0]
    assert before.state == after.state == READY
    assert before.fingerprint != after.fingerprint


def test_case_ids_do_not_reveal_the_patient() -> None:
    cid = case_id("PAT-12345", "response")
    assert "12345" not in cid
    assert cid == case_id("PAT-12345", "response")
    assert cid != case_id("PAT-12346", "response")
