"""``larc synth``: a synthetic rectal-MRI cohort."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from daemon.cli.common import write_synthetic_cohort


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
    series: Annotated[
        str,
        typer.Option(
            help="Series each study gets, comma-separated, or 'all': localizer, t2w_sag, t2w, "
            "t2w_cor, dwi, adc, ce_t1, rtstruct, seg (t2w and rtstruct always; e.g. "
            "'t2w,dwi,rtstruct' for a fast training cohort)."
        ),
    ] = "all",
) -> None:
    """Write a synthetic rectal-MRI cohort: DICOM studies, labels.csv and manifest.json.

    Each patient gets a baseline and a restaging study 8-14 weeks later (some only one), each
    with localizer, sagittal/coronal/oblique-axial T2W, DWI (b0 + 800/1000, vendor b-value
    tags), ADC (most studies), CE-T1, an RTSTRUCT of the tumour and, for some, a SEG on DWI.
    """
    write_synthetic_cohort(
        out, patients, seed, matrix, slices, missing_fraction, seg_fraction, workers, series
    )
