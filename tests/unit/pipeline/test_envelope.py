"""The training envelope: built from the training patients' series facts, it names every fact of a
case outside it (numbers outside the widened range, values never seen), and nothing else."""

from __future__ import annotations

import numpy as np
import pydicom
import SimpleITK as sitk  # noqa: N813

from pipeline.envelope import (
    Envelope,
    SequenceFacts,
    build_envelope,
    check_envelope,
    orientation,
    sequence_facts,
)


def _t2w(thickness: float, spacing: float = 0.7, **more: object) -> SequenceFacts:
    values = {"slice_thickness_mm": thickness, "pixel_spacing_mm": spacing, "matrix": 256,
              "orientation": "axial", "manufacturer": "SIEMENS", "field_strength_t": 3.0,
              "tumour_volume_ml": 20.0, "intensity_p50": 400.0, **more}  # fmt: skip
    return SequenceFacts(**values)  # type: ignore[arg-type]


TRAINING = [
    {"baseline T2W": _t2w(2.5), "baseline DWI": SequenceFacts(b_values=(0.0, 800.0))},
    {"baseline T2W": _t2w(5.0, manufacturer="GE MEDICAL SYSTEMS", field_strength_t=1.5),
     "baseline DWI": SequenceFacts(b_values=(0.0, 1000.0))},
    {"baseline T2W": _t2w(3.0, tumour_volume_ml=80.0)},
]  # fmt: skip


def test_an_envelope_keeps_ranges_and_values_seen_and_round_trips() -> None:
    envelope = build_envelope(TRAINING)
    assert envelope.patients == 3
    assert envelope.ranges["baseline T2W"]["slice_thickness_mm"] == (2.5, 5.0)
    assert envelope.ranges["baseline T2W"]["tumour_volume_ml"] == (20.0, 80.0)
    assert envelope.seen["baseline T2W"]["field_strength_t"] == [1.5, 3.0]
    assert envelope.seen["baseline DWI"]["b_values"] == [0.0, 800.0, 1000.0]
    assert Envelope.from_json(envelope.to_json()) == envelope


def test_a_case_inside_the_envelope_has_no_findings() -> None:
    envelope = build_envelope(TRAINING)
    case = {"baseline T2W": _t2w(5.4), "baseline DWI": SequenceFacts(b_values=(0.0, 800.0))}
    assert check_envelope(envelope, case, margin=0.1) == []  # 5.4 mm: within 10 % of 5.0


def test_every_fact_outside_the_envelope_is_named() -> None:
    envelope = build_envelope(TRAINING)
    case = {
        "baseline T2W": _t2w(6.0, spacing=1.5, manufacturer="Philips", tumour_volume_ml=300.0),
        "baseline DWI": SequenceFacts(b_values=(0.0, 50.0, 1400.0)),
    }
    reasons = check_envelope(envelope, case, margin=0.1)
    assert "baseline T2W slice thickness 6.0 mm is outside the training range 2.5-5.0 mm" in reasons
    assert (
        "baseline T2W pixel spacing 1.50 mm is outside the training range 0.70-0.70 mm" in reasons
    )
    assert (
        "baseline T2W tumour volume 300.0 ml is outside the training range 20.0-80.0 ml" in reasons
    )
    assert (
        "baseline T2W manufacturer Philips was not in the training data (GE MEDICAL SYSTEMS, "
        "SIEMENS)" in reasons
    )
    assert (
        "baseline DWI b-value 50, 1400 s/mm2 was not in the training data (0, 800, 1000)" in reasons
    )
    assert len(reasons) == 5


def test_facts_the_training_data_never_gave_are_not_checked() -> None:
    envelope = build_envelope([{"baseline T2W": SequenceFacts(slice_thickness_mm=3.0)}])
    case = {"baseline T2W": _t2w(3.0), "restaging T2W": _t2w(9.0)}
    assert check_envelope(envelope, case) == []


def test_orientation_comes_from_the_image_plane() -> None:
    ds = pydicom.Dataset()
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    assert orientation(ds) == "axial"
    ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
    assert orientation(ds) == "sagittal"
    angle = np.radians(45)
    ds.ImageOrientationPatient = [1, 0, 0, 0, float(np.cos(angle)), float(np.sin(angle))]
    assert orientation(ds) == "oblique"


def test_sequence_facts_measure_inside_the_mask() -> None:
    ds = pydicom.Dataset()
    ds.PixelSpacing = [0.5, 0.6]
    ds.SliceThickness = "3.0"
    ds.Rows, ds.Columns = 320, 256
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.Manufacturer = "SIEMENS"
    ds.MagneticFieldStrength = "2.89362"
    image = sitk.GetImageFromArray(np.arange(1000, dtype=np.float32).reshape(10, 10, 10))
    image.SetSpacing((0.6, 0.5, 3.0))
    mask_array = np.zeros((10, 10, 10), np.uint8)
    mask_array[2:4, 2:4, 2:4] = 1
    mask = sitk.GetImageFromArray(mask_array)
    mask.CopyInformation(image)
    facts = sequence_facts([ds], image, mask, b_values=(0, 800.2))
    assert facts.pixel_spacing_mm == 0.6
    assert facts.matrix == 320
    assert facts.field_strength_t == 2.9
    assert facts.b_values == (0.0, 800.0)
    assert facts.tumour_volume_ml is not None
    assert abs(facts.tumour_volume_ml - 8 * 0.9 / 1000) < 1e-9
    assert facts.intensity_p50 == float(
        np.median(np.arange(1000).reshape(10, 10, 10)[2:4, 2:4, 2:4])
    )
    assert SequenceFacts.from_json(facts.to_json()) == facts
