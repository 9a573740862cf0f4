"""Before scoring: a case whose mask does not lie on its images, or whose inputs lie outside the
bundle's training envelope, is declined with every reason (or, with scoring.out_of_range: warn,
scored with the warnings)."""

from __future__ import annotations

import numpy as np
import pytest

from daemon.scoring.checks import NO_ENVELOPE, CaseDeclined, InputPolicy, check_inputs
from pipeline.case import CaseInputs, StackInput
from pipeline.envelope import SequenceFacts, build_envelope
from pipeline.kinds import CaseKind

ENVELOPE = build_envelope(
    [{"baseline T2W": SequenceFacts(slice_thickness_mm=t, orientation="axial")} for t in (2.5, 5)]
)


def _inputs(thickness: float, orientation: str = "axial", stacks: bool = True) -> CaseInputs:
    inputs = CaseInputs(config_fingerprint="x")
    if stacks:
        for name in ("T2", "ADC"):
            inputs.stacks[name] = StackInput(np.zeros((2, 4, 4), np.float32), "1.2.3", "SEG")
    else:
        inputs.problems.append("baseline stacks: the DWI mask does not overlap the T2W images")
    facts = SequenceFacts(slice_thickness_mm=thickness, orientation=orientation)
    inputs.acquisition["baseline T2W"] = facts
    return inputs


def test_a_case_inside_the_envelope_is_scored_without_warnings() -> None:
    assert check_inputs(CaseKind.BASELINE, _inputs(4.0), ENVELOPE, InputPolicy()) == []


def test_outside_the_envelope_declines_with_every_reason_by_default() -> None:
    with pytest.raises(CaseDeclined) as declined:
        check_inputs(CaseKind.BASELINE, _inputs(6.0, "sagittal"), ENVELOPE, InputPolicy())
    assert declined.value.reasons == [
        "baseline T2W slice thickness 6.0 mm is outside the training range 2.5-5.0 mm",
        "baseline T2W orientation sagittal was not in the training data (axial)",
    ]


def test_warn_scores_outside_the_envelope_and_returns_the_warnings() -> None:
    warnings = check_inputs(
        CaseKind.BASELINE, _inputs(6.0), ENVELOPE, InputPolicy(out_of_range="warn")
    )
    assert warnings == [
        "baseline T2W slice thickness 6.0 mm is outside the training range 2.5-5.0 mm"
    ]


def test_a_mask_that_does_not_lie_on_its_images_declines_even_with_warn() -> None:
    with pytest.raises(CaseDeclined) as declined:
        check_inputs(
            CaseKind.BASELINE,
            _inputs(4.0, stacks=False),
            ENVELOPE,
            InputPolicy(out_of_range="warn"),
        )
    assert "the DWI mask does not overlap the T2W images" in str(declined.value)


def test_a_bundle_without_an_envelope_is_outside_it() -> None:
    with pytest.raises(CaseDeclined, match="records no training envelope"):
        check_inputs(CaseKind.BASELINE, _inputs(4.0), None, InputPolicy())
    warned = check_inputs(CaseKind.BASELINE, _inputs(4.0), None, InputPolicy(out_of_range="warn"))
    assert warned == [NO_ENVELOPE]
