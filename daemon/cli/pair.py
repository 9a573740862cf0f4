"""``larc pair``: show how a patient's studies were paired, and choose the baseline and
restaging studies by hand (a held case's resolution; audited, the running daemon applies it)."""

from __future__ import annotations

import getpass
import time
from typing import Annotated

import typer

from daemon.cli.common import ConfigOption, open_index, settings_or_exit
from daemon.index import Index
from daemon.index.rows import StudyRow


def _patient(index: Index, who: str) -> str:
    """A patient id from a patient id or one of its case ids."""
    case = index.case(who)
    if case is not None:
        return case.patient_id
    if any(p.patient_id == who for p in index.patients()):
        return who
    typer.echo(f"error: no patient or case {who!r} in the index", err=True)
    raise typer.Exit(code=2)


def _study(studies: list[StudyRow], wanted: str, option: str) -> str:
    """A study UID from a StudyInstanceUID or a date (YYYY-MM-DD or YYYYMMDD) of one study."""
    if any(s.study_uid == wanted for s in studies):
        return wanted
    date = wanted.replace("-", "")
    found = [s for s in studies if (s.study_date or "") == date]
    if len(found) == 1:
        return found[0].study_uid
    what = "several studies on" if found else "no study with UID or date"
    typer.echo(
        f"error: {option}: {what} {wanted!r}; give the StudyInstanceUID (larc pair PATIENT "
        "lists them)",
        err=True,
    )
    raise typer.Exit(code=2)


def _show(index: Index, patient_id: str) -> None:
    for study in index.studies_of_patient(patient_id):
        typer.echo(
            f"  {study.study_date or 'undated'} {study.description!r} {study.study_uid}: "
            f"{study.timepoint or '-'}"
            + (f" ({study.timepoint_reason})" if study.timepoint_reason else "")
        )
    for case in sorted(index.cases(patient_id=patient_id), key=lambda c: c.kind):
        typer.echo(
            f"  case {case.case_id} {case.kind} v{case.version}: {case.state} - {case.reason}"
        )
    for choice in index.timepoint_choices(patient_id):
        at = time.strftime("%Y-%m-%d %H:%M", time.localtime(choice.at))
        what = (
            f"baseline {choice.baseline_study_uid}, restaging {choice.restaging_study_uid or '-'}"
            if choice.baseline_study_uid
            else "back to larc's rules"
        )
        note = f" ({choice.note})" if choice.note else ""
        typer.echo(f"  chosen {at} by {choice.who} via {choice.via}: {what}{note}")


def pair(
    patient: Annotated[str, typer.Argument(help="Patient ID, or the id of one of its cases.")],
    baseline: Annotated[
        str | None,
        typer.Option(help="The baseline study: StudyInstanceUID, or its date (YYYY-MM-DD)."),
    ] = None,
    restaging: Annotated[
        str | None,
        typer.Option(
            help="The restaging study: StudyInstanceUID or date; must follow the baseline."
        ),
    ] = None,
    auto: Annotated[
        bool,
        typer.Option("--auto", help="Forget the choice made by hand: larc's rules decide again."),
    ] = False,
    by: Annotated[
        str | None, typer.Option(help="Who decides, for the audit (default: the login name).")
    ] = None,
    note: Annotated[str, typer.Option(help="Why, for the audit.")] = "",
    config: ConfigOption = None,
) -> None:
    """Show a patient's studies with their timepoints and why, its cases and the choices made
    so far; with --baseline (and --restaging) choose the pair by hand.

    A held case ("timepoints conflict: ...") is resolved this way or on the worklist. The choice
    is audited (who, when, note); the running larc serve applies it within seconds: the
    patient's cases are decided again, as new versions. Date order binds the choice too: the
    restaging must be dated after the baseline.
    """
    settings = settings_or_exit(config)
    index = open_index(settings)
    try:
        patient_id = _patient(index, patient)
        if baseline is None and restaging is None and not auto:
            typer.echo(f"patient {patient_id}")
            _show(index, patient_id)
            return
        if auto and (baseline or restaging):
            typer.echo("error: --auto forgets a choice; do not give studies with it", err=True)
            raise typer.Exit(code=2)
        if restaging is not None and baseline is None:
            typer.echo("error: --restaging needs --baseline", err=True)
            raise typer.Exit(code=2)
        studies = index.studies_of_patient(patient_id)
        chosen_baseline = _study(studies, baseline, "--baseline") if baseline else None
        chosen_restaging = _study(studies, restaging, "--restaging") if restaging else None
        try:
            index.choose_timepoints(
                patient_id, chosen_baseline, chosen_restaging, by or getpass.getuser(), "cli",
                note,
            )  # fmt: skip
        except ValueError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(code=2) from exc
        typer.echo(
            "recorded: larc's rules decide again"
            if auto
            else "recorded: the running larc serve pairs the patient's cases this way within "
            "seconds (larc status shows the new versions)"
        )
    finally:
        index.close()
