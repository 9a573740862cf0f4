"""Scanner vendor profiles: names, descriptions, numbering, and where each puts the b-value."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from pydicom.dataset import Dataset


class Role(StrEnum):
    """What a series is, as the generator knows it (the daemon must work it out from headers)."""

    LOCALIZER = "localizer"
    T2W = "t2w"
    T2W_SAG = "t2w_sag"
    T2W_COR = "t2w_cor"
    DWI = "dwi"
    ADC = "adc"
    CE_T1 = "ce_t1"
    RTSTRUCT = "rtstruct"
    SEG = "seg"


class BValueStyle(StrEnum):
    """Where a DWI image carries its b-value."""

    STANDARD = "standard"  # DiffusionBValue (0018,9087)
    SIEMENS = "siemens"  # (0019,100C) under private creator "SIEMENS MR HEADER"
    GE = "ge"  # (0043,1039) under "GEMS_PARM_01", first of four values
    PHILIPS = "philips"  # (2001,1003) under "Philips Imaging DD 001"


@dataclass(frozen=True)
class VendorProfile:
    """How one scanner model labels and numbers what it produces."""

    key: str
    manufacturer: str
    model: str
    software: str
    field_strength_t: float
    b_value_style: BValueStyle
    high_b: int
    dwi_interleaved: bool  # slices of all b-values interleaved by location (else in b blocks)
    slices_descending: bool  # InstanceNumber runs against the slice normal
    series_step: int  # series numbers 1, 2, 3 ... (1) or 101, 201 ... (100)
    rescale_slope: float  # Philips stores scaled pixel values
    descriptions: dict[Role, str] = field(default_factory=dict)
    image_type: dict[Role, tuple[str, ...]] = field(default_factory=dict)

    def write_b_value(self, ds: Dataset, b_value: int) -> None:
        """Put ``b_value`` where this vendor puts it (SequenceName too, for Siemens)."""
        if self.b_value_style is BValueStyle.STANDARD:
            ds.DiffusionBValue = float(b_value)
        elif self.b_value_style is BValueStyle.SIEMENS:
            block = ds.private_block(0x0019, "SIEMENS MR HEADER", create=True)
            block.add_new(0x0C, "IS", b_value)
            block.add_new(0x0D, "CS", "NONE" if b_value == 0 else "DIRECTIONAL")
            ds.SequenceName = f"*ep_b{b_value}" + ("t" if b_value else "")
        elif self.b_value_style is BValueStyle.GE:
            block = ds.private_block(0x0043, "GEMS_PARM_01", create=True)
            block.add_new(0x39, "IS", [b_value, 8, 0, 0])
        else:
            block = ds.private_block(0x2001, "Philips Imaging DD 001", create=True)
            block.add_new(0x03, "FL", float(b_value))


_ORIGINAL = ("ORIGINAL", "PRIMARY", "M", "ND")

VENDORS: dict[str, VendorProfile] = {
    "siemens": VendorProfile(
        key="siemens",
        manufacturer="SIEMENS",
        model="Skyra",
        software="syngo MR E11",
        field_strength_t=3.0,
        b_value_style=BValueStyle.SIEMENS,
        high_b=800,
        dwi_interleaved=False,
        slices_descending=False,
        series_step=1,
        rescale_slope=1.0,
        descriptions={
            Role.LOCALIZER: "localizer",
            Role.T2W: "t2_tse_tra_obl_hr",
            Role.T2W_SAG: "t2_tse_sag",
            Role.T2W_COR: "t2_tse_cor",
            Role.DWI: "ep2d_diff_b0_800_tra",
            Role.ADC: "ep2d_diff_b0_800_tra_ADC",
            Role.CE_T1: "t1_vibe_fs_tra_post",
        },
        image_type={
            Role.DWI: ("ORIGINAL", "PRIMARY", "DIFFUSION", "NONE", "ND"),
            Role.ADC: ("DERIVED", "PRIMARY", "DIFFUSION", "ADC", "ND"),
        },
    ),
    "siemens_xa": VendorProfile(
        key="siemens_xa",
        manufacturer="Siemens Healthineers",
        model="MAGNETOM Vida",
        software="syngo MR XA50",
        field_strength_t=3.0,
        b_value_style=BValueStyle.STANDARD,
        high_b=1000,
        dwi_interleaved=False,
        slices_descending=True,
        series_step=1,
        rescale_slope=1.0,
        descriptions={
            Role.LOCALIZER: "AAHScout",
            Role.T2W: "T2 TSE AX OBL SFOV",
            Role.T2W_SAG: "T2 TSE SAG",
            Role.T2W_COR: "T2 TSE COR",
            Role.DWI: "RESOLVE DWI b0 b1000 TRACEW",
            Role.ADC: "RESOLVE DWI ADC",
            Role.CE_T1: "T1 VIBE Dixon POST W",
        },
        image_type={
            Role.DWI: ("ORIGINAL", "PRIMARY", "DIFFUSION", "TRACEW"),
            Role.ADC: ("DERIVED", "PRIMARY", "DIFFUSION", "ADC"),
        },
    ),
    "ge": VendorProfile(
        key="ge",
        manufacturer="GE MEDICAL SYSTEMS",
        model="DISCOVERY MR750w",
        software="DV26.0_R03_1831.b",
        field_strength_t=3.0,
        b_value_style=BValueStyle.GE,
        high_b=1000,
        dwi_interleaved=True,
        slices_descending=True,
        series_step=1,
        rescale_slope=1.0,
        descriptions={
            Role.LOCALIZER: "3Plane Loc",
            Role.T2W: "Ax Obl T2 FRFSE HR",
            Role.T2W_SAG: "Sag T2 FRFSE",
            Role.T2W_COR: "Cor T2 FRFSE",
            Role.DWI: "Ax DWI b1000",
            Role.ADC: "Apparent Diffusion Coefficient (mm2/s)",
            Role.CE_T1: "Ax LAVA-Flex +C",
        },
        image_type={Role.ADC: ("DERIVED", "SECONDARY", "ADC")},
    ),
    "philips": VendorProfile(
        key="philips",
        manufacturer="Philips Medical Systems",
        model="Ingenia",
        software="5.6.1",
        field_strength_t=1.5,
        b_value_style=BValueStyle.PHILIPS,
        high_b=800,
        dwi_interleaved=False,
        slices_descending=False,
        series_step=100,
        rescale_slope=1.25,
        descriptions={
            Role.LOCALIZER: "Survey",
            Role.T2W: "T2W_TSE_TRA_OBL",
            Role.T2W_SAG: "T2W_TSE_SAG",
            Role.T2W_COR: "T2W_TSE_COR",
            Role.DWI: "DWI_b0_800",
            Role.ADC: "dADC",
            Role.CE_T1: "T1W_THRIVE_+C",
        },
        image_type={
            Role.DWI: ("ORIGINAL", "PRIMARY", "DW", "SE"),
            Role.ADC: ("DERIVED", "PRIMARY", "ADC", "SE"),
        },
    ),
}


def image_type(vendor: VendorProfile, role: Role) -> list[str]:
    """ImageType of a series of ``role`` from ``vendor``."""
    return list(vendor.image_type.get(role, _ORIGINAL))
