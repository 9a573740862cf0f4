"""What the ``larc`` command modules share: the --config option, settings loading with clear
errors, opening the index, tables, the synthetic-cohort step, progress bars and the one-line
score summary. Command modules import this module and library code, never each other."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from daemon.index import INDEX_FILE, Index
from daemon.settings import ConfigError, Settings, load_settings
from pipeline.validation import unavailable, validation_lines

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        envvar="LARC_CONFIG",
        help="YAML configuration file (environment LARC_* variables override it).",
    ),
]


def settings_or_exit(config: Path | None, **overrides: Any) -> Settings:
    """The settings (file + environment + the non-empty ``overrides``), or exit 2 with the
    configuration error."""
    try:
        return load_settings(config, **{k: v for k, v in overrides.items() if v})
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from exc


def open_index(settings: Settings) -> Index:
    """The index under ``storage.data_dir``; exits with the reason when there is none."""
    path = settings.storage.data_dir / INDEX_FILE
    if not path.exists():
        typer.echo(f"error: no index at {path}: has larc serve run with this data_dir?", err=True)
        raise typer.Exit(code=2)
    return Index(path)


def print_table(rows: list[dict[str, str]]) -> None:
    """Rows of strings as a plain aligned table."""
    if not rows:
        return
    widths = {k: max(len(k), *(len(r[k]) for r in rows)) for k in rows[0]}
    typer.echo("  ".join(k.ljust(widths[k]) for k in rows[0]))
    for row in rows:
        typer.echo("  ".join(row[k].ljust(widths[k]) for k in row))


def score_summary(kind: str, scores: dict[str, Any]) -> str:
    """One line of a case's main scores."""
    if kind == "response":
        parts = [
            f"P(good response) {name} {scores[f'response_{name}']['p_good_response']:.2f}"
            for name in ("FDL", "CRD", "CR")
            if scores.get(f"response_{name}")
        ]
    else:
        dm = scores.get("distant_metastasis") or {}
        recurrence = scores.get("recurrence") or {}
        parts = [f"DM risk {dm['risk_group']} (DLRS {dm['dlrs']:.2f})"] if "dlrs" in dm else []
        parts += [f"3y DMFS {dm['dmfs_3y']:.2f}"] if "dmfs_3y" in dm else []
        if "nomogram_dmfs_3y" in dm:
            parts.append(f"nomogram 3y DMFS {dm['nomogram_dmfs_3y']:.2f}")
        parts += [f"subtype {recurrence['subtype']}"] if recurrence else []
    # outputs not sent: not in the bundle, or not backed by its validation
    parts += [f"{what} not available" for what in unavailable(scores, kind == "response")]
    return ", ".join(parts) or "no score: " + "; ".join(
        f"{k}: {v}" for k, v in (scores.get("not_scored") or {}).items()
    )


def write_synthetic_cohort(
    out: Path,
    patients: int,
    seed: int,
    matrix: int,
    slices: int,
    missing_fraction: float,
    seg_fraction: float,
    workers: int,
    series: str = "all",
) -> None:
    """``larc synth``'s work, also the first step of the demo and the harness: write the
    cohort and print its summary table."""
    from dicom_io.synthetic.cohort import CohortSpec, generate_cohort, summary_rows
    from dicom_io.synthetic.vendors import Role

    chosen = (
        tuple(Role)
        if series.strip() == "all"
        else tuple(s.strip().lower() for s in series.split(",") if s.strip())
    )
    try:
        spec = CohortSpec(
            patients=patients,
            seed=seed,
            matrix=matrix,
            slices=slices,
            missing_fraction=missing_fraction,
            seg_fraction=seg_fraction,
            series=chosen,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    started = time.perf_counter()
    try:
        result = generate_cohort(spec, out, workers=workers or None)
    except FileExistsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from exc
    elapsed = time.perf_counter() - started
    print_table(summary_rows(result))
    files = sum(s.instance_count for p in result.patients for s in p.studies.values())
    size = sum(f.stat().st_size for f in out.rglob("*.dcm"))
    typer.echo(
        f"\n{len(result.patients)} patients, {files} DICOM files, {size / 1e6:.1f} MB in {out} "
        f"({elapsed:.1f} s, {elapsed / len(result.patients):.2f} s and "
        f"{size / 1e6 / len(result.patients):.1f} MB per patient)"
    )
    typer.echo(f"labels: {result.labels_path}")


@contextmanager
def progress_bars(patients: int) -> Iterator[tuple[Callable[[int, int], None], Any]]:
    """(callback for prepared patients, callback for training epochs) drawing rich bars."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("{task.fields[note]}"),
        TimeElapsedColumn(),
        transient=False,
    ) as bar:
        prep = bar.add_task("preparing images", total=patients, note="")
        tasks: dict[str, Any] = {}

        def prepared(done: int, total: int) -> None:
            bar.update(prep, completed=done, total=total)

        def epoch(name: str, n: int, total: int, loss: float) -> None:
            if name not in tasks:
                tasks[name] = bar.add_task(name, total=total, note="")
            note = "all patients" if math.isnan(loss) else f"validation {loss:.3f}"
            bar.update(tasks[name], completed=n, note=note)

        yield prepared, epoch


def demo_bundle(folder: Path) -> Path:
    """The demo bundle in ``folder`` (trained on the first run, about 4 minutes)."""
    from pipeline.training.demo import DEMO_COHORT, demo_bundle_current
    from pipeline.training.demo import demo_bundle as train_demo_bundle

    if demo_bundle_current(folder / "bundle"):
        return folder / "bundle"
    typer.echo("first run: training a small demo bundle on synthetic data (about 4 minutes)")
    policy = settings_or_exit(None).pairing.policy()
    with progress_bars(DEMO_COHORT.patients) as (prepared, epoch):
        bundle = train_demo_bundle(folder, policy, progress=epoch, prepared=prepared)
    print_bundle_summary(json.loads((bundle / "manifest.json").read_text()), bundle)
    return bundle


def print_bundle_summary(manifest: dict[str, Any], folder: Path) -> None:
    """What ``larc train models`` says of a new bundle: where, how long, held-out metrics."""
    typer.echo(
        f"bundle {manifest['name']} {manifest['version']} written to {folder} "
        f"({manifest['seconds']} s)"
    )
    for name, why in (manifest.get("not_in_bundle") or {}).items():
        typer.echo(f"  not in this bundle: {name} ({why})")
    for key, value in (manifest.get("metrics") or {}).items():
        if isinstance(value, dict):
            ci = value.get("ci95")
            shown = f"{value['value']:.3f}" + (f" (95% CI {ci[0]:.3f}-{ci[1]:.3f})" if ci else "")
            typer.echo(f"  held-out {key}: {shown}, n = {value['n']}")
    typer.echo("validation (what larc sends with scoring.require_validated, the default):")
    for line in validation_lines(manifest):
        typer.echo(f"  {line}")
