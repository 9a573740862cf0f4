"""Evaluation statistics against independent references: a published worked example, scikit-learn,
lifelines, scikit-survival, and brute-force versions of the textbook formulas."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from lifelines.utils import concordance_index
from scipy.stats import norm
from sklearn.metrics import brier_score_loss, roc_auc_score
from sksurv.metrics import concordance_index_censored, cumulative_dynamic_auc
from sksurv.util import Surv

from pipeline.stats import (
    auc_delong,
    bootstrap_ci,
    calibration,
    decision_curve,
    delong_test,
    harrell_c,
    kaplan_meier_groups,
    nri_idi,
    threshold_metrics,
    time_dependent_auc,
    youden_cutoff,
)


def _hanley_mcneil() -> tuple[np.ndarray, np.ndarray]:
    """Hanley & McNeil, Radiology 1982;143:29-36, Table 1: CT images of 109 patients rated on a
    5-point scale (1 definitely normal ... 5 definitely abnormal); 58 normal, 51 abnormal.
    Published: area 0.893, standard error 0.032 (their exponential approximation)."""
    normal = np.repeat([1, 2, 3, 4, 5], [33, 6, 6, 11, 2])
    abnormal = np.repeat([1, 2, 3, 4, 5], [3, 2, 2, 11, 33])
    return np.r_[np.zeros(58), np.ones(51)], np.r_[normal, abnormal].astype(float)


def test_auc_and_its_se_match_the_published_worked_example() -> None:
    y, ratings = _hanley_mcneil()
    estimate = auc_delong(y, ratings)
    assert estimate.auc == pytest.approx(0.893, abs=0.0005)
    # DeLong's nonparametric SE, against the published 0.032 from a parametric approximation
    assert estimate.se == pytest.approx(0.032, abs=0.002)
    assert estimate.low < estimate.auc < estimate.high


def _delong_brute_force(y: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """DeLong et al. 1988 written out literally: placement values by double loops."""
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)

    def psi(x: float, z: float) -> float:
        return 1.0 if x > z else 0.5 if x == z else 0.0

    comps = []
    for s in (a, b):
        v10 = np.array([np.mean([psi(s[i], s[j]) for j in neg]) for i in pos])
        v01 = np.array([np.mean([psi(s[i], s[j]) for i in pos]) for j in neg])
        comps.append((v10, v01))
    s10 = np.cov(np.vstack([comps[0][0], comps[1][0]]))
    s01 = np.cov(np.vstack([comps[0][1], comps[1][1]]))
    cov = s10 / len(pos) + s01 / len(neg)
    diff = comps[0][0].mean() - comps[1][0].mean()
    return diff, float(np.sqrt(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]))


def test_delong_test_matches_the_formulas_written_out_and_sklearn() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 80)
    a = y * 1.0 + rng.normal(0, 1, 80)
    b = np.round(y * 0.5 + rng.normal(0, 1, 80), 1)  # with ties
    result = delong_test(y, a, b)
    diff, se = _delong_brute_force(y, a, b)
    assert result.auc_a == pytest.approx(roc_auc_score(y, a))
    assert result.auc_b == pytest.approx(roc_auc_score(y, b))
    assert result.difference == pytest.approx(diff)
    assert result.se == pytest.approx(se)
    assert result.p_value == pytest.approx(2 * norm.sf(abs(diff / se)))
    same = delong_test(y, a, a)
    assert same.p_value == 1.0


def test_delong_keeps_its_size_under_the_null() -> None:
    """Two equally good scores: about 5 % of tests reject at 0.05."""
    rng = np.random.default_rng(0)
    rejections = 0
    for _ in range(300):
        y = np.r_[np.zeros(40), np.ones(40)]
        shared = rng.normal(0, 1, 80)
        a = y * 0.8 + shared + rng.normal(0, 1, 80)
        b = y * 0.8 + shared + rng.normal(0, 1, 80)
        rejections += delong_test(y, a, b).p_value < 0.05
    assert 0.02 <= rejections / 300 <= 0.09


def test_bootstrap_ci_covers_the_delong_interval_roughly() -> None:
    y, ratings = _hanley_mcneil()
    low, high = bootstrap_ci(roc_auc_score, y, ratings, n_boot=500, stratify=y)
    delong = auc_delong(y, ratings)
    assert low == pytest.approx(delong.low, abs=0.02)
    assert high == pytest.approx(delong.high, abs=0.02)


def test_threshold_metrics_youden_calibration_and_decision_curve() -> None:
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.8, 0.9])
    m = threshold_metrics(y, p, 0.5)
    assert (m["sensitivity"], m["specificity"], m["accuracy"]) == (0.75, 0.75, 0.75)
    assert m["f1"] == pytest.approx(0.75)
    assert youden_cutoff(y, p) == 0.4  # sensitivity 1, specificity 0.75
    cal = calibration(y, p, bins=5)
    assert cal.brier == pytest.approx(brier_score_loss(y, p))
    assert sum(cal.counts) == 8
    manual_ece = sum(
        abs(o - q) * c / 8 for o, q, c in zip(cal.observed, cal.predicted, cal.counts, strict=False)
    )
    assert cal.ece == pytest.approx(manual_ece)
    curve = decision_curve(y, p, thresholds=[0.5])
    # at t = 0.5: 3 true and 1 false positive of 8: 3/8 - 1/8 x 1
    assert curve["model"][0] == pytest.approx(0.25)
    assert curve["treat_all"][0] == pytest.approx(0.5 - 0.5)


def test_nri_and_idi_by_hand() -> None:
    y = np.array([1, 1, 0, 0])
    old = np.array([0.4, 0.6, 0.4, 0.6])
    new = np.array([0.6, 0.6, 0.2, 0.7])
    out = nri_idi(y, old, new, cutoffs=[0.5])
    # events: one up, none down (+0.5); non-events: one down, one up (0)
    assert out["nri_continuous"] == pytest.approx(0.5)
    assert out["nri_categorical"] == pytest.approx(0.5)
    assert out["idi"] == pytest.approx((0.6 - 0.5) - (0.45 - 0.5))


def _survival(n: int = 200, seed: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    risk = rng.normal(0, 1, n)
    event_time = rng.exponential(30 * np.exp(-0.8 * risk))
    censor = rng.uniform(5, 80, n)
    return np.minimum(event_time, censor), (event_time <= censor).astype(int), risk


def test_harrell_c_matches_lifelines_and_scikit_survival() -> None:
    time, event, risk = _survival()
    c = harrell_c(time, event, risk)
    assert c == pytest.approx(concordance_index(time, -risk, event))
    assert c == pytest.approx(concordance_index_censored(event.astype(bool), time, risk)[0])
    assert 0.6 < c < 0.85


def test_time_dependent_auc_matches_scikit_survival() -> None:
    time, event, risk = _survival(300, seed=2)
    surv = Surv.from_arrays(event.astype(bool), time)
    for horizon in (12.0, 24.0, 36.0):
        reference, _ = cumulative_dynamic_auc(surv, surv, risk, [horizon])
        assert time_dependent_auc(time, event, risk, horizon) == pytest.approx(
            reference[0], abs=1e-6
        )


def test_kaplan_meier_groups_and_logrank() -> None:
    time, event, risk = _survival(300, seed=4)
    groups = np.where(risk > 0, "high", "low")
    km = kaplan_meier_groups(time, event, groups)
    assert km.counts == {"high": int((risk > 0).sum()), "low": int((risk <= 0).sum())}
    assert km.logrank_p < 0.001
    _times, surv = km.curves["high"]
    assert surv[0] == 1.0
    assert all(a >= b for a, b in itertools.pairwise(surv))
    assert km.curves["high"][1][-1] < km.curves["low"][1][-1]
