"""What a worker receives for one case: everything it needs, nothing it must fetch.

Remote workers do not see the daemon's storage. The daemon (which holds the DICOM files)
prepares the case's model inputs and sends them as compact ``.npz`` bytes (a few hundred kB),
with the DICOM headers (no pixels) of the instances the results reference, so a worker with only
the model bundle can score the case and write the SR and Secondary Captures. All of it is JSON
(Celery's JSON serialiser: no pickle crosses the broker).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any

from pydicom.dataset import Dataset

from dicom_io.sr import Reference

# header attributes a result object needs from its source instances
HEADER_KEYWORDS = (
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "Modality",
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
)


def idempotency_key(case_id: str, fingerprint: str, model_version: str) -> str:
    """The key of one piece of work: same case, same inputs, same model -> same key, same UIDs."""
    text = f"{case_id}\0{fingerprint}\0{model_version}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def header(ds: Dataset) -> dict[str, Any]:
    """The attributes of :data:`HEADER_KEYWORDS` of ``ds``, as DICOM JSON."""
    kept = Dataset()
    for keyword in HEADER_KEYWORDS:
        if keyword in ds:
            setattr(kept, keyword, ds[keyword].value)
    return kept.to_json_dict()


def dataset(header_json: dict[str, Any]) -> Dataset:
    """A header-only dataset from :func:`header`'s JSON."""
    return Dataset.from_json(header_json)


@dataclass
class CasePayload:
    """One case version's work order (see the module docstring)."""

    case_id: str
    kind: str  # "response" or "baseline"
    version: int
    key: str
    model_version: str  # the bundle's "name version" the key was made with
    algorithm: dict[str, str]  # name, version, manufacturer (dicom_io.sr.Algorithm)
    created_at: str  # ISO time the case version became ready: the results' content date
    inputs_b64: str  # CaseInputs.to_bytes(), base64
    target_study: dict[str, Any]  # header of an instance of the study the results go into
    evidence: list[dict[str, Any]] = field(default_factory=list)  # headers of referenced images
    masks: dict[str, dict[str, Any]] = field(default_factory=dict)  # timepoint -> Reference
    predecessor: dict[str, Any] | None = None  # the SR this version supersedes (Reference)
    clinical: dict[str, Any] = field(default_factory=dict)
    # inputs outside the training envelope, scored anyway (scoring.out_of_range: warn)
    warnings: list[str] = field(default_factory=list)
    # timepoint -> where its T2W tumour mask came from, in words (drawn, or automatic)
    outlines: dict[str, str] = field(default_factory=dict)
    # scoring.require_validated: outputs the bundle's validation does not back are not sent
    require_validated: bool = True

    @property
    def inputs(self) -> bytes:
        """The prepared inputs' ``.npz`` bytes."""
        return base64.b64decode(self.inputs_b64)

    @property
    def created(self) -> dt.datetime:
        """``created_at`` as a datetime."""
        return dt.datetime.fromisoformat(self.created_at)

    def mask(self, timepoint: str) -> Reference | None:
        """The tumour mask used at ``timepoint``, or ``None``."""
        found = self.masks.get(timepoint)
        return Reference(**found) if found else None

    def predecessor_reference(self) -> Reference | None:
        """The superseded SR, or ``None``."""
        return Reference(**self.predecessor) if self.predecessor else None

    def to_json(self) -> dict[str, Any]:
        """JSON-safe dict (the Celery message body)."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CasePayload:
        """Inverse of :meth:`to_json`; ``ValueError`` when fields are missing."""
        try:
            return cls(**data)
        except TypeError as exc:
            raise ValueError(f"not a larc case payload: {exc}") from exc
