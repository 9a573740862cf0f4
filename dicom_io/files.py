"""Reading a stored DICOM file with an error that names the file (never a raw pydicom one)."""

from __future__ import annotations

from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from dicom_io.errors import InvalidInputError


def read_dicom(path: Path, headers_only: bool = False) -> Dataset:
    """``path`` read with pydicom (without pixel data when ``headers_only``);
    :class:`InvalidInputError` naming the file when it is not readable DICOM."""
    try:
        return pydicom.dcmread(path, stop_before_pixels=headers_only)
    except (InvalidDicomError, OSError) as exc:
        raise InvalidInputError(f"{path.name} is not readable DICOM: {exc}") from exc
