"""The training envelope: what a bundle's models saw, and whether a case's inputs lie inside it.

At training time every patient's prepared inputs carry, per timepoint and sequence, the facts
of the series read (:class:`SequenceFacts`: pixel spacing, slice thickness, matrix,
orientation, b-values, manufacturer, field strength, and inside the tumour mask its volume and
intensity percentiles). :func:`build_envelope` turns the training patients' facts into ranges
and sets; the bundle's manifest keeps them under ``envelope``. Before scoring,
:func:`check_envelope` names every fact of a case outside them, e.g. "restaging T2W slice
thickness 6.0 mm is outside the training range 2.5-5.0 mm" (the daemon declines or warns).

A fact the headers do not give (no MagneticFieldStrength) is not checked; a fact the training
data never gave is not checked either.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import SimpleITK as sitk  # noqa: N813  (the name the SimpleITK world uses)
from pydicom.dataset import Dataset

ENVELOPE_SCHEMA = 1


@dataclass(frozen=True)
class SequenceFacts:
    """What one series of a case was, as the model saw it."""

    pixel_spacing_mm: float | None = None  # in-plane, the larger of row and column spacing
    slice_thickness_mm: float | None = None
    matrix: int | None = None  # the larger of Rows and Columns
    orientation: str | None = None  # axial, sagittal, coronal (within 30 degrees) or oblique
    manufacturer: str | None = None
    field_strength_t: float | None = None
    b_values: tuple[float, ...] = ()  # DWI only
    tumour_volume_ml: float | None = None  # of the mask on this series
    intensity_p5: float | None = None  # of the image inside the mask
    intensity_p50: float | None = None
    intensity_p95: float | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-safe dict."""
        return {**asdict(self), "b_values": list(self.b_values)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SequenceFacts:
        """What :meth:`to_json` gave."""
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**{**known, "b_values": tuple(float(b) for b in data.get("b_values", ()))})


# numeric facts: (label, unit, digits) for the reasons
NUMERIC: dict[str, tuple[str, str, int]] = {
    "pixel_spacing_mm": ("pixel spacing", "mm", 2),
    "slice_thickness_mm": ("slice thickness", "mm", 1),
    "matrix": ("matrix", "", 0),
    "tumour_volume_ml": ("tumour volume", "ml", 1),
    "intensity_p50": ("median intensity inside the mask", "", 1),
}
CATEGORICAL: dict[str, str] = {
    "orientation": "orientation",
    "manufacturer": "manufacturer",
    "field_strength_t": "field strength (T)",
}


def _number(value: object) -> float | None:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def orientation(ds: Dataset) -> str | None:
    """The plane of an image from ImageOrientationPatient (within 30 degrees), else oblique."""
    values = ds.get("ImageOrientationPatient")
    if not values or len(values) != 6:
        return None
    normal = np.cross(np.asarray(values[:3], float), np.asarray(values[3:], float))
    size = float(np.linalg.norm(normal))
    if size == 0:
        return None
    axis = int(np.argmax(np.abs(normal)))
    if abs(normal[axis]) / size < math.cos(math.radians(30)):
        return "oblique"
    return ("sagittal", "coronal", "axial")[axis]


def sequence_facts(
    datasets: Sequence[Dataset],
    image: sitk.Image,
    mask: sitk.Image | None,
    b_values: Iterable[float] = (),
) -> SequenceFacts:
    """The facts of one series from its headers, its image and the tumour mask on its grid."""
    first = datasets[0]
    spacing = [_number(v) for v in (first.get("PixelSpacing") or [])]
    rows, columns = _number(first.get("Rows")), _number(first.get("Columns"))
    manufacturer = str(first.get("Manufacturer", "") or "").strip() or None
    field_strength = _number(first.get("MagneticFieldStrength"))
    volume = p5 = p50 = p95 = None
    if mask is not None:
        inside = sitk.GetArrayViewFromImage(mask) > 0
        if inside.any():
            voxel = float(np.prod(mask.GetSpacing())) / 1000.0
            volume = float(inside.sum()) * voxel
            values = sitk.GetArrayViewFromImage(image)[inside].astype(float)
            p5, p50, p95 = (float(v) for v in np.percentile(values, [5, 50, 95]))
    return SequenceFacts(
        pixel_spacing_mm=max((s for s in spacing if s), default=None),
        slice_thickness_mm=_number(first.get("SliceThickness")),
        matrix=int(max(rows or 0, columns or 0)) or None,
        orientation=orientation(first),
        manufacturer=manufacturer,
        field_strength_t=round(field_strength, 1) if field_strength else None,
        b_values=tuple(sorted({round(float(b), 0) for b in b_values})),
        tumour_volume_ml=volume,
        intensity_p5=p5,
        intensity_p50=p50,
        intensity_p95=p95,
    )


@dataclass(frozen=True)
class Envelope:
    """Per series (``"baseline T2W"`` ...): numeric ranges and the values seen."""

    ranges: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)
    seen: dict[str, dict[str, list[Any]]] = field(default_factory=dict)
    patients: int = 0

    def to_json(self) -> dict[str, Any]:
        """The manifest's ``envelope``."""
        return {
            "schema": ENVELOPE_SCHEMA,
            "patients": self.patients,
            "ranges": {k: {f: list(r) for f, r in v.items()} for k, v in self.ranges.items()},
            "seen": self.seen,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Envelope:
        """What :meth:`to_json` gave; ``ValueError`` for another schema."""
        if data.get("schema") != ENVELOPE_SCHEMA:
            raise ValueError(f"training envelope of schema {data.get('schema')!r}")
        ranges = {
            k: {f: (float(r[0]), float(r[1])) for f, r in v.items()}
            for k, v in data.get("ranges", {}).items()
        }
        return cls(ranges, dict(data.get("seen", {})), int(data.get("patients", 0)))


def build_envelope(cases: Iterable[Mapping[str, SequenceFacts]]) -> Envelope:
    """The envelope of the training patients' facts (each case: series name -> facts)."""
    values: dict[str, dict[str, list[float]]] = {}
    seen: dict[str, dict[str, set[Any]]] = {}
    patients = 0
    for case in cases:
        patients += 1
        for name, facts in case.items():
            for fact in NUMERIC:
                number = getattr(facts, fact)
                if number is not None:
                    values.setdefault(name, {}).setdefault(fact, []).append(float(number))
            for fact in CATEGORICAL:
                value = getattr(facts, fact)
                if value is not None:
                    seen.setdefault(name, {}).setdefault(fact, set()).add(value)
            for b in facts.b_values:
                seen.setdefault(name, {}).setdefault("b_values", set()).add(b)
    ranges = {
        name: {fact: (min(v), max(v)) for fact, v in facts.items()}
        for name, facts in values.items()
    }
    return Envelope(
        ranges,
        {n: {f: _sorted(v) for f, v in facts.items()} for n, facts in seen.items()},
        patients,
    )


def _sorted(values: set[Any]) -> list[Any]:
    numbers = all(isinstance(v, int | float) for v in values)
    return sorted(values) if numbers else sorted(values, key=str)


def _shown(value: float, digits: int, unit: str) -> str:
    text = f"{value:.{digits}f}"
    return f"{text} {unit}" if unit else text


def check_envelope(
    envelope: Envelope, case: Mapping[str, SequenceFacts], margin: float = 0.1
) -> list[str]:
    """Every fact of ``case`` outside ``envelope``, as reasons a radiologist can read. Numeric
    ranges are widened by ``margin`` of their bounds each way (0.1: a 5.0 mm maximum admits
    5.5 mm)."""
    reasons: list[str] = []
    for name in sorted(case):
        facts = case[name]
        for fact, (label, unit, digits) in NUMERIC.items():
            value = getattr(facts, fact)
            bounds = envelope.ranges.get(name, {}).get(fact)
            if value is None or bounds is None:
                continue
            low, high = bounds
            if not low * (1 - margin) <= value <= high * (1 + margin):
                reasons.append(
                    f"{name} {label} {_shown(value, digits, unit)} is outside the training "
                    f"range {_shown(low, digits, '')}-{_shown(high, digits, unit)}"
                )
        for fact, label in CATEGORICAL.items():
            value = getattr(facts, fact)
            known = envelope.seen.get(name, {}).get(fact)
            if value is None or not known or value in known:
                continue
            listed = ", ".join(str(k) for k in known)
            reasons.append(f"{name} {label} {value} was not in the training data ({listed})")
        known_b = envelope.seen.get(name, {}).get("b_values")
        unseen = [b for b in facts.b_values if known_b and b not in known_b]
        if unseen:
            listed = ", ".join(f"{b:g}" for b in known_b or ())
            reasons.append(
                f"{name} b-value {', '.join(f'{b:g}' for b in unseen)} s/mm2 was not in the "
                f"training data ({listed})"
            )
    return reasons
