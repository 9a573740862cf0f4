"""``larc train models``: every model of a bundle from a labelled cohort.

1. Prepare every patient once (:func:`pipeline.case.prepare_case`) and hold out a stratified
   test split (optional).
2. Science A: the six signature networks, k-fold, giving out-of-fold signatures; RBF-SVMs on
   them (FDL), on the selected clinical-radiological features (CR) and on both (CRD).
3. Science B: T2W and ADC networks on the baseline crop stacks for DM within 3 years (patients
   censored before 3 years are left out of network training, then scored), out-of-fold;
   DL-prob = T2W-prob + ADC-prob; Cox model -> DLRS; cut-off at the Youden point of the 3-year
   time-dependent ROC; nomogram = Cox on DL-prob + cT stage + CEA + ypN.
4. Science D: deep features (penultimate layer of both DM networks) clustered into k subtypes,
   ordered by recurrence risk; RRS = Cox on their principal components for recurrence-free
   survival (a simplification: the study built the RRS on the high-risk subtype's features).
5. Metrics on the held-out patients, written into the manifest with 95 % CIs; the bundle.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from torch import nn

from dicom_io.roles import DEFAULT_RULES, RoleRule
from pipeline.bundle import (
    DM_HORIZON_MONTHS,
    RESEARCH_USE,
    RFS_HORIZON_MONTHS,
    Bundle,
    dm_covariate,
    torch_save,
)
from pipeline.case import CaseInputs
from pipeline.config import PreprocessConfig
from pipeline.envelope import NUMERIC, Envelope, build_envelope
from pipeline.features import feature_row, select_cr_features
from pipeline.kinds import SIGNATURES, STACK_SEQUENCES
from pipeline.manifest import BUNDLE_SCHEMA, write_manifest
from pipeline.models import (
    CoxModel,
    RiskCutoff,
    add_deltas,
    feature_columns,
    fit_response_svm,
    fit_subtypes,
    horizon_outcome,
    nomogram_points,
    order_subtypes,
    save_estimator,
)
from pipeline.networks import (
    dm_network,
    ensemble_probability,
    penultimate_features,
    response_network,
    to_tensor,
)
from pipeline.stats import calibration
from pipeline.training.checkpoints import load_stage, save_stage, stage_key
from pipeline.training.cohort import good_response, number, patient_hash, prepare_cohort
from pipeline.training.networks import Progress, SignatureTraining, cross_validate
from pipeline.training.segmentation import TRAINING_JSON as SEGMENTER_RECORD
from pipeline.training.segmentation import WEIGHTS as SEGMENTER_WEIGHTS
from pipeline.training.segmentation import (
    SegmentationTraining,
    train_segmenter,
)
from pipeline.training.validation import (
    METRIC_KEYS,
    SUBGROUP_MIN,
    WEAK,
    failure_modes,
    out_of_fold_estimates,
    response_pairs,
    score_estimates,
    validation_record,
)
from pipeline.validation import DEFAULT_MIN_EVENTS, Estimate, present_outputs, validation_lines

SEGMENTATION_DIR = "segmentation"

log = logging.getLogger(__name__)
NOMOGRAM_FACTORS = ("dl_prob", "pre_mrt", "cea_ng_ml", "ypn_stage")  # science B's kept factors


@dataclass(frozen=True)
class ModelRun:
    """What to train and where to write the bundle."""

    out_dir: Path
    name: str = "larc-rectal"
    version: str = "0.1.0"
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    response: SignatureTraining = field(default_factory=SignatureTraining)
    dm: SignatureTraining = field(default_factory=lambda: SignatureTraining(backbone="resnet18"))
    test_fraction: float = 0.3
    subtypes: int = 3
    workers: int | None = None
    rules: tuple[RoleRule, ...] = DEFAULT_RULES
    cache: Path | None = None
    segmentation: SegmentationTraining | None = None  # None: the bundle carries no segmenter
    # fewest events (binary: of each outcome) a validation estimate needs to decide on
    min_events: int = DEFAULT_MIN_EVENTS
    # each trained network stage is kept here until the bundle is written (None: not kept)
    checkpoints: Path | None = None
    # covariates of the DLRS Cox model besides DL-prob (pipeline.bundle.DM_COVARIATES; the
    # published recipe: none)
    dm_covariates: tuple[str, ...] = ()


def _outcomes(rows: Mapping[str, Mapping[str, str]], patients: Sequence[str]) -> pd.DataFrame:
    table = pd.DataFrame(index=list(patients))
    table["good_response"] = [
        np.nan if (label := good_response(rows[p])) is None else float(label) for p in patients
    ]
    for column in ("dm_event", "dm_time_months", "rfs_event", "rfs_time_months"):
        table[column] = [number(rows[p].get(column)) for p in patients]
    return table


MIN_FIT_PATIENTS = 10  # fewest patients with what an optional model needs before it is fitted


def check_outcomes(rows: Mapping[str, Mapping[str, str]]) -> dict[str, str]:
    """What the outcomes allow, checked before any network is trained.

    Raises ``ValueError`` naming every column the bundle cannot do without (the response label,
    the distant-metastasis outcome); returns the optional models that cannot be fitted from
    what is there, each with the reason (``nomogram``: cT stage, CEA and pathology ypN;
    ``recurrence``: the recurrence outcome for subtypes and the RRS).
    """

    def filled(column: str) -> int:
        return sum(1 for row in rows.values() if (row.get(column) or "").strip())

    missing = []
    if not filled("good_response") and not filled("trg"):
        missing.append("good_response (0/1) or trg (0-3)")
    missing += [c for c in ("dm_event", "dm_time_months") if not filled(c)]
    if missing:
        raise ValueError(
            f"the outcomes have no values in {', '.join(missing)}: every bundle needs the "
            "response label and the distant-metastasis outcome (months to metastasis or last "
            "follow-up, and whether it occurred)"
        )
    skipped: dict[str, str] = {}
    names = {"pre_mrt": "cT stage (pre_mrt)", "cea_ng_ml": "CEA (cea_ng_ml)",
             "ypn_stage": "pathology ypN (ypn_stage)"}  # fmt: skip
    absent = [names[c] for c in NOMOGRAM_FACTORS if c in names and not filled(c)]
    if absent:
        skipped["nomogram"] = f"no {', '.join(absent)} in the outcomes"
    else:
        complete = sum(
            1 for row in rows.values()
            if all((row.get(c) or "").strip() for c in (*names, "dm_time_months"))
        )  # fmt: skip
        if complete < MIN_FIT_PATIENTS:
            skipped["nomogram"] = (
                f"only {complete} patients have cT stage, CEA and ypN with a DM outcome "
                f"(at least {MIN_FIT_PATIENTS} needed)"
            )
    recurrence = [c for c in ("rfs_time_months", "rfs_event") if not filled(c)]
    if recurrence:
        skipped["recurrence"] = f"no recurrence outcome ({', '.join(recurrence)}) in the outcomes"
    elif filled("rfs_time_months") < MIN_FIT_PATIENTS:
        skipped["recurrence"] = (
            f"only {filled('rfs_time_months')} patients have a recurrence outcome "
            f"(at least {MIN_FIT_PATIENTS} needed)"
        )
    return skipped


def _split(table: pd.DataFrame, fraction: float, seed: int) -> tuple[list[str], list[str]]:
    patients = list(table.index)
    if fraction <= 0:
        return patients, []
    strata = table["good_response"].fillna(-1).astype(int).astype(str)
    rng = np.random.default_rng(seed)
    test: list[str] = []
    for _, members in strata.groupby(strata):
        names = list(members.index)
        rng.shuffle(names)
        test += names[: round(len(names) * fraction)]
    return [p for p in patients if p not in test], sorted(test)


@dataclass
class NetworkStage:
    """A trained network stage: each training patient's out-of-fold value and every other
    patient's value (the mean of the fold networks), the fold networks, and the final network
    when one was asked for."""

    values: dict[str, float]
    members: list[nn.Module]
    final: nn.Module | None


def _network_stage(
    name: str,
    x: dict[str, np.ndarray],
    labels: pd.Series,
    train: list[str],
    config: SignatureTraining,
    progress: Progress | None,
    build: Callable[[], Any] | None = None,
    checkpoints: Path | None = None,
    final: bool = False,
) -> NetworkStage:
    """Out-of-fold values for labelled training patients; the mean of the fold networks for
    the rest — the networks the classifier on top learned from, so that its inputs are
    distributed alike in training and in use. With ``final``, also a network trained on every
    training patient. With ``checkpoints``, a stage trained before on the same inputs is read
    back from there, and a new one is written there when done
    (:mod:`pipeline.training.checkpoints`)."""
    have = [p for p in train if p in x and not np.isnan(labels.get(p, np.nan))]
    y = labels[have].astype(int).to_numpy()
    if len(have) < 2 * config.folds or len(set(y.tolist())) < 2:
        raise ValueError(f"{name}: {len(have)} usable training patients with both outcomes")
    if build is None:
        size = next(iter(x.values())).shape[-1]

        def build() -> Any:
            return response_network(config.backbone, size, config.width)

    settings = config.model_dump(mode="json") | {"final": final, "members": "folds"}
    key = stage_key(name, settings, have, y.tolist(), x)
    if checkpoints is not None and (found := load_stage(checkpoints, name, key, build)):
        return NetworkStage(*found)
    result = cross_validate(
        np.stack([x[p] for p in have]), y, config, name=name, progress=progress, build=build,
        final=final,
    )  # fmt: skip
    members = [net.model for net in result.folds]
    values = {p: float(v) for p, v in zip(have, result.out_of_fold, strict=True)}
    rest = [p for p in x if p not in values]
    if rest:
        scores = ensemble_probability(members, np.stack([x[p] for p in rest]))
        values |= {p: float(v) for p, v in zip(rest, scores, strict=True)}
    last = None if result.final is None else result.final.model
    if checkpoints is not None:
        save_stage(checkpoints, name, key, values, members, last)
    return NetworkStage(values, members, last)


def _save_members(members: list[nn.Module], folder: Path) -> None:
    for k, model in enumerate(members, 1):
        torch_save(model, folder / f"fold{k}.pt")


def train_models(
    cases: Mapping[str, Mapping[str, Sequence[Path]]],
    rows: Mapping[str, Mapping[str, str]],
    run: ModelRun,
    progress: Progress | None = None,
    prepared: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Train everything, write the bundle under ``run.out_dir``, return its manifest."""
    started = time.perf_counter()
    labelled = {p: f for p, f in cases.items() if p in rows}
    # before hours of training: what cannot be fitted is named (and skipped) now
    skipped = check_outcomes({p: rows[p] for p in labelled})
    for model, why in skipped.items():
        log.warning("%s will not be in this bundle: %s", model, why)
    out = run.out_dir
    out.mkdir(parents=True, exist_ok=True)
    inputs, failures = prepare_cohort(
        labelled,
        run.preprocess,
        SIGNATURES,
        stacks=True,
        cache=run.cache,
        workers=run.workers,
        progress=prepared,
        rules=run.rules,
    )
    patients = sorted(inputs)
    outcomes = _outcomes(rows, patients)
    train, test = _split(outcomes, run.test_fraction, run.response.seed)
    log.info("training on %d patients, testing on %d", len(train), len(test))
    table = _feature_table(inputs, rows, patients)

    # science A
    for name in SIGNATURES:
        x = {
            p: to_tensor(inputs[p].slices[name].array[None])[0]
            for p in patients
            if name in inputs[p].slices
        }
        stage = _network_stage(
            name, x, outcomes["good_response"], train, run.response, progress,
            checkpoints=run.checkpoints,
        )  # fmt: skip
        table[name] = pd.Series(stage.values)
        _save_members(stage.members, out / "weights" / "response" / name)
    table = add_deltas(table)
    response_manifest = _fit_response(table, outcomes, train, out, run.response.seed)

    # science B
    dm_label = pd.Series(
        horizon_outcome(
            outcomes["dm_time_months"].to_numpy(),
            outcomes["dm_event"].fillna(0).astype(int).to_numpy(),
            DM_HORIZON_MONTHS,
        ),
        index=outcomes.index,
    )
    dm_models = {}
    for sequence in STACK_SEQUENCES:
        x = {p: inputs[p].stacks[sequence].array for p in patients if sequence in inputs[p].stacks}

        def build() -> Any:
            return dm_network(
                run.dm.backbone, run.preprocess.stack_depth, run.preprocess.stack_size, run.dm.width
            )

        # the fold networks give DL-prob; the final one (every training patient) the deep
        # features of science D's subtypes
        stage = _network_stage(
            f"DM {sequence}", x, dm_label, train, run.dm, progress, build=build,
            checkpoints=run.checkpoints, final=True,
        )  # fmt: skip
        table[f"dm_{sequence}"] = pd.Series(stage.values)
        if stage.final is None:  # asked for: never
            raise ValueError(f"DM {sequence}: no final network")
        dm_models[sequence] = stage.final
        _save_members(stage.members, out / "weights" / "dm" / sequence)
        torch_save(stage.final, out / "weights" / "dm" / f"{sequence}.pt")
    table["dl_prob"] = table["dm_T2"] + table["dm_ADC"]
    for name in run.dm_covariates:
        table[name] = [dm_covariate(name, dl, row) for dl, (_, row) in
                       zip(table["dl_prob"], table.iterrows(), strict=True)]  # fmt: skip
    dm_manifest = _fit_dm(table, outcomes, train, out, nomogram="nomogram" not in skipped,
                          covariates=("dl_prob", *run.dm_covariates))  # fmt: skip

    # science D
    deep = {
        p: np.concatenate(
            [
                penultimate_features(dm_models[s], inputs[p].stacks[s].array[None])[0]
                for s in STACK_SEQUENCES
            ]
        )
        for p in patients
        if all(s in inputs[p].stacks for s in STACK_SEQUENCES)
    }
    subtypes_manifest = None
    if "recurrence" not in skipped:
        subtypes_manifest = _fit_subtypes(deep, outcomes, train, run.subtypes, out,
                                          run.response.seed)  # fmt: skip

    segmentation = None
    if run.segmentation is not None:
        # trained on the drawn T2W masks of the training patients only: the held-out patients
        # stay unseen by every model, so their figures with automatic masks are honest too
        record = train_segmenter({p: labelled[p] for p in train}, out / SEGMENTATION_DIR,
                                 run.segmentation, run.rules, progress=progress)  # fmt: skip
        segmentation = {
            "weights": f"{SEGMENTATION_DIR}/{SEGMENTER_WEIGHTS}",
            "network": record["network"],
            "gate": record["gate"],
            "held_out": record["held_out"],
            "record": f"{SEGMENTATION_DIR}/{SEGMENTER_RECORD}",
        }

    manifest: dict[str, Any] = {
        "schema_version": BUNDLE_SCHEMA,
        "name": run.name,
        "version": run.version,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "research_use_only": True,
        "intended_use": (
            "Research use only - not for diagnostic decisions. Predicts, from baseline and "
            "restaging rectal MRI, the probability of good response (TRG 0-1) to neoadjuvant "
            "chemotherapy, distant-metastasis risk and recurrence subtypes. Not validated on "
            "this hospital's patients unless its own evaluation report says so."
        ),
        "training_data": {
            "patients": len(patients),
            "train": len(train),
            "test": len(test),
            "skipped": len(failures),
            "fingerprint": hashlib.sha256(
                "\n".join(sorted(patient_hash(p) for p in patients)).encode()
            ).hexdigest()[:32],
            "train_patients_sha256": sorted(patient_hash(p) for p in train),
            "test_patients_sha256": sorted(patient_hash(p) for p in test),
        },
        "preprocess": run.preprocess.model_dump(mode="json"),
        "envelope": build_envelope(inputs[p].acquisition for p in train).to_json(),
        "preprocess_fingerprint": run.preprocess.fingerprint,
        "networks": {
            "response": {
                "backbone": run.response.backbone,
                "width": run.response.width,
                "signatures": list(SIGNATURES),
                # each signature: the mean of its fold networks (weights/response/<name>/)
                "members": run.response.folds,
                "training": run.response.model_dump(mode="json"),
            },
            "dm": {
                "backbone": run.dm.backbone,
                "width": run.dm.width,
                "sequences": list(STACK_SEQUENCES),
                # DL-prob: the mean of the fold networks (weights/dm/<sequence>/); the final
                # network (weights/dm/<sequence>.pt) gives science D's deep features
                "members": run.dm.folds,
                "training": run.dm.model_dump(mode="json"),
            },
        },
        "response": response_manifest,
        "dm": dm_manifest,
        "subtypes": subtypes_manifest,
        "not_in_bundle": skipped,  # models the outcomes could not fit, with the reason
        "segmentation": segmentation,
        "seconds": round(time.perf_counter() - started, 1),
    }
    manifest["metrics"], held_out, weak = _held_out_metrics(out, manifest, inputs, rows, test)
    manifest["failure_modes"] = {"held_out": weak}
    manifest["validation"] = validation_record(
        out_of_fold_estimates(table, outcomes, train, manifest, deep, run.response.folds,
                              run.response.seed, NOMOGRAM_FACTORS),
        held_out,
        present_outputs(manifest),
        run.min_events,
    )  # fmt: skip
    (out / "training").mkdir(exist_ok=True)
    table.assign(split=["test" if p in test else "train" for p in table.index]).rename(
        index=patient_hash
    ).to_csv(out / "training" / "features_and_signatures.csv", index_label="patient_sha256")
    (out / "model_card.md").write_text(model_card(manifest))
    write_manifest(out, manifest)
    if run.checkpoints is not None:  # the bundle holds every network now
        shutil.rmtree(run.checkpoints, ignore_errors=True)
    return manifest


def _feature_table(
    inputs: Mapping[str, CaseInputs], rows: Mapping[str, Mapping[str, str]], patients: list[str]
) -> pd.DataFrame:
    records = {p: feature_row(rows[p], inputs[p].features)[0] for p in patients}
    return pd.DataFrame.from_dict(records, orient="index")


def _fit_response(
    table: pd.DataFrame, outcomes: pd.DataFrame, train: list[str], out: Path, seed: int
) -> dict[str, Any]:
    y = outcomes["good_response"]
    rows = [p for p in train if not np.isnan(y[p]) and table.loc[p, list(SIGNATURES)].notna().all()]
    selection = select_cr_features(table.loc[rows], y[rows].astype(int).to_numpy())
    models: dict[str, Any] = {}
    for name in ("FDL", "CR", "CRD"):
        columns = feature_columns(name, selection.selected)
        usable = [p for p in rows if table.loc[p, columns].notna().all()]
        model = fit_response_svm(
            table.loc[usable, columns].to_numpy(float), y[usable].astype(int).to_numpy(), seed
        )
        path = out / "models" / f"response_{name}.skops"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_estimator(model, path)
        models[name] = {
            "file": f"models/response_{name}.skops",
            "features": columns,
            "patients": len(usable),
        }
    return {
        "models": models,
        "cr_features": list(selection.selected),
        "cr_selection": {
            "univariate_p": selection.univariate_p,
            "multivariate_p": selection.multivariate_p,
            "thresholds": {"univariate": 0.10, "multivariate": 0.05},
        },
        "threshold": 0.5,
    }


def _fit_dm(
    table: pd.DataFrame,
    outcomes: pd.DataFrame,
    train: list[str],
    out: Path,
    nomogram: bool,
    covariates: tuple[str, ...] = ("dl_prob",),
) -> dict[str, Any]:
    """The DLRS Cox model (on ``covariates``) and its cut-off; with ``nomogram``, the nomogram
    and its clinical comparator too."""
    frame = (
        table[list(covariates)]
        .assign(time=outcomes["dm_time_months"], event=outcomes["dm_event"])
        .loc[train]
        .dropna()
    )
    cox = CoxModel.fit(frame, "time", "event")
    cox.save(out / "models" / "dm_cox.json")
    lp = cox.linear_predictor(frame[list(covariates)].to_numpy())
    cutoff = RiskCutoff.fit(
        lp, frame["time"].to_numpy(), frame["event"].astype(int).to_numpy(), DM_HORIZON_MONTHS
    )
    fitted: dict[str, Any] = {
        "cox": "models/dm_cox.json",
        "cutoff": cutoff.cutoff,
        "horizon_months": DM_HORIZON_MONTHS,
        "coefficients": dict(zip(cox.covariates, cox.coefficients, strict=True)),
    }
    if not nomogram:
        return fitted
    factors = (
        table.loc[train, list(NOMOGRAM_FACTORS)]
        .assign(time=outcomes["dm_time_months"], event=outcomes["dm_event"])
        .dropna()
    )
    model = CoxModel.fit(factors, "time", "event")
    model.save(out / "models" / "nomogram_cox.json")
    clinical = CoxModel.fit(factors.drop(columns=["dl_prob"]), "time", "event")
    clinical.save(out / "models" / "clinical_cox.json")
    ranges = {c: (float(factors[c].min()), float(factors[c].max())) for c in NOMOGRAM_FACTORS}
    return fitted | {
        "nomogram": "models/nomogram_cox.json",
        "clinical": "models/clinical_cox.json",
        "nomogram_points": nomogram_points(model, ranges),
    }


def _fit_subtypes(
    deep: Mapping[str, np.ndarray],
    outcomes: pd.DataFrame,
    train: list[str],
    k: int,
    out: Path,
    seed: int,
) -> dict[str, Any]:
    rows = [p for p in train if p in deep and not np.isnan(outcomes.loc[p, "rfs_time_months"])]
    features = np.stack([deep[p] for p in rows])
    model = fit_subtypes(features, k, seed)
    labels = model.predict(features)
    time_ = outcomes.loc[rows, "rfs_time_months"].to_numpy()
    event = outcomes.loc[rows, "rfs_event"].astype(int).to_numpy()
    order = order_subtypes(labels, time_, event, k)
    if k == 3:  # science D: RDLS1 poor prognosis, RDLS2 favourable, RDLS3 intermediate
        order = [order[0], order[2], order[1]]
    save_estimator(model, out / "models" / "subtypes.skops")
    components = model[:-1].transform(features)
    frame = pd.DataFrame(components, columns=[f"pc{i + 1}" for i in range(components.shape[1])])
    rrs = CoxModel.fit(frame.assign(time=time_, event=event), "time", "event", penalizer=0.1)
    rrs.save(out / "models" / "rrs_cox.json")
    return {
        "file": "models/subtypes.skops",
        "k": k,
        "order": order,
        "rrs": "models/rrs_cox.json",
        "horizon_months": RFS_HORIZON_MONTHS,
        "sizes": {f"RDLS{i + 1}": int((labels == c).sum()) for i, c in enumerate(order)},
    }


def _held_out_metrics(
    out: Path,
    manifest: dict[str, Any],
    inputs: Mapping[str, CaseInputs],
    rows: Mapping[str, Mapping[str, str]],
    test: list[str],
) -> tuple[dict[str, Any], dict[str, Estimate], list[str]]:
    """(the manifest's ``metrics``, each output's held-out estimate, the failure modes found
    among them): the held-out patients scored through the bundle itself, as scoring will
    compute them."""
    if not test:
        return {}, {}, []
    write_manifest(out, manifest)  # so the bundle loads as it will in production
    bundle = Bundle.load(out)
    scores = {p: bundle.score(inputs[p], rows[p], require_validated=False) for p in test}
    estimates = score_estimates(scores, rows, "held_out")
    metrics: dict[str, Any] = {"patients": len(test)}
    for name, est in estimates.items():
        entry = {"value": est.value, "ci95": [est.low, est.high], "n": est.n,
                 "events": est.events}  # fmt: skip
        if est.non_events is not None:  # a probability: its calibration too
            fit = calibration(*response_pairs(scores, rows, name.removeprefix("response_")))
            entry |= {"non_events": est.non_events, "ece": fit.ece, "brier": fit.brier}
        metrics[METRIC_KEYS[name]] = entry
    acquisition = {p: inputs[p].acquisition for p in test}
    return metrics, estimates, failure_modes(scores, rows, acquisition, estimates)


def model_card(manifest: dict[str, Any]) -> str:
    """The bundle's model card (Markdown)."""
    data = manifest["training_data"]
    nets = manifest["networks"]
    cr = manifest["response"]["cr_features"]
    lines = [
        f"# Model card: {manifest['name']} {manifest['version']}",
        "",
        f"**{RESEARCH_USE}**",
        "",
        f"Created {manifest['created']} by larc (bundle schema {manifest['schema_version']}).",
        "",
        "## Intended use",
        manifest["intended_use"],
        "",
        "## Training data",
        f"{data['patients']} patients prepared ({data['train']} for training, {data['test']} held "
        f"out, {data['skipped']} skipped); fingerprint `{data['fingerprint']}`.",
        "",
        "## Models",
        f"- Response signatures: {nets['response']['backbone']} (width "
        f"{nets['response']['width']}), six signatures, each the mean of "
        f"{nets['response'].get('members', 1)} cross-validation networks (the classifiers "
        "learned from their out-of-fold signatures).",
        f"- Response classifiers: RBF-SVM on FDL, CR ({', '.join(cr)}) and CRD.",
        f"- Distant metastasis: {nets['dm']['backbone']} on T2W and ADC crop stacks; Cox on "
        f"{', '.join(manifest['dm']['coefficients'])} (cut-off {manifest['dm']['cutoff']:.3f})"
        + ("; nomogram with cT stage, CEA, ypN." if manifest["dm"].get("nomogram") else "."),
        (
            f"- Subtypes: k = {manifest['subtypes']['k']} clusters of deep features; RRS Cox on "
            "their principal components."
            if manifest.get("subtypes")
            else "- Subtypes and RRS: not in this bundle."
        ),
        "",
    ]
    missing = manifest.get("not_in_bundle") or {}
    if missing:
        lines += ["## Not in this bundle", ""]
        lines += [f"- {name}: {why} (the SR says so)" for name, why in missing.items()]
        lines.append("")
    lines += ["## Held-out metrics"]
    metrics = manifest.get("metrics") or {}
    if not metrics:
        lines.append("No held-out patients: evaluate with `larc evaluate` on another cohort.")
    for key, value in metrics.items():
        if isinstance(value, dict):
            ci = value.get("ci95")
            shown = f"{value['value']:.3f}" + (f" (95% CI {ci[0]:.3f}-{ci[1]:.3f})" if ci else "")
            if "ece" in value:  # calibration of a probability
                shown += f"; calibration ECE {value['ece']:.3f}, Brier {value['brier']:.3f}"
            lines.append(f"- {key}: {shown}, n = {value['n']}")
    lines += ["", "## Validation", ""]
    lines += [
        f"What larc sends: with scoring.require_validated (the default) an output is sent only "
        f"when the lower bound of the 95% CI of its AUC or C-index lies above 0.5, on at least "
        f"{(manifest.get('validation') or {}).get('min_events', DEFAULT_MIN_EVENTS)} events "
        "(out-of-fold on the training patients and on the held-out patients; once a hospital "
        "validates the bundle on its own patients with larc evaluate --validate, on those).",
        "",
    ]
    lines += [f"- {line}" for line in validation_lines(manifest)]
    history = (manifest.get("validation") or {}).get("history") or []
    lines += [
        f"- {h['date']}: external validation on {h['patients']} patients (cohort "
        f"`{h['cohort_fingerprint']}`), from version {h['from_version']}"
        for h in history
    ]
    lines += failure_lines(manifest)
    lines += [
        "",
        "## Preprocessing",
        f"Fingerprint `{manifest['preprocess_fingerprint']}`: "
        + ", ".join(f"{k} {v}" for k, v in manifest["preprocess"].items()),
        "",
    ]
    lines += envelope_lines(manifest.get("envelope"))
    lines += ["", "## Automatic tumour segmentation"]
    segmentation = manifest.get("segmentation")
    held = (segmentation or {}).get("held_out") or {}
    if not segmentation:
        lines.append("Not part of this bundle (larc train models --segmentation-epochs).")
    elif held.get("n"):
        lines.append(
            f"2.5D U-Net on the T2W ({segmentation['record']}); held-out Dice mean "
            f"{held['dice_mean']:.3f}, median {held['dice_median']:.3f}, 5th percentile "
            f"{held['dice_p5']:.3f} (n = {held['n']} volumes). Not yet used when scoring."
        )
    else:
        lines.append("2.5D U-Net on the T2W; no held-out volumes. Not yet used when scoring.")
    lines += [
        "",
        "## Limitations",
        "Trained on the data above only; performance elsewhere is unknown until evaluated. The "
        "RRS is a Cox model on deep-feature principal components, simpler than the study's. "
        "Cases outside the training envelope are declined (or scored with a warning, per "
        "scoring.out_of_range).",
    ]
    return "\n".join(lines) + "\n"


def failure_lines(manifest: Mapping[str, Any]) -> list[str]:
    """The model card's known failure modes: the subgroups (manufacturer, field strength,
    baseline tumour volume) of the held-out and a site's external patients where an output did
    clearly worse (:func:`pipeline.training.validation.failure_modes`)."""
    found = manifest.get("failure_modes")
    lines = ["", "## Known failure modes", ""]
    if found is None:
        return [*lines, "Not looked for (a bundle of an older larc)."]
    words = {"held_out": "held-out patients", "external": "a site's external patients"}
    for cohort, sentences in found.items():
        where = words.get(cohort, cohort)
        if not sentences:
            lines.append(
                f"- None found among the {where}: no subgroup (manufacturer, field strength, "
                f"baseline tumour volume below/above the median; at least {SUBGROUP_MIN} "
                f"patients) did clearly worse (at or below {WEAK} where all did better, or a "
                "CI wholly below all patients' value)."
            )
        lines += [f"- Among the {where}: {sentence}." for sentence in sentences]
    return lines


def envelope_lines(data: Mapping[str, Any] | None) -> list[str]:
    """The model card's section on the training envelope."""
    lines = ["", "## Training envelope"]
    if not data:
        return [*lines, "Not recorded (a bundle of an older larc): inputs are not checked."]
    envelope = Envelope.from_json(data)
    lines.append(
        f"What the {envelope.patients} training patients' series were; a case outside it is "
        "not scored as if it were inside."
    )
    for name in sorted(set(envelope.ranges) | set(envelope.seen)):
        parts = [
            f"{NUMERIC[f][0]} {low:.4g}-{high:.4g}{' ' + NUMERIC[f][1] if NUMERIC[f][1] else ''}"
            for f, (low, high) in envelope.ranges.get(name, {}).items()
            if f in NUMERIC
        ]
        parts += [
            f"{f.replace('_', ' ')} {', '.join(str(v) for v in values)}"
            for f, values in envelope.seen.get(name, {}).items()
        ]
        lines.append(f"- {name}: " + "; ".join(parts))
    return lines
