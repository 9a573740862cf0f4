"""Durable instance store: paths built only from validated UIDs, atomic fsynced writes."""

from __future__ import annotations

import errno
import hashlib
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from dicom_io.errors import InvalidInputError, StorageError

_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


def validate_uid(value: object, name: str) -> str:
    """``value`` if it is a valid DICOM UID (digits and dots, no leading zeros, <= 64 chars)."""
    if not isinstance(value, str) or not value:
        raise InvalidInputError(f"{name} is missing")
    text = value.rstrip("\x00 ")
    if len(text) > 64:
        raise InvalidInputError(f"{name} is longer than 64 characters")
    if not _UID.match(text):
        raise InvalidInputError(f"{name} is not a valid UID (digits and dots only)")
    return text


@dataclass(frozen=True)
class StoredFile:
    """Where an instance was written, its size and content hash."""

    path: Path
    size: int
    sha256: str


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_folder(folder: Path) -> bool:
    """Make ``folder`` (a series folder) and its parents; whether it is new."""
    new_folder = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    return new_folder


def _sync_folder(folder: Path, new_folder: bool) -> None:
    """Make a rename into ``folder`` durable, and the folder itself (and its study folder)
    when it is new."""
    _fsync_dir(folder)
    if new_folder:
        for parent in (folder.parent, folder.parent.parent):
            _fsync_dir(parent)


class InstanceStore:
    """Files under ``root``/<study>/<series>/<sop>.dcm, each written atomically and fsynced."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path_for(self, study_uid: str, series_uid: str, sop_uid: str) -> Path:
        """The path of an instance; raises :class:`InvalidInputError` for a bad UID."""
        parts = (
            validate_uid(study_uid, "StudyInstanceUID"),
            validate_uid(series_uid, "SeriesInstanceUID"),
            validate_uid(sop_uid, "SOPInstanceUID") + ".dcm",
        )
        return self.root.joinpath(*parts)

    def write(self, path: Path, data: bytes, sha256: str | None = None) -> StoredFile:
        """Write ``data`` to ``path`` (from :meth:`path_for`): temp file, fsync, atomic rename.

        ``sha256`` is the hex digest of ``data`` when the caller has it already.

        A crash leaves either the old file or the new one, never a partial file under ``path``.
        Raises :class:`StorageError` when the disk refuses.
        """
        folder = path.parent
        try:
            new_folder = _make_folder(folder)
            fd, temp = tempfile.mkstemp(dir=folder, prefix=".incoming-", suffix=".part")
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                Path(temp).replace(path)
            except BaseException:
                Path(temp).unlink(missing_ok=True)
                raise
            _sync_folder(folder, new_folder)
        except OSError as exc:
            raise StorageError(f"cannot store {path.name} under {self.root}: {exc}") from exc
        return StoredFile(path, len(data), sha256 or hashlib.sha256(data).hexdigest())

    def adopt(self, source: Path, path: Path, sha256: str) -> StoredFile:
        """Move the file ``source`` (a received instance, e.g. in the listener's spool folder)
        to ``path`` (from :meth:`path_for`), durably: fsync, atomic rename, fsync the folder.
        When ``source`` is on another file system it is copied as :meth:`write` would.

        ``sha256`` is the hex digest of the file's bytes. Raises :class:`StorageError` when the
        disk refuses; ``source`` is then left where it was.
        """
        folder = path.parent
        try:
            new_folder = _make_folder(folder)
            with source.open("rb+") as handle:
                os.fsync(handle.fileno())
                size = os.fstat(handle.fileno()).st_size
            try:
                source.replace(path)
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
                return self.write(path, source.read_bytes(), sha256)
            _sync_folder(folder, new_folder)
        except OSError as exc:
            raise StorageError(f"cannot store {path.name} under {self.root}: {exc}") from exc
        return StoredFile(path, size, sha256)

    def remove_leftovers(self) -> int:
        """Delete temp files a crash left behind; returns how many. Call at start-up."""
        count = 0
        for temp in self.root.rglob(".incoming-*.part"):
            temp.unlink(missing_ok=True)
            count += 1
        return count


@dataclass(frozen=True)
class Watermark:
    """The free space the store's file system must keep: the larger of ``min_free_bytes`` and
    ``min_free_percent`` of the file system's size. Below it, new instances are refused (the
    index, its journal and the results still need room); storing resumes by itself when space
    returns, since every instance checks again."""

    root: Path
    min_free_bytes: int = 0
    min_free_percent: float = 0.0

    def space(self) -> tuple[int, int]:
        """(bytes free to this process, size of the file system) where the store lives."""
        found = os.statvfs(self.root)
        return found.f_bavail * found.f_frsize, found.f_blocks * found.f_frsize

    def required(self, total: int) -> int:
        """Bytes that must stay free on a file system of ``total`` bytes."""
        return max(self.min_free_bytes, int(total * self.min_free_percent / 100))

    def shortfall(self, incoming: int = 0) -> str | None:
        """Why ``incoming`` more bytes may not be stored now (None: they may)."""
        try:
            free, total = self.space()
        except OSError as exc:
            return f"cannot read the free space under {self.root}: {exc}"
        required = self.required(total)
        if free - incoming >= required:
            return None
        if free >= required:
            return (
                f"{_mib(free)} free under {self.root}: {_mib(incoming)} more would leave less "
                f"than the {_mib(required)} that must stay free (storage.min_free_bytes / "
                "storage.min_free_percent)"
            )
        return (
            f"{_mib(free)} free under {self.root}, below the {_mib(required)} that must stay "
            "free (storage.min_free_bytes / storage.min_free_percent)"
        )


def _mib(size: int) -> str:
    return f"{size / 2**20:,.1f} MiB"
