"""Cases: complete inputs make a ready case; missing ones are named; a new mask is a new version."""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path

import pytest

from daemon.cases import (
    READY,
    WAITING,
    CaseState,
    InvalidTransitionError,
    SeriesFacts,
    StudyInputs,
    case_fingerprint,
    case_id,
    check_transition,
    decide_cases,
    recorded_series,
)
from daemon.index import Index
from dicom_io.roles import SeriesRole


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


def test_a_case_walks_its_states_and_cannot_skip_or_go_back() -> None:
    path = [None, *("ready", "queued", "running", "done", "exported")]
    for old, new in itertools.pairwise(path):
        check_transition(CaseState(old) if old else None, CaseState(new))
    for old, new in [("ready", "exported"), ("exported", "queued"), ("failed", "done"),
                     ("waiting", "queued"), ("done", "running")]:  # fmt: skip
        with pytest.raises(InvalidTransitionError, match=f"from {old} to {new}"):
            check_transition(CaseState(old), CaseState(new))
    for old in CaseState:  # new inputs: waiting again from anywhere; a new version is ready
        check_transition(old, CaseState.WAITING)
        check_transition(old, CaseState.READY, new_version=True)
    with pytest.raises(InvalidTransitionError, match="in a new version"):
        check_transition(CaseState.EXPORTED, CaseState.QUEUED, new_version=True)


def test_the_index_refuses_a_state_change_the_table_does_not_allow(tmp_path: Path) -> None:
    index = Index(tmp_path / "index.sqlite3")
    try:
        index._db.execute("INSERT INTO patients VALUES ('P', '', '', '', 0)")
        row = {"case_id": "resp-1", "patient_id": "P", "kind": "response", "version": 1,
               "state": "ready", "reason": "inputs complete", "baseline_study_uid": None,
               "restaging_study_uid": None, "inputs": "{}", "fingerprint": "f"}  # fmt: skip
        index.upsert_case(row, new_version=True)
        with pytest.raises(InvalidTransitionError, match="from ready to exported"):
            index.set_case_state("resp-1", 1, CaseState.EXPORTED, "sent")
        case = index.case("resp-1")
        assert case is not None
        assert case.state == CaseState.READY  # nothing written
        assert index.set_case_state("resp-1", 1, CaseState.QUEUED, "queued")
        assert not index.set_case_state("resp-1", 2, CaseState.RUNNING, "another version")
    finally:
        index.close()


def test_recorded_inputs_name_exactly_the_series_a_case_reads() -> None:
    study = _study("1", "baseline")
    adc = SeriesFacts("1.adc", "ADC", 24)
    extra_seg = SeriesFacts("1.seg", "SEG", 1, "1.dwi")
    second_rt = SeriesFacts("1.rt0", "RTSTRUCT", 1, "1.t2")  # a second mask on the T2W
    study = StudyInputs("1", "baseline", [*study.series, adc, extra_seg, second_rt])
    baseline = next(d for d in decide_cases([study]) if d.kind == "baseline")
    recorded = recorded_series(baseline.inputs, baseline.kind)["baseline"]
    # the baseline case reads the T2W, the DWI and the ADC map (its ADC stack), never CE-T1
    assert recorded.images == {
        SeriesRole.T2W_AX: "1.t2", SeriesRole.DWI: "1.dwi", SeriesRole.ADC: "1.adc"
    }  # fmt: skip
    # the T2W's mask is the lower-UID RTSTRUCT (what prepare_case reads), the SEG on the DWI
    # is carried along; both masks of the T2W stay in the fingerprint
    assert baseline.inputs["baseline_mask"] == "1.rt"
    assert recorded.masks == {"1.rt": "1.t2", "1.seg": "1.dwi", "1.rt0": "1.t2"}


def test_a_case_without_readings_keeps_the_fingerprint_of_larc_0_1() -> None:
    inputs = {"baseline_t2w_ax": "1.2.3:24", "baseline_mask": "1.2.4"}
    legacy = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]
    assert case_fingerprint(inputs, {}) == legacy  # no new versions after an upgrade
    assert case_fingerprint(inputs, {"post_crm": "1"}) != legacy
    assert case_fingerprint(inputs, {"post_crm": "1"}) != case_fingerprint(
        inputs, {"post_crm": "0"}
    )
