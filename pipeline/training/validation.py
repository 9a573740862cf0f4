"""Each output's validation at training time (:mod:`pipeline.validation` says how it is used).

Out-of-fold, on the training patients: the response SVMs and the Cox models are fitted again in
k folds on the training patients' out-of-fold signatures and DL-probs (the networks' own
cross-validation), and each patient is scored by the fold that did not see it. The recurrence
subtypes use deep features of the final DM networks, which saw these patients: that estimate is
optimistic and says so. Held-out: the bundle's own scores of the held-out patients
(:func:`score_estimates`, which also gives a site's external estimates).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import KFold, StratifiedKFold

from pipeline.envelope import SequenceFacts
from pipeline.models import CoxFitError, CoxModel, fit_response_svm, fit_subtypes
from pipeline.stats import auc_delong, harrell_c_ci
from pipeline.training.cohort import good_response, number
from pipeline.validation import OUTPUTS, Estimate, output_entry

log = logging.getLogger(__name__)
N_BOOT = 300


def binary_estimate(cohort: str, y: Sequence[int], p: Sequence[float], note: str = "") -> (
        Estimate | None):  # fmt: skip
    """AUC with DeLong's 95 % CI; ``None`` without both outcomes."""
    labels = np.asarray(y, int)
    if len(set(labels.tolist())) < 2:
        return None
    est = auc_delong(labels, np.asarray(p, float))
    good = int(labels.sum())
    return Estimate(cohort, est.auc, est.low, est.high, len(labels), good, len(labels) - good,
                    note)  # fmt: skip


def survival_estimate(
    cohort: str, time: Sequence[float], event: Sequence[int], risk: Sequence[float], note: str = ""
) -> Estimate | None:
    """Harrell's C with a bootstrap 95 % CI; ``None`` without events."""
    e = np.asarray(event, int)
    if e.sum() == 0 or len(e) < 3:
        return None
    c, low, high = harrell_c_ci(np.asarray(time, float), e, np.asarray(risk, float), n_boot=N_BOOT)
    return Estimate(cohort, c, low, high, len(e), int(e.sum()), note=note)


def _response_oof(
    table: pd.DataFrame, y: pd.Series, train: list[str], models: Mapping[str, Any], folds: int,
    seed: int,
) -> dict[str, Estimate]:  # fmt: skip
    out = {}
    for name, entry in models.items():
        columns = entry["features"]
        usable = [p for p in train if not np.isnan(y[p]) and table.loc[p, columns].notna().all()]
        labels = y[usable].astype(int).to_numpy()
        k = min(folds, int(np.bincount(labels, minlength=2).min()) // 2)
        if k < 2:
            continue
        x = table.loc[usable, columns].to_numpy(float)
        prob = np.full(len(usable), np.nan)
        for fit, score in StratifiedKFold(k, shuffle=True, random_state=seed).split(x, labels):
            model = fit_response_svm(x[fit], labels[fit], seed)
            prob[score] = model.predict_proba(x[score])[:, 1]
        found = binary_estimate("out_of_fold", labels.tolist(), prob.tolist())
        if found:
            out[f"response_{name}"] = found
    return out


def _cox_oof(
    frame: pd.DataFrame, folds: int, seed: int, penalizer: float = 0.01
) -> Estimate | None:
    """C-index of a Cox model on ``frame``'s covariates (columns ``time``, ``event``), each
    patient's linear predictor from the fold fitted without it."""
    if len(frame) < 2 * folds or frame["event"].sum() < folds:
        return None
    lp = np.full(len(frame), np.nan)
    for fit, score in KFold(folds, shuffle=True, random_state=seed).split(frame):
        part = frame.iloc[fit]
        if part["event"].sum() == 0:
            return None
        try:
            model = CoxModel.fit(part, "time", "event", penalizer=penalizer)
        except CoxFitError as exc:  # no estimate: the output is not validated, training goes on
            log.warning("no out-of-fold estimate: %s", exc)
            return None
        lp[score] = model.linear_predictor(frame.iloc[score][model.covariates].to_numpy(float))
    return survival_estimate("out_of_fold", frame["time"].tolist(),
                             frame["event"].astype(int).tolist(), lp.tolist())  # fmt: skip


def _recurrence_oof(
    deep: Mapping[str, np.ndarray], outcomes: pd.DataFrame, train: list[str], k: int, folds: int,
    seed: int,
) -> Estimate | None:  # fmt: skip
    rows = [p for p in train if p in deep and not np.isnan(outcomes.loc[p, "rfs_time_months"])]
    if len(rows) < 2 * folds:
        return None
    x = np.stack([deep[p] for p in rows])
    time_ = outcomes.loc[rows, "rfs_time_months"].to_numpy()
    event = outcomes.loc[rows, "rfs_event"].astype(int).to_numpy()
    lp = np.full(len(rows), np.nan)
    for fit, score in KFold(folds, shuffle=True, random_state=seed).split(x):
        if event[fit].sum() == 0:
            return None
        model = fit_subtypes(x[fit], k, seed)
        comps = model[:-1].transform(x[fit])
        columns = [f"pc{i + 1}" for i in range(comps.shape[1])]
        frame = pd.DataFrame(comps, columns=columns).assign(time=time_[fit], event=event[fit])
        try:
            cox = CoxModel.fit(frame, "time", "event", penalizer=0.1)
        except CoxFitError as exc:
            log.warning("no out-of-fold estimate of the recurrence model: %s", exc)
            return None
        lp[score] = cox.linear_predictor(model[:-1].transform(x[score]))
    return survival_estimate(
        "out_of_fold", time_.tolist(), event.tolist(), lp.tolist(),
        note="deep features of DM networks trained on these patients: optimistic",
    )  # fmt: skip


def out_of_fold_estimates(
    table: pd.DataFrame,
    outcomes: pd.DataFrame,
    train: list[str],
    manifest: Mapping[str, Any],
    deep: Mapping[str, np.ndarray],
    folds: int,
    seed: int,
    nomogram_factors: Sequence[str] = (),
) -> dict[str, Estimate]:
    """Each fitted output's out-of-fold estimate on the training patients."""
    out = _response_oof(table, outcomes["good_response"], train,
                        manifest["response"]["models"], folds, seed)  # fmt: skip
    base = pd.DataFrame({"time": outcomes["dm_time_months"], "event": outcomes["dm_event"]})
    dm = manifest.get("dm") or {}
    if dm:
        columns = list(dm.get("coefficients") or ["dl_prob"])  # the DLRS model's covariates
        frame = table[columns].join(base).loc[train].dropna()
        if (found := _cox_oof(frame[[*columns, "time", "event"]], folds, seed)) is not None:
            out["distant_metastasis"] = found
    if dm.get("nomogram"):
        frame = table.loc[train, list(nomogram_factors)].join(base.loc[train]).dropna()
        if (found := _cox_oof(frame, folds, seed)) is not None:
            out["nomogram"] = found
    subtypes = manifest.get("subtypes")
    if subtypes:
        found = _recurrence_oof(deep, outcomes, train, subtypes["k"], folds, seed)
        if found is not None:
            out["recurrence"] = found
    return out


# each output's entry in a manifest's held-out ``metrics``
METRIC_KEYS = {"response_FDL": "auc_FDL", "response_CR": "auc_CR", "response_CRD": "auc_CRD",
               "distant_metastasis": "c_index_DLRS", "nomogram": "c_index_nomogram",
               "recurrence": "c_index_RRS"}  # fmt: skip


def validation_record(
    out_of_fold: Mapping[str, Estimate],
    held_out: Mapping[str, Estimate],
    outputs: Sequence[str],
    min_events: int,
) -> dict[str, Any]:
    """The manifest's ``validation``."""
    record: dict[str, Any] = {"min_events": min_events, "outputs": {}}
    for name in outputs:
        estimates = [e for e in (out_of_fold.get(name), held_out.get(name)) if e is not None]
        record["outputs"][name] = output_entry(name, estimates, min_events)
        entry = record["outputs"][name]
        log.info("%s: %s (%s)", name, entry["status"], entry["reason"])
    return record


def response_pairs(
    scores: Mapping[str, Mapping[str, Any]], rows: Mapping[str, Mapping[str, str]], model: str
) -> tuple[list[int], list[float]]:
    """(observed good response, P(good response) of ``model``) of the patients that have both."""
    labels, probs = [], []
    for p, s in scores.items():
        label = good_response(rows[p])
        if f"response_{model}" in s and label is not None:
            labels.append(int(label))
            probs.append(float(s[f"response_{model}"]["p_good_response"]))
    return labels, probs


def score_estimates(
    scores: Mapping[str, Mapping[str, Any]], rows: Mapping[str, Mapping[str, str]], cohort: str
) -> dict[str, Estimate]:
    """Each output's estimate on scored patients (every output scored, none withheld): the
    held-out patients at training, a site's external ones with larc evaluate --validate."""
    out: dict[str, Estimate] = {}
    for name in ("FDL", "CR", "CRD"):
        found = binary_estimate(cohort, *response_pairs(scores, rows, name))
        if found is not None:
            out[f"response_{name}"] = found
    survival = {
        "distant_metastasis": ("dm", lambda s: (s.get("distant_metastasis") or {}).get("dlrs")),
        # the nomogram's risk: one minus its 3-year DM-free survival
        "nomogram": ("dm", lambda s: None if "nomogram_dmfs_3y" not in (
            dm := s.get("distant_metastasis") or {}) else 1 - dm["nomogram_dmfs_3y"]),
        "recurrence": ("rfs", lambda s: (s.get("recurrence") or {}).get("rrs")),
    }  # fmt: skip
    for name, (prefix, risk_of) in survival.items():
        t, e, r = [], [], []
        for p, s in scores.items():
            time_, event, risk = (number(rows[p].get(f"{prefix}_time_months")),
                                  number(rows[p].get(f"{prefix}_event")), risk_of(s))  # fmt: skip
            if risk is not None and not np.isnan(time_) and not np.isnan(event):
                t.append(time_)
                e.append(int(event))
                r.append(float(risk))
        if (found := survival_estimate(cohort, t, e, r)) is not None:
            out[name] = found
    return out


# a subgroup smaller than this is not judged (its CI would say nothing)
SUBGROUP_MIN = 10
# a subgroup's estimate at or below this, where all patients' is above it, is a failure mode
WEAK = 0.6


def subgroups(acquisition: Mapping[str, Mapping[str, SequenceFacts]]) -> dict[str, list[str]]:
    """Patients by subgroup, from the facts of each patient's baseline T2W: manufacturer, field
    strength, and tumour volume below or at/above the median. ``acquisition``: patient ->
    series name (``baseline T2W``) -> facts (:attr:`pipeline.case.CaseInputs.acquisition`)."""
    groups: dict[str, list[str]] = {}
    volumes = {}
    for patient, series in sorted(acquisition.items()):
        facts = series.get("baseline T2W")
        if facts is None:
            continue
        if facts.manufacturer:
            groups.setdefault(f"manufacturer {facts.manufacturer}", []).append(patient)
        if facts.field_strength_t is not None:
            groups.setdefault(f"{facts.field_strength_t:g} T", []).append(patient)
        if facts.tumour_volume_ml is not None:
            volumes[patient] = float(facts.tumour_volume_ml)
    if len(volumes) >= 2 * SUBGROUP_MIN:
        median = float(np.median(list(volumes.values())))
        groups[f"baseline tumour volume below {median:.1f} ml"] = sorted(
            p for p, v in volumes.items() if v < median
        )
        groups[f"baseline tumour volume {median:.1f} ml or more"] = sorted(
            p for p, v in volumes.items() if v >= median
        )
    return groups


def failure_modes(
    scores: Mapping[str, Mapping[str, Any]],
    rows: Mapping[str, Mapping[str, str]],
    acquisition: Mapping[str, Mapping[str, SequenceFacts]],
    overall: Mapping[str, Estimate],
) -> list[str]:
    """Where an output does clearly worse than on all the scored patients (``overall``: their
    :func:`score_estimates`): a subgroup (see :func:`subgroups`) of at least SUBGROUP_MIN
    patients whose AUC or C-index is at or below WEAK while all patients' is above it, or whose
    CI lies wholly below all patients' value. Each as a sentence for the model card."""
    if not overall:
        return []
    cohort = next(iter(overall.values())).cohort
    found = []
    scored = {p: acquisition[p] for p in scores if p in acquisition}
    for label, patients in subgroups(scored).items():
        if len(patients) < SUBGROUP_MIN or len(patients) == len(scores):
            continue
        for name, est in score_estimates({p: scores[p] for p in patients}, rows, cohort).items():
            whole = overall.get(name)
            if whole is None or est.n < SUBGROUP_MIN:
                continue
            if est.value <= WEAK < whole.value or est.high < whole.value - 1e-9:
                metric, what = OUTPUTS[name]
                found.append(
                    f"{what}: {est.words(metric)} for {label}, against {whole.value:.2f} on "
                    f"all {whole.n} patients"
                )
    return found
