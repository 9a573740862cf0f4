"""The second-stage models: response SVMs (science A), distant-metastasis Cox model, cut-off and
nomogram (B), deep-feature subtypes and recurrence risk score (D).

Every model saves to files that load without arbitrary code: scikit-learn estimators with skops
(only the types listed in ``SKOPS_TYPES`` are accepted), Cox models as JSON (coefficients,
covariate means and the baseline survival curve).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import skops.io as sio
from lifelines import CoxPHFitter
from lifelines.exceptions import ConvergenceError
from numpy.typing import NDArray
from sklearn.calibration import CalibratedClassifierCV
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from pipeline.kinds import SIGNATURES
from pipeline.stats import youden_cutoff

# types skops must be told to trust, beyond its defaults; nothing else is loaded
SKOPS_TYPES = frozenset(
    {
        "sklearn.calibration._CalibratedClassifier",
        "sklearn.calibration._SigmoidCalibration",
        "sklearn.model_selection._split.StratifiedKFold",
    }
)
SVM_GRID = {"svm__C": [0.1, 1.0, 10.0, 100.0], "svm__gamma": ["scale", 0.01, 0.1, 1.0]}


class ModelFileError(ValueError):
    """A model file is missing, of another kind, or holds types we did not write."""


def save_estimator(estimator: Any, path: Path) -> None:
    """Write a scikit-learn estimator with skops."""
    sio.dump(estimator, path)


def load_estimator(path: Path) -> Any:
    """Load what :func:`save_estimator` wrote; refuses files holding other types."""
    if not path.is_file():
        raise ModelFileError(f"model file {path} does not exist")
    untrusted = set(sio.get_untrusted_types(file=path))
    unexpected = untrusted - SKOPS_TYPES
    if unexpected:
        raise ModelFileError(f"{path} holds types larc does not write: {sorted(unexpected)}")
    return sio.load(path, trusted=sorted(untrusted))


def feature_columns(name: str, cr_features: Sequence[str] = ()) -> list[str]:
    """Columns of a named feature set (science A).

    A signature name (``post_DWI``); ``a+b`` for pairs; ``T2`` / ``DWI`` / ``CE`` for pre, post
    and delta of one sequence; ``FDL`` for all six; ``CR`` for the selected clinical-radiological
    features; ``CRD`` for FDL + CR."""
    if name == "FDL":
        return list(SIGNATURES)
    if name == "CR":
        if not cr_features:
            raise ValueError("the CR feature set needs selected clinical-radiological features")
        return list(cr_features)
    if name == "CRD":
        return [*SIGNATURES, *feature_columns("CR", cr_features)]
    if name in ("T2", "DWI", "CE"):
        return [f"pre_{name}", f"post_{name}", f"delta_{name}"]
    parts = name.split("+")
    unknown = [p for p in parts if p not in SIGNATURES]
    if unknown:
        raise ValueError(f"unknown feature set {name!r}")
    return parts


def add_deltas(table: pd.DataFrame) -> pd.DataFrame:
    """Delta signature = pre - post, per sequence (science A)."""
    out = table.copy()
    for sequence in ("T2", "DWI", "CE"):
        if f"pre_{sequence}" in out and f"post_{sequence}" in out:
            out[f"delta_{sequence}"] = out[f"pre_{sequence}"] - out[f"post_{sequence}"]
    return out


def fit_response_svm(x: NDArray[np.float64], y: NDArray[np.int64], seed: int = 0) -> Any:
    """RBF-SVM on standardised features; C and gamma by stratified 5-fold CV (AUC); then
    probabilities calibrated (sigmoid) by another 5-fold CV."""
    folds = min(5, int(np.bincount(y).min()))
    if folds < 2:
        raise ValueError("each class needs at least two patients to fit the SVM")
    base = Pipeline([("scale", StandardScaler()), ("svm", SVC(kernel="rbf"))])
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    search = GridSearchCV(base, SVM_GRID, scoring="roc_auc", cv=cv).fit(x, y)
    calibrated = CalibratedClassifierCV(
        search.best_estimator_,
        method="sigmoid",
        cv=StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed + 1),
    )
    return calibrated.fit(x, y)


# -- survival ---------------------------------------------------------------------------------


class CoxFitError(ValueError):
    """A Cox model could not be fitted on the data given (lifelines did not converge)."""


@dataclass
class CoxModel:
    """A fitted Cox PH model in plain numbers: S(t | x) = S0(t) ** exp(beta . (x - mean))."""

    covariates: list[str]
    coefficients: list[float]
    means: list[float]
    times: list[float]
    baseline_survival: list[float]
    concordance: float

    @classmethod
    def fit(
        cls, table: pd.DataFrame, duration: str, event: str, penalizer: float = 0.01
    ) -> CoxModel:
        """Fit with lifelines on ``table`` (covariates + the two outcome columns)."""
        covariates = [c for c in table.columns if c not in (duration, event)]
        try:
            fitter = CoxPHFitter(penalizer=penalizer).fit(
                table, duration_col=duration, event_col=event
            )
        except (ConvergenceError, np.linalg.LinAlgError) as exc:
            raise CoxFitError(
                f"the Cox model on {', '.join(covariates)} did not converge on {len(table)} "
                f"patients with {int(table[event].sum())} events: {str(exc).splitlines()[0]}"
            ) from exc
        baseline = fitter.baseline_survival_
        return cls(
            covariates=covariates,
            coefficients=[float(fitter.params_[c]) for c in covariates],
            means=[float(fitter._norm_mean[c]) for c in covariates],
            times=[float(t) for t in baseline.index],
            baseline_survival=[float(s) for s in baseline.iloc[:, 0]],
            concordance=float(fitter.concordance_index_),
        )

    def linear_predictor(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        """beta . (x - mean) for rows of ``x`` (columns in ``covariates`` order)."""
        values = np.atleast_2d(np.asarray(x, float))
        return np.asarray((values - np.asarray(self.means)) @ np.asarray(self.coefficients))

    def survival_at(self, x: NDArray[np.float64], t: float) -> NDArray[np.float64]:
        """S(t | x) for rows of ``x``."""
        index = np.searchsorted(np.asarray(self.times), t, side="right") - 1
        s0 = 1.0 if index < 0 else self.baseline_survival[index]
        return np.asarray(s0 ** np.exp(self.linear_predictor(x)))

    def save(self, path: Path) -> None:
        """Write as JSON."""
        path.write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, path: Path) -> CoxModel:
        """Read what :meth:`save` wrote."""
        if not path.is_file():
            raise ModelFileError(f"model file {path} does not exist")
        return cls(**json.loads(path.read_text()))


def horizon_outcome(
    time: NDArray[np.float64], event: NDArray[np.int64], horizon: float
) -> NDArray[np.float64]:
    """1 = event by ``horizon``, 0 = event-free beyond it, NaN = censored before (unknown)."""
    out = np.full(len(time), np.nan)
    out[(event == 1) & (time <= horizon)] = 1.0
    out[time > horizon] = 0.0
    out[(event == 0) & (time >= horizon)] = 0.0
    return out


@dataclass
class RiskCutoff:
    """High/low risk from a linear predictor, cut at the Youden point at ``horizon``."""

    cutoff: float
    horizon_months: float

    @classmethod
    def fit(
        cls,
        risk: NDArray[np.float64],
        time: NDArray[np.float64],
        event: NDArray[np.int64],
        horizon: float,
    ) -> RiskCutoff:
        """Youden-optimal cut-off of the time-dependent ROC at ``horizon`` on training data."""
        known = horizon_outcome(time, event, horizon)
        keep = ~np.isnan(known)
        if len(set(known[keep].tolist())) < 2:
            raise ValueError(f"no events (or no event-free patients) at {horizon} months")
        return cls(youden_cutoff(known[keep].astype(int), risk[keep]), horizon)

    def group(self, risk: NDArray[np.float64]) -> list[str]:
        """ "high" at or above the cut-off, else "low"."""
        return ["high" if r >= self.cutoff else "low" for r in np.atleast_1d(risk)]


def nomogram_points(model: CoxModel, ranges: Mapping[str, tuple[float, float]]) -> dict[str, Any]:
    """The points table of a Cox nomogram: the covariate with the widest effect over its range
    scores 0-100; every other scales to it; total points map to the linear predictor."""
    effects = {
        name: abs(beta) * (ranges[name][1] - ranges[name][0])
        for name, beta in zip(model.covariates, model.coefficients, strict=True)
    }
    widest = max(effects.values()) or 1.0
    scale = 100.0 / widest
    table = {}
    for name, beta in zip(model.covariates, model.coefficients, strict=True):
        low, high = ranges[name]
        ticks = np.linspace(low, high, 5)
        start = low if beta >= 0 else high
        table[name] = {
            "values": ticks.tolist(),
            "points": [float(scale * beta * (v - start)) for v in ticks],
        }
    return {"points_per_unit_linear_predictor": scale, "variables": table}


# -- subtypes (science D) ---------------------------------------------------------------------


def fit_subtypes(features: NDArray[np.float64], k: int = 3, seed: int = 0) -> Pipeline:
    """Standardise, reduce to at most 10 principal components, cluster into ``k`` subtypes."""
    components = max(1, min(10, features.shape[0] - 1, features.shape[1]))
    model = Pipeline(
        [
            ("scale", StandardScaler()),
            ("pca", PCA(n_components=components, random_state=seed)),
            ("kmeans", KMeans(n_clusters=k, n_init=10, random_state=seed)),
        ]
    )
    return model.fit(features)


def order_subtypes(
    labels: NDArray[np.int64], time: NDArray[np.float64], event: NDArray[np.int64], k: int
) -> list[int]:
    """Cluster indices ordered from the highest to the lowest event rate per month of follow-up
    (subtype 1 = the highest-risk cluster)."""

    def rate(c: int) -> float:
        inside = labels == c
        exposure = float(time[inside].sum())
        return float(event[inside].sum()) / exposure if exposure > 0 else math.inf

    return sorted(range(k), key=rate, reverse=True)
