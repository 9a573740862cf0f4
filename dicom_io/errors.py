"""Errors of the DICOM layer. Messages say what was wrong and what to do."""

from __future__ import annotations


class InvalidInputError(ValueError):
    """Bad input (malformed DICOM, wrong tags, bad UID): recorded, never retried."""


class StorageError(OSError):
    """The store could not write (disk full, permissions): the sender should retry later."""
