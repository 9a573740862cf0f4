"""A case's work order: everything a worker needs, nothing it must fetch.

The daemon holds the DICOM files, so it prepares the case's model inputs itself (science
preprocessing, a few seconds of CPU) from exactly the series the case recorded
(:func:`daemon.cases.recorded_series`: the selection made when the case was decided, which is
what its fingerprint covers), and adds the DICOM headers its results reference: the source
images of the heat maps, the tumour masks, the study the results go into, and the SR it
supersedes. Workers need the model bundle, not the storage (:mod:`workers.payload`).
"""

from __future__ import annotations

import base64
import datetime as dt
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pydicom

from daemon.cases import RecordedSeries, recorded_series
from daemon.index import CaseRow, Index
from daemon.scoring.checks import InputPolicy, check_inputs
from daemon.scoring.model import ModelInfo
from dicom_io.errors import InvalidInputError
from dicom_io.masks import select_roi
from dicom_io.pairing import Timepoint
from dicom_io.roles import SeriesRole
from dicom_io.selection import SelectedStudy, SeriesFiles
from dicom_io.sr import SEGMENTATION_STORAGE
from pipeline.case import CaseInputs, prepare_case
from pipeline.config import PreprocessConfig
from pipeline.errors import PipelineInputError
from workers.payload import CasePayload, header, idempotency_key

COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"
RT_STRUCTURE_SET = "1.2.840.10008.5.1.4.1.1.481.3"


def _reference(ds: pydicom.Dataset) -> dict[str, str]:
    return {
        "sop_class_uid": str(ds.SOPClassUID),
        "sop_instance_uid": str(ds.SOPInstanceUID),
        "series_instance_uid": str(ds.SeriesInstanceUID),
        "study_instance_uid": str(ds.StudyInstanceUID),
    }


@dataclass(frozen=True)
class Preparation:
    """A case's preparation, ready to run anywhere that sees the storage."""

    selected: dict[str, SelectedStudy]
    preprocess: PreprocessConfig
    signatures: tuple[str, ...]
    stacks: bool


def prepare(plan: Preparation) -> CaseInputs:
    """Run :func:`pipeline.case.prepare_case` for ``plan`` (in this process or a pool's)."""
    return prepare_case(
        plan.selected, plan.preprocess, signatures=plan.signatures, stacks=plan.stacks
    )


class WorkOrders:
    """Builds :class:`CasePayload` s from the index and the stored files."""

    def __init__(
        self,
        index: Index,
        model: ModelInfo,
        manufacturer: str,
        policy: InputPolicy | None = None,
    ) -> None:
        self.index = index
        self.model = model
        self.manufacturer = manufacturer
        self.policy = policy or InputPolicy()

    def key(self, case: CaseRow) -> str:
        """The case version's work key (inputs, readings and model; see the payload module)."""
        return idempotency_key(case.case_id, case.fingerprint or "", self.model.label)

    def selected(self, recorded: Mapping[Timepoint, RecordedSeries]) -> dict[str, SelectedStudy]:
        """A case's recorded series (:func:`daemon.cases.recorded_series`) as files."""
        out: dict[str, SelectedStudy] = {}
        for timepoint, series in recorded.items():
            images = {
                role: SeriesFiles(uid, role, tuple(self.index.instance_paths(uid)))
                for role, uid in series.images.items()
            }
            masks = []
            for uid, referenced in series.masks.items():
                row = self.index.series(uid)
                if row is None or row.role not in (SeriesRole.RTSTRUCT, SeriesRole.SEG):
                    continue
                paths = tuple(self.index.instance_paths(uid))
                automatic = self.index.auto_mask_of_seg(uid) is not None
                masks.append(SeriesFiles(uid, SeriesRole(row.role), paths, referenced, automatic))
            out[timepoint] = SelectedStudy(images, tuple(masks))
        return out

    def _header(self, sop_uid: str) -> dict[str, Any] | None:
        row = self.index.instance(sop_uid)
        if row is None:
            return None
        return header(pydicom.dcmread(row.path, stop_before_pixels=True))

    def _first_header(self, series_uid: str) -> dict[str, Any] | None:
        row = self.index.first_instance(series_uid)
        return header(pydicom.dcmread(row.path, stop_before_pixels=True)) if row else None

    def provenance(self, mask_series_uid: str) -> str:
        """Where a tumour mask came from, in words for the report: drawn (RTSTRUCT and its
        ROI, or SEG and its segment) or automatic (model, reviewed or not)."""
        auto = self.index.auto_mask_of_seg(mask_series_uid)
        if auto is not None:
            if auto.review == "accepted":
                when = dt.datetime.fromtimestamp(auto.reviewed_at or 0).strftime("%Y-%m-%d")
                review = f"reviewed and accepted by {auto.reviewed_by} on {when}"
            else:
                review = (
                    "not reviewed by a radiologist. The measurements and scores rest on an "
                    "unverified automatic outline"
                )
            return f"automatic outline by {auto.model}, {review}"
        row = self.index.first_instance(mask_series_uid)
        if row is None:
            return "drawn mask"
        ds = pydicom.dcmread(row.path, stop_before_pixels=True)
        if str(ds.SOPClassUID) == RT_STRUCTURE_SET:
            try:
                _, name = select_roi(ds, self.model.preprocess.roi_pattern)
            except InvalidInputError:
                return "drawn RTSTRUCT"
            return f"drawn RTSTRUCT (ROI '{name}')"
        segments = list(ds.get("SegmentSequence", []))
        if not segments:
            return "drawn SEG"
        first = segments[0]
        how = ""
        if str(first.get("SegmentAlgorithmType", "")).upper() == "SEMIAUTOMATIC":
            program = str(first.get("SegmentAlgorithmName", "") or "")
            how = f", semi-automatic with '{program}'" if program else ", semi-automatic"
        return f"drawn SEG (segment '{first.get('SegmentLabel', '')}'{how})"

    def build(self, case: CaseRow) -> CasePayload:
        """Prepare the case's inputs and gather what the workers need (see the module doc).

        Raises :class:`daemon.scoring.checks.CaseDeclined` when the inputs must not be scored
        (:func:`daemon.scoring.checks.check_inputs`), ``PipelineInputError``,
        ``InvalidInputError`` or ``OSError`` when the case cannot be prepared."""
        return self.finish(case, prepare(self.plan(case)))

    def plan(self, case: CaseRow) -> Preparation:
        """What preparing the case needs: its series as files and the preprocessing (plain,
        picklable: it may run in another process, see :func:`prepare`)."""
        kind = case.kind
        return Preparation(
            self.selected(recorded_series(case.inputs, kind)),
            self.model.preprocess,
            kind.signatures,
            kind.stacks,
        )

    def finish(self, case: CaseRow, inputs: CaseInputs) -> CasePayload:
        """The payload from the case's prepared ``inputs`` (see :meth:`build`)."""
        kind = case.kind
        recorded = recorded_series(case.inputs, kind)
        selected = self.selected(recorded)
        warnings = check_inputs(kind, inputs, self.model.envelope, self.policy)
        evidence: list[dict[str, Any]] = []
        for item in inputs.slices.values():
            found = self._header(item.sop_instance_uid) if item.sop_instance_uid else None
            if found is not None:
                evidence.append(found)
        masks: dict[str, dict[str, Any]] = {}
        outlines: dict[str, str] = {}
        for timepoint, series in recorded.items():
            t2w = series.images.get(SeriesRole.T2W_AX)
            mask = case.inputs.get(f"{timepoint}_mask")
            found = self._first_header(mask) if mask and series.masks.get(mask) == t2w else None
            if found is not None and mask is not None:
                evidence.append(found)
                masks[timepoint] = _reference(pydicom.Dataset.from_json(found))
                if masks[timepoint]["sop_class_uid"] == SEGMENTATION_STORAGE and t2w:
                    # the segment read (dicom_io.masks.seg_mask's default) and what it segments
                    masks[timepoint] |= {"segment_number": 1, "source_series_uid": t2w}
                outlines[timepoint] = self.provenance(mask)
        target_study = (
            case.restaging_study_uid if kind.target == "restaging" else case.baseline_study_uid
        )
        target = next(
            (e for e in evidence if pydicom.Dataset.from_json(e).StudyInstanceUID == target_study),
            None,
        )
        if target is None:
            t2w_series = selected[kind.target].images.get(SeriesRole.T2W_AX)
            target = self._first_header(t2w_series.series_uid) if t2w_series else None
        if target is None:
            raise PipelineInputError("no instance of the target study to attach results to")
        key = self.key(case)
        ready_at = self.index.version_started_at(case.case_id, case.version) or time.time()
        previous = self.index.latest_result(case.case_id, other_than=key)
        predecessor = None
        if previous is not None:
            predecessor = {
                "sop_class_uid": COMPREHENSIVE_3D_SR,
                "sop_instance_uid": previous.sr_sop_uid,
                "series_instance_uid": previous.sr_series_uid,
                "study_instance_uid": previous.study_uid,
            }
        return CasePayload(
            case_id=case.case_id,
            kind=kind,
            version=case.version,
            key=key,
            model_version=self.model.label,
            algorithm={
                "name": self.model.name,
                "version": self.model.version,
                "manufacturer": self.manufacturer,
            },
            created_at=dt.datetime.fromtimestamp(ready_at).isoformat(timespec="seconds"),
            inputs_b64=base64.b64encode(inputs.to_bytes()).decode(),
            target_study=target,
            evidence=evidence,
            masks=masks,
            predecessor=predecessor,
            clinical=self.index.readings(case.case_id),
            warnings=warnings,
            outlines=outlines,
            require_validated=self.policy.require_validated,
        )
