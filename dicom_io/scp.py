"""The DICOM listener: Verification and Storage SCP on pynetdicom, with access control and TLS;
and, when asked, the receiving end of storage commitment reports (``dicom_io.commitment``).

What to do with a received instance is the caller's business (a :data:`StoreHandler`); this
module makes sure the handler sees the encoded bytes without decoding (spooled to a file as they
arrive, :mod:`dicom_io.reception`), that every exception becomes a failure status (never a
success, never a dead listener), and that sockets disable Nagle's algorithm.
"""

from __future__ import annotations

import io
import ipaddress
import logging
import socket
import ssl
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt
from pynetdicom import _config as pynetdicom_config
from pynetdicom.presentation import AllStoragePresentationContexts
from pynetdicom.transport import ThreadedAssociationServer

from dicom_io import reception
from dicom_io.commitment import STORAGE_COMMITMENT, CommitmentReport, read_report
from dicom_io.storage import Watermark

logger = logging.getLogger(__name__)

VERIFICATION_SOP_CLASS = "1.2.840.10008.1.1"
# In order of preference: pynetdicom accepts the first of these that the sender proposes. Lossless
# compressed first (kept exactly as the sender has it, no conversion), then uncompressed, and
# lossy syntaxes last: only taken when the sender offers nothing else (its data is lossy already).
DEFLATED, EXPLICIT_BIG_ENDIAN = "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.2"
ACCEPTED_TRANSFER_SYNTAXES = (
    "1.2.840.10008.1.2.5",  # RLE Lossless
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless, first-order prediction
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.201",  # HTJ2K Lossless
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.2",  # Explicit VR Big Endian (retired, still sent by old modalities)
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline
    "1.2.840.10008.1.2.4.51",  # JPEG Extended
    "1.2.840.10008.1.2.4.81",  # JPEG-LS Near-Lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.4.203",  # HTJ2K
)
STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_DATASET_MISMATCH = 0xA900
STATUS_CANNOT_UNDERSTAND = 0xC000
STATUS_DUPLICATE_REFUSED = 0x0111


@dataclass(frozen=True)
class StoreRequest:
    """One C-STORE as received: who sent what, and the encoded dataset in file format, either
    in memory (``data``) or in a spool file (``spooled``, then ``data`` is empty)."""

    calling_ae: str
    peer_address: str
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    data: bytes
    # the group of the data set's first element as sent (None: not known, e.g. deflated):
    # File Meta (0002) or command (0000) elements do not belong in a C-STORE data set
    first_group: int | None = None
    # the listener's spool file holding the instance: the handler may move it into its store
    # (same file system); whatever it leaves there is removed after it returns
    spooled: Path | None = None
    # why the listener did not keep the data set (no room to spool it): the handler refuses it
    refused: str | None = None

    @property
    def size(self) -> int:
        """Bytes of the instance in file format."""
        return self.spooled.stat().st_size if self.spooled is not None else len(self.data)


def first_group(dataset: bytes | memoryview, transfer_syntax_uid: str) -> int | None:
    """The group number of the first element of an encoded data set (None when it is
    deflated or too short to tell)."""
    if transfer_syntax_uid == DEFLATED or len(dataset) < 2:
        return None
    if transfer_syntax_uid == EXPLICIT_BIG_ENDIAN:
        return int.from_bytes(bytes(dataset[:2]), "big")
    return int.from_bytes(bytes(dataset[:2]), "little")


def _dataset_offset(head: bytes) -> int | None:
    """Where the data set starts in File Format bytes beginning with ``head`` (>= 144 bytes),
    written with the File Meta group length first (as pynetdicom does)."""
    if len(head) < 144 or head[128:132] != b"DICM" or head[132:136] != b"\x02\x00\x00\x00":
        return None
    return 144 + int.from_bytes(head[140:144], "little")


def first_group_in_file_format(data: bytes | Path, transfer_syntax_uid: str) -> int | None:
    """:func:`first_group` of the data set in File Format bytes, or in a file of them."""
    with io.BytesIO(data) if isinstance(data, bytes) else data.open("rb") as handle:
        offset = _dataset_offset(handle.read(144))
        if offset is None:
            return None
        handle.seek(offset)
        return first_group(handle.read(2), transfer_syntax_uid)


StoreHandler = Callable[[StoreRequest], int]
# a storage commitment report received (dicom_io.commitment); returns the N-EVENT-REPORT status
CommitmentHandler = Callable[[CommitmentReport], int]
STATUS_PROCESSING_FAILURE = 0x0110


@dataclass(frozen=True)
class Caller:
    """An allowed calling AE title, optionally only from ``network`` (IP or CIDR)."""

    ae_title: str
    network: str | None = None

    def admits(self, ae_title: str, address: str) -> bool:
        """Whether this entry lets ``ae_title`` in from ``address``."""
        if ae_title.strip() != self.ae_title:
            return False
        if self.network is None:
            return True
        return ipaddress.ip_address(address) in ipaddress.ip_network(self.network, strict=False)


@dataclass(frozen=True)
class ListenerOptions:
    """How the listener presents itself and whom it lets in."""

    ae_title: str
    bind_address: str
    port: int
    max_associations: int = 10
    max_pdu: int = 262_144
    allowed_callers: Sequence[Caller] = ()
    ssl_context: ssl.SSLContext | None = None
    # where received data sets are spooled as they arrive (None: the system's temp folder);
    # on the store's file system, an instance is renamed into the store instead of copied
    spool_dir: Path | None = None
    # bind with SO_REUSEPORT: other processes of this user listen on the same port
    reuse_port: bool = False
    # the free space a spool file may not take (the store's watermark)
    spool_watermark: Watermark | None = None


class _NoDelayServer(ThreadedAssociationServer):
    """pynetdicom's threaded server with TCP_NODELAY on every accepted socket."""

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        if self.socket is None:
            raise OSError("the listener socket is closed")
        client, address = self.socket.accept()
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.ssl_context:
            client = self.ssl_context.wrap_socket(client, server_side=True)
        return client, address


class _SharedPortServer(_NoDelayServer):
    """The same, bound with SO_REUSEPORT: the kernel spreads connections over the processes
    listening on the port (pynetdicom's ``server_bind`` ignores socketserver's
    ``allow_reuse_port``)."""

    def server_bind(self) -> None:
        if self.socket is None:
            raise OSError("the listener socket is closed")
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()


class Listener:
    """A running Storage SCP. :meth:`start` binds and serves in a thread; :meth:`stop` ends it."""

    def __init__(
        self,
        options: ListenerOptions,
        on_store: StoreHandler,
        on_commitment: CommitmentHandler | None = None,
    ) -> None:
        """``on_commitment``: where storage commitment reports go (a PACS answering our
        requests on an association of its own); ``None``: the listener does not offer it."""
        self.options = options
        self._on_store = on_store
        self._on_commitment = on_commitment
        self._server: Any = None
        self._thread: threading.Thread | None = None
        # accept any storage SOP class, known or not; unknown ones are recorded as ignored
        pynetdicom_config.UNRESTRICTED_STORAGE_SERVICE = True
        reception.install()  # spool received data sets to files; no polling delays
        ae = AE(ae_title=options.ae_title)
        if options.spool_dir is not None:
            reception.register_spool(ae, options.spool_dir, options.spool_watermark)
        ae.maximum_associations = options.max_associations
        ae.maximum_pdu_size = options.max_pdu
        ae.network_timeout = 60
        ae.dimse_timeout = 60
        ae.acse_timeout = 30
        ae.add_supported_context(VERIFICATION_SOP_CLASS, ALL_TRANSFER_SYNTAXES)
        for context in AllStoragePresentationContexts:
            if context.abstract_syntax is not None:
                ae.add_supported_context(context.abstract_syntax, ACCEPTED_TRANSFER_SYNTAXES)
        if on_commitment is not None:
            # the PACS is the requestor and the SCP of the SOP class: it negotiates that role
            ae.add_supported_context(STORAGE_COMMITMENT, scu_role=True, scp_role=True)
        self._ae = ae

    @property
    def port(self) -> int:
        """The port actually bound (useful when 0 was asked for)."""
        return int(self._server.server_address[1])

    @property
    def running(self) -> bool:
        """Whether the listener is bound and its serving thread alive."""
        thread = getattr(self, "_thread", None)
        return self._server is not None and thread is not None and thread.is_alive()

    def start(self) -> None:
        """Bind and start serving; raises ``OSError`` when the address cannot be bound."""
        opts = self.options
        handlers: list[Any] = [
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_C_STORE, self._on_c_store),
            (evt.EVT_CONN_CLOSE, self._on_closed),
        ]
        if self._on_commitment is not None:
            handlers.append((evt.EVT_N_EVENT_REPORT, self._on_event_report))
        self._server = self._ae.make_server(
            (opts.bind_address, opts.port),
            ssl_context=opts.ssl_context,
            evt_handlers=handlers,
            server_class=_SharedPortServer if opts.reuse_port else _NoDelayServer,
        )
        self._ae._servers.append(self._server)  # as start_server does; shutdown() removes it
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="dicom-listener", daemon=True
        )
        self._thread.start()
        logger.info(
            "listening as %s on %s:%d%s",
            opts.ae_title,
            opts.bind_address,
            self.port,
            " (TLS)" if opts.ssl_context else "",
        )

    def stop(self) -> None:
        """Stop accepting, and end open associations."""
        if self._server is not None:
            self._server.shutdown()  # closes the socket and deregisters from the AE
            self._server = None
        for assoc in self._ae.active_associations:
            assoc.abort()

    # -- event handlers ------------------------------------------------------------------------

    def _on_requested(self, event: Any) -> None:
        allowed = self.options.allowed_callers
        if not allowed:
            return
        calling = event.assoc.requestor.primitive.calling_ae_title
        calling = calling.decode("ascii", "replace") if isinstance(calling, bytes) else calling
        address = event.assoc.requestor.address
        if any(caller.admits(calling, address) for caller in allowed):
            return
        logger.warning(
            "rejected association from AE %r at %s: not in scp.allowed_callers "
            "(add it there to let it store)",
            calling.strip(),
            address,
        )
        event.assoc.acse.send_reject(0x01, 0x01, 0x03)  # permanent, service user, calling AE

    def _on_echo(self, event: Any) -> int:
        logger.debug("C-ECHO from %s", event.assoc.requestor.ae_title)
        return STATUS_SUCCESS

    def _on_closed(self, event: Any) -> None:
        removed = reception.discard_spooled(event.assoc)
        if removed:
            logger.warning(
                "removed %d partly received instance(s) from %s: the association ended "
                "before they were complete (none was acknowledged)",
                removed,
                event.assoc.requestor.address,
            )

    def _on_c_store(self, event: Any) -> int:
        assoc = event.assoc
        try:
            syntax = str(event.context.transfer_syntax)
            spooled = Path(event.dataset_path)
            spool = reception.received(assoc, spooled)
            refused = spool.refused if spool is not None else None
            data = spool.contents() if spool is not None else None  # None: in its file
            on_disk = data is None and refused is None
            request = StoreRequest(
                calling_ae=str(assoc.requestor.ae_title).strip(),
                peer_address=str(assoc.requestor.address),
                sop_class_uid=str(event.request.AffectedSOPClassUID),
                sop_instance_uid=str(event.request.AffectedSOPInstanceUID),
                transfer_syntax_uid=syntax,
                data=data or b"",
                first_group=None
                if refused is not None
                else first_group_in_file_format(spooled if on_disk else data or b"", syntax),
                spooled=spooled if on_disk else None,
                refused=refused,
            )
        except Exception:  # a malformed request: nothing to store, tell the sender
            logger.exception("cannot read the C-STORE request from %s", assoc.requestor.address)
            return STATUS_CANNOT_UNDERSTAND
        try:
            return self._on_store(request)
        except Exception:  # the handler must not kill the association or the listener
            logger.exception("storing an instance from %s failed", request.calling_ae)
            return STATUS_OUT_OF_RESOURCES
        finally:
            reception.settled(assoc, spooled)

    def _on_event_report(self, event: Any) -> tuple[int, None]:
        assoc = event.assoc
        caller = str(assoc.requestor.ae_title).strip()
        try:
            if str(event.request.AffectedSOPClassUID) != STORAGE_COMMITMENT:
                return STATUS_PROCESSING_FAILURE, None
            report = read_report(event.event_information, caller)
        except Exception:  # a malformed report: say so to the sender, keep listening
            logger.exception("cannot read the storage commitment report from %s", caller)
            return STATUS_PROCESSING_FAILURE, None
        assert self._on_commitment is not None  # noqa: S101 (bound only with a handler)
        try:
            return self._on_commitment(report), None
        except Exception:
            logger.exception("recording the storage commitment report from %s failed", caller)
            return STATUS_PROCESSING_FAILURE, None
