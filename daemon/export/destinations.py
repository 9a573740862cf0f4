"""Export destinations: one class per kind, each sending a case's result files or raising
:class:`DestinationUnavailableError` with what went wrong (then retried by the exporter).

- :class:`OutboxDestination`: the ``<data_dir>/outbox/`` folder (no PACS configured);
- :class:`CStoreDestination`: a DICOM peer (``export.destinations``), optionally over TLS, and
  optionally asked for storage commitment, or read back with C-FIND, after each send;
- :class:`StowRsDestination`: a DICOMweb server (STOW-RS), read back with QIDO-RS.
"""

from __future__ import annotations

import shutil
import ssl
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import pydicom

from daemon.settings import AnyDestination, Destination, DicomWebServer, StowDestination
from dicom_io import dicomweb
from dicom_io.commitment import references, request_commitment
from dicom_io.errors import InvalidInputError
from dicom_io.scu import PacsNode, PacsUnavailableError, find_instance_uids, send_files

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

    @property
    def read_back(self) -> bool:
        """Whether each send is confirmed by asking the destination for what it holds."""

    def confirm(self, files: Sequence[Path]) -> str:
        """Read ``files`` back: how they were confirmed (e.g. ``C-FIND read-back, 3 of 3``), or
        :class:`DestinationUnavailableError` naming what the destination does not hold."""


def destination_name(destination: AnyDestination | None) -> str:
    """How an export row names a configured destination (``None``: the outbox)."""
    if destination is None:
        return OUTBOX
    if isinstance(destination, StowDestination):
        return dicomweb_node(destination).name
    return f"{destination.ae_title}@{destination.host}:{destination.port}"


def dicomweb_node(server: DicomWebServer) -> dicomweb.DicomWebNode:
    """The plain-valued node of a configured DICOMweb server (secrets unwrapped here only)."""
    auth, tls = server.auth, server.tls
    return dicomweb.DicomWebNode(
        url=server.url,
        bearer_token=auth.bearer_token.get_secret_value() if auth.bearer_token else None,
        username=auth.username,
        password=auth.password.get_secret_value() if auth.password else None,
        ca_file=tls.ca_file,
        verify=tls.verify,
        cert_file=tls.cert_file,
        key_file=tls.key_file,
        timeout_s=server.timeout_s,
    )


def _sent_by_series(files: Sequence[Path]) -> dict[tuple[str, str], set[str]]:
    """The SOP Instance UIDs of ``files`` by (study, series)."""
    out: dict[tuple[str, str], set[str]] = defaultdict(set)
    for path in files:
        ds = pydicom.dcmread(
            path,
            stop_before_pixels=True,
            specific_tags=["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"],
        )
        out[(str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID))].add(str(ds.SOPInstanceUID))
    return out


def read_back(
    files: Sequence[Path], held: Callable[[str, str], set[str]], name: str, how: str
) -> str:
    """Ask ``held(study, series)`` for every series of ``files``; how they were confirmed, or
    :class:`DestinationUnavailableError` naming the instances the destination does not list."""
    sent = _sent_by_series(files)
    missing = sorted(
        uid for (study, series), uids in sent.items() for uid in uids - held(study, series)
    )
    total = sum(len(uids) for uids in sent.values())
    if missing:
        shown = ", ".join("..." + uid[-8:] for uid in missing[:5])
        raise DestinationUnavailableError(
            f"{how}: {name} does not list {len(missing)} of {total} objects sent: {shown}"
        )
    return f"{how}, {total} of {total}"


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
    read_back = False

    def confirm(self, files: Sequence[Path]) -> str:
        """Never asked (read_back is off): a renamed file is there."""
        raise DestinationUnavailableError("the outbox is not read back")

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
        self.read_back = destination.read_back

    def confirm(self, files: Sequence[Path]) -> str:
        """Image-level C-FIND for each series sent."""
        peer = self.destination
        node = PacsNode(peer.ae_title, peer.host, peer.port, self.calling_ae)
        tls = client_tls(peer)
        try:
            return read_back(
                files, lambda study, series: find_instance_uids(node, study, series, tls),
                peer.ae_title, "C-FIND read-back",
            )  # fmt: skip
        except PacsUnavailableError as exc:
            raise DestinationUnavailableError(f"C-FIND read-back: {exc}") from exc

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


class StowRsDestination:
    """STOW-RS to a DICOMweb server, one request per study; any refused instance fails the try.
    There is no storage commitment over DICOMweb: ``read_back`` asks QIDO-RS instead."""

    commitment = "off"
    commitment_timeout_s = 0.0

    def __init__(self, destination: StowDestination) -> None:
        self.node = dicomweb_node(destination)
        self.name = self.node.name
        self.read_back = destination.read_back

    def request_commitment(self, transaction_uid: str, files: Sequence[Path]) -> None:
        """Never asked: DICOMweb has no storage commitment."""
        raise DestinationUnavailableError("DICOMweb has no storage commitment")

    def send(self, files: Sequence[Path]) -> None:
        """STOW-RS ``files``; refused instances are named with their failure reason."""
        try:
            result = dicomweb.store_files(self.node, files)
        except (dicomweb.DicomWebError, InvalidInputError) as exc:
            raise DestinationUnavailableError(str(exc)) from exc
        if result.failed:
            reasons = ", ".join(
                f"...{uid[-8:]} {why}" for uid, why in sorted(result.failed.items())
            )
            raise DestinationUnavailableError(
                f"{self.name} refused {len(result.failed)} instance(s): {reasons}"
            )

    def confirm(self, files: Sequence[Path]) -> str:
        """QIDO-RS for each series sent."""
        try:
            return read_back(
                files, lambda study, series: dicomweb.find_instance_uids(self.node, study, series),
                self.name, "QIDO-RS read-back",
            )  # fmt: skip
        except dicomweb.DicomWebError as exc:
            raise DestinationUnavailableError(f"QIDO-RS read-back: {exc}") from exc


def configured_destinations(
    destinations: Sequence[AnyDestination], data_dir: Path, calling_ae: str
) -> list[ExportDestination]:
    """The destinations of ``export.destinations``, or the outbox when there are none."""
    if not destinations:
        return [OutboxDestination(data_dir / OUTBOX)]
    return [
        StowRsDestination(d) if isinstance(d, StowDestination) else CStoreDestination(d, calling_ae)
        for d in destinations
    ]
