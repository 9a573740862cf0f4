"""DICOM client operations against a PACS: study-level C-FIND and C-MOVE (prior retrieval)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

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


def _associate(node: PacsNode, context: str) -> Association:
    ae = AE(ae_title=node.calling_ae)
    ae.add_requested_context(context)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    assoc = ae.associate(node.host, node.port, ae_title=node.ae_title)
    if not assoc.is_established:
        raise PacsUnavailableError(
            f"cannot associate with PACS {node.ae_title} at {node.host}:{node.port}"
        )
    return assoc


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
    assoc = _associate(node, StudyRootQueryRetrieveInformationModelFind)
    found: list[Dataset] = []
    try:
        for status, identifier in assoc.send_c_find(
            query, StudyRootQueryRetrieveInformationModelFind
        ):
            if status is None:
                raise PacsUnavailableError("the PACS did not answer the C-FIND")
            if status.Status in (0xFF00, 0xFF01) and identifier is not None:
                found.append(identifier)
    finally:
        assoc.release()
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
