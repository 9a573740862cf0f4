"""Kinds of case and the model inputs each needs (no heavy imports: the daemon's index and
the workers use them).

The names of science A's signatures (``pre_T2`` ... ``post_CE``: one per sequence and
timepoint) and science B's crop stacks (T2, ADC) live here too.
"""

from __future__ import annotations

from enum import StrEnum

from dicom_io.pairing import Timepoint

BASELINE, RESTAGING = Timepoint.BASELINE, Timepoint.RESTAGING
PREFIX: dict[str, str] = {BASELINE: "pre", RESTAGING: "post"}
# science A: one signature per sequence and timepoint
RESPONSE_SEQUENCES = ("T2", "DWI", "CE")
SIGNATURES = tuple(f"{PREFIX[t]}_{s}" for t in (BASELINE, RESTAGING) for s in RESPONSE_SEQUENCES)
# science B: crop stacks of the baseline T2W and ADC
STACK_SEQUENCES = ("T2", "ADC")


class CaseKind(StrEnum):
    """What a case scores: the baseline risk models, or the response to treatment."""

    BASELINE = "baseline"  # science B/D: distant metastasis and recurrence from the baseline
    RESPONSE = "response"  # science A: good response from baseline and restaging

    @property
    def timepoints(self) -> tuple[Timepoint, ...]:
        """The studies the case needs."""
        if self is CaseKind.RESPONSE:
            return (Timepoint.BASELINE, Timepoint.RESTAGING)
        return (Timepoint.BASELINE,)

    @property
    def target(self) -> Timepoint:
        """The study its results go into."""
        return Timepoint.RESTAGING if self is CaseKind.RESPONSE else Timepoint.BASELINE

    @property
    def signatures(self) -> tuple[str, ...]:
        """The science A slice inputs it needs."""
        return SIGNATURES if self is CaseKind.RESPONSE else ()

    @property
    def stacks(self) -> bool:
        """Whether it needs science B's crop stacks."""
        return self is CaseKind.BASELINE
