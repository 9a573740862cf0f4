"""What a bundle's validation backs: the rule that decides it, and what scoring then leaves out."""

from __future__ import annotations

import copy
from typing import Any

from pipeline.bundle import withhold
from pipeline.validation import (
    NO_VALIDATION,
    NOT_VALIDATED,
    VALIDATED,
    Estimate,
    decide,
    output_entry,
    revalidate,
    unavailable,
    withheld,
)


def _c(cohort: str, value: float, low: float, high: float, n: int = 100, events: int = 30) -> (
        Estimate):  # fmt: skip
    return Estimate(cohort, value, low, high, n, events)


def test_every_counting_estimate_must_show_discrimination() -> None:
    good_oof = _c("out_of_fold", 0.70, 0.62, 0.78)
    assert decide("c_index", [good_oof]) == (
        VALIDATED,
        "C-index 0.70, 95% CI 0.62-0.78, out-of-fold on the training patients, n = 100, 30 events",
    )
    # the held-out patients do not confirm it: not validated, the failing estimate named
    status, reason = decide("c_index", [good_oof, _c("held_out", 0.49, 0.40, 0.59)])
    assert status == NOT_VALIDATED
    assert reason == (
        "showed no discrimination in validation (C-index 0.49, 95% CI 0.40-0.59, held-out "
        "patients, n = 100, 30 events)"
    )
    # a lower bound of exactly 0.5 is no discrimination either
    assert decide("c_index", [_c("out_of_fold", 0.6, 0.5, 0.7)])[0] == NOT_VALIDATED


def test_too_few_events_is_not_validated_and_does_not_count() -> None:
    few = _c("held_out", 0.9, 0.55, 0.99, n=15, events=4)
    assert decide("c_index", [few], min_events=10) == (
        NOT_VALIDATED,
        "could not be validated: too few events (4 events in the held-out patients; at least "
        "10 needed)",
    )
    # an estimate with too few events neither backs nor sinks one that has enough
    assert decide("c_index", [_c("out_of_fold", 0.7, 0.6, 0.8), few])[0] == VALIDATED
    binary = Estimate("held_out", 0.85, 0.7, 0.95, 30, 25, 5)
    status, reason = decide("auc", [binary], min_events=10)
    assert status == NOT_VALIDATED
    assert "25 good and 5 poor responses" in reason
    assert "at least 10 of each" in reason
    assert decide("auc", []) == (NOT_VALIDATED, "has no validation estimate")


def test_a_hospitals_own_external_validation_decides() -> None:
    training = [_c("out_of_fold", 0.7, 0.6, 0.8), _c("held_out", 0.68, 0.56, 0.8)]
    external = _c("external", 0.48, 0.38, 0.58, n=120, events=35)
    status, reason = decide("c_index", [*training, external])
    assert status == NOT_VALIDATED
    assert "external patients, n = 120, 35 events" in reason
    # the latest external estimate decides, the other way round too
    later = _c("external", 0.66, 0.58, 0.74, n=150, events=40)
    assert decide("c_index", [*training, external, later])[0] == VALIDATED


def _manifest(outputs: dict[str, list[Estimate]] | None) -> dict[str, Any]:
    manifest: dict[str, Any] = {
        "version": "1.0.0",
        "response": {"models": {"FDL": {}, "CR": {}, "CRD": {}}},
        "dm": {"cox": "models/dm_cox.json", "nomogram": "models/nomogram_cox.json"},
        "subtypes": {"k": 3},
    }
    if outputs is not None:
        manifest["validation"] = {
            "min_events": 10,
            "outputs": {n: output_entry(n, e) for n, e in outputs.items()},
        }
    return manifest


def _scores() -> dict[str, Any]:
    return {
        "model": "x 1.0.0",
        "not_scored": {},
        "signatures": {"pre_T2": 0.4, "post_T2": 0.6},
        "response_FDL": {"p_good_response": 0.7, "predicted": "good"},
        "response_CR": {"p_good_response": 0.6, "predicted": "good"},
        "response_CRD": {"p_good_response": 0.65, "predicted": "good"},
        "distant_metastasis": {
            "dl_prob": 0.9,
            "dlrs": 0.3,
            "risk_group": "high",
            "dmfs_3y": 0.7,
            "nomogram_dmfs_3y": 0.75,
        },
        "recurrence": {"subtype": "RDLS1", "rrs": 0.2, "rfs_5y": 0.6},
    }


def test_scoring_leaves_out_what_validation_does_not_back() -> None:
    good = [_c("out_of_fold", 0.7, 0.6, 0.8)]
    bad = [_c("held_out", 0.49, 0.40, 0.59)]
    manifest = _manifest(
        {
            "response_FDL": bad,
            "response_CR": good,
            "response_CRD": good,
            "distant_metastasis": bad,
            "nomogram": good,
            "recurrence": good,
        }
    )
    reasons = withheld(manifest)
    assert set(reasons) == {"response_FDL", "distant_metastasis"}
    assert reasons["distant_metastasis"] == (
        "not available - this bundle's model showed no discrimination in validation (C-index "
        "0.49, 95% CI 0.40-0.59, held-out patients, n = 100, 30 events)"
    )
    scores = _scores()
    withhold(scores, reasons)
    # FDL goes with the signatures it is made of; CR and CRD stay
    assert "response_FDL" not in scores
    assert scores["signatures"] == {}
    assert scores["response_CRD"]["p_good_response"] == 0.65
    # the DLRS, its risk group and DMFS go; the validated nomogram stays
    assert scores["distant_metastasis"] == {"nomogram_dmfs_3y": 0.75}
    assert scores["recurrence"]["subtype"] == "RDLS1"
    assert scores["not_scored"] == reasons
    assert unavailable(scores, response=False) == {
        "distant-metastasis risk (DLRS, risk group, 3-year DMFS)": reasons["distant_metastasis"]
    }
    assert list(unavailable(scores, response=True)) == [
        "P(good response) FDL and the response signatures"
    ]


def test_the_dlrs_withheld_takes_an_unvalidated_nomogram_with_it() -> None:
    bad = [_c("held_out", 0.49, 0.40, 0.59)]
    scores = _scores()
    withhold(scores, withheld(_manifest({"distant_metastasis": bad, "nomogram": bad})))
    assert "distant_metastasis" not in scores
    assert set(scores["not_scored"]) >= {"distant_metastasis", "nomogram"}


def test_a_reason_the_case_could_not_be_scored_stands() -> None:
    scores = _scores()
    del scores["distant_metastasis"]
    scores["not_scored"]["distant_metastasis"] = "no baseline ADC stack"
    withhold(scores, withheld(_manifest({})))
    assert scores["not_scored"]["distant_metastasis"] == "no baseline ADC stack"


def test_a_bundle_without_validation_sends_nothing() -> None:
    reasons = withheld(_manifest(None))
    assert reasons == dict.fromkeys(
        ["response_FDL", "response_CR", "response_CRD", "distant_metastasis", "nomogram",
         "recurrence"], NO_VALIDATION,
    )  # fmt: skip
    scores = _scores()
    withhold(scores, reasons)
    assert not {"response_FDL", "response_CR", "response_CRD", "distant_metastasis",
                "recurrence"} & set(scores)  # fmt: skip


def test_revalidation_keeps_the_record_and_decides_again() -> None:
    manifest = _manifest({"distant_metastasis": [_c("out_of_fold", 0.7, 0.6, 0.8)]})
    before = copy.deepcopy(manifest)
    record = {"date": "2026-12-06T00:00:00+00:00", "from_version": "1.0.0",
              "cohort_fingerprint": "abc", "patients": 100}  # fmt: skip
    after = revalidate(manifest, {"distant_metastasis": _c("external", 0.5, 0.41, 0.6)}, record)
    assert manifest == before  # the loaded bundle's manifest is not changed
    entry = after["validation"]["outputs"]["distant_metastasis"]
    assert entry["status"] == NOT_VALIDATED
    assert [e["cohort"] for e in entry["estimates"]] == ["out_of_fold", "external"]
    assert entry["estimates"][-1]["cohort_fingerprint"] == "abc"
    assert after["validation"]["history"] == [
        {**record, "outputs": {"distant_metastasis": NOT_VALIDATED}}
    ]
    assert "distant_metastasis" in withheld(after)
