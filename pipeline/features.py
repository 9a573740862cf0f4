"""Clinical and radiological features: parsing, measured fallbacks, and science A's selection of
the clinical-radiological (CR) features.

Radiologist-read values come from the outcomes CSV (training) or the worklist (scoring); where a
radiologist gave no longest diameter, wall thickness or volume, the value measured from the VOI
(:func:`pipeline.preprocess.measure`) is used and reported as measured.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import statsmodels.api as sm

from pipeline.feature_names import CANDIDATES, CLINICAL, MEASURABLE, RADIOLOGY, parse_value
from pipeline.preprocess import TumourFeatures

log = logging.getLogger(__name__)
__all__ = ["CANDIDATES", "CLINICAL", "MEASURABLE", "RADIOLOGY", "parse_value"]


def feature_row(
    row: Mapping[str, object], measured: Mapping[str, TumourFeatures] | None = None
) -> tuple[dict[str, float], list[str]]:
    """(features, names filled from VOI measurements) for one patient."""
    out: dict[str, float] = {}
    filled: list[str] = []
    for name in (*CANDIDATES, "ypn_stage"):
        out[name] = parse_value(name, row.get(name))
    for prefix, timepoint in (("pre", "baseline"), ("post", "restaging")):
        features = (measured or {}).get(timepoint)
        if features is None:
            continue
        for short, attribute in MEASURABLE.items():
            name = f"{prefix}_{short}"
            if math.isnan(out[name]):
                out[name] = float(getattr(features, attribute))
                filled.append(name)
    return out, filled


@dataclass(frozen=True)
class CrSelection:
    """Science A's two-step selection: univariate p < 0.10, then multivariate p < 0.05."""

    selected: tuple[str, ...]
    univariate_p: dict[str, float]
    multivariate_p: dict[str, float]


def _logit_pvalues(x: pd.DataFrame, y: np.ndarray) -> dict[str, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = sm.Logit(y, sm.add_constant(x, has_constant="add")).fit(disp=0, maxiter=200)
    return {k: float(v) for k, v in fit.pvalues.items() if k != "const"}


def select_cr_features(
    table: pd.DataFrame,
    y: Sequence[int],
    candidates: Sequence[str] = CANDIDATES,
    p_univariate: float = 0.10,
    p_multivariate: float = 0.05,
) -> CrSelection:
    """Screen ``candidates`` by univariate logistic regression, keep those still significant in
    a multivariate one (standardised; columns with missing values or no spread are skipped)."""
    labels = np.asarray(y, dtype=float)
    usable = [c for c in candidates if c in table and table[c].notna().all() and table[c].std() > 0]
    z = (table[usable] - table[usable].mean()) / table[usable].std()
    uni: dict[str, float] = {}
    for name in usable:
        try:
            uni[name] = _logit_pvalues(z[[name]], labels)[name]
        except (np.linalg.LinAlgError, ValueError) as exc:  # perfect separation and the like
            log.info("CR selection: %s skipped (%s)", name, exc)
    screened = [n for n, p in uni.items() if p < p_univariate]
    multi: dict[str, float] = {}
    selected = list(screened)
    while selected:  # backward: drop the least significant until all pass
        try:
            multi = _logit_pvalues(z[selected], labels)
        except (np.linalg.LinAlgError, ValueError):
            multi = {n: uni[n] for n in selected}
        worst = max(selected, key=lambda n: multi.get(n, 1.0))
        if multi.get(worst, 1.0) < p_multivariate:
            break
        selected.remove(worst)
    if not selected and uni:  # keep the strongest univariate feature rather than nothing
        selected = [min(uni, key=lambda n: uni[n])]
    return CrSelection(tuple(selected), uni, multi)
