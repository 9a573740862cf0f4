"""``larc train`` and ``larc evaluate``: models on a hospital's labelled cohort."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from daemon.cli.common import (
    ConfigOption,
    open_index,
    print_bundle_summary,
    progress_bars,
    settings_or_exit,
)

if TYPE_CHECKING:
    from pipeline.training.cohort import Cohort

train_app = typer.Typer(
    help="Train models on a labelled cohort (research use only).", no_args_is_help=True
)

CohortOption = Annotated[
    Path, typer.Option(help="Folder of the cohort's DICOM studies (any layout; e.g. larc synth).")
]
FoldsOption = Annotated[
    int, typer.Option(min=2, help="Folds for out-of-fold network outputs (signatures).")
]
EpochsOption = Annotated[int, typer.Option(min=1, help="Most epochs per network.")]
PatienceOption = Annotated[
    int, typer.Option(min=1, help="Early stop after this many epochs without improvement.")
]
WidthOption = Annotated[
    float, typer.Option(min=0.05, max=4.0, help="Channel width factor (1.0 = published).")
]
NoN4Option = Annotated[bool, typer.Option("--no-n4", help="Skip N4 bias correction.")]
SeedOption = Annotated[int, typer.Option(help="Seed of splits, weights and augmentation.")]
ColumnsOption = Annotated[
    Path | None,
    typer.Option(
        "--columns",
        help="Mapping of the outcomes spreadsheet's own column names and words to larc's "
        "(YAML: columns: {good_response: 'Responder (0/1)', pre_mrt: cT, ...}, values: "
        "{good_response: {Responder: 1, Non-responder: 0}}; see README). Without it the "
        "columns must carry larc's names.",
    ),
]
WorkersOption = Annotated[
    int, typer.Option(min=0, help="Processes preparing the images (0: one per CPU).")
]


def _load_cohort(
    cohort: Path, labels: Path | None, config: Path | None, columns: Path | None = None
) -> Cohort:
    """The cohort with pairing and role rules from the configuration and the outcomes read
    through ``columns``; exit 2 when unreadable (every problem named)."""
    from dicom_io.roles import load_rules
    from pipeline.training.cohort import load_cohort

    settings = settings_or_exit(config)
    try:
        return load_cohort(cohort, labels, settings.pairing.policy(),
                           load_rules(settings.roles.rules_file), columns)  # fmt: skip
    except (OSError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from exc


def _index_cohort(labels: Path | None, config: Path | None, columns: Path | None) -> Cohort:
    """The studies the daemon holds for the patients of ``labels`` (daemon.cohort); exit 2
    when the labels or the index cannot be read."""
    from daemon.cohort import index_cohort
    from dicom_io.roles import load_rules
    from pipeline.training.cohort import Cohort, read_labels

    if labels is None:
        raise typer.BadParameter("--from-index needs --labels", param_hint="--labels")
    settings = settings_or_exit(config)
    try:
        rows = read_labels(labels, columns)
        rules = tuple(load_rules(settings.roles.rules_file))
    except (OSError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from exc
    index = open_index(settings)
    try:
        cases, left_out = index_cohort(index, rows)
    finally:
        index.close()
    if left_out:
        counts: dict[str, int] = {}
        for why in left_out.values():
            counts[why] = counts.get(why, 0) + 1
        typer.echo(
            f"{len(left_out)} of {len(rows)} patients left out: "
            + "; ".join(f"{n} {why}" for why, n in sorted(counts.items())),
            err=True,
        )
    return Cohort(rows, cases, rules)


def _hash_key(path: Path | None) -> bytes:
    """The --hash-ids key: the file's bytes, else LARC_ID_HASH_KEY; exit 2 without one."""
    if path is not None:
        try:
            key = path.read_bytes().strip()
        except OSError as exc:
            raise typer.BadParameter(
                f"cannot read {path}: {exc}", param_hint="--hash-key-file"
            ) from exc
        if len(key) < 16:
            raise typer.BadParameter(
                f"{path} holds no key of at least 16 characters", param_hint="--hash-key-file"
            )
        return key
    key = os.environ.get("LARC_ID_HASH_KEY", "").encode()
    if len(key) < 16:
        raise typer.BadParameter(
            "--hash-ids needs a secret key of at least 16 characters: --hash-key-file or "
            "LARC_ID_HASH_KEY",
            param_hint="--hash-ids",
        )
    return key


def _signature_names(text: str) -> tuple[str, ...]:
    from pipeline.kinds import SIGNATURES

    if text.strip() == "all":
        return SIGNATURES
    names = tuple(s.strip() for s in text.split(",") if s.strip())
    unknown = [n for n in names if n not in SIGNATURES]
    if unknown or not names:
        raise typer.BadParameter(
            f"unknown signature(s) {', '.join(unknown) or '(none)'}: use 'all' or some of "
            + ", ".join(SIGNATURES),
            param_hint="--signatures",
        )
    return names


@train_app.command("signatures")
def signatures(
    cohort: CohortOption,
    out: Annotated[Path, typer.Option(help="Folder for weights, signatures.csv, training.json.")],
    labels: Annotated[
        Path | None,
        typer.Option(
            help="Outcomes spreadsheet (CSV or Excel .xlsx): patient_id and good_response (0/1) "
            "or trg (0-3); optional baseline_study_uid / restaging_study_uid. "
            "[default: COHORT/labels.csv]"
        ),
    ] = None,
    columns: ColumnsOption = None,
    config: ConfigOption = None,
    signature: Annotated[
        str,
        typer.Option(
            "--signatures",
            help="Comma-separated: pre_T2, pre_DWI, pre_CE, post_T2, post_DWI, post_CE, or all.",
        ),
    ] = "all",
    test_fraction: Annotated[
        float,
        typer.Option(
            min=0.0, max=0.5, help="Share of patients held out (stratified) to test on; 0: none."
        ),
    ] = 0.0,
    folds: FoldsOption = 5,
    epochs: EpochsOption = 60,
    patience: PatienceOption = 10,
    batch_size: Annotated[int, typer.Option(min=2, help="SGD batch size (science A: 32).")] = 32,
    learning_rate: Annotated[
        float, typer.Option(min=0.0, help="SGD learning rate (science A: 0.01).")
    ] = 0.01,
    backbone: Annotated[
        str, typer.Option(help="densenet121 (science A), resnet18 or vit (science C).")
    ] = "densenet121",
    width: WidthOption = 1.0,
    image_size: Annotated[
        int, typer.Option(min=16, max=1024, help="Slice size fed to the network (A: 256).")
    ] = 256,
    no_n4: NoN4Option = False,
    seed: SeedOption = 0,
    workers: WorkersOption = 0,
) -> None:
    """Train science A's signature networks with out-of-fold signatures.

    Every patient is prepared with the same code scoring uses (N4, 0-255, largest tumour
    slice); each signature network is trained k-fold (SGD, random resized crop and flip, early
    stopping on a validation split), giving each training patient a signature from a network
    that never saw it, then once on all patients for inference. Prepared images are cached
    under OUT/prepared, so a second run skips reading the DICOM files.
    """
    from pydantic import ValidationError

    from pipeline.config import PreprocessConfig
    from pipeline.training.cohort import good_response
    from pipeline.training.networks import SignatureTraining
    from pipeline.training.signatures import SignatureRun, train_signatures

    names = _signature_names(signature)
    try:
        preprocess = PreprocessConfig(slice_size=image_size, n4=not no_n4)
        training = SignatureTraining.model_validate(
            {
                "backbone": backbone,
                "width": width,
                "epochs": epochs,
                "patience": patience,
                "batch_size": batch_size,
                "learning_rate": learning_rate,
                "folds": folds,
                "seed": seed,
            }
        )
    except ValidationError as exc:
        raise typer.BadParameter(str(exc)) from exc
    data = _load_cohort(cohort, labels, config, columns)
    outcomes = {p: y for p, row in data.rows.items() if (y := good_response(row)) is not None}
    typer.echo(
        f"{len(data.cases)} patients with images, {len(outcomes)} with an outcome; training "
        f"{', '.join(names)}",
        err=True,
    )
    run = SignatureRun(
        out_dir=out,
        signatures=names,
        preprocess=preprocess,
        training=training,
        test_fraction=test_fraction,
        workers=workers or None,
        rules=data.rules,
    )
    with progress_bars(len(data.cases)) as (prepared, epoch):
        summary = train_signatures(data.cases, outcomes, run, progress=epoch, prepared=prepared)
    for name, result in summary["signatures"].items():
        if result["trained"]:
            test = result["test_auc"]
            typer.echo(
                f"{name}: out-of-fold AUC {result['out_of_fold_auc']:.3f}"
                + (f", test AUC {test:.3f}" if test is not None else "")
                + f" ({result['train_patients']} train / {result['test_patients']} test patients)"
            )
        else:
            typer.echo(f"{name}: not trained ({result['reason']})")
    if summary["skipped"]:
        typer.echo(f"{len(summary['skipped'])} patients skipped: see {out / 'training.json'}")
    typer.echo(json.dumps({"out": str(out), "seconds": summary["seconds"]}))


@train_app.command("models")
def models(
    out: Annotated[Path, typer.Option(help="Folder to write the model bundle to.")],
    cohort: Annotated[
        Path | None,
        typer.Option(
            help="Folder of the cohort's DICOM studies (any layout; e.g. larc synth); or "
            "--from-index."
        ),
    ] = None,
    from_index: Annotated[
        bool,
        typer.Option(
            "--from-index",
            help="Train on the studies larc serve already holds (storage.data_dir of --config): "
            "each patient of --labels by PatientID, with the daemon's own pairing and series "
            "roles, as scoring selects them. Cases waiting or held, and automatic outlines no "
            "radiologist accepted, are left out (counted, with the reasons).",
        ),
    ] = False,
    labels: Annotated[
        Path | None,
        typer.Option(
            help="Outcomes spreadsheet (CSV or Excel .xlsx): patient_id, good_response or trg, "
            "dm_event, dm_time_months, rfs_event, rfs_time_months, clinical and radiological "
            "features (see README). [default: COHORT/labels.csv; needed with --from-index]"
        ),
    ] = None,
    columns: ColumnsOption = None,
    config: ConfigOption = None,
    name: Annotated[str, typer.Option(help="Bundle name (in the manifest and the SR).")] = (
        "larc-rectal"
    ),
    version: Annotated[str, typer.Option(help="Bundle version.")] = "0.1.0",
    test_fraction: Annotated[
        float,
        typer.Option(min=0.0, max=0.5, help="Share of patients held out for the model card."),
    ] = 0.3,
    folds: FoldsOption = 5,
    epochs: EpochsOption = 60,
    patience: PatienceOption = 10,
    width: WidthOption = 1.0,
    image_size: Annotated[
        int, typer.Option(min=32, max=1024, help="Science A slice size (published: 256).")
    ] = 256,
    stack_size: Annotated[
        int, typer.Option(min=32, max=512, help="Science B crop size (published: 112).")
    ] = 112,
    stack_depth: Annotated[
        int, typer.Option(min=1, max=100, help="Science B slices per stack (published: 20).")
    ] = 20,
    stack_fov_mm: Annotated[
        float | None,
        typer.Option(
            min=1.0,
            max=400.0,
            help="Science B crop: a square of this many mm around the tumour on every slice, "
            "so the DM networks see its size [default: the published per-slice bounding box].",
        ),
    ] = None,
    dm_volume: Annotated[
        bool,
        typer.Option(
            "--dm-volume",
            help="Give the DLRS Cox model the log of the baseline tumour volume (read, else "
            "measured from the VOI) besides DL-prob [default: DL-prob alone, as published].",
        ),
    ] = False,
    subtypes: Annotated[int, typer.Option(min=2, max=8, help="Science D subtypes (k).")] = 3,
    segmentation_epochs: Annotated[
        int,
        typer.Option(
            min=0,
            help="Also train the automatic tumour segmenter into the bundle for this many "
            "epochs at most (see larc train segmentation); 0: no segmenter. With one, "
            "segmentation.mode auto_when_missing scores studies that have no drawn mask.",
        ),
    ] = 0,
    segmentation_steps: Annotated[
        int, typer.Option(min=1, help="Segmenter optimiser steps per epoch.")
    ] = 40,
    no_n4: NoN4Option = False,
    seed: SeedOption = 0,
    workers: WorkersOption = 0,
) -> None:
    """Train every model and write a bundle: signatures and SVMs (response), DM networks, Cox
    DLRS, cut-off and nomogram (distant metastasis), subtypes and RRS (recurrence), and with
    --segmentation-epochs the automatic tumour segmenter.

    Each network is trained in --folds folds; the bundle scores with the mean of the fold
    networks, the ones whose out-of-fold outputs the SVMs and Cox model learned from.

    Holds out --test-fraction of the patients and writes their metrics (with 95 % CIs) into
    the manifest and model card, with each output's validation (out-of-fold and held-out):
    what the validation does not back, larc serve does not send (scoring.require_validated).
    `larc evaluate` reports on a bundle; `larc serve` scores cases with it
    (models.bundle_dir). Prepared images are cached in OUT.prepared next to the bundle; each
    trained network is kept in OUT.checkpoints until the bundle is written, so a run that
    fails late resumes without training them again. Research use only.
    """
    from pydantic import ValidationError

    from pipeline.config import PreprocessConfig
    from pipeline.training.bundle import ModelRun, train_models
    from pipeline.training.networks import SignatureTraining
    from pipeline.training.segmentation import SegmentationTraining

    try:
        segmentation = (
            SegmentationTraining(
                epochs=segmentation_epochs, steps_per_epoch=segmentation_steps, seed=seed,
                patience=min(8, segmentation_epochs),
            )
            if segmentation_epochs
            else None
        )  # fmt: skip
        preprocess = PreprocessConfig(
            slice_size=image_size,
            stack_size=stack_size,
            stack_depth=stack_depth,
            n4=not no_n4,
            stack_fov_mm=stack_fov_mm,
        )
        common = {"epochs": epochs, "patience": patience, "folds": folds, "seed": seed}
        response = SignatureTraining.model_validate({**common, "width": width})
        dm = SignatureTraining.model_validate({**common, "width": width, "backbone": "resnet18"})
    except ValidationError as exc:
        raise typer.BadParameter(str(exc)) from exc
    if out.exists() and any(out.iterdir()):
        typer.echo(f"error: {out} is not empty: choose a new folder for the bundle", err=True)
        raise typer.Exit(code=2)
    if from_index == (cohort is not None):
        raise typer.BadParameter("give either --cohort or --from-index", param_hint="--cohort")
    data = (
        _index_cohort(labels, config, columns)
        if cohort is None
        else _load_cohort(cohort, labels, config, columns)
    )
    run = ModelRun(
        out_dir=out,
        name=name,
        version=version,
        preprocess=preprocess,
        response=response,
        dm=dm,
        test_fraction=test_fraction,
        subtypes=subtypes,
        workers=workers or None,
        rules=data.rules,
        cache=out.with_name(out.name + ".prepared"),
        segmentation=segmentation,
        checkpoints=out.with_name(out.name + ".checkpoints"),
        dm_covariates=("log_pre_volume_ml",) if dm_volume else (),
    )
    typer.echo(f"{len(data.cases)} patients with images; training a bundle into {out}", err=True)
    try:
        with progress_bars(len(data.cases)) as (prepared, epoch):
            manifest = train_models(data.cases, data.rows, run, progress=epoch, prepared=prepared)
    except ValueError as exc:
        typer.echo(f"error: cannot train: {exc}", err=True)
        if run.checkpoints is not None and any(run.checkpoints.glob("*.pt")):
            typer.echo(
                f"the networks trained so far are kept in {run.checkpoints}: run the same "
                "command again (after mending the cause) and they are not trained again",
                err=True,
            )
        raise typer.Exit(code=1) from exc
    print_bundle_summary(manifest, out)


def evaluate(
    bundle: Annotated[Path, typer.Option(help="Model bundle folder (from larc train models).")],
    cohort: CohortOption,
    out: Annotated[Path, typer.Option(help="Folder for metrics.json, the figures, report.html.")],
    labels: Annotated[
        Path | None,
        typer.Option(help="Outcomes spreadsheet, CSV or Excel [default: COHORT/labels.csv]."),
    ] = None,
    columns: ColumnsOption = None,
    config: ConfigOption = None,
    held_out_only: Annotated[
        bool,
        typer.Option(
            "--held-out-only", help="Skip the patients the bundle was trained on (by hashed id)."
        ),
    ] = False,
    workers: WorkersOption = 0,
    validate: Annotated[
        Path | None,
        typer.Option(
            "--validate",
            help="Also write a copy of the bundle into this new folder whose validation "
            "includes this cohort as external patients: each output validated (sent) or not "
            "by these patients, recorded in the manifest and the model card. Needs patients "
            "the bundle was not trained on; the original bundle is left as it was.",
        ),
    ] = None,
    validated_version: Annotated[
        str | None,
        typer.Option(help="Version of the --validate copy [default: VERSION+validated.DATE]."),
    ] = None,
    hash_ids: Annotated[
        bool,
        typer.Option(
            "--hash-ids",
            help="Name patients in predictions.csv by a keyed hash (HMAC-SHA256) of their id, "
            "not the id; the key is read from --hash-key-file or LARC_ID_HASH_KEY.",
        ),
    ] = False,
    hash_key_file: Annotated[
        Path | None,
        typer.Option(help="File holding the secret key for --hash-ids (keep it at the site)."),
    ] = None,
) -> None:
    """Evaluate a model bundle on a labelled cohort: JSON, PNG figures and one HTML report.

    Response: AUC with DeLong and bootstrap CIs, accuracy, sensitivity, specificity, F1,
    ROC curves, DeLong tests between models, calibration, Brier, ECE, decision curves, SHAP.
    Survival: Harrell's C with CI, time-dependent AUC at 1/2/3/5 years, Kaplan-Meier by risk
    group and subtype with log-rank p, NRI and IDI of the nomogram versus the clinical model.
    """
    from pipeline.bundle import Bundle
    from pipeline.manifest import BundleError
    from pipeline.training.evaluate import evaluate as run_evaluation

    key = _hash_key(hash_key_file) if hash_ids else None
    from pipeline.training.evaluate import score_cohort, validated_copy
    from pipeline.validation import validation_lines

    try:
        loaded = Bundle.load(bundle)
    except BundleError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from exc
    data = _load_cohort(cohort, labels, config, columns)
    with progress_bars(len(data.cases)) as (prepared, _):
        scores, inputs, skipped = score_cohort(
            loaded, data.cases, data.rows, held_out_only, workers or None, prepared=prepared
        )
    if not scores:
        typer.echo("error: no patient of the cohort could be scored", err=True)
        raise typer.Exit(code=1)
    report = run_evaluation(loaded, scores, data.rows, skipped, out, key)
    for model, entry in report["response"]["models"].items():
        low, high = entry["auc_ci95_delong"]
        typer.echo(
            f"{model}: AUC {entry['auc']:.3f} (95% CI {low:.3f}-{high:.3f}), n = {entry['n']}"
        )
    dm = report["survival"].get("distant_metastasis", {})
    if "c_index" in dm:
        typer.echo(f"DLRS: C-index {dm['c_index']['value']:.3f}, n = {dm['n']}")
    typer.echo(
        f"predictions: {out / 'predictions.csv'} ({report['predictions']['rows']} rows, "
        f"{report['predictions']['patients']})"
    )
    typer.echo(f"report: {out / 'report.html'}")
    if validate is not None:
        version = validated_version or (
            f"{loaded.manifest['version']}+validated.{dt.date.today():%Y%m%d}"
        )
        try:
            manifest = validated_copy(loaded, validate, version, scores, data.rows, inputs)
        except ValueError as exc:
            typer.echo(f"error: no validated bundle written: {exc}", err=True)
            raise typer.Exit(code=1) from exc
        typer.echo(f"bundle {manifest['name']} {version} written to {validate}:")
        for line in validation_lines(manifest):
            typer.echo(f"  {line}")


@train_app.command("segmentation")
def segmentation(
    cohort: CohortOption,
    out: Annotated[Path, typer.Option(help="Folder for t2w.pt, training.json and model_card.md.")],
    config: ConfigOption = None,
    epochs: EpochsOption = 40,
    patience: PatienceOption = 8,
    steps_per_epoch: Annotated[int, typer.Option(min=1, help="Optimiser steps per epoch.")] = 40,
    batch_size: Annotated[int, typer.Option(min=1, help="Patches per step.")] = 16,
    learning_rate: Annotated[float, typer.Option(min=0.0, help="Adam learning rate.")] = 1e-3,
    patch: Annotated[
        int,
        typer.Option(
            min=16, help="In-plane patch side in pixels (at most the images' size is used)."
        ),
    ] = 96,
    channels: Annotated[
        str,
        typer.Option(
            help="DynUNet filters per level, comma-separated, at least 3 levels "
            "(32,64,128,256: about four times the work)."
        ),
    ] = "16,32,64,128",
    test_fraction: Annotated[
        float, typer.Option(min=0.0, max=0.45, help="Share of patients held out to test on.")
    ] = 0.2,
    seed: SeedOption = 0,
) -> None:
    """Train the automatic tumour segmenter (science C) on the T2W masks a cohort has.

    Every study of the cohort with an axial T2W and a tumour mask drawn on it (RTSTRUCT or SEG)
    is used; no outcomes are needed. A 2.5D MONAI DynUNet (nnU-Net layout; a slice and its
    neighbours) is trained with DiceCE loss on patches, the best validation checkpoint kept;
    held-out Dice (mean, median, 5th percentile), HD95 and volume error go into
    OUT/training.json and the model card, with the quality gate's limits. Uses the GPU when
    there is one.
    """
    from dicom_io.roles import load_rules
    from pipeline.errors import PipelineInputError
    from pipeline.training.cohort import scan_folder
    from pipeline.training.segmentation import SegmentationTraining, train_segmenter

    settings = settings_or_exit(config)
    try:
        training = SegmentationTraining(
            epochs=epochs, patience=patience, steps_per_epoch=steps_per_epoch,
            batch_size=batch_size, learning_rate=learning_rate, patch=patch,
            test_fraction=test_fraction, seed=seed,
            channels=tuple(int(c) for c in channels.split(",") if c.strip()),
        )  # fmt: skip
    except ValueError as exc:  # pydantic's ValidationError is one, a channel not a number too
        raise typer.BadParameter(str(exc)) from exc
    try:
        studies = scan_folder(cohort)
        rules = load_rules(settings.roles.rules_file)
    except (OSError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from exc
    cases = {p: {uid: s.paths for uid, s in found.items()} for p, found in studies.items()}
    with progress_bars(0) as (_, epoch):
        try:
            record = train_segmenter(cases, out, training, rules, progress=epoch)
        except PipelineInputError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(code=2) from exc
    held = record["held_out"]
    if held.get("n"):
        typer.echo(
            f"held-out Dice: mean {held['dice_mean']:.3f}, median {held['dice_median']:.3f}, "
            f"5th percentile {held['dice_p5']:.3f}; HD95 median {held['hd95_mm_median']} mm "
            f"(n = {held['n']} volumes)"
        )
    typer.echo(json.dumps({"out": str(out), "seconds": record["seconds"]}))
