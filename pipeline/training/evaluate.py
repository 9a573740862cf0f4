"""``larc evaluate``: a bundle on a labelled cohort -> metrics JSON, PNG figures, one HTML report.

Binary (response): AUC with DeLong and bootstrap 95 % CIs, accuracy / sensitivity / specificity /
F1 at the bundle's threshold, ROC curves, DeLong tests between models, calibration curve, Brier
score, ECE, decision curves, SHAP summary of the FDL SVM. Survival (distant metastasis and
recurrence): Harrell's C with 95 % CI, time-dependent AUC at 1/2/3/5 years, Kaplan-Meier by risk
group / subtype with log-rank p, NRI and IDI of the nomogram versus the clinical model, and the
nomogram's points table.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import html
import json
import logging
import math
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import contextlib

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.metrics import roc_curve

from pipeline.bundle import DM_HORIZON_MONTHS, RESEARCH_USE, RFS_HORIZON_MONTHS, Bundle
from pipeline.case import CaseInputs
from pipeline.features import feature_row
from pipeline.kinds import SIGNATURES
from pipeline.manifest import write_manifest
from pipeline.models import add_deltas, horizon_outcome
from pipeline.stats import (
    auc_delong,
    bootstrap_ci,
    calibration,
    decision_curve,
    delong_test,
    harrell_c_ci,
    kaplan_meier_groups,
    nri_idi,
    threshold_metrics,
    time_dependent_auc,
)
from pipeline.training.bundle import model_card
from pipeline.training.cohort import good_response, number, patient_hash, prepare_cohort
from pipeline.training.predictions import write_predictions
from pipeline.training.validation import failure_modes, score_estimates
from pipeline.validation import revalidate

log = logging.getLogger(__name__)
RESPONSE_MODELS = ("FDL", "CR", "CRD")
HORIZONS_MONTHS = (12.0, 24.0, 36.0, 60.0)


def score_cohort(
    bundle: Bundle,
    cases: Mapping[str, Mapping[str, Sequence[Path]]],
    rows: Mapping[str, Mapping[str, str]],
    held_out_only: bool = False,
    workers: int | None = None,
    cache: Path | None = None,
    prepared: Callable[[int, int], None] | None = None,
) -> tuple[dict[str, dict[str, Any]], dict[str, CaseInputs], dict[str, str]]:
    """(scores, inputs, skipped-with-reason) of every labelled patient."""
    trained = set(bundle.manifest["training_data"].get("train_patients_sha256", []))
    chosen = {
        p: f
        for p, f in cases.items()
        if p in rows and not (held_out_only and patient_hash(p) in trained)
    }
    inputs, failures = prepare_cohort(
        chosen,
        bundle.preprocess,
        SIGNATURES,
        stacks=True,
        cache=cache,
        workers=workers,
        progress=prepared,
    )
    # every output, validated or not: this is the validation
    scores = {p: bundle.score(inputs[p], rows[p], require_validated=False) for p in sorted(inputs)}
    return scores, inputs, failures


def _figure(path: Path) -> str:
    plt.tight_layout()
    plt.savefig(path, dpi=110)
    plt.close()
    return path.name


def _binary(
    scores: Mapping[str, dict[str, Any]],
    rows: Mapping[str, Mapping[str, str]],
    bundle: Bundle,
    out: Path,
) -> dict[str, Any]:
    y_all = {
        p: math.nan if (label := good_response(rows[p])) is None else float(label) for p in scores
    }
    result: dict[str, Any] = {"models": {}, "figures": {}}
    probs: dict[str, dict[str, float]] = {}
    for name in RESPONSE_MODELS:
        key = f"response_{name}"
        probs[name] = {
            p: s[key]["p_good_response"]
            for p, s in scores.items()
            if key in s and not math.isnan(y_all[p])
        }
    for name in SIGNATURES:
        probs[name] = {
            p: s["signatures"][name]
            for p, s in scores.items()
            if name in s["signatures"] and not math.isnan(y_all[p])
        }
    threshold = float(bundle.manifest["response"].get("threshold", 0.5))
    plt.figure(figsize=(5.5, 5))
    for name, values in probs.items():
        patients = sorted(values)
        y = np.array([int(y_all[p]) for p in patients])
        if len(set(y.tolist())) < 2:
            continue
        prob = np.array([values[q] for q in patients])
        est = auc_delong(y, prob)
        low, high = bootstrap_ci(lambda a, b: auc_delong(a, b).auc, y, prob, n_boot=500, stratify=y)
        entry: dict[str, Any] = {
            "n": len(y),
            "auc": est.auc,
            "auc_ci95_delong": [est.low, est.high],
            "auc_ci95_bootstrap": [low, high],
        }
        if name in RESPONSE_MODELS:
            cal = calibration(y, prob)
            entry |= {
                "at_threshold": threshold_metrics(y, prob, threshold),
                "brier": cal.brier,
                "ece": cal.ece,
                "calibration": {
                    "predicted": cal.predicted,
                    "observed": cal.observed,
                    "counts": cal.counts,
                },
                "decision_curve": decision_curve(y, prob),
            }
            fpr, tpr, _ = roc_curve(y, prob)
            plt.plot(fpr, tpr, label=f"{name} AUC {est.auc:.2f} ({est.low:.2f}-{est.high:.2f})")
        result["models"][name] = entry
    plt.plot([0, 1], [0, 1], ":", color="grey")
    plt.xlabel("1 - specificity")
    plt.ylabel("sensitivity")
    plt.title("ROC: good response")
    plt.legend(loc="lower right", fontsize=8)
    result["figures"]["roc"] = _figure(out / "roc.png")
    _calibration_and_decision_figures(result, out)
    result["delong"] = {}
    names = [n for n in RESPONSE_MODELS if n in result["models"]]
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            common = sorted(set(probs[a]) & set(probs[b]))
            y = np.array([int(y_all[p]) for p in common])
            if len(set(y.tolist())) == 2:
                test = delong_test(y, [probs[a][p] for p in common], [probs[b][p] for p in common])
                result["delong"][f"{a} vs {b}"] = {
                    "difference": test.difference,
                    "z": test.z,
                    "p_value": test.p_value,
                    "n": len(common),
                }
    shap_figure = _shap_summary(bundle, scores, rows, out)
    if shap_figure:
        result["figures"]["shap"] = shap_figure
    return result


def _calibration_and_decision_figures(result: dict[str, Any], out: Path) -> None:
    models = {k: v for k, v in result["models"].items() if "calibration" in v}
    if not models:
        return
    plt.figure(figsize=(5.5, 5))
    for name, entry in models.items():
        cal = entry["calibration"]
        plt.plot(cal["predicted"], cal["observed"], "o-", label=f"{name} (ECE {entry['ece']:.3f})")
    plt.plot([0, 1], [0, 1], ":", color="grey")
    plt.xlabel("predicted probability of good response")
    plt.ylabel("observed share")
    plt.title("Calibration")
    plt.legend(fontsize=8)
    result["figures"]["calibration"] = _figure(out / "calibration.png")
    plt.figure(figsize=(5.5, 5))
    for name, entry in models.items():
        curve = entry["decision_curve"]
        plt.plot(curve["threshold"], curve["model"], label=name)
    first = next(iter(models.values()))["decision_curve"]
    plt.plot(first["threshold"], first["treat_all"], "--", color="grey", label="treat all")
    plt.plot(first["threshold"], first["none"], ":", color="black", label="treat none")
    plt.ylim(-0.1, max(0.1, max(first["treat_all"]) + 0.05))
    plt.xlabel("threshold probability")
    plt.ylabel("net benefit")
    plt.title("Decision curves")
    plt.legend(fontsize=8)
    result["figures"]["decision"] = _figure(out / "decision_curve.png")


def _shap_summary(
    bundle: Bundle,
    scores: Mapping[str, dict[str, Any]],
    rows: Mapping[str, Mapping[str, str]],
    out: Path,
) -> str | None:
    if "FDL" not in bundle.response_models:
        return None
    import shap  # noqa: PLC0415  (heavy: only for the report)

    model, columns = bundle.response_models["FDL"]
    table = add_deltas(pd.DataFrame([s["signatures"] for s in scores.values()]))
    if not set(columns) <= set(table.columns):
        return None
    x = table[columns].dropna().to_numpy(float)
    if len(x) < 5:
        return None
    background = x[: min(len(x), 30)]
    explainer = shap.KernelExplainer(lambda v: model.predict_proba(v)[:, 1], background)
    values = explainer.shap_values(x[:60], nsamples=100, silent=True)
    plt.figure()
    shap.summary_plot(values, x[:60], feature_names=columns, show=False)
    plt.title("SHAP: FDL model")
    return _figure(out / "shap_fdl.png")


def _survival(
    scores: Mapping[str, dict[str, Any]],
    rows: Mapping[str, Mapping[str, str]],
    bundle: Bundle,
    out: Path,
) -> dict[str, Any]:
    result: dict[str, Any] = {"figures": {}}
    dm = [
        p
        for p in scores
        if "distant_metastasis" in scores[p]
        and not math.isnan(number(rows[p].get("dm_time_months")))
    ]
    if dm:
        t = np.array([number(rows[p]["dm_time_months"]) for p in dm])
        e = np.array([int(number(rows[p]["dm_event"])) for p in dm])
        risk = np.array([scores[p]["distant_metastasis"]["dlrs"] for p in dm])
        groups = [scores[p]["distant_metastasis"]["risk_group"] for p in dm]
        entry: dict[str, Any] = {"n": len(dm), "events": int(e.sum())}
        if e.sum() > 0:
            c, low, high = harrell_c_ci(t, e, risk, n_boot=500)
            entry["c_index"] = {"value": c, "ci95": [low, high]}
            entry["time_dependent_auc"] = {}
            for h in HORIZONS_MONTHS:
                try:
                    entry["time_dependent_auc"][f"{h / 12:g}y"] = time_dependent_auc(t, e, risk, h)
                except ValueError:
                    continue
            km = kaplan_meier_groups(t, e, groups)
            entry["kaplan_meier"] = {"counts": km.counts, "logrank_p": km.logrank_p}
            result["figures"]["km_dm"] = _km_figure(
                km.curves, km.logrank_p, "DM-free survival by DLRS group", out / "km_dm.png"
            )
            entry |= _nomogram_vs_clinical(dm, scores, rows, t, e, bundle)
        result["distant_metastasis"] = entry
    rec = [
        p
        for p in scores
        if "recurrence" in scores[p] and not math.isnan(number(rows[p].get("rfs_time_months")))
    ]
    if rec:
        t = np.array([number(rows[p]["rfs_time_months"]) for p in rec])
        e = np.array([int(number(rows[p]["rfs_event"])) for p in rec])
        rrs = np.array([scores[p]["recurrence"]["rrs"] for p in rec])
        entry = {"n": len(rec), "events": int(e.sum())}
        if e.sum() > 0:
            c, low, high = harrell_c_ci(t, e, rrs, n_boot=500)
            entry["c_index_rrs"] = {"value": c, "ci95": [low, high]}
            with contextlib.suppress(ValueError):
                entry["time_dependent_auc_5y"] = time_dependent_auc(t, e, rrs, RFS_HORIZON_MONTHS)
            km = kaplan_meier_groups(t, e, [scores[p]["recurrence"]["subtype"] for p in rec])
            entry["kaplan_meier_subtypes"] = {"counts": km.counts, "logrank_p": km.logrank_p}
            result["figures"]["km_rfs"] = _km_figure(
                km.curves, km.logrank_p, "Recurrence-free survival by subtype", out / "km_rfs.png"
            )
        result["recurrence"] = entry
    points = bundle.manifest.get("dm", {}).get("nomogram_points")
    if points:
        result["figures"]["nomogram"] = _nomogram_figure(points, out / "nomogram.png")
    return result


def _nomogram_vs_clinical(
    patients: list[str],
    scores: Mapping[str, dict[str, Any]],
    rows: Mapping[str, Mapping[str, str]],
    t: np.ndarray,
    e: np.ndarray,
    bundle: Bundle,
) -> dict[str, Any]:
    """NRI and IDI at 3 years of the nomogram over the clinical Cox model (cT, CEA, ypN)."""
    clinical = bundle.clinical_cox
    if clinical is None:
        return {}
    nomo, clin, keep = [], [], []
    for i, p in enumerate(patients):
        features, _ = feature_row(rows[p])
        values = [features.get(c, math.nan) for c in clinical.covariates]
        dm = scores[p]["distant_metastasis"]
        if "nomogram_dmfs_3y" in dm and not any(math.isnan(v) for v in values):
            nomo.append(1 - dm["nomogram_dmfs_3y"])
            clin.append(1 - float(clinical.survival_at(np.array([values]), DM_HORIZON_MONTHS)[0]))
            keep.append(i)
    if not keep:
        return {}
    known = horizon_outcome(t[keep], e[keep], DM_HORIZON_MONTHS)
    ok = ~np.isnan(known)
    if len(set(known[ok].tolist())) < 2:
        return {}
    y = known[ok].astype(int)
    cutoffs = [0.1, 0.2]
    out = nri_idi(y, np.array(clin)[ok], np.array(nomo)[ok], cutoffs)
    return {"nomogram_vs_clinical_3y": {**out, "risk_cutoffs": cutoffs, "n": int(ok.sum())}}


def _km_figure(
    curves: Mapping[str, tuple[list[float], list[float]]], p: float, title: str, path: Path
) -> str:
    plt.figure(figsize=(6, 4.5))
    for name, (times, surv) in curves.items():
        plt.step(times, surv, where="post", label=name)
    plt.ylim(0, 1.02)
    plt.xlabel("months")
    plt.ylabel("survival")
    plt.title(f"{title} (log-rank p = {p:.3g})")
    plt.legend(fontsize=8)
    return _figure(path)


def _nomogram_figure(points: Mapping[str, Any], path: Path) -> str:
    variables = points["variables"]
    plt.figure(figsize=(7, 1 + 0.8 * len(variables)))
    for row, (name, entry) in enumerate(variables.items()):
        y = len(variables) - row
        plt.plot(entry["points"], [y] * len(entry["points"]), "-|", color="navy")
        for value, pts in zip(entry["values"], entry["points"], strict=True):
            plt.annotate(
                f"{value:.3g}",
                (pts, y),
                textcoords="offset points",
                xytext=(0, 6),
                ha="center",
                fontsize=7,
            )
        plt.text(-5, y, name, ha="right", va="center", fontsize=9)
    plt.xlim(-40, 105)
    plt.yticks([])
    plt.xlabel("points")
    plt.title("Nomogram (distant metastasis): points per factor")
    return _figure(path)


def validated_copy(
    bundle: Bundle,
    out: Path,
    version: str,
    scores: Mapping[str, dict[str, Any]],
    rows: Mapping[str, Mapping[str, str]],
    inputs: Mapping[str, CaseInputs] | None = None,
) -> dict[str, Any]:
    """A copy of ``bundle`` in ``out`` as ``version`` whose outputs' validation includes this
    external cohort (:func:`pipeline.validation.revalidate`): each output validated or not
    again by the hospital's own patients, the change recorded in ``validation.history`` and the
    model card. The original bundle is left as it was. Returns the new manifest."""
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} exists and is not empty: name a new folder for the bundle")
    trained = set(bundle.manifest["training_data"].get("train_patients_sha256", []))
    seen = [p for p in scores if patient_hash(p) in trained]
    if seen:
        raise ValueError(
            f"{len(seen)} of the cohort's patients trained the bundle: an external validation "
            "needs patients it has not seen (use --held-out-only)"
        )
    estimates = score_estimates(scores, rows, "external")
    record = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "from_version": bundle.manifest["version"],
        "cohort_fingerprint": hashlib.sha256(
            "\n".join(sorted(patient_hash(p) for p in scores)).encode()
        ).hexdigest()[:32],
        "patients": len(scores),
    }
    shutil.copytree(bundle.folder, out, dirs_exist_ok=True)
    manifest = revalidate(dict(bundle.manifest), estimates, record)
    manifest["version"] = version
    if inputs is not None:  # the subgroups where an output did clearly worse at this site
        acquisition = {p: inputs[p].acquisition for p in scores if p in inputs}
        manifest["failure_modes"] = {
            **(manifest.get("failure_modes") or {}),
            "external": failure_modes(scores, rows, acquisition, estimates),
        }
    manifest.pop("files", None)
    (out / "model_card.md").write_text(model_card(manifest))
    write_manifest(out, manifest)
    return manifest


def evaluate(
    bundle: Bundle,
    scores: Mapping[str, dict[str, Any]],
    rows: Mapping[str, Mapping[str, str]],
    skipped: Mapping[str, str],
    out: Path,
    hash_key: bytes | None = None,
) -> dict[str, Any]:
    """Compute everything, write ``metrics.json``, the PNGs, ``predictions.csv`` (patient ids,
    or with ``hash_key`` their keyed hashes) and ``report.html`` under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "bundle": bundle.version,
        "bundle_created": bundle.manifest["created"],
        "patients_scored": len(scores),
        "patients_skipped": {patient_hash(p): why for p, why in skipped.items()},
        "research_use": RESEARCH_USE,
        "response": _binary(scores, rows, bundle, out),
        "survival": _survival(scores, rows, bundle, out),
        "predictions": {
            "file": "predictions.csv",
            "rows": write_predictions(out / "predictions.csv", bundle.manifest, scores, rows,
                                      skipped, hash_key),
            "patients": "keyed hashes" if hash_key else "patient ids",
        },
    }  # fmt: skip
    (out / "metrics.json").write_text(json.dumps(report, indent=2, default=float) + "\n")
    (out / "report.html").write_text(render_html(report))
    return report


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.3f}"
    if isinstance(value, list) and len(value) == 2 and all(isinstance(v, float) for v in value):
        return f"{value[0]:.3f}-{value[1]:.3f}"
    return html.escape(str(value))


def render_html(report: Mapping[str, Any]) -> str:
    """One self-contained page (figures next to it) a person can read."""
    from jinja2 import Environment  # noqa: PLC0415

    source = (Path(__file__).parent / "templates" / "report.html").read_text()
    template = Environment(autoescape=True).from_string(source)
    return template.render(r=report, fmt=_fmt)
