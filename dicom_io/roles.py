"""Series roles by rules over DICOM attributes: which series is the T2W, the DWI, the mask.

Rules are data (a list, first match wins), so a site can replace them from YAML without code.
Every decision carries its reason, for the worklist and ``larc status``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from pydicom.dataset import Dataset

from dicom_io.diffusion import b_value


class SeriesRole(StrEnum):
    """What a series is used for."""

    T2W_AX = "T2W_AX"
    DWI = "DWI"
    ADC = "ADC"
    CE_T1 = "CE_T1"
    RTSTRUCT = "RTSTRUCT"
    SEG = "SEG"
    IGNORED = "IGNORED"


class RoleRule(BaseModel):
    """A role and the conditions a series must meet for it (all that are set)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    role: SeriesRole
    name: str = Field(description="Short name shown in the reason.")
    modality: str | None = Field(default=None, description="Regex on Modality.")
    description: str | None = Field(
        default=None, description="Regex (case-insensitive) on SeriesDescription."
    )
    image_type: str | None = Field(
        default=None, description="Regex on ImageType values joined with '\\\\'."
    )
    min_b_values: int | None = Field(
        default=None, description="At least this many distinct b-values."
    )
    contrast: bool | None = Field(default=None, description="ContrastBolusAgent present or not.")
    orientation: str | None = Field(
        default=None, description="axial, sagittal, coronal or oblique-axial (within 35 degrees)."
    )
    min_instances: int | None = Field(default=None, description="At least this many images.")


DEFAULT_RULES: tuple[RoleRule, ...] = (
    RoleRule(role=SeriesRole.RTSTRUCT, name="RT structure set", modality="^RTSTRUCT$"),
    RoleRule(role=SeriesRole.SEG, name="segmentation", modality="^SEG$"),
    RoleRule(role=SeriesRole.IGNORED, name="not MR", modality="^(?!MR$)"),
    RoleRule(
        role=SeriesRole.IGNORED,
        name="localizer",
        description=r"loc|scout|survey|3.?plane|aahscout",
    ),
    RoleRule(role=SeriesRole.IGNORED, name="localizer", image_type=r"LOCALIZER"),
    RoleRule(
        role=SeriesRole.ADC,
        name="ADC map",
        image_type=r"(^|\\)ADC(\\|$)",
    ),
    RoleRule(
        role=SeriesRole.ADC,
        name="ADC map",
        description=r"\badc\b|apparent diffusion|dadc",
    ),
    RoleRule(role=SeriesRole.DWI, name="diffusion", min_b_values=2),
    RoleRule(
        role=SeriesRole.CE_T1,
        name="contrast-enhanced T1",
        contrast=True,
        orientation="oblique-axial",
    ),
    RoleRule(
        role=SeriesRole.CE_T1,
        name="contrast-enhanced T1",
        description=r"(\+c|post|gad|contrast)",
        orientation="oblique-axial",
    ),
    RoleRule(
        role=SeriesRole.T2W_AX,
        name="axial T2W",
        description=r"t2",
        orientation="oblique-axial",
        min_instances=8,
    ),
    RoleRule(role=SeriesRole.IGNORED, name="T2W not axial", description=r"t2"),
)


@dataclass(frozen=True)
class SeriesSummary:
    """What the rules look at, read from the headers of a series' instances."""

    modality: str
    description: str
    image_type: str
    b_values: tuple[float, ...]
    contrast: bool
    normal: tuple[float, float, float] | None
    instances: int

    @classmethod
    def from_headers(cls, headers: Sequence[Dataset]) -> SeriesSummary:
        """Summarise a series from its instances' headers (pixel data not needed)."""
        if not headers:
            raise ValueError("a series needs at least one instance")
        first = headers[0]
        b_values = sorted({b for ds in headers for b in _b_values(ds)})
        normal = None
        orientation = _orientation(first)
        if orientation is not None:
            iop = np.asarray([float(v) for v in orientation])
            n = np.cross(iop[:3], iop[3:])
            normal = (float(n[0]), float(n[1]), float(n[2]))
        return cls(
            modality=str(first.get("Modality", "")),
            description=str(first.get("SeriesDescription", "")),
            image_type="\\".join(str(v) for v in first.get("ImageType", [])),
            b_values=tuple(b_values),
            contrast=bool(str(first.get("ContrastBolusAgent", "")).strip()),
            normal=normal,
            instances=sum(int(ds.get("NumberOfFrames", 1) or 1) for ds in headers),
        )


def _orientation(ds: Dataset) -> list[float] | None:
    """ImageOrientationPatient of a classic image, or of an enhanced (multi-frame) one."""
    if "ImageOrientationPatient" in ds:
        return list(ds.ImageOrientationPatient)
    for name in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        groups = ds.get(name)
        if groups and groups[0].get("PlaneOrientationSequence"):
            return list(groups[0].PlaneOrientationSequence[0].ImageOrientationPatient)
    return None


def _b_values(ds: Dataset) -> set[float]:
    """b-values of an image: its own tags, and each frame's MR Diffusion macro (enhanced MR)."""
    found = {b} if (b := b_value(ds)) is not None else set()
    for frame in ds.get("PerFrameFunctionalGroupsSequence", []):
        for diffusion in frame.get("MRDiffusionSequence", []):
            if diffusion.get("DiffusionBValue") is not None:
                found.add(float(diffusion.DiffusionBValue))
    return found


def _orientation_ok(wanted: str, normal: tuple[float, float, float] | None) -> bool:
    if normal is None:
        return False
    n = np.abs(np.asarray(normal))
    axis = {"axial": 2, "oblique-axial": 2, "coronal": 1, "sagittal": 0}[wanted]
    limit = np.cos(np.deg2rad(35 if wanted == "oblique-axial" else 10))
    return bool(n[axis] >= limit)


def _matches(rule: RoleRule, series: SeriesSummary) -> list[str] | None:
    """Why the rule matches (one phrase per condition), or ``None`` when it does not."""
    checks: list[tuple[bool, str]] = []
    if rule.modality is not None:
        checks.append(
            (bool(re.search(rule.modality, series.modality)), f"Modality {series.modality}")
        )
    if rule.description is not None:
        found = re.search(rule.description, series.description, re.IGNORECASE)
        phrase = f"description {series.description!r} has {found.group(0) if found else ''!r}"
        checks.append((found is not None, phrase))
    if rule.image_type is not None:
        checks.append(
            (bool(re.search(rule.image_type, series.image_type)), f"ImageType {series.image_type}")
        )
    if rule.min_b_values is not None:
        values = ", ".join(f"{b:g}" for b in series.b_values)
        checks.append((len(series.b_values) >= rule.min_b_values, f"b-values {values}"))
    if rule.contrast is not None:
        phrase = "contrast agent set" if series.contrast else "no contrast agent"
        checks.append((series.contrast == rule.contrast, phrase))
    if rule.orientation is not None:
        checks.append((_orientation_ok(rule.orientation, series.normal), rule.orientation))
    if rule.min_instances is not None:
        checks.append((series.instances >= rule.min_instances, f"{series.instances} images"))
    if all(ok for ok, _ in checks):
        return [phrase for _, phrase in checks]
    return None


def assign_role(
    series: SeriesSummary, rules: Sequence[RoleRule] = DEFAULT_RULES
) -> tuple[SeriesRole, str]:
    """(role, reason) of a series: the first rule that matches, else IGNORED."""
    for rule in rules:
        why = _matches(rule, series)
        if why is not None:
            return rule.role, f"{rule.name}: " + "; ".join(why)
    return SeriesRole.IGNORED, "no rule matched"


def referenced_series(ds: Dataset) -> str | None:
    """The series a mask (RTSTRUCT or SEG) was drawn on, from its references; else ``None``."""
    for frame in ds.get("ReferencedFrameOfReferenceSequence", []):
        for study in frame.get("RTReferencedStudySequence", []):
            for series in study.get("RTReferencedSeriesSequence", []):
                return str(series.SeriesInstanceUID)
    for series in ds.get("ReferencedSeriesSequence", []):
        return str(series.SeriesInstanceUID)
    return None


def machine_made_by(ds: Dataset) -> str | None:
    """The program that made a tumour mask on its own, or ``None`` when a person drew it.

    A SEG: its first segment (the one larc reads) with SegmentAlgorithmType AUTOMATIC, named by
    SegmentAlgorithmName (or the first AlgorithmIdentificationSequence item's AlgorithmName). An
    RTSTRUCT: every ROI with ROIGenerationAlgorithm AUTOMATIC, named by the first one's
    ROIGenerationDescription. MANUAL and SEMIAUTOMATIC (a person drew or corrected it) are
    drawn. An unnamed program is called "an unnamed program"."""
    segments = ds.get("SegmentSequence") or []
    if segments:
        first = segments[0]
        if str(first.get("SegmentAlgorithmType", "")).upper() != "AUTOMATIC":
            return None
        name = str(first.get("SegmentAlgorithmName", "") or "")
        for item in first.get("SegmentationAlgorithmIdentificationSequence", []) or []:
            name = name or str(item.get("AlgorithmName", "") or "")
        return name or "an unnamed program"
    rois = ds.get("StructureSetROISequence") or []
    if rois and all(str(r.get("ROIGenerationAlgorithm", "")).upper() == "AUTOMATIC" for r in rois):
        return str(rois[0].get("ROIGenerationDescription", "") or "") or "an unnamed program"
    return None


@dataclass(frozen=True)
class SeriesClassification:
    """A series' role and why, its b-values, and (masks) the series it was drawn on."""

    role: SeriesRole
    reason: str
    b_values: tuple[float, ...]
    referenced_series_uid: str | None
    machine_made_by: str | None = None  # masks: the program that made it with no person


def classify_series(
    headers: Sequence[Dataset], rules: Sequence[RoleRule] = DEFAULT_RULES
) -> SeriesClassification:
    """Role (first matching rule), b-values, mask reference and (a mask made by a program on
    its own) that program, of a series from its headers;
    ``ValueError`` for a series without instances."""
    summary = SeriesSummary.from_headers(headers)
    role, reason = assign_role(summary, rules)
    mask = role in (SeriesRole.RTSTRUCT, SeriesRole.SEG)
    reference = referenced_series(headers[0]) if mask else None
    made_by = machine_made_by(headers[0]) if mask else None
    return SeriesClassification(role, reason, summary.b_values, reference, made_by)


def load_rules(path: Path | None) -> tuple[RoleRule, ...]:
    """Role rules from a YAML list (``roles.rules_file``), or the built-in defaults."""
    if path is None:
        return DEFAULT_RULES
    data = yaml.safe_load(path.read_text())
    return tuple(TypeAdapter(list[RoleRule]).validate_python(data))
