"""DICOMweb client operations (PS3.18): STOW-RS of result files, QIDO-RS read-back, and prior
retrieval over QIDO-RS + WADO-RS, with the protocol left to ``dicomweb-client``.

Every failure the caller can retry (server unreachable, HTTP error, an instance refused) is a
:class:`DicomWebError` whose message names the server and what went wrong; nothing here reads
settings: the server is a :class:`DicomWebNode` of plain values.
"""

from __future__ import annotations

import io
import logging
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pydicom
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset

from dicom_io.errors import InvalidInputError, StorageError

logger = logging.getLogger(__name__)

# PS3.18 Table 10.6.3-1 / PS3.4 Annex GG (Failure Reason of a STOW-RS FailedSOPSequence item)
STOW_FAILURE_REASONS = {
    0x0110: "processing failure",
    0x0122: "SOP class not supported",
    0x0124: "not authorized",
    0xA700: "out of resources",
    0xA900: "data set does not match SOP class",
    0xC000: "cannot understand",
    0xC122: "referenced transfer syntax not supported",
}


class DicomWebError(StorageError):
    """A DICOMweb server could not be reached, refused a request or an instance: try later."""


@dataclass(frozen=True)
class DicomWebNode:
    """A DICOMweb server and how to sign in to it (plain values; secrets already unwrapped)."""

    url: str
    bearer_token: str | None = None
    username: str | None = None
    password: str | None = None
    ca_file: Path | None = None
    verify: bool = True
    cert_file: Path | None = None
    key_file: Path | None = None
    timeout_s: float = 60.0

    @property
    def name(self) -> str:
        """The URL without any user information (for logs and export rows)."""
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{host}{port}{parts.path}"

    def client(self) -> DICOMwebClient:
        """A ``dicomweb-client`` client with this node's session (auth, TLS)."""
        session = requests.Session()
        if self.bearer_token is not None:
            session.headers["Authorization"] = f"Bearer {self.bearer_token}"
        elif self.username is not None:
            session.auth = (self.username, self.password or "")
        session.verify = str(self.ca_file) if self.ca_file is not None else self.verify
        if self.cert_file is not None:
            session.cert = (
                (str(self.cert_file), str(self.key_file))
                if self.key_file is not None
                else str(self.cert_file)
            )
        return DICOMwebClient(self.url, session=session, timeout=self.timeout_s)


def _describe_http(node: DicomWebNode, what: str, exc: Exception) -> DicomWebError:
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        response = exc.response
        detail = response.text.strip().replace("\n", " ")[:200]
        hint = ""
        if response.status_code in (401, 403):
            hint = " (check export/pacs auth: bearer_token or username/password)"
        return DicomWebError(
            f"{node.name}: {what} answered HTTP {response.status_code} {response.reason}"
            f"{hint}{': ' + detail if detail else ''}"
        )
    return DicomWebError(f"{node.name}: {what} failed: {exc}")


@dataclass(frozen=True)
class StowResult:
    """What a STOW-RS request stored, and each instance it refused with the reason."""

    stored: frozenset[str]
    failed: dict[str, str]


def _read(path: Path) -> Dataset:
    try:
        return pydicom.dcmread(path)
    except (OSError, pydicom.errors.InvalidDicomError) as exc:
        raise InvalidInputError(f"{path} is not a readable DICOM file: {exc}") from exc


def store_files(node: DicomWebNode, paths: Sequence[Path]) -> StowResult:
    """STOW-RS ``paths`` (DICOM files of one or more studies), one request per study.

    Raises :class:`DicomWebError` when the server cannot be reached or refuses the request as a
    whole (HTTP 4xx/5xx, e.g. 409 when it stored none); a partial store (HTTP 202) comes back
    as :attr:`StowResult.failed`.
    """
    by_study: dict[str, list[Dataset]] = defaultdict(list)
    for path in paths:
        ds = _read(path)
        by_study[str(ds.StudyInstanceUID)].append(ds)
    client = node.client()
    stored: set[str] = set()
    failed: dict[str, str] = {}
    for study_uid, datasets in by_study.items():
        try:
            answer = client.store_instances(datasets, study_instance_uid=study_uid)
        except (requests.RequestException, ValueError) as exc:
            raise _describe_http(node, "STOW-RS", exc) from exc
        for item in answer.get("ReferencedSOPSequence", []):
            stored.add(str(item.ReferencedSOPInstanceUID))
        for item in answer.get("FailedSOPSequence", []):
            code = int(item.get("FailureReason", 0x0110))
            failed[str(item.ReferencedSOPInstanceUID)] = (
                f"0x{code:04X} {STOW_FAILURE_REASONS.get(code, 'failure')}"
            )
        if not answer.get("ReferencedSOPSequence") and not failed:
            # an origin server may answer 200 with no body: it stored the request as a whole
            stored.update(str(ds.SOPInstanceUID) for ds in datasets)
    return StowResult(frozenset(stored), failed)


def find_instance_uids(node: DicomWebNode, study_uid: str, series_uid: str) -> set[str]:
    """QIDO-RS: the SOP Instance UIDs the server holds in one series (empty when none)."""
    client = node.client()
    try:
        found = client.search_for_instances(
            study_instance_uid=study_uid, series_instance_uid=series_uid, fields=["00080018"]
        )
    except (requests.RequestException, ValueError) as exc:
        raise _describe_http(node, "QIDO-RS instance search", exc) from exc
    return {str(Dataset.from_json(item).SOPInstanceUID) for item in found}


def find_studies(node: DicomWebNode, patient_id: str, modality: str = "MR") -> list[str]:
    """QIDO-RS: the Study Instance UIDs of the patient's studies holding ``modality``."""
    if not patient_id:
        raise InvalidInputError("a prior search needs a PatientID")
    client = node.client()
    try:
        found = client.search_for_studies(
            search_filters={"PatientID": patient_id, "ModalitiesInStudy": modality},
            fields=["0020000D"],
        )
    except (requests.RequestException, ValueError) as exc:
        raise _describe_http(node, "QIDO-RS study search", exc) from exc
    uids = (str(Dataset.from_json(item).get("StudyInstanceUID", "")) for item in found)
    return [uid for uid in uids if uid]


def iter_study_files(node: DicomWebNode, study_uid: str) -> Iterator[bytes]:
    """WADO-RS: each instance of a study, encoded in DICOM file format (as a C-STORE would
    bring it), one at a time."""
    client = node.client()
    try:
        for ds in client.iter_study(study_uid):
            buffer = io.BytesIO()
            pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
            yield buffer.getvalue()
    except (requests.RequestException, ValueError) as exc:
        raise _describe_http(node, f"WADO-RS retrieval of a study ({study_uid[-8:]})", exc) from exc
