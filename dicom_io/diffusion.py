"""Diffusion b-values from DICOM headers, wherever the scanner put them."""

from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

# (group, private creator, element offset) in the order they are tried after the standard tag
_PRIVATE_B_VALUE_TAGS = (
    (0x0043, "GEMS_PARM_01", 0x39),  # GE: first of four values, sometimes offset by 1e9
    (0x0019, "SIEMENS MR HEADER", 0x0C),  # Siemens
    (0x2001, "Philips Imaging DD 001", 0x03),  # Philips
)
_GE_OFFSET = 1_000_000_000


def b_value(ds: Dataset) -> float | None:
    """The b-value (s/mm^2) of a diffusion-weighted image, or ``None`` when it carries none.

    Looks at DiffusionBValue (0018,9087) first, then the GE, Siemens and Philips private tags,
    each only under its own private creator.
    """
    value = ds.get("DiffusionBValue")
    if value is not None and value != "":
        return float(value)
    for group, creator, offset in _PRIVATE_B_VALUE_TAGS:
        try:
            element = ds.private_block(group, creator)[offset]
        except KeyError:
            continue
        raw = element.value
        if raw is None or raw == "":
            continue
        number = float(raw[0] if isinstance(raw, MultiValue | list | tuple) else raw)
        if group == 0x0043 and number >= _GE_OFFSET:
            number -= _GE_OFFSET
        return number
    return None
