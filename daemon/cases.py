"""Cases: what a patient's studies allow us to compute, or what they are still waiting for.

A *baseline* case (risk models) needs the baseline study's axial T2W, DWI or ADC and a tumour mask
on the T2W. A *response* case needs baseline and restaging studies, each with axial T2W, DWI,
CE-T1 and a tumour mask on the T2W. A change of inputs (a new mask) makes a new case version.

This module owns the case states (:class:`CaseState`), the transitions allowed between them
(:data:`TRANSITIONS`, checked by the index wherever a state is written) and the format of a
case's recorded inputs: the series chosen by :func:`dicom_io.selection.select_series`, which
are exactly the series the work order hands to ``prepare_case``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from dicom_io.pairing import BASELINE, RESTAGING, Timepoint
from dicom_io.roles import SeriesRole
from dicom_io.selection import SeriesCandidate, StudySelection, select_series
from pipeline.kinds import CaseKind

__all__ = [
    "FINISHED",
    "TRANSITIONS",
    "AutoMask",
    "CaseDecision",
    "CaseKind",
    "CaseState",
    "InvalidTransitionError",
    "RecordedSeries",
    "SeriesFacts",
    "StudyInputs",
    "case_fingerprint",
    "case_id",
    "check_transition",
    "decide_cases",
    "held_decision",
    "recorded_series",
    "t2w_without_mask",
]


class CaseState(StrEnum):
    """Where a case version stands."""

    WAITING = "waiting"  # an input is missing (the reason says which)
    HELD = "held"  # larc is unsure (timepoints conflict): an operator decides, nothing is sent
    READY = "ready"  # inputs complete, to be scored
    QUEUED = "queued"  # handed to the workers
    RUNNING = "running"  # a worker is scoring it
    DONE = "done"  # results stored under <data_dir>/results/, exports pending
    EXPORTED = "exported"  # every destination has the results
    FAILED = "failed"  # scoring failed (the reason names the stage)
    DECLINED = "declined"  # not scored on purpose: inputs unlike the training data (reasons)
    FAILED_EXPORT = "failed-export"  # an export was parked after its last try


WAITING, READY = CaseState.WAITING, CaseState.READY
# nothing left to do for the case until new input arrives (or an operator retries it)
FINISHED = frozenset(
    {
        CaseState.EXPORTED,
        CaseState.FAILED,
        CaseState.FAILED_EXPORT,
        CaseState.WAITING,
        CaseState.HELD,
        CaseState.DECLINED,
    }
)

# Within one case version: from a state (None: a new case) to the states it may go to. A state
# may always be restated with a new reason. Changed inputs may send any case back to WAITING
# or HELD, and a new version (new inputs, readings or an operator's choice of timepoints)
# starts again at WAITING, HELD, READY or DECLINED (an automatic mask that failed its check)
# from any state.
TRANSITIONS: dict[CaseState | None, frozenset[CaseState]] = {
    None: frozenset({CaseState.WAITING, CaseState.HELD, CaseState.READY, CaseState.DECLINED}),
    CaseState.WAITING: frozenset({CaseState.READY, CaseState.DECLINED}),
    CaseState.HELD: frozenset({CaseState.READY}),
    CaseState.READY: frozenset(
        {CaseState.QUEUED, CaseState.DONE, CaseState.FAILED, CaseState.DECLINED}
    ),
    CaseState.QUEUED: frozenset(
        {CaseState.RUNNING, CaseState.DONE, CaseState.FAILED, CaseState.DECLINED, CaseState.READY}
    ),
    CaseState.RUNNING: frozenset(
        {CaseState.DONE, CaseState.FAILED, CaseState.DECLINED, CaseState.READY}
    ),
    CaseState.DONE: frozenset({CaseState.EXPORTED, CaseState.FAILED_EXPORT}),
    CaseState.EXPORTED: frozenset(),
    CaseState.FAILED: frozenset(),
    CaseState.DECLINED: frozenset(),
    CaseState.FAILED_EXPORT: frozenset({CaseState.EXPORTED}),
}
_ALWAYS = frozenset({CaseState.WAITING, CaseState.HELD})  # inputs changed, from anywhere
_NEW_VERSION = frozenset({CaseState.WAITING, CaseState.HELD, CaseState.READY, CaseState.DECLINED})


class InvalidTransitionError(ValueError):
    """A case state change that the table does not allow (a bug, never user input)."""


def check_transition(old: CaseState | None, new: CaseState, new_version: bool = False) -> None:
    """Raise :class:`InvalidTransitionError` unless ``old`` -> ``new`` is allowed."""
    allowed = _NEW_VERSION if new_version else TRANSITIONS[old] | _ALWAYS
    if new != old and new not in allowed:
        raise InvalidTransitionError(
            f"a case cannot go from {old or 'nothing'} to {new}"
            + (" in a new version" if new_version else "")
        )


@dataclass(frozen=True)
class SeriesFacts:
    """What case building needs to know of one series."""

    series_uid: str
    role: str
    instances: int
    referenced_series_uid: str | None = None
    automatic: bool = False  # a mask made by larc's segmenter
    # a mask another program made with no person (SEG AUTOMATIC, RTSTRUCT ROIs AUTOMATIC): its
    # name. Such a mask is not used: nobody drew or reviewed it, and larc's gate never saw it
    made_elsewhere_by: str | None = None


@dataclass(frozen=True)
class AutoMask:
    """What case building knows of the automatic tumour mask of one T2W series
    (``daemon.index.AutoMaskRow``)."""

    state: str  # requested, queued, passed or failed
    reason: str = ""
    review: str | None = None  # accepted or rejected
    reviewer: str = ""
    note: str = ""


@dataclass(frozen=True)
class StudyInputs:
    """A stable study with a timepoint and its series."""

    study_uid: str
    timepoint: str
    series: Sequence[SeriesFacts]


@dataclass
class CaseDecision:
    """The state a case should be in, with its inputs or what is missing."""

    kind: CaseKind
    state: CaseState
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


# what each kind of case needs in each of its studies: a series for every requirement (any one
# of its roles, in order of preference) and a tumour mask on the T2W; and which image series it
# reads (``prepare_case``): the baseline's ADC crop stack comes from the ADC series when there
# is one, else from the DWI
CASE_REQUIREMENTS: dict[CaseKind, tuple[tuple[SeriesRole, ...], ...]] = {
    CaseKind.BASELINE: ((SeriesRole.T2W_AX,), (SeriesRole.DWI, SeriesRole.ADC)),
    CaseKind.RESPONSE: ((SeriesRole.T2W_AX,), (SeriesRole.DWI,), (SeriesRole.CE_T1,)),
}
CASE_READS: dict[CaseKind, tuple[SeriesRole, ...]] = {
    CaseKind.BASELINE: (SeriesRole.T2W_AX, SeriesRole.DWI, SeriesRole.ADC),
    CaseKind.RESPONSE: (SeriesRole.T2W_AX, SeriesRole.DWI, SeriesRole.CE_T1),
}


def _candidates(study: StudyInputs) -> list[SeriesCandidate]:
    roles = set(SeriesRole)
    return [
        SeriesCandidate(
            s.series_uid,
            SeriesRole(s.role) if s.role in roles else SeriesRole.IGNORED,
            s.instances,
            s.referenced_series_uid,
            s.automatic,
        )
        for s in study.series
        if s.made_elsewhere_by is None
    ]


def _unused_masks(study: StudyInputs, series_uid: str) -> str:
    """Words for the masks on ``series_uid`` that another program made on its own, which case
    building leaves out (empty when there are none)."""
    found = sorted(
        {s.made_elsewhere_by for s in study.series
         if s.made_elsewhere_by and s.referenced_series_uid == series_uid}
    )  # fmt: skip
    if not found:
        return ""
    names = ", ".join(f"'{name}'" for name in found)
    return (
        f" (an automatic outline by {names} is not used: nobody drew or reviewed it; draw the "
        "tumour, or let larc's own segmenter outline it)"
    )


def t2w_without_mask(study: StudyInputs) -> str | None:
    """The study's chosen T2W series when no mask (drawn or automatic) lies on it: the one
    to segment automatically."""
    selection = select_series(_candidates(study))
    t2w = selection.images.get(SeriesRole.T2W_AX)
    return (
        t2w.series_uid if t2w is not None and selection.mask_of(SeriesRole.T2W_AX) is None else None
    )


def _no_mask_reason(label: str, auto: AutoMask | None) -> tuple[str, bool]:
    """Why the T2W of ``label`` has no mask to score on, and whether that declines the case."""
    if auto is None:
        return f"{label}: no tumour mask on the T2W", False
    if auto.state == "failed":
        return f"{label}: automatic segmentation failed its check ({auto.reason})", True
    if auto.review == "rejected":
        note = f" ({auto.note})" if auto.note else ""
        return (
            f"{label}: automatic tumour outline rejected by {auto.reviewer}{note}; "
            "waiting for a drawn mask"
        ), False
    if auto.state == "passed":
        return f"{label}: automatic tumour outline being stored", False
    return f"{label}: automatic tumour segmentation of the T2W in progress", False


def _study_inputs(
    selection: StudySelection,
    kind: CaseKind,
    label: str,
    auto: AutoMask | None,
    unused: str = "",
) -> tuple[dict[str, str], list[str], list[str]]:
    """(inputs, missing, declined) for one study of a case: the selected series it reads and
    the masks; what is missing; why it must not be scored (an automatic mask that failed).
    ``unused``: words for the T2W's masks left out (:func:`_unused_masks`), told when the
    T2W has no mask."""
    inputs: dict[str, str] = {}
    missing: list[str] = []
    declined: list[str] = []
    for roles in CASE_REQUIREMENTS[kind]:
        if not any(r in selection.images for r in roles):
            missing.append(f"{label}: no {' or '.join(r.value for r in roles)} series")
    for role in CASE_READS[kind]:
        chosen = selection.images.get(role)
        if chosen is not None:
            inputs[f"{label}_{role.lower()}"] = f"{chosen.series_uid}:{chosen.instances}"
    t2w_mask = selection.mask_of(SeriesRole.T2W_AX)
    if t2w_mask is not None:
        inputs[f"{label}_mask"] = t2w_mask.series_uid
        if t2w_mask.automatic and auto is not None and auto.review == "accepted":
            inputs[f"{label}_mask_review"] = f"accepted by {auto.reviewer}"  # a new version
    elif SeriesRole.T2W_AX in selection.images:
        reason, declines = _no_mask_reason(label, auto)
        reason += unused
        (declined if declines else missing).append(reason)
        if declines:
            inputs[f"{label}_mask_failed"] = reason
    for other in selection.all_masks:  # masks on other series are inputs too (carried to DWI)
        # an automatic outline not chosen was replaced by a drawn mask: neither an input nor
        # sent again with the results
        if other != t2w_mask and not other.automatic:
            inputs[f"{label}_extra_mask_{other.series_uid}"] = str(other.referenced_series_uid)
    return inputs, missing, declined


def decide_cases(
    studies: Sequence[StudyInputs], auto: Mapping[str, AutoMask] | None = None
) -> list[CaseDecision]:
    """The baseline and response cases of one patient. ``auto``: the automatic masks asked
    for, by T2W series UID; a case whose T2W's automatic mask failed its gate is declined."""
    auto = auto or {}
    by_timepoint = {s.timepoint: s for s in studies if s.timepoint in (BASELINE, RESTAGING)}
    selections = {t: select_series(_candidates(s)) for t, s in by_timepoint.items()}
    decisions = []
    for kind in CaseKind:
        inputs: dict[str, str] = {}
        missing: list[str] = []
        declined: list[str] = []
        for label in kind.timepoints:
            if label not in by_timepoint:
                missing.append(f"no {label} study")
                continue
            t2w = selections[label].images.get(SeriesRole.T2W_AX)
            found, lacking, refused = _study_inputs(
                selections[label],
                kind,
                label,
                auto.get(t2w.series_uid) if t2w else None,
                _unused_masks(by_timepoint[label], t2w.series_uid) if t2w else "",
            )
            inputs.update(found)
            missing.extend(lacking)
            declined.extend(refused)
        state = CaseState.READY
        if missing:
            state = CaseState.WAITING
        elif declined:
            state = CaseState.DECLINED
        baseline = by_timepoint.get(BASELINE)
        restaging = by_timepoint.get(RESTAGING) if RESTAGING in kind.timepoints else None
        decisions.append(
            CaseDecision(
                kind=kind,
                state=state,
                reason="; ".join(missing + declined) or "inputs complete",
                baseline_study_uid=baseline.study_uid if baseline else None,
                restaging_study_uid=restaging.study_uid if restaging else None,
                inputs=inputs,
            )
        )
    return decisions


HOLD_INPUT = "held"  # the one input of a held case: the conflict (its fingerprint follows it)


def held_decision(kind: CaseKind, conflict: str) -> CaseDecision:
    """A case held because the patient's timepoints conflict (``dicom_io.pairing``)."""
    return CaseDecision(
        kind=kind,
        state=CaseState.HELD,
        reason=(
            f"timepoints conflict: {conflict}. Choose the baseline and restaging studies on "
            "the worklist or with larc pair"
        ),
        baseline_study_uid=None,
        restaging_study_uid=None,
        inputs={HOLD_INPUT: conflict},
    )


@dataclass(frozen=True)
class RecordedSeries:
    """The series a case recorded for one of its studies (what its work order reads)."""

    images: dict[SeriesRole, str]  # role -> series UID
    masks: dict[str, str]  # mask series UID -> the image series it was drawn on


def recorded_series(inputs: Mapping[str, str], kind: CaseKind) -> dict[Timepoint, RecordedSeries]:
    """The inverse of the inputs :func:`decide_cases` records: per timepoint of ``kind``."""
    out = {}
    for label in kind.timepoints:
        images = {}
        for role in CASE_READS[kind]:
            value = inputs.get(f"{label}_{role.lower()}")
            if value:
                images[role] = value.rsplit(":", 1)[0]
        masks = {}
        t2w_mask = inputs.get(f"{label}_mask")
        if t2w_mask and SeriesRole.T2W_AX in images:
            masks[t2w_mask] = images[SeriesRole.T2W_AX]
        prefix = f"{label}_extra_mask_"
        for key, referenced in inputs.items():
            if key.startswith(prefix) and referenced in images.values():
                masks[key.removeprefix(prefix)] = referenced
        out[label] = RecordedSeries(images, masks)
    return out
