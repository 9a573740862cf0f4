"""``larc train``: train models on a hospital's labelled cohort."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

train_app = typer.Typer(
    help="Train models on a labelled cohort (research use only).", no_args_is_help=True
)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        envvar="LARC_CONFIG",
        help="YAML configuration (pairing and role rules are taken from it).",
    ),
]


def _signature_names(text: str) -> tuple[str, ...]:
    from pipeline.case import SIGNATURES

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
    cohort: Annotated[
        Path,
        typer.Option(help="Folder of the cohort's DICOM studies (any layout; e.g. larc synth)."),
    ],
    out: Annotated[Path, typer.Option(help="Folder for weights, signatures.csv, training.json.")],
    labels: Annotated[
        Path | None,
        typer.Option(
            help="Outcomes CSV: patient_id and good_response (0/1) or trg (0-3); optional "
            "baseline_study_uid / restaging_study_uid. [default: COHORT/labels.csv]"
        ),
    ] = None,
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
    folds: Annotated[int, typer.Option(min=2, help="Folds for out-of-fold signatures.")] = 5,
    epochs: Annotated[int, typer.Option(min=1, help="Most epochs per network.")] = 60,
    patience: Annotated[
        int, typer.Option(min=1, help="Early stop after this many epochs without improvement.")
    ] = 10,
    batch_size: Annotated[int, typer.Option(min=2, help="SGD batch size (science A: 32).")] = 32,
    learning_rate: Annotated[
        float, typer.Option(min=0.0, help="SGD learning rate (science A: 0.01).")
    ] = 0.01,
    backbone: Annotated[
        str, typer.Option(help="densenet121 (science A), resnet18 or vit (science C).")
    ] = "densenet121",
    width: Annotated[
        float, typer.Option(min=0.05, max=4.0, help="Channel width factor (1.0 = published).")
    ] = 1.0,
    image_size: Annotated[
        int, typer.Option(min=16, max=1024, help="Slice size fed to the network (A: 256).")
    ] = 256,
    no_n4: Annotated[bool, typer.Option("--no-n4", help="Skip N4 bias correction.")] = False,
    seed: Annotated[int, typer.Option(help="Seed of splits, weights and augmentation.")] = 0,
    workers: Annotated[
        int, typer.Option(min=0, help="Processes preparing the images (0: one per CPU).")
    ] = 0,
) -> None:
    """Train science A's signature networks with out-of-fold signatures.

    Every patient is prepared with the same code scoring uses (N4, 0-255, largest tumour
    slice); each signature network is trained k-fold (SGD, random resized crop and flip, early
    stopping on a validation split), giving each training patient a signature from a network
    that never saw it, then once on all patients for inference. Prepared images are cached
    under OUT/prepared, so a second run skips reading the DICOM files.
    """
    from pydantic import ValidationError
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from daemon.assembly import load_rules
    from daemon.cli import _settings
    from dicom_io.pairing import PairingPolicy
    from pipeline.cohort import good_response, read_labels, scan_folder, timepoint_files
    from pipeline.config import PreprocessConfig
    from pipeline.signatures import SignatureTraining
    from pipeline.train import SignatureRun, train_signatures

    settings = _settings(config)
    names = _signature_names(signature)
    labels_path = labels or cohort / "labels.csv"
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
        rows = read_labels(labels_path)
        studies = scan_folder(cohort)
    except ValidationError as exc:
        raise typer.BadParameter(str(exc)) from exc
    except (OSError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from exc
    pairing = settings.pairing
    policy = PairingPolicy(
        pairing.restaging_pattern,
        pairing.baseline_pattern,
        pairing.min_interval_days,
        pairing.max_interval_days,
    )
    outcomes = {p: y for p, row in rows.items() if (y := good_response(row)) is not None}
    cases = {p: timepoint_files(s, rows.get(p, {}), policy) for p, s in studies.items()}
    typer.echo(
        f"{len(studies)} patients with images, {len(outcomes)} with an outcome; training "
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
        rules=load_rules(settings.roles.rules_file),
    )
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("{task.fields[note]}"),
        TimeElapsedColumn(),
        transient=False,
    ) as bar:
        prep = bar.add_task("preparing images", total=len(cases), note="")
        tasks: dict[str, Any] = {}

        def prepared(done: int, total: int) -> None:
            bar.update(prep, completed=done, total=total)

        def epoch(name: str, n: int, total: int, loss: float) -> None:
            if name not in tasks:
                tasks[name] = bar.add_task(name, total=total, note="")
            bar.update(tasks[name], completed=n, note=f"val loss {loss:.3f}")

        summary = train_signatures(cases, outcomes, run, progress=epoch, prepared=prepared)
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
