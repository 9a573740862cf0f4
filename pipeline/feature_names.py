"""The clinical and radiological feature names and how their values are read (no heavy imports:
the daemon's web form uses them too)."""

from __future__ import annotations

import math
import re

# science A's radiological features (pre_ and post_), then clinical ones
RADIOLOGY = ("ld_mm", "mwt_mm", "volume_ml", "mrt", "mrn", "crm", "emvi")
CLINICAL = ("age", "sex", "cea_ng_ml", "distance_anal_verge_mm")
CANDIDATES = tuple(f"{p}_{f}" for p in ("pre", "post") for f in RADIOLOGY) + CLINICAL
MEASURABLE = {"ld_mm": "longest_diameter_mm", "mwt_mm": "max_wall_thickness_mm"}
MEASURABLE |= {"volume_ml": "volume_ml"}


def parse_value(name: str, text: object) -> float:
    """A feature value as a number: T/N stages to their digit, sex M=1 F=0; NaN when empty."""
    if text is None:
        return math.nan
    value = str(text).strip()
    if value == "" or value.lower() in ("nan", "na", "unknown"):
        return math.nan
    if name.endswith(("_mrt", "_mrn")) or name in ("ypn_stage", "ct_stage"):
        digits = re.search(r"[0-4]", value)
        if digits is None:
            raise ValueError(f"{name}: cannot read a stage from {value!r}")
        return float(digits.group(0))
    if name == "sex":
        upper = value.upper()
        if upper not in ("M", "F", "0", "1"):
            raise ValueError(f"sex: expected M or F, got {value!r}")
        return 1.0 if upper in ("M", "1") else 0.0
    return float(value)
