"""The synthetic biology: labels as informative as promised, outcomes driven the right way."""

from __future__ import annotations

import numpy as np
import pytest
from lifelines.utils import concordance_index
from sklearn.metrics import roc_auc_score

from dicom_io.synthetic.biology import PatientBiology, draw_patient
from dicom_io.synthetic.cohort import CohortSpec, plan_patient


@pytest.fixture(scope="module")
def patients() -> list[PatientBiology]:
    return [draw_patient(np.random.default_rng([3, i, 0])) for i in range(500)]


def test_oracle_auc_of_response_labels_is_between_080_and_092(
    patients: list[PatientBiology],
) -> None:
    oracle = [p.oracle_p_good for p in patients]
    labels = [p.good_response for p in patients]
    auc = roc_auc_score(labels, oracle)
    assert 0.80 <= auc <= 0.92, auc


def test_about_a_third_respond_well_and_trg_matches_the_label(
    patients: list[PatientBiology],
) -> None:
    good = np.array([p.good_response for p in patients])
    assert 0.22 <= good.mean() <= 0.45
    for p in patients:
        assert (p.trg <= 1) == p.good_response


def test_good_responders_shrink_more_turn_dark_and_gain_adc(patients: list[PatientBiology]) -> None:
    def median(attr: str, good: bool) -> float:
        return float(np.median([attr_of(p, attr) for p in patients if p.good_response == good]))

    def attr_of(p: PatientBiology, attr: str) -> float:
        pre, post = p.baseline, p.restaging
        return {
            "shrink": post.measurements.volume_ml / pre.measurements.volume_ml,
            "adc_gain": post.adc / pre.adc,
            "fibrosis": post.fibrosis,
        }[attr]

    assert median("shrink", True) < 0.5 * median("shrink", False)
    assert median("adc_gain", True) > median("adc_gain", False) + 0.1
    assert median("fibrosis", True) > median("fibrosis", False) + 0.2


def test_dm_hazard_rises_with_volume_low_adc_heterogeneity_and_emvi(
    patients: list[PatientBiology],
) -> None:
    hazard = np.array([p.oracle_log_hazard_dm for p in patients])
    volume = np.log([p.baseline.measurements.volume_ml for p in patients])
    adc = np.array([p.baseline.adc for p in patients])
    heterogeneity = np.array([p.baseline.heterogeneity for p in patients])
    emvi = np.array([p.baseline.emvi for p in patients])
    assert np.corrcoef(hazard, volume)[0, 1] > 0.2
    assert np.corrcoef(hazard, adc)[0, 1] < -0.2
    assert np.corrcoef(hazard, heterogeneity)[0, 1] > 0.1
    assert hazard[emvi].mean() > hazard[~emvi].mean() + 0.3


def test_oracle_hazard_ranks_the_observed_dm_outcomes(patients: list[PatientBiology]) -> None:
    times = [p.dm_time_months for p in patients]
    events = [p.dm_event for p in patients]
    c_index = concordance_index(times, [-p.oracle_log_hazard_dm for p in patients], events)
    assert 0.7 <= c_index <= 0.95
    assert 0.12 <= np.mean(events) <= 0.4


def test_restaging_is_8_to_14_weeks_after_baseline() -> None:
    spec = CohortSpec(patients=200, seed=5)
    gaps = [
        (plan.dates["restaging"].date() - plan.dates["baseline"].date()).days / 7
        for plan in (plan_patient(spec, i) for i in range(spec.patients))
    ]
    assert min(gaps) >= 7.9
    assert max(gaps) <= 14.1


def test_missing_fraction_drops_studies_and_adc_in_that_proportion() -> None:
    spec = CohortSpec(patients=400, seed=2, missing_fraction=0.2)
    plans = [plan_patient(spec, i) for i in range(spec.patients)]
    single = np.mean([len(p.studies) == 1 for p in plans])
    no_adc = np.mean([not p.with_adc["baseline"] for p in plans])
    assert 0.14 <= single <= 0.26
    assert 0.14 <= no_adc <= 0.26
    complete = CohortSpec(patients=50, seed=2, missing_fraction=0.0)
    assert all(len(plan_patient(complete, i).studies) == 2 for i in range(50))
