"""Statistics of model evaluation: binary (AUC with DeLong and bootstrap CIs, DeLong test,
threshold metrics, calibration, decision curves, NRI/IDI) and survival (Harrell's C with CI,
time-dependent AUC, Kaplan-Meier with log-rank).

References: DeLong, DeLong & Clarke-Pearson, Biometrics 1988 (AUC variance and comparison;
computed with the midrank algorithm of Sun & Xu, IEEE SPL 2014); Uno et al., JASA 2007 and
Hung & Chiang 2010 (cumulative/dynamic time-dependent AUC with inverse-probability-of-censoring
weights); Vickers & Elkin 2006 (decision curves); Pencina et al. 2008 (NRI, IDI); Naeini et al.
2015 (expected calibration error).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from lifelines import KaplanMeierFitter
from lifelines.statistics import multivariate_logrank_test
from lifelines.utils import concordance_index
from numpy.typing import ArrayLike, NDArray
from scipy import stats as st

FloatArray = NDArray[np.float64]


def _binary(y: ArrayLike) -> NDArray[np.int64]:
    labels = np.asarray(y).astype(np.int64)
    if set(np.unique(labels).tolist()) != {0, 1}:
        raise ValueError("the outcome needs both classes (0 and 1)")
    return labels


def _midranks(x: FloatArray) -> FloatArray:
    order = np.argsort(x, kind="mergesort")
    ranked = x[order]
    n = len(x)
    ranks = np.zeros(n)
    i = 0
    while i < n:
        j = i
        while j < n and ranked[j] == ranked[i]:
            j += 1
        ranks[i:j] = 0.5 * (i + j - 1) + 1
        i = j
    out = np.empty(n)
    out[order] = ranks
    return out


def _delong_components(y: NDArray[np.int64], scores: FloatArray) -> tuple[FloatArray, ...]:
    """AUCs (k,) and the DeLong covariance (k, k) of k score rows over the same patients."""
    positives, negatives = scores[:, y == 1], scores[:, y == 0]
    m, n = positives.shape[1], negatives.shape[1]
    k = scores.shape[0]
    tx, ty, tz = np.empty((k, m)), np.empty((k, n)), np.empty((k, m + n))
    for r in range(k):
        tx[r] = _midranks(positives[r])
        ty[r] = _midranks(negatives[r])
        tz[r] = _midranks(np.concatenate([positives[r], negatives[r]]))
    aucs = tz[:, :m].sum(axis=1) / (m * n) - (m + 1.0) / (2.0 * n)
    v01 = (tz[:, :m] - tx) / n  # per positive: share of negatives below
    v10 = 1.0 - (tz[:, m:] - ty) / m  # per negative: share of positives above
    sx = np.atleast_2d(np.cov(v01))
    sy = np.atleast_2d(np.cov(v10))
    return aucs, sx / m + sy / n


@dataclass(frozen=True)
class AucEstimate:
    """An AUC with its standard error and confidence interval."""

    auc: float
    se: float
    low: float
    high: float
    method: str


def auc_delong(y: ArrayLike, scores: ArrayLike, level: float = 0.95) -> AucEstimate:
    """AUC with DeLong's standard error and a normal CI clipped to [0, 1]."""
    labels = _binary(y)
    aucs, cov = _delong_components(labels, np.asarray(scores, dtype=float)[None])
    se = float(np.sqrt(max(cov[0, 0], 0.0)))
    z = st.norm.ppf(0.5 + level / 2)
    auc = float(aucs[0])
    return AucEstimate(auc, se, max(0.0, auc - z * se), min(1.0, auc + z * se), "DeLong")


@dataclass(frozen=True)
class DelongTest:
    """Two correlated AUCs (same patients) compared by DeLong's test."""

    auc_a: float
    auc_b: float
    difference: float
    se: float
    z: float
    p_value: float


def delong_test(y: ArrayLike, scores_a: ArrayLike, scores_b: ArrayLike) -> DelongTest:
    """DeLong's test of AUC(a) = AUC(b) for two scores of the same patients (two-sided)."""
    labels = _binary(y)
    both = np.vstack([np.asarray(scores_a, float), np.asarray(scores_b, float)])
    aucs, cov = _delong_components(labels, both)
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    diff = float(aucs[0] - aucs[1])
    if var <= 0:
        return DelongTest(float(aucs[0]), float(aucs[1]), diff, 0.0, 0.0, 1.0)
    z = diff / np.sqrt(var)
    return DelongTest(
        float(aucs[0]),
        float(aucs[1]),
        diff,
        float(np.sqrt(var)),
        float(z),
        float(2 * st.norm.sf(abs(z))),
    )


def bootstrap_ci(
    statistic: Callable[..., float],
    *arrays: ArrayLike,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    stratify: ArrayLike | None = None,
) -> tuple[float, float]:
    """Percentile CI of ``statistic(*arrays)`` over patients resampled with replacement.

    With ``stratify`` (e.g. the outcome) each class is resampled within itself, so every
    replicate keeps both classes. Replicates where the statistic fails are skipped."""
    data = [np.asarray(a) for a in arrays]
    n = len(data[0])
    rng = np.random.default_rng(seed)
    groups = (
        [np.flatnonzero(np.asarray(stratify) == g) for g in np.unique(stratify)]
        if stratify is not None
        else [np.arange(n)]
    )
    values = []
    for _ in range(n_boot):
        pick = np.concatenate([rng.choice(g, size=len(g), replace=True) for g in groups])
        try:
            values.append(statistic(*(d[pick] for d in data)))
        except (ValueError, ZeroDivisionError):
            continue
    if not values:
        raise ValueError("no bootstrap replicate could be computed")
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def auc(y: ArrayLike, scores: ArrayLike) -> float:
    """The ROC AUC (Mann-Whitney), ties counted half."""
    return auc_delong(y, scores).auc


def youden_cutoff(y: ArrayLike, scores: ArrayLike) -> float:
    """The score threshold maximising sensitivity + specificity - 1 (scores >= cut-off are
    positive)."""
    labels = _binary(y)
    values = np.asarray(scores, float)
    best, cut = -1.0, float(np.median(values))
    for threshold in np.unique(values):
        predicted = values >= threshold
        sens = predicted[labels == 1].mean()
        spec = (~predicted[labels == 0]).mean()
        if sens + spec - 1 > best:
            best, cut = sens + spec - 1, float(threshold)
    return cut


def threshold_metrics(y: ArrayLike, probabilities: ArrayLike, threshold: float) -> dict[str, float]:
    """Accuracy, sensitivity, specificity, PPV, NPV and F1 when p >= ``threshold`` is positive."""
    labels = _binary(y)
    predicted = np.asarray(probabilities, float) >= threshold
    tp = float(np.sum(predicted & (labels == 1)))
    tn = float(np.sum(~predicted & (labels == 0)))
    fp = float(np.sum(predicted & (labels == 0)))
    fn = float(np.sum(~predicted & (labels == 1)))

    def ratio(a: float, b: float) -> float:
        return a / b if b else float("nan")

    return {
        "threshold": float(threshold),
        "accuracy": ratio(tp + tn, tp + tn + fp + fn),
        "sensitivity": ratio(tp, tp + fn),
        "specificity": ratio(tn, tn + fp),
        "ppv": ratio(tp, tp + fp),
        "npv": ratio(tn, tn + fn),
        "f1": ratio(2 * tp, 2 * tp + fp + fn),
    }


@dataclass(frozen=True)
class Calibration:
    """Reliability curve (mean predicted vs observed per bin), Brier score and ECE."""

    predicted: list[float]
    observed: list[float]
    counts: list[int]
    brier: float
    ece: float


def calibration(y: ArrayLike, probabilities: ArrayLike, bins: int = 10) -> Calibration:
    """Equal-width bins over [0, 1]; ECE = sum over bins of |observed - predicted| x share."""
    labels = _binary(y).astype(float)
    p = np.clip(np.asarray(probabilities, float), 0, 1)
    which = np.minimum((p * bins).astype(int), bins - 1)
    predicted, observed, counts = [], [], []
    ece = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            predicted.append(float(p[inside].mean()))
            observed.append(float(labels[inside].mean()))
            counts.append(int(inside.sum()))
            ece += abs(observed[-1] - predicted[-1]) * inside.mean()
    return Calibration(predicted, observed, counts, float(np.mean((p - labels) ** 2)), float(ece))


def decision_curve(
    y: ArrayLike, probabilities: ArrayLike, thresholds: Sequence[float] | None = None
) -> dict[str, list[float]]:
    """Net benefit of treating when p >= t, of treating all, and of none (0), per threshold."""
    labels = _binary(y)
    p = np.asarray(probabilities, float)
    ts = np.asarray(thresholds if thresholds is not None else np.arange(0.01, 0.991, 0.01))
    n = len(labels)
    prevalence = labels.mean()
    model, treat_all = [], []
    for t in ts:
        treated = p >= t
        tp = np.sum(treated & (labels == 1)) / n
        fp = np.sum(treated & (labels == 0)) / n
        model.append(float(tp - fp * t / (1 - t)))
        treat_all.append(float(prevalence - (1 - prevalence) * t / (1 - t)))
    return {
        "threshold": ts.tolist(),
        "model": model,
        "treat_all": treat_all,
        "none": [0.0] * len(ts),
    }


def nri_idi(
    y: ArrayLike, p_old: ArrayLike, p_new: ArrayLike, cutoffs: Sequence[float] = ()
) -> dict[str, float]:
    """Net reclassification improvement (categorical at ``cutoffs`` when given, and
    continuous) and integrated discrimination improvement of ``p_new`` over ``p_old``."""
    labels = _binary(y)
    old, new = np.asarray(p_old, float), np.asarray(p_new, float)
    events, nonevents = labels == 1, labels == 0
    out: dict[str, float] = {}
    up, down = new > old, new < old
    out["nri_continuous"] = float(
        (up[events].mean() - down[events].mean()) + (down[nonevents].mean() - up[nonevents].mean())
    )
    if cutoffs:
        edges = np.asarray(sorted(cutoffs))
        old_cat, new_cat = np.searchsorted(edges, old), np.searchsorted(edges, new)
        up, down = new_cat > old_cat, new_cat < old_cat
        out["nri_categorical"] = float(
            (up[events].mean() - down[events].mean())
            + (down[nonevents].mean() - up[nonevents].mean())
        )
    out["idi"] = float(
        (new[events].mean() - old[events].mean()) - (new[nonevents].mean() - old[nonevents].mean())
    )
    return out


# -- survival ---------------------------------------------------------------------------------


def harrell_c(time: ArrayLike, event: ArrayLike, risk: ArrayLike) -> float:
    """Harrell's C: the share of comparable pairs whose higher risk fails first."""
    return float(
        concordance_index(np.asarray(time, float), -np.asarray(risk, float), np.asarray(event))
    )


def harrell_c_ci(
    time: ArrayLike, event: ArrayLike, risk: ArrayLike, n_boot: int = 1000, seed: int = 0
) -> tuple[float, float, float]:
    """(C, low, high): Harrell's C with a 95 % bootstrap percentile interval."""
    c = harrell_c(time, event, risk)
    low, high = bootstrap_ci(harrell_c, time, event, risk, n_boot=n_boot, seed=seed)
    return c, low, high


def _censoring_survival(
    time: FloatArray, event: NDArray[np.int64]
) -> Callable[[FloatArray], FloatArray]:
    km = KaplanMeierFitter().fit(time, 1 - event)

    def survival(t: FloatArray) -> FloatArray:
        return np.asarray(km.survival_function_at_times(t).to_numpy(), float)

    return survival


def time_dependent_auc(time: ArrayLike, event: ArrayLike, risk: ArrayLike, horizon: float) -> float:
    """Cumulative/dynamic AUC at ``horizon``: cases failed by then (weighted by 1 / G(T-)),
    controls still event-free after it (weighted by 1 / G(horizon)); G = Kaplan-Meier of
    censoring on the same patients."""
    t = np.asarray(time, float)
    e = np.asarray(event).astype(np.int64)
    r = np.asarray(risk, float)
    cases = (t <= horizon) & (e == 1)
    controls = t > horizon
    if not cases.any() or not controls.any():
        raise ValueError(f"no cases or no controls at {horizon}")
    g = _censoring_survival(t, e)
    w_cases = 1.0 / np.clip(g(t[cases] - 1e-9), 1e-12, None)
    w_control = 1.0 / max(float(g(np.asarray([horizon]))[0]), 1e-12)
    rc, rk = r[cases][:, None], r[controls][None, :]
    concordant = (rc > rk) + 0.5 * (rc == rk)
    numerator = float((w_cases[:, None] * w_control * concordant).sum())
    denominator = float(w_cases.sum() * w_control * controls.sum())
    return numerator / denominator


@dataclass(frozen=True)
class KaplanMeierGroups:
    """Kaplan-Meier curves per risk group and the log-rank test between them."""

    curves: dict[str, tuple[list[float], list[float]]]  # group: (times, survival)
    logrank_p: float
    counts: dict[str, int]


def kaplan_meier_groups(time: ArrayLike, event: ArrayLike, groups: ArrayLike) -> KaplanMeierGroups:
    """Kaplan-Meier per group and the (multi-group) log-rank p-value."""
    t, e, g = np.asarray(time, float), np.asarray(event).astype(int), np.asarray(groups).astype(str)
    curves, counts = {}, {}
    for name in sorted(set(g.tolist())):
        inside = g == name
        km = KaplanMeierFitter().fit(t[inside], e[inside])
        sf = km.survival_function_
        curves[name] = (sf.index.to_numpy().tolist(), sf.iloc[:, 0].to_numpy().tolist())
        counts[name] = int(inside.sum())
    p = float(multivariate_logrank_test(t, g, e).p_value) if len(curves) > 1 else float("nan")
    return KaplanMeierGroups(curves, p, counts)
