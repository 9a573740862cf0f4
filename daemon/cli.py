"""The ``larc`` command."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Annotated

import typer

from daemon import __version__
from daemon.logs import configure_logging

logger = logging.getLogger(__name__)

app = typer.Typer(
    name="larc",
    help=(
        "larc: AI scoring of rectal-cancer MRI next to a PACS (research use only - not for "
        "diagnostic decisions).\n\nBuilt so far: the synthetic cohort generator (synth) and the "
        "demo. The DICOM listener, pipeline and workers are on the roadmap (see README)."
    ),
    no_args_is_help=True,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"larc {__version__}")
        raise typer.Exit


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
    log_level: Annotated[
        str, typer.Option("--log-level", help="DEBUG, INFO, WARNING or ERROR.")
    ] = "INFO",
    log_json: Annotated[
        bool, typer.Option("--log-json", help="Log JSON lines instead of plain text.")
    ] = False,
) -> None:
    """Common options."""
    if log_level.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise typer.BadParameter(f"unknown log level {log_level!r}", param_hint="--log-level")
    configure_logging(log_level, log_json)


def _print_table(rows: list[dict[str, str]]) -> None:
    if not rows:
        return
    widths = {k: max(len(k), *(len(r[k]) for r in rows)) for k in rows[0]}
    typer.echo("  ".join(k.ljust(widths[k]) for k in rows[0]))
    for row in rows:
        typer.echo("  ".join(row[k].ljust(widths[k]) for k in row))


def _synth(
    out: Path,
    patients: int,
    seed: int,
    matrix: int,
    slices: int,
    missing_fraction: float,
    seg_fraction: float,
    workers: int,
) -> None:
    from dicom_io.synthetic.cohort import CohortSpec, generate_cohort, summary_rows

    try:
        spec = CohortSpec(
            patients=patients,
            seed=seed,
            matrix=matrix,
            slices=slices,
            missing_fraction=missing_fraction,
            seg_fraction=seg_fraction,
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
    _print_table(summary_rows(result))
    files = sum(s.instance_count for p in result.patients for s in p.studies.values())
    size = sum(f.stat().st_size for f in out.rglob("*.dcm"))
    typer.echo(
        f"\n{len(result.patients)} patients, {files} DICOM files, {size / 1e6:.1f} MB in {out} "
        f"({elapsed:.1f} s, {elapsed / len(result.patients):.2f} s and "
        f"{size / 1e6 / len(result.patients):.1f} MB per patient)"
    )
    typer.echo(f"labels: {result.labels_path}")


@app.command()
def synth(
    out: Annotated[
        Path, typer.Option("--out", help="Folder to write the cohort to (new or empty).")
    ],
    patients: Annotated[int, typer.Option(help="Number of patients.")] = 20,
    seed: Annotated[int, typer.Option(help="Seed: the same options give identical files.")] = 0,
    matrix: Annotated[int, typer.Option(help="T2W/CE-T1 matrix (64 for tests, 256 real).")] = 64,
    slices: Annotated[int, typer.Option(help="Slices of the oblique-axial T2W series.")] = 24,
    missing_fraction: Annotated[
        float,
        typer.Option(help="Fraction of patients missing a study, and of studies missing ADC."),
    ] = 0.15,
    seg_fraction: Annotated[
        float, typer.Option(help="Fraction of studies that also get a DICOM SEG on DWI high-b.")
    ] = 0.4,
    workers: Annotated[
        int, typer.Option(help="Processes to generate patients in (0: one per CPU).")
    ] = 0,
) -> None:
    """Write a synthetic rectal-MRI cohort: DICOM studies, labels.csv and manifest.json.

    Each patient gets a baseline and a restaging study 8-14 weeks later (some only one), each
    with localizer, sagittal/coronal/oblique-axial T2W, DWI (b0 + 800/1000, vendor b-value
    tags), ADC (most studies), CE-T1, an RTSTRUCT of the tumour and, for some, a SEG on DWI.
    """
    _synth(out, patients, seed, matrix, slices, missing_fraction, seg_fraction, workers)


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", help="Folder for the demo cohort.")] = Path(
        "larc-demo"
    ),
    patients: Annotated[int, typer.Option(help="Number of patients.")] = 6,
) -> None:
    """The main job on its embedded default.

    For now: generate a small synthetic cohort and print what it holds per patient. (When the
    daemon and workers land, the demo will start them, send the cohort in over DICOM and print
    each patient's scores.)
    """
    if out.exists() and (out / "manifest.json").exists():
        import shutil

        shutil.rmtree(out)
    _synth(
        out,
        patients,
        seed=0,
        matrix=64,
        slices=24,
        missing_fraction=0.15,
        seg_fraction=0.4,
        workers=0,
    )
