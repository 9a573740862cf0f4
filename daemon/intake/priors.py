"""Prior retrieval: a restaging study with no baseline on hand, or a lone study that nothing
marks as a baseline, makes us ask the PACS for the patient's other MR studies (C-FIND) and pull
them to our own AE (C-MOVE). They then arrive like any other study, become stable and are
paired. The retriever knows nothing of the assembler: it records which patients the PACS has
answered for, and the assembler's next pass takes them (:meth:`PriorRetriever.take_answered`)
and decides their held cases."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

from dicom_io.errors import InvalidInputError, StorageError
from dicom_io.scu import PacsNode, find_studies, move_study

logger = logging.getLogger(__name__)


class PriorRetriever:
    """Fetches a patient's prior studies in a background thread, once per patient and run."""

    def __init__(
        self,
        node: PacsNode,
        destination_ae: str,
        known_studies: Callable[[str], set[str]],
    ) -> None:
        """``known_studies(patient_id)``: the Study Instance UIDs already held (the index's
        :meth:`daemon.index.Index.study_uids_of_patient`)."""
        self.node = node
        self._finished: set[str] = set()
        self._answered: list[str] = []
        self._lock = threading.Lock()
        self.destination_ae = destination_ae
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
            self.node.ae_title,
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
                    self.node.ae_title,
                    exc,
                )
            with self._lock:
                self._finished.add(patient_id)
                self._answered.append(patient_id)

    def retrieve(self, patient_id: str) -> int:
        """Find and move the patient's MR studies we do not hold; returns instances moved."""
        known = self.known_studies(patient_id)
        moved = 0
        for study in find_studies(self.node, patient_id):
            uid = str(study.get("StudyInstanceUID", ""))
            if uid and uid not in known:
                moved += move_study(self.node, uid, self.destination_ae)
        logger.info("prior retrieval moved %d instances from PACS %s", moved, self.node.ae_title)
        return moved
