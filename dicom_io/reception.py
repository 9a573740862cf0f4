"""How pynetdicom receives for larc's listener: spooled to disk, and without polling delays.

Two changes to pynetdicom 3.0's receiving side, installed once per process by
:func:`install` (the listener calls it):

* **Spooling.** pynetdicom's ``STORE_RECV_CHUNKED_DATASET`` writes each received C-STORE data
  set, as its fragments arrive, to a temporary file in DICOM File Format. larc gives it a
  :class:`Spool` instead: memory up to 8 MiB (most instances: no file to create and read back),
  then a file in a spool folder of the listener's own (:func:`register_spool`) on the store's
  file system, so a large instance is fsynced and *renamed* into the store (no copy of its
  bytes) and a 300 MB multi-frame object never sits in memory. A transfer cut off half-way leaves
  its spool file behind; :func:`discard_spooled` removes it when the connection closes.
* **Latency.** pynetdicom's acceptor reactor sleeps 1 ms before each look at its message queue
  (on loopback, about half a millisecond per instance of a 4-5 ms path). That sleep becomes a
  wait on the queue itself: it wakes as soon as a message is decoded, or after the same 1 ms,
  so an idle association costs no more CPU. Requestor (SCU) associations are unchanged. (Its
  DUL thread's idle sleep, 1 ms, is left alone: 0.5 ms measured +3 % on one association and
  -4 % on four, both within the noise.)

Both reach into pynetdicom's internals (``pynetdicom.association.time``,
``pynetdicom.dimse_messages.NamedTemporaryFile``); the tests run the listener through both, and
:func:`install` refuses a pynetdicom whose layout it does not know rather than mis-patching it.
"""

from __future__ import annotations

import io
import tempfile
import threading
import time
import types
import uuid
import weakref
from pathlib import Path
from tempfile import NamedTemporaryFile
from typing import IO, Any

import pynetdicom
import pynetdicom.association
import pynetdicom.dimse_messages
from pynetdicom import _config as pynetdicom_config

from dicom_io.storage import Watermark

ACCEPTOR_POLL_S = 0.001  # pynetdicom's acceptor reactor sleep: replaced by a wait on its queue
SPOOL_PREFIX = "c-store-"
SPILL_BYTES = 8 * 2**20  # a received data set larger than this goes to its spool file
CHECK_BYTES = 4 * 2**20  # a spool file's growth between two looks at the free space

_installed = False
_install_lock = threading.Lock()
# each listener's AE -> the folder its associations spool into, and the free space to keep
_spools: weakref.WeakKeyDictionary[Any, tuple[Path, Watermark | None]] = weakref.WeakKeyDictionary()
# each association -> its data sets being received or handled, by name (a data set's file is
# removed when the connection closes, if it is still there)
_spooled: weakref.WeakKeyDictionary[Any, dict[str, Spool]] = weakref.WeakKeyDictionary()
_spooled_lock = threading.Lock()


def register_spool(ae: Any, folder: Path, watermark: Watermark | None = None) -> None:
    """Spool the data sets that associations of ``ae`` receive into ``folder`` (made here);
    with ``watermark``, a spool file stops growing (and is removed) before it would take the
    free space below it."""
    folder.mkdir(parents=True, exist_ok=True)
    _spools[ae] = (folder, watermark)


class Spool:
    """Where pynetdicom writes one received data set (in File Format): memory up to
    :data:`SPILL_BYTES`, then a file named :attr:`name` in the listener's spool folder. Stands in
    for the ``NamedTemporaryFile`` pynetdicom would open (it uses ``write``, ``file.flush``,
    ``name`` and ``close``, and unlinks ``name`` after the handler)."""

    def __init__(self, folder: Path | None, watermark: Watermark | None = None) -> None:
        self.folder = Path(folder or tempfile.gettempdir())
        self.name = str(self.folder / f"{SPOOL_PREFIX}{uuid.uuid4().hex}.dcm")
        self.file = self  # pynetdicom flushes ``.file``
        self.watermark = watermark
        # why the data set was not kept (its file removed, the rest of it discarded as it came)
        self.refused: str | None = None
        self._memory: io.BytesIO | None = io.BytesIO()
        self._disk: IO[bytes] | None = None
        self._unchecked = 0  # bytes written to the file since the free space was last checked

    def write(self, data: bytes) -> int:
        if self._memory is not None:
            written = self._memory.write(data)
            if self._memory.tell() > SPILL_BYTES:
                self._spill()
            return written
        if self.refused is not None:
            return len(data)  # the rest of a refused data set: read from the network, dropped
        if self._unchecked + len(data) > CHECK_BYTES and not self._room(CHECK_BYTES):
            return len(data)
        assert self._disk is not None  # noqa: S101
        self._unchecked += len(data)
        return self._disk.write(data)

    def _room(self, incoming: int) -> bool:
        """Whether ``incoming`` more bytes keep the free space above the watermark; if not,
        the data set is refused and its file removed."""
        self._unchecked = 0
        reason = self.watermark.shortfall(incoming) if self.watermark is not None else None
        if reason is None:
            return True
        self.refused = reason
        self._memory = None
        if self._disk is not None:
            self._disk.close()
            self._disk = None
            Path(self.name).unlink(missing_ok=True)
        return False

    def _spill(self) -> None:
        assert self._memory is not None  # noqa: S101
        if not self._room(self._memory.tell() + CHECK_BYTES):
            return
        self._disk = Path(self.name).open("xb")  # noqa: SIM115  (closed in close())
        self._disk.write(self._memory.getbuffer())
        self._memory = None

    def flush(self) -> None:
        if self._disk is not None:
            self._disk.flush()

    def close(self) -> None:
        if self._disk is not None:
            self._disk.close()

    def contents(self) -> bytes | None:
        """The data set's bytes while it is in memory; ``None`` once it is in the file."""
        return self._memory.getvalue() if self._memory is not None else None


def _spool_file(delete: bool = True, mode: str = "w+b", suffix: str = "") -> Spool:
    """Stands in for the ``NamedTemporaryFile`` pynetdicom opens for a received data set, in
    the spool folder of the listener whose association the calling DUL thread serves."""
    assoc = getattr(threading.current_thread(), "assoc", None)
    ae = getattr(assoc, "ae", None)
    folder, watermark = _spools.get(ae, (None, None)) if ae is not None else (None, None)
    spool = Spool(folder, watermark)
    if assoc is not None:
        with _spooled_lock:
            _spooled.setdefault(assoc, {})[spool.name] = spool
    return spool


def received(assoc: Any, path: Path) -> Spool | None:
    """The :class:`Spool` of ``assoc`` named ``path`` (what ``event.dataset_path`` gives)."""
    with _spooled_lock:
        return _spooled.get(assoc, {}).get(str(path))


def settled(assoc: Any, path: Path) -> None:
    """The handler has dealt with ``path`` (moved it into the store, or pynetdicom removes it
    next): it is no longer ``assoc``'s to clean up."""
    with _spooled_lock:
        _spooled.get(assoc, {}).pop(str(path), None)


def discard_spooled(assoc: Any) -> int:
    """Remove the spool files of ``assoc`` still on disk (data sets it never finished
    receiving); returns how many."""
    with _spooled_lock:
        spools = _spooled.pop(assoc, {})
    removed = 0
    for spool in spools.values():
        spool.close()
        try:
            Path(spool.name).unlink()
            removed += 1
        except FileNotFoundError:
            pass  # never left memory, or already moved into the store
    return removed


def _acceptor_sleep(seconds: float) -> None:
    thread = threading.current_thread()
    if seconds == ACCEPTOR_POLL_S and getattr(thread, "is_acceptor", False):
        messages = thread.dimse.msg_queue  # type: ignore[attr-defined]
        with messages.not_empty:
            if not messages._qsize():
                messages.not_empty.wait(seconds)
        return
    time.sleep(seconds)


def _check_layout() -> None:
    if not (
        getattr(pynetdicom.association, "time", None) is time
        and getattr(pynetdicom.dimse_messages, "NamedTemporaryFile", None) is NamedTemporaryFile
        and hasattr(pynetdicom_config, "STORE_RECV_CHUNKED_DATASET")
    ):
        raise RuntimeError(
            f"pynetdicom {pynetdicom.__version__} is not laid out as dicom_io.reception expects "
            "(written for 3.0): pin pynetdicom or update dicom_io/reception.py"
        )


def install() -> None:
    """Make this process's pynetdicom receive as described above (idempotent)."""
    global _installed  # noqa: PLW0603  (once per process)
    with _install_lock:
        if _installed:
            return
        _check_layout()
        pynetdicom_config.STORE_RECV_CHUNKED_DATASET = True
        pynetdicom.dimse_messages.NamedTemporaryFile = _spool_file  # type: ignore[attr-defined,assignment]
        shim = types.ModuleType("time", "time, with the acceptor reactor's sleep as a wait")
        shim.__dict__.update({k: v for k, v in vars(time).items() if not k.startswith("__")})
        shim.sleep = _acceptor_sleep  # type: ignore[attr-defined]
        pynetdicom.association.time = shim  # type: ignore[attr-defined]
        _installed = True
