"""Export destinations: one class per kind, each sending a case's result files or raising
:class:`DestinationUnavailableError` with what went wrong (then retried by the exporter).

- :class:`OutboxDestination`: the ``<data_dir>/outbox/`` folder (no PACS configured);
- :class:`CStoreDestination`: a DICOM peer (``export.destinations``), optionally over TLS, and
  optionally asked for storage commitment after each send.
"""

from __future__ import annotations

import shutil
import ssl
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from daemon.settings import Destination
from dicom_io.commitment import references, request_commitment
from dicom_io.scu import PacsUnavailableError, send_files

OUTBOX = "outbox"


class DestinationUnavailableError(Exception):
    """A destination could not take the results now (unreachable, refused, gone)."""


class ExportDestination(Protocol):
    """Where results go."""

    @property
    def name(self) -> str:
        """How export rows and logs name it."""

    @property
    def commitment(self) -> str:
        """Storage commitment after a send: ``required``, ``optional`` or ``off``."""

    @property
    def commitment_timeout_s(self) -> float:
        """How long a required commitment may take."""

    def send(self, files: Sequence[Path]) -> None:
        """Deliver ``files``; :class:`DestinationUnavailableError` (or ``OSError``) if not."""

    def request_commitment(self, transaction_uid: str, files: Sequence[Path]) -> None:
        """Ask the destination to commit ``files`` (the report comes to the listener);
        :class:`DestinationUnavailableError` if it cannot be asked."""


def destination_name(destination: Destination | None) -> str:
    """How an export row names a configured destination (``None``: the outbox)."""
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


class OutboxDestination:
    """Copies the files into a folder, each appearing whole (temporary name, then rename)."""

    name = OUTBOX
    commitment = "off"  # a folder commits nothing: the files are there once renamed
    commitment_timeout_s = 0.0

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def request_commitment(self, transaction_uid: str, files: Sequence[Path]) -> None:
        """Never asked (commitment is off)."""
        raise DestinationUnavailableError("the outbox has no storage commitment")

    def send(self, files: Sequence[Path]) -> None:
        """Copy ``files`` into the outbox."""
        self.folder.mkdir(parents=True, exist_ok=True)
        for path in files:
            tmp = self.folder / f".{path.name}.partial"
            shutil.copyfile(path, tmp)
            tmp.replace(self.folder / path.name)


class CStoreDestination:
    """C-STORE to a DICOM peer in one association; any refused instance fails the try."""

    def __init__(self, destination: Destination, calling_ae: str) -> None:
        self.destination = destination
        self.calling_ae = calling_ae
        self.name = destination_name(destination)
        self.commitment = destination.commitment
        self.commitment_timeout_s = destination.commitment_timeout_s

    def request_commitment(self, transaction_uid: str, files: Sequence[Path]) -> None:
        """N-ACTION for ``files`` (``dicom_io.commitment``)."""
        peer = self.destination
        try:
            request_commitment(
                peer.host, peer.port, peer.ae_title, self.calling_ae, transaction_uid,
                references(files), tls=client_tls(peer),
            )  # fmt: skip
        except PacsUnavailableError as exc:
            raise DestinationUnavailableError(str(exc)) from exc

    def send(self, files: Sequence[Path]) -> None:
        """Send ``files``; refusals are named with their status."""
        peer = self.destination
        try:
            result = send_files(
                peer.host, peer.port, peer.ae_title, self.calling_ae, list(files),
                tls=client_tls(peer),
            )  # fmt: skip
        except PacsUnavailableError as exc:
            raise DestinationUnavailableError(str(exc)) from exc
        if result.failed:
            codes = ", ".join(f"{path.name} 0x{code:04X}" for path, code in result.failed)
            raise DestinationUnavailableError(
                f"{self.name} refused {len(result.failed)} instance(s): {codes}"
            )


def configured_destinations(
    destinations: Sequence[Destination], data_dir: Path, calling_ae: str
) -> list[ExportDestination]:
    """The destinations of ``export.destinations``, or the outbox when there are none."""
    if not destinations:
        return [OutboxDestination(data_dir / OUTBOX)]
    return [CStoreDestination(d, calling_ae) for d in destinations]
