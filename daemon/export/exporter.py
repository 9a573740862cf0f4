"""The exporter: result objects to their destinations, with retries, in a loop of its own.

Every export is a row in the index (work key, destination, state, attempts, next try). A try
that fails (PACS unreachable, an instance refused) is tried again after a backoff that doubles
up to ``export.backoff_max_s``; after ``export.max_attempts`` the export is parked as failed and
its case is ``failed-export`` with the reason; ``larc retry-exports`` queues it again. A
destination with ``commitment: required`` is sent only once it has committed every object (the
export waits in ``committing``; a failed or overdue commitment is a failed try); one with
``read_back`` is sent only once it lists every object sent (C-FIND or QIDO-RS). Result
files stay under ``<data_dir>/results/`` whatever happens, so nothing is lost. The exporter
owns the case states after ``done``: ``exported`` when every destination has the results.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from pydicom.uid import generate_uid

from daemon.cases import CaseState
from daemon.export.destinations import (
    DestinationUnavailableError,
    ExportDestination,
    configured_destinations,
)
from daemon.index import ExportRow, ExportState, Index
from daemon.loops import BackgroundLoop
from daemon.settings import ExportSettings
from dicom_io.commitment import CommitmentReport
from dicom_io.scp import STATUS_SUCCESS

logger = logging.getLogger(__name__)


@dataclass
class ExportOutcome:
    """What one pass did."""

    sent: int = 0
    retrying: int = 0
    failed: int = 0


class Exporter:
    """Sends due exports; :meth:`run_due` does one pass, :meth:`start` runs them in a thread."""

    def __init__(
        self,
        index: Index,
        data_dir: Path,
        settings: ExportSettings,
        calling_ae: str,
        destinations: list[ExportDestination] | None = None,
    ) -> None:
        """``destinations``: defaults to ``settings.destinations`` (or the outbox)."""
        self.index = index
        self.data_dir = data_dir
        self.settings = settings
        if destinations is None:
            destinations = configured_destinations(settings.destinations, data_dir, calling_ae)
        self._by_name = {d.name: d for d in destinations}
        self._loop = BackgroundLoop("export", self.run_due, interval_s=1.0)

    def destinations(self) -> list[str]:
        """Names of the destinations every new result is queued for."""
        return list(self._by_name)

    def _destination(self, name: str) -> ExportDestination:
        destination = self._by_name.get(name)
        if destination is None:
            raise DestinationUnavailableError(
                f"{name} is no longer in export.destinations: add it back, or the results stay "
                "under the data directory"
            )
        return destination

    def _failed_try(
        self, row: ExportRow, attempts: int, now: float, error: str, outcome: ExportOutcome
    ) -> None:
        """Retry after the backoff, or park the export as failed after the last try."""
        if attempts >= self.settings.max_attempts:
            self.index.update_export(row.id, ExportState.FAILED, attempts, now, error)
            outcome.failed += 1
            logger.error(
                "export of case %s to %s failed for good after %d tries: %s; "
                "run `larc retry-exports` once it is reachable",
                row.case_id, row.destination, attempts, error,
            )  # fmt: skip
            return
        wait = min(self.settings.backoff_s * 2 ** (attempts - 1), self.settings.backoff_max_s)
        self.index.update_export(row.id, ExportState.PENDING, attempts, now + wait, error)
        outcome.retrying += 1
        logger.warning(
            "export of case %s to %s failed (try %d of %d), retrying in %.0f s: %s",
            row.case_id, row.destination, attempts, self.settings.max_attempts, wait, error,
        )  # fmt: skip

    def _try(self, row: ExportRow, now: float, outcome: ExportOutcome) -> None:
        files = [self.data_dir / f for f in row.files]
        attempts = row.attempts + 1
        try:
            destination = self._destination(row.destination)
            destination.send(files)
        except (DestinationUnavailableError, OSError) as exc:
            self._failed_try(row, attempts, now, str(exc), outcome)
            return
        logger.info(
            "case %s: %d result objects sent to %s", row.case_id, len(files), row.destination
        )
        verified_by = None
        if destination.read_back:  # never with commitment: required (the settings refuse it)
            try:
                verified_by = destination.confirm(files)
            except (DestinationUnavailableError, OSError) as exc:
                self._failed_try(row, attempts, now, str(exc), outcome)
                return
            logger.info("case %s: %s confirmed the results (%s)",
                        row.case_id, row.destination, verified_by)  # fmt: skip
        outcome.sent += 1
        if destination.commitment == "off":
            self.index.update_export(row.id, ExportState.SENT, attempts, now, None, verified_by)
            return
        required = destination.commitment == "required"
        transaction = generate_uid()
        # recorded before asking: the report may come back before request_commitment returns
        self.index.await_commitment(
            row.id, attempts, transaction, now + destination.commitment_timeout_s, required,
            verified_by,
        )  # fmt: skip
        try:
            destination.request_commitment(transaction, files)
        except (DestinationUnavailableError, OSError) as exc:
            if required:
                self._failed_try(row, attempts, now, f"storage commitment not asked: {exc}",
                                 outcome)  # fmt: skip
            else:
                logger.warning("case %s: optional storage commitment from %s not asked: %s",
                               row.case_id, row.destination, exc)  # fmt: skip

    def run_due(self, now: float | None = None) -> ExportOutcome:
        """Give up waiting for overdue commitments, try every export whose next try is due,
        then settle the cases that are done."""
        now = time.time() if now is None else now
        outcome = ExportOutcome()
        for row in self.index.commitments_overdue(now):
            known = self._by_name.get(row.destination)
            limit = f" within {known.commitment_timeout_s:.0f} s" if known else ""
            error = f"no storage commitment from {row.destination}{limit}"
            self._failed_try(row, row.attempts, now, error, outcome)
            self.update_case(row.work_key, row.case_id, row.version)
        for row in self.index.exports_due(now):
            self._try(row, now, outcome)
            self.update_case(row.work_key, row.case_id, row.version)
        for case in self.index.cases(CaseState.DONE):  # e.g. a result found again after a restart
            if case.work_key:
                self.update_case(case.work_key, case.case_id, case.version)
        return outcome

    def on_commitment(self, report: CommitmentReport) -> int:
        """A storage commitment report (from the listener's thread): the export is sent once
        every object is committed; a failure is a failed try (retried: the files are sent
        again). Returns the N-EVENT-REPORT status."""
        row = self.index.export_of_transaction(report.transaction_uid)
        if row is None:
            logger.warning(
                "storage commitment report from %s for transaction %s, which no export is "
                "waiting for (an older try's, or not ours): ignored",
                report.reporter_ae, report.transaction_uid,
            )  # fmt: skip
            return STATUS_SUCCESS
        if not report.failed:
            self.index.record_committed(row.id, report.reporter_ae)
            logger.info(
                "case %s: %d result objects committed by %s",
                row.case_id, len(report.committed), report.reporter_ae,
            )  # fmt: skip
        elif row.state == ExportState.COMMITTING:
            error = f"commitment failed for {report.describe_failures()}"
            self._failed_try(row, row.attempts, time.time(), error, ExportOutcome())
        else:
            logger.warning(
                "case %s: %s did not commit %s (the export stands as it is: the commitment "
                "was optional, or its deadline had passed and the export is being retried)",
                row.case_id, report.reporter_ae, report.describe_failures(),
            )  # fmt: skip
        self.update_case(row.work_key, row.case_id, row.version)
        self.wake()
        return STATUS_SUCCESS

    def update_case(self, work_key: str, case_id: str, version: int) -> None:
        """Set the case to exported (all sent) or failed-export (one failed for good)."""
        exports = self.index.exports_of(work_key)
        if not exports:
            return
        if all(e.state == ExportState.SENT for e in exports):
            sent_to = ", ".join(
                e.destination + (f" ({e.confirmation})" if e.confirmation else "") for e in exports
            )
            self.index.set_case_state(
                case_id, version, CaseState.EXPORTED, f"results sent to {sent_to}"
            )
        elif any(e.state == ExportState.FAILED for e in exports):
            why = "; ".join(
                f"{e.destination}: {e.last_error}" for e in exports if e.state == ExportState.FAILED
            )
            self.index.set_case_state(case_id, version, CaseState.FAILED_EXPORT, why)

    def requeue_failed(self) -> int:
        """Queue every failed export again (``larc retry-exports``); returns how many."""
        rows = self.index.exports_in(ExportState.FAILED)
        for row in rows:
            self.index.update_export(row.id, ExportState.PENDING, 0, time.time(), None)
        return len(rows)

    # -- background loop -----------------------------------------------------------------------

    def wake(self) -> None:
        """Look for due exports now (the dispatcher calls this after storing a result)."""
        self._loop.wake()

    def start(self) -> None:
        """Run :meth:`run_due` every second or when woken."""
        self._loop.start()

    def stop(self) -> None:
        """End the loop after the current pass."""
        self._loop.stop()
