"""What happens to a received instance: check it, store it durably, index it, then acknowledge.

Nothing is acknowledged before the file is fsynced under its final name and the index row is
committed. A bad instance is refused with a failure status and recorded with its reason; it never
touches anything already stored.
"""

from __future__ import annotations

import hashlib
import io
import logging
import sqlite3
import threading
import warnings
from pathlib import Path

import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.uid import UID

from daemon.index import Index, InstanceRecord
from dicom_io.errors import InvalidInputError, StorageError
from dicom_io.scp import (
    STATUS_CANNOT_UNDERSTAND,
    STATUS_DATASET_MISMATCH,
    STATUS_DUPLICATE_REFUSED,
    STATUS_OUT_OF_RESOURCES,
    STATUS_SUCCESS,
    StoreRequest,
)
from dicom_io.storage import InstanceStore, StoredFile, Watermark, validate_uid

logger = logging.getLogger(__name__)

# SOP classes larc uses; every other storage class is stored and recorded as ignored
IMAGE_SOP_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.4",  # MR Image
        "1.2.840.10008.5.1.4.1.1.4.1",  # Enhanced MR Image
        "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture
        "1.2.840.10008.5.1.4.1.1.7.2",  # Multi-frame Grayscale Byte SC
        "1.2.840.10008.5.1.4.1.1.7.3",  # Multi-frame Grayscale Word SC
        "1.2.840.10008.5.1.4.1.1.7.4",  # Multi-frame True Color SC
    }
)
OTHER_USED_SOP_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.481.3",  # RT Structure Set
        "1.2.840.10008.5.1.4.1.1.66.4",  # Segmentation
        "1.2.840.10008.5.1.4.1.1.88.11",  # Basic Text SR
        "1.2.840.10008.5.1.4.1.1.88.22",  # Enhanced SR
        "1.2.840.10008.5.1.4.1.1.88.33",  # Comprehensive SR
        "1.2.840.10008.5.1.4.1.1.88.34",  # Comprehensive 3D SR
    }
)
DUPLICATE_POLICIES = ("keep_newest", "keep_first", "reject")


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value)


def _int(ds: Dataset, keyword: str) -> int | None:
    value = ds.get(keyword)
    try:
        return None if value in (None, "") else int(value)
    except (TypeError, ValueError):
        return None


def parse(request: StoreRequest) -> Dataset:
    """Decode a received instance (file format: in memory, or its spool file when large);
    :class:`InvalidInputError` when it cannot."""
    source = request.spooled if request.spooled is not None else io.BytesIO(request.data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # large values (pixel data) are not read: their length is all the checks need
            ds = pydicom.dcmread(source, defer_size=4096)
    except Exception as exc:
        raise InvalidInputError(f"not a readable DICOM data set: {exc}") from exc
    return ds


def content_hash(request: StoreRequest) -> str:
    """SHA-256 (hex) of the instance in file format, read from its spool file when it has one."""
    if request.spooled is None:
        return hashlib.sha256(request.data).hexdigest()
    with request.spooled.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _check_pixel_data(ds: Dataset, transfer_syntax_uid: str, available: int) -> None:
    if "PixelData" not in ds:
        raise InvalidInputError("image has no Pixel Data")
    if UID(transfer_syntax_uid).is_compressed:
        return  # encapsulated: decoded only where the pipeline needs it
    try:
        rows, columns = int(ds.Rows), int(ds.Columns)
        samples = int(ds.get("SamplesPerPixel", 1))
        bits = int(ds.BitsAllocated)
    except (AttributeError, TypeError, ValueError) as exc:
        raise InvalidInputError(f"image pixel description is incomplete: {exc}") from exc
    frames = _int(ds, "NumberOfFrames") or 1
    expected_bits = rows * columns * samples * bits * frames
    expected = (expected_bits + 7) // 8
    element = ds.get_item("PixelData", keep_deferred=True)
    if isinstance(element, RawDataElement) and element.value is None:  # deferred: not read
        actual = int(element.length)
        if element.value_tell + actual > available:
            raise InvalidInputError(
                f"Pixel Data is truncated: {actual} bytes announced, "
                f"{available - element.value_tell} received"
            )
    else:
        actual = len(ds.PixelData)
    if actual not in (expected, expected + 1):
        raise InvalidInputError(
            f"Pixel Data has {actual} bytes, but Rows x Columns x SamplesPerPixel x "
            f"BitsAllocated x frames needs {expected}"
        )


def describe(ds: Dataset, request: StoreRequest) -> InstanceRecord:
    """The index record of a received instance, after checking it can be used safely."""
    sop_class = validate_uid(_text(ds, "SOPClassUID"), "SOPClassUID")
    sop_uid = validate_uid(_text(ds, "SOPInstanceUID"), "SOPInstanceUID")
    if sop_uid != request.sop_instance_uid.rstrip("\x00 "):
        raise InvalidInputError("SOPInstanceUID in the data set differs from the C-STORE request")
    study_uid = validate_uid(_text(ds, "StudyInstanceUID"), "StudyInstanceUID")
    series_uid = validate_uid(_text(ds, "SeriesInstanceUID"), "SeriesInstanceUID")
    patient_id = _text(ds, "PatientID").strip()
    if not patient_id:
        raise InvalidInputError("PatientID is empty: larc pairs studies by patient")
    ignored = None
    if sop_class in IMAGE_SOP_CLASSES:
        _check_pixel_data(ds, request.transfer_syntax_uid, request.size)
    elif sop_class not in OTHER_USED_SOP_CLASSES:
        ignored = f"SOP class {UID(sop_class).name} is not used by larc (stored, ignored)"
    return InstanceRecord(
        patient_id=patient_id,
        patient_name=_text(ds, "PatientName"),
        birth_date=_text(ds, "PatientBirthDate"),
        sex=_text(ds, "PatientSex"),
        study_uid=study_uid,
        study_date=_text(ds, "StudyDate"),
        study_time=_text(ds, "StudyTime"),
        study_description=_text(ds, "StudyDescription"),
        accession_number=_text(ds, "AccessionNumber"),
        time_point_id=_text(ds, "ClinicalTrialTimePointID"),
        series_uid=series_uid,
        modality=_text(ds, "Modality"),
        series_number=_int(ds, "SeriesNumber"),
        series_description=_text(ds, "SeriesDescription"),
        frame_of_reference_uid=_text(ds, "FrameOfReferenceUID"),
        sop_class_uid=sop_class,
        sop_uid=sop_uid,
        instance_number=_int(ds, "InstanceNumber"),
        transfer_syntax_uid=request.transfer_syntax_uid,
        ignored_reason=ignored,
    )


class Ingest:
    """The listener's store handler: check, store, index, and only then say success."""

    def __init__(
        self,
        store: InstanceStore,
        index: Index,
        duplicate_policy: str,
        watermark: Watermark | None = None,
    ) -> None:
        if duplicate_policy not in DUPLICATE_POLICIES:
            raise ValueError(f"duplicate_policy must be one of {', '.join(DUPLICATE_POLICIES)}")
        self.store = store
        self.index = index
        self.duplicate_policy = duplicate_policy
        self.watermark = watermark
        self._low_space: str | None = None  # the reason while storing is refused for space
        self._space_lock = threading.Lock()

    def _space(self, request: StoreRequest) -> str | None:
        """Why there is no room for this instance now (None: there is). Logs once when storing
        stops for want of space and once when it resumes, not once per instance."""
        if self.watermark is None:
            return None
        # a spooled instance is on this file system already: moving it in takes no more room
        reason = self.watermark.shortfall(0 if request.spooled is not None else request.size)
        with self._space_lock:
            if reason is not None and self._low_space is None:
                logger.error(
                    "storage is almost full: new instances are refused with 0xA700 Out of "
                    "Resources until space is freed (%s)",
                    reason,
                )
            elif reason is None and self._low_space is not None:
                logger.warning("storage has room again: instances are stored again")
            self._low_space = reason
        return reason

    def _reject(self, request: StoreRequest, status: int, reason: str) -> int:
        logger.warning(
            "refused an instance from %s (status 0x%04X): %s", request.calling_ae, status, reason
        )
        self._record_refusal(request, status, reason)
        return status

    def _record_refusal(self, request: StoreRequest, status: int, reason: str) -> None:
        try:
            self.index.record_rejection(
                request.calling_ae,
                request.sop_class_uid,
                request.sop_instance_uid,
                status,
                reason,
            )
        except sqlite3.Error:
            logger.exception("could not record the rejection in the index")

    def _store(self, request: StoreRequest, path: Path, sha256: str) -> StoredFile:
        """Durably store the instance at ``path``: a spooled one is moved there, not copied."""
        if request.spooled is not None:
            return self.store.adopt(request.spooled, path, sha256)
        return self.store.write(path, request.data, sha256)

    def __call__(self, request: StoreRequest) -> int:  # noqa: PLR0911  (one return per outcome)
        """Handle one C-STORE; returns the DIMSE status for the sender."""
        if (full := self._space(request)) is not None:
            # logged once per episode (above); the watermark leaves the index room for the row
            self._record_refusal(request, STATUS_OUT_OF_RESOURCES, full)
            return STATUS_OUT_OF_RESOURCES
        if request.refused is not None:  # the listener had no room to receive it whole
            return self._reject(request, STATUS_OUT_OF_RESOURCES, request.refused)
        if request.first_group is not None and request.first_group < 0x0008:
            return self._reject(
                request,
                STATUS_CANNOT_UNDERSTAND,
                f"the data set begins with a group {request.first_group:04X} element: File Meta "
                "(0002) or command (0000) elements do not belong in a C-STORE data set",
            )
        try:
            ds = parse(request)
        except InvalidInputError as exc:
            return self._reject(request, STATUS_CANNOT_UNDERSTAND, str(exc))
        try:
            record = describe(ds, request)
            path = self.store.path_for(record.study_uid, record.series_uid, record.sop_uid)
        except InvalidInputError as exc:
            return self._reject(request, STATUS_DATASET_MISMATCH, str(exc))
        except Exception as exc:  # noqa: BLE001  (an element pydicom cannot decode, read lazily)
            return self._reject(
                request, STATUS_CANNOT_UNDERSTAND, f"an element cannot be decoded: {exc}"
            )

        sha256 = content_hash(request)
        old_path: Path | None = None
        try:
            existing = self.index.instance(record.sop_uid)
            if existing is not None:
                if existing.sha256 == sha256:
                    return STATUS_SUCCESS  # the same bytes again: nothing to do
                action = {
                    "keep_newest": "replaced",
                    "keep_first": "kept first",
                    "reject": "refused",
                }
                self.index.record_duplicate(
                    record.sop_uid,
                    existing.sha256,
                    sha256,
                    self.duplicate_policy,
                    action[self.duplicate_policy],
                    request.calling_ae,
                )
                logger.warning(
                    "instance received again with different content from %s: %s "
                    "(storage.duplicate_policy=%s)",
                    request.calling_ae,
                    action[self.duplicate_policy],
                    self.duplicate_policy,
                )
                if self.duplicate_policy == "keep_first":
                    return STATUS_SUCCESS
                if self.duplicate_policy == "reject":
                    return STATUS_DUPLICATE_REFUSED
                old_path = Path(existing.path)
            stored = self._store(request, path, sha256)
            self.index.record_instance(
                record, stored.path, stored.size, stored.sha256, request.calling_ae
            )
        except (StorageError, sqlite3.Error) as exc:
            logger.error("could not store an instance from %s: %s", request.calling_ae, exc)
            self._record_refusal(request, STATUS_OUT_OF_RESOURCES, f"could not store it: {exc}")
            return STATUS_OUT_OF_RESOURCES
        if old_path is not None and old_path != stored.path:
            old_path.unlink(missing_ok=True)
        return STATUS_SUCCESS
