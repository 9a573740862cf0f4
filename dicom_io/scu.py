"""DICOM client operations against a PACS: study-level C-FIND and C-MOVE (prior retrieval)."""

from __future__ import annotations

import logging
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelMove,
)

from dicom_io.errors import InvalidInputError, StorageError

logger = logging.getLogger(__name__)


class PacsUnavailableError(StorageError):
    """The PACS could not be reached or refused the association: try again later."""


@dataclass(frozen=True)
class PacsNode:
    """Where the PACS is, and who we are to it."""

    ae_title: str
    host: str
    port: int
    calling_ae: str


def _associate(node: PacsNode, context: str, tls: ssl.SSLContext | None = None) -> Association:
    ae = AE(ae_title=node.calling_ae)
    ae.add_requested_context(context)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    try:
        assoc = ae.associate(
            node.host, node.port, ae_title=node.ae_title,
            tls_args=(tls, node.host) if tls is not None else None,
        )  # fmt: skip
    except OSError as exc:  # TLS handshake, unreachable host
        raise PacsUnavailableError(
            f"cannot reach {node.ae_title} at {node.host}:{node.port}: {exc}"
        ) from exc
    if not assoc.is_established:
        raise PacsUnavailableError(
            f"cannot associate with PACS {node.ae_title} at {node.host}:{node.port}"
        )
    return assoc


def echo(node: PacsNode) -> None:
    """C-ECHO ``node``; raises :class:`PacsUnavailableError` unless it answers with success."""
    assoc = _associate(node, "1.2.840.10008.1.1")
    try:
        status = assoc.send_c_echo()
    finally:
        assoc.release()
    if status is None or getattr(status, "Status", None) != 0:
        raise PacsUnavailableError(f"{node.ae_title} at {node.host}:{node.port}: C-ECHO failed")


@dataclass
class SendResult:
    """What a C-STORE batch achieved: instances stored, and each failure with its status."""

    sent: int = 0
    failed: list[tuple[Path, int]] = field(default_factory=list)


def _nodelay(assoc: Association) -> None:
    """Disable Nagle on the association's socket (pynetdicom leaves it on)."""
    wrapper = assoc.dul.socket
    raw = getattr(wrapper, "socket", None)
    if isinstance(raw, socket.socket):
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def send_files(
    host: str,
    port: int,
    called_ae: str,
    calling_ae: str,
    paths: Sequence[Path],
    tls: ssl.SSLContext | None = None,
) -> SendResult:
    """C-STORE ``paths`` (DICOM files) in one association, each in its own transfer syntax;
    over TLS when ``tls`` (a client context) is given.

    Raises :class:`PacsUnavailableError` when the peer cannot be reached or refuses.
    """
    contexts: dict[tuple[str, str], None] = {}
    for path in paths:
        meta = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"])
        contexts[(str(meta.SOPClassUID), str(meta.file_meta.TransferSyntaxUID))] = None
    if len(contexts) > 128:
        raise InvalidInputError("more than 128 SOP class / transfer syntax pairs in one batch")
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
    for sop_class, syntax in contexts:
        ae.add_requested_context(sop_class, syntax)
    try:
        assoc = ae.associate(
            host, port, ae_title=called_ae, tls_args=(tls, host) if tls is not None else None
        )
    except OSError as exc:  # TLS handshake, unreachable host
        raise PacsUnavailableError(f"cannot reach {called_ae} at {host}:{port}: {exc}") from exc
    if not assoc.is_established:
        raise PacsUnavailableError(
            f"{called_ae} at {host}:{port} refused or did not answer the association"
        )
    _nodelay(assoc)
    result = SendResult()
    try:
        for path in paths:
            status = assoc.send_c_store(path)
            code = int(status.Status) if "Status" in status else -1
            if code in (0x0000, 0xB000, 0xB006, 0xB007):
                result.sent += 1
            else:
                result.failed.append((path, code))
    finally:
        assoc.release()
    return result


def _find(
    node: PacsNode, query: Dataset, level: str, tls: ssl.SSLContext | None = None
) -> list[Dataset]:
    """The identifiers a Study Root C-FIND of ``query`` returns; :class:`PacsUnavailableError`
    when the peer does not answer (aborted, timed out) or refuses the query."""
    assoc = _associate(node, StudyRootQueryRetrieveInformationModelFind, tls)
    found: list[Dataset] = []
    try:
        for status, identifier in assoc.send_c_find(
            query, StudyRootQueryRetrieveInformationModelFind
        ):
            if status is None or "Status" not in status:  # aborted, or no answer in time
                raise PacsUnavailableError(
                    f"{node.ae_title} did not answer the {level} C-FIND (does it know "
                    f"larc's AE title {node.calling_ae}, and allow it to query?)"
                )
            if status.Status in (0xFF00, 0xFF01) and identifier is not None:
                found.append(identifier)
            elif status.Status != 0x0000:
                raise PacsUnavailableError(
                    f"{node.ae_title} refused the {level} C-FIND (status 0x{status.Status:04X})"
                )
    finally:
        assoc.release()
    return found


def find_studies(node: PacsNode, patient_id: str, modality: str = "MR") -> list[Dataset]:
    """Study-level C-FIND: the patient's studies holding ``modality`` (UID, date, description)."""
    if not patient_id:
        raise InvalidInputError("a prior search needs a PatientID")
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.PatientID = patient_id
    query.ModalitiesInStudy = modality
    query.StudyInstanceUID = ""
    query.StudyDate = ""
    query.StudyDescription = ""
    return _find(node, query, "study-level")


def find_instance_uids(
    node: PacsNode, study_uid: str, series_uid: str, tls: ssl.SSLContext | None = None
) -> set[str]:
    """Image-level C-FIND (Study Root): the SOP Instance UIDs ``node`` holds in one series."""
    query = Dataset()
    query.QueryRetrieveLevel = "IMAGE"
    query.StudyInstanceUID = study_uid
    query.SeriesInstanceUID = series_uid
    query.SOPInstanceUID = ""
    found = {str(i.get("SOPInstanceUID", "")) for i in _find(node, query, "image-level", tls)}
    found.discard("")
    return found


def move_study(node: PacsNode, study_uid: str, destination_ae: str) -> int:
    """Study-level C-MOVE of ``study_uid`` to ``destination_ae``; returns instances moved."""
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = study_uid
    assoc = _associate(node, StudyRootQueryRetrieveInformationModelMove)
    completed = 0
    try:
        for status, _ in assoc.send_c_move(
            identifier, destination_ae, StudyRootQueryRetrieveInformationModelMove
        ):
            if status is None:
                raise PacsUnavailableError("the PACS did not answer the C-MOVE")
            if status.Status not in (0xFF00, 0x0000, 0xB000):
                raise PacsUnavailableError(f"C-MOVE failed with status 0x{status.Status:04X}")
            completed = int(status.get("NumberOfCompletedSuboperations", completed) or completed)
    finally:
        assoc.release()
    return completed
