"""What the index's named readers return: one frozen dataclass per kind of row."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any, Self

from daemon.cases import CaseKind, CaseState


class ExportState(StrEnum):
    """Where one export (results of a case version to one destination) stands."""

    PENDING = "pending"  # to be tried at next_at
    COMMITTING = "committing"  # sent; the destination's storage commitment awaited until next_at
    SENT = "sent"  # sent (and committed, where the destination requires it)
    FAILED = "failed"  # parked after the last try; `larc retry-exports` queues it again


class AutoMaskState(StrEnum):
    """Where the automatic tumour mask of one image series stands."""

    REQUESTED = "requested"  # to be sent to a worker
    QUEUED = "queued"  # a worker is segmenting it
    PASSED = "passed"  # passed its quality gate: stored as a SEG in the study
    FAILED = "failed"  # failed its gate (or could not be made): the reason says why


class _Row:
    """``from_row``: the dataclass from an ``sqlite3.Row`` holding (at least) its fields."""

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Self:
        keys = set(row.keys())
        values = {f.name: row[f.name] for f in fields(cls) if f.name in keys}  # type: ignore[arg-type]
        return cls(**values)


@dataclass(frozen=True)
class InstanceRecord:
    """What the index keeps of one received instance."""

    patient_id: str
    patient_name: str
    birth_date: str
    sex: str
    study_uid: str
    study_date: str
    study_time: str
    study_description: str
    accession_number: str
    time_point_id: str
    series_uid: str
    modality: str
    series_number: int | None
    series_description: str
    frame_of_reference_uid: str
    sop_class_uid: str
    sop_uid: str
    instance_number: int | None
    transfer_syntax_uid: str
    ignored_reason: str | None = None


@dataclass(frozen=True)
class StoredInstance(_Row):
    """One stored instance's index row."""

    sop_uid: str
    series_uid: str
    sop_class_uid: str
    instance_number: int | None
    path: str
    size: int
    sha256: str
    transfer_syntax_uid: str | None
    calling_ae: str | None
    received_at: float


@dataclass(frozen=True)
class PatientRow(_Row):
    """A patient the index has seen (the name is shown only where patient data may be)."""

    patient_id: str
    patient_name: str | None
    birth_date: str | None
    sex: str | None
    first_seen: float


@dataclass(frozen=True)
class StudyRow(_Row):
    """One study, its stability and timepoint (``instances`` where the reader counts them)."""

    study_uid: str
    patient_id: str
    study_date: str | None
    study_time: str | None
    description: str | None
    accession_number: str | None
    first_received: float
    last_received: float
    stable_at: float | None
    time_point_id: str | None
    timepoint: str | None
    timepoint_reason: str | None
    instances: int = 0


@dataclass(frozen=True)
class SeriesRow(_Row):
    """One series with its role and why, and its instance count."""

    series_uid: str
    study_uid: str
    modality: str | None
    sop_class_uid: str | None
    series_number: int | None
    description: str | None
    frame_of_reference_uid: str | None
    ignored_reason: str | None
    role: str | None
    role_reason: str | None
    b_values: str | None
    referenced_series_uid: str | None
    instances: int = 0
    machine_made_by: str | None = None  # a mask made by a program with no person: its name


@dataclass(frozen=True)
class CaseRow:
    """One case: its current version, state and recorded inputs."""

    case_id: str
    patient_id: str
    kind: CaseKind
    version: int
    state: CaseState
    reason: str | None
    baseline_study_uid: str | None
    restaging_study_uid: str | None
    inputs: dict[str, str]
    fingerprint: str | None
    updated_at: float
    work_key: str | None
    task: str | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> CaseRow:
        """From a ``cases`` row."""
        return cls(
            case_id=row["case_id"],
            patient_id=row["patient_id"],
            kind=CaseKind(row["kind"]),
            version=int(row["version"]),
            state=CaseState(row["state"]),
            reason=row["reason"],
            baseline_study_uid=row["baseline_study_uid"],
            restaging_study_uid=row["restaging_study_uid"],
            inputs=dict(json.loads(row["inputs"] or "{}")),
            fingerprint=row["fingerprint"],
            updated_at=float(row["updated_at"]),
            work_key=row["work_key"],
            task=row["task"],
        )


@dataclass(frozen=True)
class ResultRow:
    """The stored result of one case version (its work key)."""

    work_key: str
    case_id: str
    version: int
    study_uid: str
    sr_sop_uid: str
    sr_series_uid: str
    scores: dict[str, Any]
    files: tuple[str, ...]  # relative to the data directory; the SR first
    created_at: float

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> ResultRow:
        """From a ``results`` row."""
        return cls(
            work_key=row["work_key"],
            case_id=row["case_id"],
            version=int(row["version"]),
            study_uid=row["study_uid"],
            sr_sop_uid=row["sr_sop_uid"],
            sr_series_uid=row["sr_series_uid"],
            scores=dict(json.loads(row["scores"])),
            files=tuple(f for f in row["files"].split("\n") if f),
            created_at=float(row["created_at"]),
        )


@dataclass(frozen=True)
class ExportRow:
    """One export, with the case version whose results it sends."""

    id: int
    work_key: str
    destination: str
    state: ExportState
    attempts: int
    next_at: float
    last_error: str | None
    sent_at: float | None
    case_id: str
    version: int
    files: tuple[str, ...]
    transaction_uid: str | None = None  # the storage commitment asked for the last send
    committed_by: str | None = None  # AE title that committed every object (None: not yet/off)
    verified_by: str | None = None  # how the last send was read back, e.g. "C-FIND read-back"

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> ExportRow:
        """From an ``exports`` row joined with its ``results`` row."""
        return cls(
            id=int(row["id"]),
            work_key=row["work_key"],
            destination=row["destination"],
            state=ExportState(row["state"]),
            attempts=int(row["attempts"]),
            next_at=float(row["next_at"]),
            last_error=row["last_error"],
            sent_at=row["sent_at"],
            case_id=row["case_id"],
            version=int(row["version"]),
            files=tuple(f for f in row["files"].split("\n") if f),
            transaction_uid=row["transaction_uid"],
            committed_by=row["committed_by"],
            verified_by=row["verified_by"],
        )

    @property
    def confirmation(self) -> str | None:
        """How the destination confirmed the last send: ``committed by ORTHANC`` (storage
        commitment) or ``confirmed by C-FIND read-back, 3 of 3``; ``None`` when it did not."""
        if self.committed_by:
            return f"committed by {self.committed_by}"
        if self.verified_by:
            return f"confirmed by {self.verified_by}"
        return None


@dataclass(frozen=True)
class RejectionRow(_Row):
    """An instance we refused, and why."""

    id: int
    received_at: float
    calling_ae: str | None
    sop_class_uid: str | None
    sop_uid: str | None
    status: int
    reason: str


@dataclass(frozen=True)
class TimepointChoiceRow(_Row):
    """An operator's choice of a patient's baseline and restaging studies."""

    id: int
    patient_id: str
    baseline_study_uid: str | None
    restaging_study_uid: str | None
    who: str
    via: str
    note: str
    at: float
    applied_at: float | None


@dataclass(frozen=True)
class AutoMaskRow(_Row):
    """The automatic tumour mask of one image series (the T2W): requested, being made, stored
    as a SEG (passed its quality gate) or failed, and a radiologist's review of it."""

    image_series_uid: str
    study_uid: str
    patient_id: str
    model: str
    state: str  # AutoMaskState
    reason: str
    task: str | None
    seg_series_uid: str | None
    volume_ml: float | None
    mean_probability: float | None
    review: str | None  # "accepted" or "rejected" (None: not reviewed)
    reviewed_by: str | None
    reviewed_at: float | None
    review_note: str
    requested_at: float
    updated_at: float
    announced: int


@dataclass(frozen=True)
class AutoMaskReviewRow(_Row):
    """One review of an automatic mask (the audit)."""

    id: int
    image_series_uid: str
    decision: str
    who: str
    via: str
    note: str
    at: float
