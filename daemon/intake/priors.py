"""Prior retrieval: a restaging study with no baseline on hand, or a lone study that nothing
marks as a baseline, makes us ask the PACS for the patient's other MR studies and fetch the ones
we do not hold: C-FIND and C-MOVE to our own AE (:class:`DimseArchive`), or, for a PACS that
speaks only DICOMweb, QIDO-RS and WADO-RS (:class:`DicomWebArchive`, whose instances go through
the same ingest as a C-STORE). They then arrive like any other study, become stable and are
paired. The retriever knows nothing of the assembler: it records which patients the PACS has
answered for, and the assembler's next pass takes them (:meth:`PriorRetriever.take_answered`)
and decides their held cases."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Protocol
from urllib.parse import urlsplit

import pydicom

from dicom_io import dicomweb, scu
from dicom_io.errors import InvalidInputError, StorageError
from dicom_io.scp import STATUS_SUCCESS, StoreHandler, StoreRequest

logger = logging.getLogger(__name__)


class Archive(Protocol):
    """A PACS that can list a patient's studies and hand one over."""

    @property
    def name(self) -> str:
        """How logs name it."""

    def find_studies(self, patient_id: str) -> list[str]:
        """The Study Instance UIDs of the patient's MR studies."""

    def fetch_study(self, study_uid: str) -> int:
        """Bring the study into larc's store; returns the instances fetched."""


class DimseArchive:
    """C-FIND (study level) and C-MOVE to larc's own AE: the instances come to the listener."""

    def __init__(self, node: scu.PacsNode, destination_ae: str) -> None:
        self.node = node
        self.destination_ae = destination_ae
        self.name = node.ae_title

    def find_studies(self, patient_id: str) -> list[str]:
        """Study-level C-FIND."""
        found = (
            str(s.get("StudyInstanceUID", "")) for s in scu.find_studies(self.node, patient_id)
        )
        return [uid for uid in found if uid]

    def fetch_study(self, study_uid: str) -> int:
        """Study-level C-MOVE to larc."""
        return scu.move_study(self.node, study_uid, self.destination_ae)


class DicomWebArchive:
    """QIDO-RS (studies of the patient) and WADO-RS (the whole study), each instance handed to
    ``ingest`` as if it had come by C-STORE: the same checks, durable store and index."""

    def __init__(self, node: dicomweb.DicomWebNode, ingest: StoreHandler) -> None:
        self.node = node
        self.ingest = ingest
        self.name = node.name

    def find_studies(self, patient_id: str) -> list[str]:
        """QIDO-RS study search."""
        return dicomweb.find_studies(self.node, patient_id)

    def fetch_study(self, study_uid: str) -> int:
        """WADO-RS retrieval; an instance ingest refuses is counted out and logged (its
        reason is recorded in the rejections like any refused C-STORE)."""
        fetched = refused = 0
        host = urlsplit(self.node.url).hostname or ""
        for data in dicomweb.iter_study_files(self.node, study_uid):
            meta = pydicom.dcmread(
                pydicom.filebase.DicomBytesIO(data), stop_before_pixels=True,
                specific_tags=["SOPClassUID", "SOPInstanceUID"],
            )  # fmt: skip
            request = StoreRequest(
                calling_ae="DICOMWEB",
                peer_address=host,
                sop_class_uid=str(meta.get("SOPClassUID", "")),
                sop_instance_uid=str(meta.get("SOPInstanceUID", "")),
                transfer_syntax_uid=str(meta.file_meta.TransferSyntaxUID),
                data=data,
            )
            if self.ingest(request) == STATUS_SUCCESS:
                fetched += 1
            else:
                refused += 1
        if refused:
            logger.warning("WADO-RS from %s: %d instance(s) of a prior study refused (see the "
                           "rejections in larc status)", self.name, refused)  # fmt: skip
        return fetched


class PriorRetriever:
    """Fetches a patient's prior studies in a background thread, once per patient and run."""

    def __init__(self, archive: Archive, known_studies: Callable[[str], set[str]]) -> None:
        """``known_studies(patient_id)``: the Study Instance UIDs already held (the index's
        :meth:`daemon.index.Index.study_uids_of_patient`)."""
        self.archive = archive
        self._finished: set[str] = set()
        self._answered: list[str] = []
        self._lock = threading.Lock()
        self.known_studies = known_studies
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._requested: set[str] = set()
        self._thread = threading.Thread(target=self._run, name="prior-retrieval", daemon=True)
        self._thread.start()

    def request(self, patient_id: str, case_id: str) -> None:
        """Ask for the priors of ``patient_id`` (``case_id`` names it in logs)."""
        if patient_id in self._requested:
            return
        self._requested.add(patient_id)
        logger.info(
            "case %s: no baseline known for sure, asking PACS %s for the patient's studies",
            case_id,
            self.archive.name,
        )
        self._queue.put(patient_id)

    def finished(self, patient_id: str) -> bool:
        """Whether the PACS has answered for ``patient_id`` in this run (moved, none, failed)."""
        with self._lock:
            return patient_id in self._finished

    def take_answered(self) -> list[str]:
        """The patients answered for since the last call (their held cases can be decided)."""
        with self._lock:
            answered, self._answered = self._answered, []
        return answered

    def stop(self) -> None:
        """End the thread after the current retrieval."""
        self._queue.put(None)
        self._thread.join(timeout=60)

    def _run(self) -> None:
        while (patient_id := self._queue.get()) is not None:
            try:
                self.retrieve(patient_id)
            except (StorageError, InvalidInputError, OSError) as exc:
                self._requested.discard(patient_id)  # try again with the next study
                logger.warning(
                    "prior retrieval from PACS %s failed (pairing goes on with the studies on "
                    "hand): %s",
                    self.archive.name,
                    exc,
                )
            with self._lock:
                self._finished.add(patient_id)
                self._answered.append(patient_id)

    def retrieve(self, patient_id: str) -> int:
        """Find and fetch the patient's MR studies we do not hold; returns instances fetched."""
        known = self.known_studies(patient_id)
        moved = 0
        for uid in self.archive.find_studies(patient_id):
            if uid not in known:
                moved += self.archive.fetch_study(uid)
        logger.info("prior retrieval fetched %d instances from PACS %s", moved, self.archive.name)
        return moved
