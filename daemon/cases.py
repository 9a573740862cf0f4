"""Cases: what a patient's studies allow us to compute, or what they are still waiting for.

A *baseline* case (risk models) needs the baseline study's axial T2W, DWI or ADC and a tumour mask
on the T2W. A *response* case needs baseline and restaging studies, each with axial T2W, DWI,
CE-T1 and a tumour mask on the T2W. A change of inputs (a new mask) makes a new case version.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from dicom_io.pairing import BASELINE, RESTAGING
from dicom_io.roles import SeriesRole

WAITING = "waiting"
READY = "ready"
# nothing left to do for the case until new input arrives (or an operator retries it)
FINISHED = frozenset({"exported", "failed", "failed-export", WAITING})
BASELINE_CASE = "baseline"
RESPONSE_CASE = "response"


@dataclass(frozen=True)
class SeriesFacts:
    """What case building needs to know of one series."""

    series_uid: str
    role: str
    instances: int
    referenced_series_uid: str | None = None


@dataclass(frozen=True)
class StudyInputs:
    """A stable study with a timepoint and its series."""

    study_uid: str
    timepoint: str
    series: Sequence[SeriesFacts]


@dataclass
class CaseDecision:
    """The state a case should be in, with its inputs or what is missing."""

    kind: str
    state: str
    reason: str
    baseline_study_uid: str | None
    restaging_study_uid: str | None
    inputs: dict[str, str] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        """A hash of the image inputs (no readings): see :func:`case_fingerprint`."""
        return case_fingerprint(self.inputs, {})


def case_fingerprint(inputs: Mapping[str, str], readings: Mapping[str, str]) -> str:
    """A hash of a case's inputs, the series and the radiologist's readings: a new one means a
    new case version (and a new work key). Without readings it is the hash of the series alone,
    as in larc 0.1."""
    data: object = dict(inputs) if not readings else {"images": inputs, "readings": readings}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def case_id(patient_id: str, kind: str) -> str:
    """A case id that does not reveal the patient (ids are logged; patient ids are not)."""
    digest = hashlib.sha256(f"{patient_id}\0{kind}".encode()).hexdigest()[:12]
    return f"{kind[:4]}-{digest}"


def _pick(study: StudyInputs, role: SeriesRole) -> SeriesFacts | None:
    candidates = [s for s in study.series if s.role == role]
    return max(candidates, key=lambda s: (s.instances, s.series_uid)) if candidates else None


def _study_inputs(
    study: StudyInputs, needed: tuple[tuple[SeriesRole, ...], ...], label: str
) -> tuple[dict[str, str], list[str]]:
    """(inputs, missing) for one study: a series for each requirement (any one of its roles,
    in order of preference), and a tumour mask drawn on the T2W."""
    inputs: dict[str, str] = {}
    missing: list[str] = []
    for roles in needed:
        chosen = next((c for c in (_pick(study, r) for r in roles) if c is not None), None)
        if chosen is None:
            missing.append(f"{label}: no {' or '.join(r.value for r in roles)} series")
        else:
            inputs[f"{label}_{chosen.role.lower()}"] = f"{chosen.series_uid}:{chosen.instances}"
    t2w = _pick(study, SeriesRole.T2W_AX)
    masks = [
        s
        for s in study.series
        if s.role in (SeriesRole.RTSTRUCT, SeriesRole.SEG)
        and t2w is not None
        and s.referenced_series_uid == t2w.series_uid
    ]
    if masks:
        inputs[f"{label}_mask"] = max(masks, key=lambda s: s.series_uid).series_uid
    elif t2w is not None:
        missing.append(f"{label}: no tumour mask on the T2W")
    for other in study.series:  # masks on other series are inputs too (carried to DWI later)
        if other.role in (SeriesRole.RTSTRUCT, SeriesRole.SEG) and other not in masks:
            inputs[f"{label}_extra_mask_{other.series_uid}"] = str(other.referenced_series_uid)
    return inputs, missing


# what each kind of case needs: the timepoints, and in each study a series for every requirement
CASE_REQUIREMENTS: dict[str, tuple[tuple[str, ...], tuple[tuple[SeriesRole, ...], ...]]] = {
    BASELINE_CASE: ((BASELINE,), ((SeriesRole.T2W_AX,), (SeriesRole.DWI, SeriesRole.ADC))),
    RESPONSE_CASE: (
        (BASELINE, RESTAGING),
        ((SeriesRole.T2W_AX,), (SeriesRole.DWI,), (SeriesRole.CE_T1,)),
    ),
}


def decide_cases(studies: Sequence[StudyInputs]) -> list[CaseDecision]:
    """The baseline and response cases of one patient."""
    by_timepoint = {s.timepoint: s for s in studies if s.timepoint in (BASELINE, RESTAGING)}
    decisions = []
    for kind, (timepoints, needed) in CASE_REQUIREMENTS.items():
        inputs: dict[str, str] = {}
        missing: list[str] = []
        for label in timepoints:
            study = by_timepoint.get(label)
            if study is None:
                missing.append(f"no {label} study")
                continue
            found, lacking = _study_inputs(study, needed, label)
            inputs.update(found)
            missing.extend(lacking)
        baseline = by_timepoint.get(BASELINE)
        restaging = by_timepoint.get(RESTAGING) if RESTAGING in timepoints else None
        decisions.append(
            CaseDecision(
                kind=kind,
                state=WAITING if missing else READY,
                reason="; ".join(missing) or "inputs complete",
                baseline_study_uid=baseline.study_uid if baseline else None,
                restaging_study_uid=restaging.study_uid if restaging else None,
                inputs=inputs,
            )
        )
    return decisions
