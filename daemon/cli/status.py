"""``larc status``: patients, studies, series roles, cases and results, as the index has them."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pydicom
import typer

from daemon.cli.common import ConfigOption, open_index, score_summary, settings_or_exit
from daemon.index import CaseRow, Index


def _print_studies(index: Index, patient_id: str) -> None:
    for study in index.studies_of_patient(patient_id):
        state = "stable" if study.stable_at else "receiving"
        timepoint = study.timepoint or "-"
        typer.echo(
            f"  study {study.study_date} {study.description!r}: {study.instances} instances, "
            f"{state}, timepoint {timepoint}"
            + (f" ({study.timepoint_reason})" if study.timepoint_reason else "")
        )
        for series in index.series_of_study(study.study_uid):
            role = series.role or "(not yet classified)"
            why = series.role_reason or series.ignored_reason or ""
            typer.echo(
                f"    series {series.series_number} {series.modality} "
                f"{series.description!r}: {series.instances} instances -> {role}"
                + (f" ({why})" if why else "")
            )


_KINDS = {"SR": "SR", "OT": "heat-map SC", "SEG": "SEG"}  # Modality -> what larc calls it


def object_kinds(data_dir: Path, files: tuple[str, ...]) -> str:
    """What a result holds, by kind: e.g. ``SR, 6 heat-map SC, SEG`` (from the file headers)."""
    counts: Counter[str] = Counter()
    for name in files:
        try:
            modality = pydicom.dcmread(
                data_dir / name, stop_before_pixels=True, specific_tags=["Modality"]
            ).get("Modality", "")
        except (OSError, pydicom.errors.InvalidDicomError):
            modality = "missing file"
        counts[_KINDS.get(str(modality), str(modality) or "?")] += 1
    order = [*_KINDS.values()]
    kinds = sorted(counts, key=lambda k: order.index(k) if k in order else len(order))
    return ", ".join(k if counts[k] == 1 else f"{counts[k]} {k}" for k in kinds)


def _print_result(index: Index, case: CaseRow, data_dir: Path) -> None:
    if not case.work_key:
        return
    result = index.result(case.work_key)
    if result is None:
        return
    scores = result.scores
    kinds = object_kinds(data_dir, result.files)
    typer.echo(f"    scores ({scores.get('model')}): {score_summary(case.kind, scores)}")
    typer.echo(f"    results: {kinds} (SR {result.sr_sop_uid})")
    for export in index.exports_of(case.work_key):
        error = f" ({export.last_error})" if export.last_error else ""
        state = str(export.state)
        if export.confirmation:
            state = f"{state}, {export.confirmation} ({kinds})"
        elif export.state == "committing":
            state = f"sent, commitment pending ({kinds})"
        typer.echo(f"    export to {export.destination}: {state}, {export.attempts} tries{error}")


def status(config: ConfigOption = None) -> None:
    """List patients, studies (timepoints), series (roles and why), cases, recent rejections."""
    settings = settings_or_exit(config)
    index = open_index(settings)
    try:
        for patient in index.patients():
            typer.echo(f"patient {patient.patient_id}")
            _print_studies(index, patient.patient_id)
            cases = sorted(index.cases(patient_id=patient.patient_id), key=lambda c: c.kind)
            for case in cases:
                typer.echo(
                    f"  case {case.case_id} {case.kind} v{case.version}: "
                    f"{case.state} - {case.reason}"
                )
                _print_result(index, case, settings.storage.data_dir)
        rejections = index.recent_rejections(20)
        if rejections:
            typer.echo("recent rejections:")
            for row in rejections:
                typer.echo(f"    from {row.calling_ae} 0x{row.status:04X}: {row.reason}")
    finally:
        index.close()
