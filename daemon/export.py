"""Export: result objects to their destinations (C-STORE, or the outbox folder), with retries.

Every export is a row in the index (work key, destination, state, attempts, next try). A try
that fails (PACS unreachable, an instance refused) is tried again after a backoff that doubles
up to ``export.backoff_max_s``; after ``export.max_attempts`` the export is parked as failed and
its case is ``failed-export`` with the reason; ``larc retry-exports`` queues it again. Result
files stay under ``<data_dir>/results/`` whatever happens, so nothing is lost.
"""

from __future__ import annotations

import logging
import shutil
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from daemon.index import Index
from daemon.settings import Destination, ExportSettings
from dicom_io.scu import PacsUnavailableError, send_files

logger = logging.getLogger(__name__)

OUTBOX = "outbox"
EXPORTED, FAILED_EXPORT = "exported", "failed-export"


def destination_name(destination: Destination | None) -> str:
    """How an export row names its destination."""
    if destination is None:
        return OUTBOX
    return f"{destination.ae_title}@{destination.host}:{destination.port}"


def client_tls(destination: Destination) -> ssl.SSLContext | None:
    """The client TLS context for a destination, or ``None``."""
    tls = destination.tls
    if not tls.enabled:
        return None
    context = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH, cafile=str(tls.ca_file) if tls.ca_file else None
    )
    if tls.cert_file is not None:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    return context


@dataclass
class ExportOutcome:
    """What one pass did."""

    sent: int = 0
    retrying: int = 0
    failed: int = 0


class Exporter:
    """Sends due exports; :meth:`run_due` does one pass."""

    def __init__(
        self, index: Index, data_dir: Path, settings: ExportSettings, calling_ae: str
    ) -> None:
        self.index = index
        self.data_dir = data_dir
        self.settings = settings
        self.calling_ae = calling_ae
        self._by_name = {destination_name(d): d for d in settings.destinations}

    def destinations(self) -> list[str]:
        """Names of the configured destinations (the outbox when there are none)."""
        return list(self._by_name) or [OUTBOX]

    def _send(self, name: str, files: Sequence[Path]) -> None:
        if name == OUTBOX:
            outbox = self.data_dir / OUTBOX
            outbox.mkdir(parents=True, exist_ok=True)
            for path in files:
                tmp = outbox / f".{path.name}.partial"
                shutil.copyfile(path, tmp)
                tmp.replace(outbox / path.name)
            return
        destination = self._by_name.get(name)
        if destination is None:
            raise PacsUnavailableError(
                f"{name} is no longer in export.destinations: add it back, or the results stay "
                "under the data directory"
            )
        result = send_files(
            destination.host,
            destination.port,
            destination.ae_title,
            self.calling_ae,
            list(files),
            tls=client_tls(destination),
        )
        if result.failed:
            codes = ", ".join(f"{path.name} 0x{code:04X}" for path, code in result.failed)
            raise PacsUnavailableError(f"{name} refused {len(result.failed)} instance(s): {codes}")

    def run_due(self, now: float | None = None) -> ExportOutcome:
        """Try every export whose next try is due."""
        now = time.time() if now is None else now
        outcome = ExportOutcome()
        due = self.index.query(
            "SELECT e.*, r.files, r.case_id, r.version FROM exports e JOIN results r "
            "USING (work_key) WHERE e.state = 'pending' AND e.next_at <= ? ORDER BY e.id",
            (now,),
        )
        for row in due:
            files = [self.data_dir / f for f in row["files"].split("\n") if f]
            attempts = int(row["attempts"]) + 1
            try:
                self._send(row["destination"], files)
            except (PacsUnavailableError, OSError) as exc:
                if attempts >= self.settings.max_attempts:
                    self.index.update_export(row["id"], "failed", attempts, now, str(exc))
                    outcome.failed += 1
                    logger.error(
                        "export of case %s to %s failed for good after %d tries: %s; "
                        "run `larc retry-exports` once it is reachable",
                        row["case_id"], row["destination"], attempts, exc,
                    )  # fmt: skip
                else:
                    wait = min(
                        self.settings.backoff_s * 2 ** (attempts - 1), self.settings.backoff_max_s
                    )
                    self.index.update_export(row["id"], "pending", attempts, now + wait, str(exc))
                    outcome.retrying += 1
                    logger.warning(
                        "export of case %s to %s failed (try %d of %d), retrying in %.0f s: %s",
                        row["case_id"], row["destination"], attempts,
                        self.settings.max_attempts, wait, exc,
                    )  # fmt: skip
            else:
                self.index.update_export(row["id"], "sent", attempts, now, None)
                outcome.sent += 1
                logger.info(
                    "case %s: %d result objects sent to %s",
                    row["case_id"], len(files), row["destination"],
                )  # fmt: skip
            self.update_case(row["work_key"], row["case_id"], int(row["version"]))
        return outcome

    def update_case(self, work_key: str, case_id: str, version: int) -> None:
        """Set the case to exported (all sent) or failed-export (one failed for good)."""
        states = [
            (r["state"], r["destination"], r["last_error"])
            for r in self.index.query("SELECT * FROM exports WHERE work_key = ?", (work_key,))
        ]
        if all(state == "sent" for state, _, _ in states):
            sent_to = ", ".join(d for _, d, _ in states)
            self.index.set_case_state(case_id, version, EXPORTED, f"results sent to {sent_to}")
        elif any(state == "failed" for state, _, _ in states):
            why = "; ".join(f"{d}: {e}" for s, d, e in states if s == "failed")
            self.index.set_case_state(case_id, version, FAILED_EXPORT, why)

    def requeue_failed(self) -> int:
        """Queue every failed export again (``larc retry-exports``); returns how many."""
        rows = self.index.query("SELECT id FROM exports WHERE state = 'failed'")
        for row in rows:
            self.index.update_export(row["id"], "pending", 0, time.time(), None)
        return len(rows)
