"""``larc outline``: the automatic tumour outlines of a patient (or all), and a radiologist's
review of one: accept (the next SR records it as reviewed) or reject (the case waits for a
drawn mask). Audited; the running daemon applies it within seconds."""

from __future__ import annotations

import getpass
import time
from typing import Annotated

import typer

from daemon.cli.common import ConfigOption, open_index, settings_or_exit


def outline(
    patient: Annotated[
        str | None, typer.Argument(help="Patient ID, or the id of one of its cases (all: none).")
    ] = None,
    accept: Annotated[
        str | None,
        typer.Option(help="Accept the automatic outline on this T2W SeriesInstanceUID."),
    ] = None,
    reject: Annotated[
        str | None,
        typer.Option(help="Reject the automatic outline on this T2W SeriesInstanceUID."),
    ] = None,
    by: Annotated[
        str | None, typer.Option(help="Who reviews, for the audit (default: the login name).")
    ] = None,
    note: Annotated[str, typer.Option(help="Why, for the audit (shown with a rejection).")] = "",
    config: ConfigOption = None,
) -> None:
    """List automatic tumour outlines (state, volume, gate reason, review) or review one.

    An automatic outline is made when a T2W arrives without a drawn mask
    (segmentation.mode); it is stored as a DICOM SEG in the study, marked unreviewed, and the
    case is scored on it. --accept records who checked it (the case is scored again, the SR
    says "reviewed and accepted by ..."); --reject leaves it out (the case waits for a drawn
    RTSTRUCT or SEG, with the reason).
    """
    if accept and reject:
        typer.echo("error: give --accept or --reject, not both", err=True)
        raise typer.Exit(code=2)
    settings = settings_or_exit(config)
    index = open_index(settings)
    try:
        if accept or reject:
            series = accept or reject or ""
            decision = "accepted" if accept else "rejected"
            try:
                index.review_auto_mask(series, decision, by or getpass.getuser(), "cli", note)
            except ValueError as exc:
                typer.echo(f"error: {exc}", err=True)
                raise typer.Exit(code=2) from exc
            typer.echo(f"recorded: outline {decision}; larc serve decides the cases again")
            return
        patient_id = None
        if patient is not None:
            case = index.case(patient)
            patient_id = case.patient_id if case is not None else patient
        rows = index.auto_masks(patient_id=patient_id)
        if not rows:
            typer.echo("no automatic outlines")
        for row in rows:
            volume = f"{row.volume_ml:.1f} ml" if row.volume_ml is not None else "-"
            review = "not reviewed"
            if row.review:
                at = time.strftime("%Y-%m-%d %H:%M", time.localtime(row.reviewed_at or 0))
                review = f"{row.review} by {row.reviewed_by} {at}"
                review += f" ({row.review_note})" if row.review_note else ""
            typer.echo(
                f"T2W {row.image_series_uid}: {row.state}, {volume} - {row.reason} [{review}]"
            )
    finally:
        index.close()
