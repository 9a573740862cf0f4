"""Checks before scoring: a case whose inputs larc cannot vouch for is declined, not scored.

Two checks, on the prepared inputs (:func:`pipeline.case.prepare_case`), before any work goes
to a worker:

1. What the case kind needs is there. A tumour mask that does not lie on its images (drawn in
   another frame of reference, outside the volume, empty once carried to the DWI) leaves a
   signature or stack unbuilt: declined, with the reason.
2. The inputs lie inside the bundle's training envelope (:mod:`pipeline.envelope`). Outside,
   ``scoring.out_of_range`` decides: ``decline`` (every reason listed, nothing sent) or
   ``warn`` (scored; the SR lists the warnings). A bundle without an envelope is outside.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pipeline.case import CaseInputs
from pipeline.envelope import Envelope, check_envelope
from pipeline.errors import PipelineInputError
from pipeline.kinds import STACK_SEQUENCES, CaseKind

NO_ENVELOPE = (
    "the model bundle records no training envelope (trained by an older larc): its inputs "
    "cannot be checked; retrain it, or set scoring.out_of_range: warn"
)


class CaseDeclined(Exception):  # noqa: N818 (a decision, not an error)
    """The case must not be scored; ``reasons`` says why, each one a radiologist can read."""

    def __init__(self, reasons: Sequence[str]) -> None:
        self.reasons = list(reasons)
        super().__init__("; ".join(self.reasons))


@dataclass(frozen=True)
class InputPolicy:
    """``scoring.*``: what to do with a case outside the training envelope, and with outputs
    the bundle's validation does not back."""

    out_of_range: str = "decline"  # or "warn"
    margin: float = 0.1
    require_validated: bool = True  # outputs the bundle's validation does not back: not sent


def check_inputs(
    kind: CaseKind, inputs: CaseInputs, envelope: Envelope | None, policy: InputPolicy
) -> list[str]:
    """The warnings to score the case with (empty: none); :class:`CaseDeclined` when it must
    not be scored."""
    try:
        inputs.require(slices=kind.signatures, stacks=STACK_SEQUENCES if kind.stacks else ())
    except PipelineInputError as exc:
        raise CaseDeclined([str(exc)]) from exc
    findings = (
        [NO_ENVELOPE]
        if envelope is None
        else check_envelope(envelope, inputs.acquisition, policy.margin)
    )
    if findings and policy.out_of_range != "warn":
        raise CaseDeclined(findings)
    return findings
