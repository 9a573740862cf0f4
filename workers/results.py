"""The DICOM part of scoring a case (the ``cpu`` queue): the scores as a TID 1500 SR and the
heat maps as Secondary Captures, with UIDs derived from the idempotency key."""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset

from dicom_io.sc import blend, captioned, gradcam_capture, heat_overlay
from dicom_io.seg import TUMOUR_DISPLAY_RGB
from dicom_io.sr import (
    RESEARCH_USE,
    Algorithm,
    AnalysisGroup,
    Reference,
    derive_uid,
    measurement_report,
)
from pipeline.case import CaseInputs
from pipeline.gradcam import predicted_class
from pipeline.kinds import BASELINE, PREFIX, RESTAGING
from pipeline.validation import unavailable
from workers.analysis import RESPONSE, decode_maps
from workers.payload import CasePayload, dataset

_SEQUENCE_NAME = {"T2": "T2W", "DWI": "DWI", "CE": "CE-T1", "ADC": "ADC"}
_TIMEPOINT_OF = {prefix: timepoint for timepoint, prefix in PREFIX.items()}


@dataclass(frozen=True)
class ResultObject:
    """One result instance, ready to store and send."""

    name: str  # "sr" or "sc-<input>"
    dataset: Dataset

    @property
    def sop_instance_uid(self) -> str:
        """Its SOP Instance UID."""
        return str(self.dataset.SOPInstanceUID)

    def to_bytes(self) -> bytes:
        """The DICOM file (Part 10, explicit VR little endian)."""
        buffer = io.BytesIO()
        self.dataset.save_as(buffer, enforce_file_format=True)
        return buffer.getvalue()


def _reference(evidence: dict[str, Dataset], sop_uid: str) -> Reference | None:
    ds = evidence.get(sop_uid)
    if ds is None:
        return None
    return Reference(
        str(ds.SOPClassUID), sop_uid, str(ds.SeriesInstanceUID), str(ds.StudyInstanceUID)
    )


def _measurement_group(inputs: CaseInputs, timepoint: str, payload: CasePayload,
                       sources: list[Reference]) -> AnalysisGroup | None:  # fmt: skip
    found = inputs.features.get(timepoint)
    if found is None:
        return None
    return AnalysisGroup(
        "tumour-measurements",
        timepoint,
        measurements=[
            ("long-axis", found.longest_diameter_mm, "mm"),
            ("max-wall-thickness", found.max_wall_thickness_mm, "mm"),
            ("volume", found.volume_ml, "ml"),
        ],
        source_images=sources,
        mask=payload.mask(timepoint),
    )


def report_groups(
    payload: CasePayload, inputs: CaseInputs, scores: dict[str, Any], evidence: dict[str, Dataset]
) -> list[AnalysisGroup]:
    """The SR's measurement groups for the case's kind."""
    slice_refs = {
        name: ref
        for name, item in inputs.slices.items()
        if (ref := _reference(evidence, item.sop_instance_uid)) is not None
    }
    groups: list[AnalysisGroup] = []
    timepoints: tuple[str, ...]
    if payload.kind == RESPONSE:
        prediction = AnalysisGroup(
            "response-prediction", RESTAGING, source_images=list(slice_refs.values()),
            mask=payload.mask(RESTAGING),
        )  # fmt: skip
        for model in ("FDL", "CR", "CRD"):
            found = scores.get(f"response_{model}")
            if found:
                key = f"p-good-response-{model.lower()}"
                prediction.measurements.append((key, found["p_good_response"], "1"))
        main = scores.get("response_FDL")
        if main:
            prediction.evaluations.append(("predicted-response", f"{main['predicted']}-response"))
        for name, value in scores.get("signatures", {}).items():
            prediction.measurements.append((f"signature-{name.lower().replace('_', '-')}",
                                            value, "1"))  # fmt: skip
        groups.append(prediction)
        timepoints = (BASELINE, RESTAGING)
    else:
        dm = scores.get("distant_metastasis") or {}
        risk = AnalysisGroup("dm-risk", BASELINE, mask=payload.mask(BASELINE))
        for key, name in (("t2w_prob", "dm-prob-t2w"), ("adc_prob", "dm-prob-adc"),
                          ("dl_prob", "dl-prob"), ("dlrs", "dlrs"), ("dmfs_3y", "dmfs-3y"),
                          ("nomogram_dmfs_3y", "nomogram-dmfs-3y")):  # fmt: skip
            if key in dm:
                risk.measurements.append((name, dm[key], "1"))
        if "risk_group" in dm:
            risk.evaluations.append(("dm-risk-group", f"{dm['risk_group']}-risk"))
        recurrence = scores.get("recurrence") or {}
        if recurrence:
            risk.measurements.append(("rrs", recurrence["rrs"], "1"))
            risk.measurements.append(("rfs-5y", recurrence["rfs_5y"], "1"))
        groups.append(risk)
        timepoints = (BASELINE,)
    for timepoint in timepoints:
        refs = [r for n, r in slice_refs.items() if n.startswith(PREFIX[timepoint] + "_T2")]
        group = _measurement_group(inputs, timepoint, payload, refs)
        if group is not None:
            groups.append(group)
    return groups


def _subtype_code(subtype: str) -> str:
    return f"subtype-{subtype.lower()}"


def _background(array: NDArray[np.floating]) -> NDArray[np.floating]:
    """A slice of 0-255 grey: science A slices already are; a z-scored stack's middle slice
    is stretched to its range."""
    if array.ndim == 3:
        middle = array[array.shape[0] // 2]
        low, high = float(middle.min()), float(middle.max())
        stretched = (middle - low) / (high - low) * 255 if high > low else middle * 0
        return np.asarray(stretched, dtype=np.float64)
    return array


def _evidence(probability: float | None, positive: str, negative: str) -> str:
    """What a heat map shows: the evidence for the class its networks predict
    (:func:`pipeline.gradcam.predicted_class`, as the bundle's heat maps pick it)."""
    if probability is None:
        return "LayerCAM"
    return f"LayerCAM: evidence for {positive if predicted_class(probability) else negative}"


def _captions(payload: CasePayload, name: str, scores: dict[str, Any]) -> list[str]:
    if name.startswith("dm_"):
        sequence = _SEQUENCE_NAME[name[3:]]
        dm = scores.get("distant_metastasis") or {}
        probability = dm.get(name[3:].lower().replace("t2", "t2w") + "_prob")
        shown = _evidence(probability, "metastasis", "no metastasis")
        lines = [f"{sequence} baseline DM network - {shown}"]
        if "dlrs" in dm:
            lines.append(
                f"DM prob {probability or 0:.2f}  "
                f"DLRS {dm['dlrs']:.2f}  risk {dm['risk_group']}  3y DMFS {dm['dmfs_3y']:.2f}"
            )
    else:
        prefix, sequence = name.split("_", 1)
        signature = scores.get("signatures", {}).get(name)
        shown = _evidence(signature, "good response", "poor response")
        lines = [f"{_SEQUENCE_NAME[sequence]} {_TIMEPOINT_OF[prefix]} - {shown}"]
        fdl = scores.get("response_FDL")
        line = f"signature {signature:.2f}" if signature is not None else ""
        if fdl:
            line += f"  P(good response) {fdl['p_good_response']:.2f} (FDL)"
        lines.append(line.strip())
    lines.append(RESEARCH_USE)
    return lines


def reading_comments(readings: dict[str, Any]) -> list[str]:
    """The SR's note of the radiologist-read values the scores used (none: no note)."""
    if not readings:
        return []
    listed = ", ".join(f"{name} = {value}" for name, value in sorted(readings.items()))
    return [f"Radiologist-read inputs used: {listed}"]


def envelope_comments(warnings: list[str]) -> list[str]:
    """The SR's note of inputs outside the training envelope (scored with a warning)."""
    return [
        f"Warning: input outside the model's training envelope, scored anyway: {w}"
        for w in warnings
    ]


def unavailable_comments(scores: dict[str, Any], kind: str) -> list[str]:
    """The SR's note of each output this case kind would have had that is not sent: the bundle
    does not carry it (its training outcomes could not fit it) or its validation does not back
    it (scoring.require_validated), with the reason."""
    return [f"{what}: {why}" for what, why in unavailable(scores, kind == RESPONSE).items()]


def outline_comments(outlines: dict[str, str]) -> list[str]:
    """The SR's note of where each timepoint's tumour outline came from (the work order's
    words: drawn, or automatic and whether a radiologist reviewed it)."""
    return [f"Tumour outline ({tp} T2W): {text}" for tp, text in sorted(outlines.items())]


def result_objects(
    payload: CasePayload, analysis: dict[str, Any], algorithm: Algorithm
) -> list[ResultObject]:
    """The SR and one Secondary Capture per heat map."""
    inputs = CaseInputs.from_bytes(payload.inputs)
    scores = analysis["scores"]
    target = dataset(payload.target_study)
    headers = [target, *(dataset(h) for h in payload.evidence)]
    evidence = {str(h.SOPInstanceUID): h for h in headers}
    groups = report_groups(payload, inputs, scores, evidence)
    recurrence = scores.get("recurrence") or {}
    if recurrence and groups:
        groups[0].evaluations.append(("recurrence-subtype", _subtype_code(recurrence["subtype"])))
    sr = measurement_report(
        list(evidence.values()),
        groups,
        algorithm,
        payload.key,
        payload.created,
        predecessor=payload.predecessor_reference(),
        comments=[
            *outline_comments(payload.outlines),
            *unavailable_comments(scores, payload.kind),
            *envelope_comments(payload.warnings),
            *reading_comments(payload.clinical),
        ],
    )
    objects = [ResultObject("sr", sr)]
    series_uid = derive_uid(payload.key, "sc-series")
    for number, (name, heat) in enumerate(sorted(decode_maps(analysis["heat_maps"]).items()), 1):
        lines = _captions(payload, name, scores)
        if name.startswith("dm_"):
            pixels = captioned(blend(_background(inputs.stacks[name[3:]].array), heat), lines)
            source = None
        else:
            item = inputs.slices[name]
            source = _reference(evidence, item.sop_instance_uid)
            if item.native is not None and item.native_spacing is not None:
                # on the slice the network saw, at its own resolution, with the outline
                drawn = heat_overlay(item.native, heat, item.native_mask, item.native_spacing,
                                     TUMOUR_DISPLAY_RGB)  # fmt: skip
            else:  # inputs prepared by an older larc: over the network's input
                drawn = blend(item.array, heat)
            pixels = captioned(drawn, lines)
        sc = gradcam_capture(
            pixels,
            target,
            source,
            series_uid,
            derive_uid(payload.key, "sc", name),
            number,
            algorithm.manufacturer,
            f"{algorithm.name} heat maps (research use)",
            payload.created,
            comment=" / ".join(lines),
            algorithm=algorithm,
        )
        objects.append(ResultObject(f"sc-{name}", sc))
    return objects


def encode_objects(objects: list[ResultObject]) -> list[dict[str, str]]:
    """JSON-safe form of the objects (a task's result)."""
    return [
        {
            "name": o.name,
            "sop_instance_uid": o.sop_instance_uid,
            "sop_class_uid": str(o.dataset.SOPClassUID),
            "data": base64.b64encode(o.to_bytes()).decode(),
        }
        for o in objects
    ]
