"""The exporter: result objects to their destinations, with retries, in a loop of its own.

Every export is a row in the index (work key, destination, state, attempts, next try). A try
that fails (PACS unreachable, an instance refused) is tried again after a backoff that doubles
up to ``export.backoff_max_s``; after ``export.max_attempts`` the export is parked as failed and
its case is ``failed-export`` with the reason; ``larc retry-exports`` queues it again. Result
files stay under ``<data_dir>/results/`` whatever happens, so nothing is lost. The exporter
owns the case states after ``done``: ``exported`` when every destination has the results.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from daemon.cases import CaseState
from daemon.export.destinations import (
    DestinationUnavailableError,
    ExportDestination,
    configured_destinations,
)
from daemon.index import ExportState, Index
from daemon.loops import BackgroundLoop
from daemon.settings import ExportSettings

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

    def _send(self, name: str, files: list[Path]) -> None:
        destination = self._by_name.get(name)
        if destination is None:
            raise DestinationUnavailableError(
                f"{name} is no longer in export.destinations: add it back, or the results stay "
                "under the data directory"
            )
        destination.send(files)

    def run_due(self, now: float | None = None) -> ExportOutcome:
        """Try every export whose next try is due, then settle the cases that are done."""
        now = time.time() if now is None else now
        outcome = ExportOutcome()
        for row in self.index.exports_due(now):
            files = [self.data_dir / f for f in row.files]
            attempts = row.attempts + 1
            try:
                self._send(row.destination, files)
            except (DestinationUnavailableError, OSError) as exc:
                if attempts >= self.settings.max_attempts:
                    self.index.update_export(row.id, ExportState.FAILED, attempts, now, str(exc))
                    outcome.failed += 1
                    logger.error(
                        "export of case %s to %s failed for good after %d tries: %s; "
                        "run `larc retry-exports` once it is reachable",
                        row.case_id, row.destination, attempts, exc,
                    )  # fmt: skip
                else:
                    wait = min(
                        self.settings.backoff_s * 2 ** (attempts - 1), self.settings.backoff_max_s
                    )
                    self.index.update_export(
                        row.id, ExportState.PENDING, attempts, now + wait, str(exc)
                    )
                    outcome.retrying += 1
                    logger.warning(
                        "export of case %s to %s failed (try %d of %d), retrying in %.0f s: %s",
                        row.case_id, row.destination, attempts,
                        self.settings.max_attempts, wait, exc,
                    )  # fmt: skip
            else:
                self.index.update_export(row.id, ExportState.SENT, attempts, now, None)
                outcome.sent += 1
                logger.info(
                    "case %s: %d result objects sent to %s",
                    row.case_id, len(files), row.destination,
                )  # fmt: skip
            self.update_case(row.work_key, row.case_id, row.version)
        for case in self.index.cases(CaseState.DONE):  # e.g. a result found again after a restart
            if case.work_key:
                self.update_case(case.work_key, case.case_id, case.version)
        return outcome

    def update_case(self, work_key: str, case_id: str, version: int) -> None:
        """Set the case to exported (all sent) or failed-export (one failed for good)."""
        exports = self.index.exports_of(work_key)
        if not exports:
            return
        if all(e.state == ExportState.SENT for e in exports):
            sent_to = ", ".join(e.destination for e in exports)
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
