"""The studies larc already holds as a training cohort (``larc train models --from-index``).

Each patient of the outcomes spreadsheet is looked up in the daemon's index: its cases give the
baseline and restaging studies (the daemon's own pairing) and the series each timepoint reads
(the daemon's own series roles), the same selection scoring uses. The files of the series the
baseline and response cases recorded are handed to training, which selects among exactly those.

Left out, each with its reason: a patient with no case; a case waiting for an input or held
because its timepoints conflict (larc was unsure which study is which); a mask larc drew
automatically that no radiologist accepted (training on its own unreviewed outlines would teach
the models larc's mistakes).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from daemon.cases import CaseState, recorded_series
from daemon.index import Index
from dicom_io.pairing import Timepoint

UNUSABLE = {
    CaseState.WAITING: "waits for an input",
    CaseState.HELD: "is held (timepoints conflict)",
}


def index_cohort(
    index: Index, patients: Iterable[str]
) -> tuple[dict[str, dict[str, list[Path]]], dict[str, str]]:
    """(patient -> timepoint -> files, patient -> why left out) of the ``patients`` asked for."""
    cases: dict[str, dict[str, list[Path]]] = {}
    left_out: dict[str, str] = {}
    for patient in sorted(set(patients)):
        found = index.cases(patient_id=patient)
        if not found:
            left_out[patient] = "no case in larc's index (studies not received or not paired)"
            continue
        files: dict[Timepoint, set[Path]] = {}
        reasons = []
        for case in found:
            if case.state in UNUSABLE:
                reasons.append(f"its {case.kind} case {UNUSABLE[case.state]}")
                continue
            for timepoint, series in recorded_series(case.inputs, case.kind).items():
                chosen = files.setdefault(timepoint, set())
                for uid in series.images.values():
                    chosen.update(index.instance_paths(uid))
                for uid in series.masks:
                    auto = index.auto_mask_of_seg(uid)
                    if auto is not None and auto.review != "accepted":
                        reasons.append(f"the {timepoint} mask is larc's own, not accepted")
                        continue
                    chosen.update(index.instance_paths(uid))
        if files:
            cases[patient] = {t: sorted(paths) for t, paths in files.items()}
        else:
            left_out[patient] = "; ".join(reasons) or "no usable case"
    return cases, left_out
