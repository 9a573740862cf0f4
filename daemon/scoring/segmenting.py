"""Automatic tumour masks: the T2W series the assembler asked a mask for go to a worker's
``larc.segment`` task (:mod:`workers.segmentation`), and what comes back is either stored or
recorded as failed.

A mask that passes its quality gate becomes a DICOM SEG in the T2W's own study (its own series,
SegmentAlgorithmType AUTOMATIC naming the bundle and version, the tumour coded with SNOMED CT,
referencing the source images; UIDs derived from the series and the bundle, so a retry writes
the same object). It goes in through the same door as a received instance (the ingest handler:
durable, indexed), so the study re-opens, the assembler gives the SEG its role and the cases
use it like any mask; a drawn mask that arrives later comes first (``dicom_io.selection``).
The SEG is exported with the first results scored on it. A mask that fails its gate (or could
not be made) is recorded with the reason; the assembler declines the case with it, and nothing
is sent.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pydicom
import SimpleITK as sitk  # noqa: N813  (the name the SimpleITK world uses)
from numpy.typing import NDArray

from daemon.index import AutoMaskRow, AutoMaskState, Index
from daemon.scoring.executors import Executor, WorkState
from daemon.scoring.model import ModelInfo
from dicom_io.errors import InvalidInputError
from dicom_io.roles import SeriesRole
from dicom_io.scp import STATUS_SUCCESS, StoreRequest
from dicom_io.seg import binary_segmentation
from dicom_io.series import by_position, read_series, split_by_b_value
from dicom_io.sr import Algorithm, contributing_algorithm, derive_uid
from workers.segmentation import SegmentPayload, decode_mask, encode_volume, segmentation_key

logger = logging.getLogger(__name__)

REQUESTED, QUEUED, PASSED, FAILED = (
    AutoMaskState.REQUESTED, AutoMaskState.QUEUED, AutoMaskState.PASSED, AutoMaskState.FAILED
)  # fmt: skip
CALLING_AE = "LARC-AUTOSEG"  # how the index records who "sent" an automatic SEG
SEG_LABEL = "Tumour (automatic)"


class AutoSegmenter:
    """Requested automatic masks -> segment tasks -> stored SEGs or failures."""

    def __init__(
        self,
        index: Index,
        model: ModelInfo,
        executor: Executor,
        store: Callable[[StoreRequest], int],
        manufacturer: str,
        series_number: int = 9100,
        gate: Mapping[str, Any] | None = None,
    ) -> None:
        """``store``: the ingest handler (a SEG is stored like a received instance);
        ``gate``: overrides of the bundle's gate limits (``segmentation.gate``)."""
        self.index = index
        self.model = model
        self.executor = executor
        self.store = store
        self.manufacturer = manufacturer
        self.series_number = series_number
        self.gate = dict(gate or {})

    def requeue_lost(self, embedded: bool) -> int:
        """Masks whose work was lost are asked again: at start-up with embedded threads (the
        work died with the process), and after a broker restart (``embedded`` true then too);
        otherwise the broker's task survives and is polled."""
        if not embedded:
            return 0
        rows = self.index.auto_masks(QUEUED)
        for row in rows:
            self.index.set_auto_mask(row.image_series_uid, REQUESTED, "asked again after a restart")
        return len(rows)

    def run_once(self) -> None:
        """Send the requested masks; collect the finished ones."""
        for row in self.index.auto_masks(REQUESTED):
            self._submit(row)
        for row in self.index.auto_masks(QUEUED):
            self._collect(row)

    # -- sending ---------------------------------------------------------------------------------

    def _fail(
        self,
        row: AutoMaskRow,
        reason: str,
        volume_ml: float | None = None,
        mean_probability: float | None = None,
    ) -> None:
        self.index.set_auto_mask(
            row.image_series_uid, FAILED, reason,
            volume_ml=volume_ml, mean_probability=mean_probability,
        )  # fmt: skip
        logger.warning(
            "automatic tumour mask of series %s failed: %s", row.image_series_uid[-12:], reason
        )

    def _images(self, row: AutoMaskRow) -> list[pydicom.Dataset]:
        paths = self.index.instance_paths(row.image_series_uid)
        if not paths:
            raise InvalidInputError("the T2W series has no stored images")
        return [pydicom.dcmread(p) for p in paths]

    def _dwi(self, row: AutoMaskRow) -> sitk.Image | None:
        """The highest-b volume of the study's DWI (the series with the most images), for the
        gate's lesion-extent check; ``None`` when the study has none or it cannot be read (the
        check is then left out, and the case's own checks still need a readable DWI)."""
        found = [s for s in self.index.series_of_study(row.study_uid) if s.role == SeriesRole.DWI]
        if not found:
            return None
        chosen = max(found, key=lambda s: (s.instances, s.series_uid))
        try:
            groups = split_by_b_value(
                [pydicom.dcmread(p) for p in self.index.instance_paths(chosen.series_uid)]
            )
            return read_series(groups[max(groups)]) if groups else None
        except (InvalidInputError, OSError, ValueError) as exc:
            logger.warning(
                "DWI of series %s unreadable for the outline's extent check: %s",
                chosen.series_uid[-12:], exc,
            )  # fmt: skip
            return None

    def _submit(self, row: AutoMaskRow) -> None:
        try:
            datasets = self._images(row)
            if len(datasets) == 1 and int(datasets[0].get("NumberOfFrames", 1) or 1) > 1:
                raise InvalidInputError(
                    "automatic segmentation of a multi-frame (enhanced) MR series is not "
                    "supported yet: draw the tumour"
                )
            image = read_series(datasets)
        except (InvalidInputError, OSError, ValueError) as exc:
            self._fail(row, f"the T2W could not be read: {exc}")
            return
        dwi = self._dwi(row)
        payload = SegmentPayload(
            key=segmentation_key(row.image_series_uid, self.model.label),
            image_series_uid=row.image_series_uid,
            model_version=self.model.label,
            volume_b64=encode_volume(image),
            gate=self.gate,
            dwi_b64=encode_volume(dwi) if dwi is not None else None,
        )
        handle = self.executor.submit_segment(payload.to_json())
        self.index.set_auto_mask(
            row.image_series_uid, QUEUED, f"segmenting with {self.model.label}", task=handle
        )

    # -- collecting ------------------------------------------------------------------------------

    def _collect(self, row: AutoMaskRow) -> None:
        poll = self.executor.poll(row.task or "")
        if poll.state == WorkState.LOST:
            self.index.set_auto_mask(row.image_series_uid, REQUESTED, "asked again: work lost")
        elif poll.state == WorkState.FAILED:
            self._fail(row, f"the segmentation task failed: {poll.error}")
        elif poll.state == WorkState.DONE and poll.result is not None:
            self._finished(row, poll.result)

    def _finished(self, row: AutoMaskRow, result: dict[str, Any]) -> None:
        if result.get("failed"):
            self._fail(row, str(result["failed"]))
            return
        volume, probability = float(result["volume_ml"]), float(result["mean_probability"])
        if not result["passed"]:
            self._fail(row, "; ".join(result["reasons"]), volume, probability)
            return
        try:
            seg_series = self._store_seg(row, decode_mask(result["mask"]))
        except (InvalidInputError, OSError, ValueError) as exc:
            self._fail(row, f"the automatic SEG could not be stored: {exc}", volume, probability)
            return
        reason = (
            f"automatic outline {volume:.1f} ml, mean probability {probability:.2f}, "
            f"by {self.model.label}; not reviewed"
        )
        self.index.set_auto_mask(
            row.image_series_uid, PASSED, reason, seg_series_uid=seg_series,
            volume_ml=volume, mean_probability=probability,
        )  # fmt: skip
        logger.info(
            "automatic tumour mask of series %s stored as a SEG", row.image_series_uid[-12:]
        )

    def _store_seg(self, row: AutoMaskRow, mask: NDArray[np.bool_]) -> str:
        """Write the SEG and store it like a received instance; its series UID."""
        headers = by_position(
            [pydicom.dcmread(p, stop_before_pixels=True)
             for p in self.index.instance_paths(row.image_series_uid)]
        )  # fmt: skip
        first = headers[0]
        if mask.shape != (len(headers), int(first.Rows), int(first.Columns)):
            raise InvalidInputError(
                f"the mask's shape {mask.shape} does not fit the T2W's {len(headers)} images"
            )
        key = segmentation_key(row.image_series_uid, self.model.label)
        when = dt.datetime.fromtimestamp(row.requested_at).replace(microsecond=0)
        seg = binary_segmentation(
            headers,
            mask,
            series_instance_uid=derive_uid(key, "seg-series"),
            series_number=self.series_number,
            sop_instance_uid=derive_uid(key, "seg"),
            manufacturer=self.manufacturer,
            model=self.model.name[:64],
            software_version=self.model.version[:64],
            segment_label=SEG_LABEL,
            series_description="Tumour SEG, automatic (larc), not reviewed",
            manual=False,
            content_datetime=when,
            algorithm=self.model.name[:64],
            algorithm_version=self.model.version[:64],
        )
        algorithm = Algorithm(self.model.name, self.model.version, self.manufacturer)
        seg.ContributingEquipmentSequence = [contributing_algorithm(algorithm, when)]
        buffer = io.BytesIO()
        seg.save_as(buffer, enforce_file_format=True)
        data = buffer.getvalue()
        status = self.store(
            StoreRequest(
                CALLING_AE, "local", str(seg.SOPClassUID), str(seg.SOPInstanceUID),
                str(seg.file_meta.TransferSyntaxUID), data,
            )
        )  # fmt: skip
        if status != STATUS_SUCCESS:
            raise OSError(f"the store refused it (status 0x{status:04X}; see the log above)")
        return str(seg.SeriesInstanceUID)
