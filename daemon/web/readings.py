"""The radiologist-read values a case can be given on its page (science A's CR candidates), with
their labels and the checks a value must pass before it is stored."""

from __future__ import annotations

import math
from dataclasses import dataclass

from pipeline.feature_names import parse_value


@dataclass(frozen=True)
class ReadingField:
    """One input of the readings form."""

    name: str  # the feature name the models use (pipeline.feature_names.CANDIDATES)
    label: str
    unit: str = ""
    choices: tuple[tuple[str, str], ...] = ()  # (value, label); empty: a number
    low: float = 0.0
    high: float = 1000.0


_BINARY = (("0", "negative"), ("1", "positive"))
_T = tuple((f"T{n}", f"T{n}") for n in range(5))
_N = tuple((f"N{n}", f"N{n}") for n in range(3))


def _timepoint_fields(prefix: str, when: str) -> tuple[ReadingField, ...]:
    return (
        ReadingField(f"{prefix}_mwt_mm", f"{when} maximal wall thickness (MWT)", "mm", high=100),
        ReadingField(
            f"{prefix}_crm", f"{when} circumferential resection margin (CRM)", choices=_BINARY
        ),
        ReadingField(
            f"{prefix}_emvi", f"{when} extramural vascular invasion (EMVI)", choices=_BINARY
        ),
        ReadingField(f"{prefix}_mrt", f"{when} mrT stage", choices=_T),
        ReadingField(f"{prefix}_mrn", f"{when} mrN stage", choices=_N),
        ReadingField(f"{prefix}_ld_mm", f"{when} longest diameter (LD)", "mm", high=300),
        ReadingField(f"{prefix}_volume_ml", f"{when} tumour volume", "ml", high=1000),
    )


FIELDS: tuple[ReadingField, ...] = (
    *_timepoint_fields("post", "Restaging"),
    *_timepoint_fields("pre", "Baseline"),
    ReadingField("age", "Age", "years", high=120),
    ReadingField("sex", "Sex", choices=(("M", "male"), ("F", "female"))),
    ReadingField("cea_ng_ml", "CEA", "ng/ml", high=100_000),
    ReadingField("distance_anal_verge_mm", "Distance from the anal verge", "mm", high=300),
)
BY_NAME = {f.name: f for f in FIELDS}


class ReadingError(ValueError):
    """A value that cannot be stored; the message names the field and why."""


def clean(values: dict[str, str]) -> dict[str, str]:
    """The values to store (stripped; "" removes one), or :class:`ReadingError`."""
    out: dict[str, str] = {}
    for name, raw in values.items():
        spec = BY_NAME.get(name)
        if spec is None:
            raise ReadingError(f"{name}: not a reading larc knows ({', '.join(BY_NAME)})")
        text = str(raw).strip()
        if text == "":
            out[name] = ""
            continue
        if spec.choices:
            allowed = [value for value, _ in spec.choices]
            if text not in allowed:
                raise ReadingError(f"{spec.label}: choose one of {', '.join(allowed)}")
        else:
            try:
                number = parse_value(name, text)
            except ValueError as exc:
                raise ReadingError(f"{spec.label}: {text!r} is not a number") from exc
            if math.isnan(number) or not spec.low <= number <= spec.high:
                raise ReadingError(
                    f"{spec.label}: {text} is outside {spec.low:g}-{spec.high:g} {spec.unit}"
                )
        out[name] = text
    return out
