"""Series selection: one rule for which series a case uses, the same whether the daemon decides
from its index or training selects from files."""

from __future__ import annotations

from daemon.cases import SeriesFacts, StudyInputs, decide_cases, recorded_series
from dicom_io.roles import SeriesRole
from dicom_io.selection import (
    SeriesCandidate,
    classify_files,
    masks_on,
    pick_series,
    select_files,
    select_series,
)
from dicom_io.synthetic.cohort import CohortResult

T2, RT, SEG = SeriesRole.T2W_AX, SeriesRole.RTSTRUCT, SeriesRole.SEG


def test_the_series_with_most_images_wins_and_ties_go_to_the_higher_uid() -> None:
    candidates = [
        SeriesCandidate("1.5", T2, 24),
        SeriesCandidate("1.7", T2, 30),
        SeriesCandidate("1.9", T2, 30),
        SeriesCandidate("1.8", SeriesRole.DWI, 60),
    ]
    chosen = pick_series(candidates, T2)
    assert chosen is not None
    assert chosen.series_uid == "1.9"
    assert pick_series(candidates, SeriesRole.CE_T1) is None


def test_a_t2w_mask_prefers_an_rtstruct_then_the_lower_uid() -> None:
    candidates = [
        SeriesCandidate("1.1", T2, 24),
        SeriesCandidate("1.4", SEG, 1, "1.1"),
        SeriesCandidate("1.3", RT, 1, "1.1"),
        SeriesCandidate("1.2", RT, 1, "1.1"),
        SeriesCandidate("1.0", RT, 1, "9.9"),  # drawn on another series
    ]
    assert [m.series_uid for m in masks_on(candidates, "1.1")] == ["1.2", "1.3", "1.4"]
    selection = select_series(candidates)
    mask = selection.mask_of(T2)
    assert mask is not None
    assert mask.series_uid == "1.2"
    assert len(selection.all_masks) == 4


def test_training_and_the_daemon_select_the_same_series(cohort: CohortResult) -> None:
    for patient in cohort.patients[:3]:
        paths = [f for s in patient.studies["baseline"].series.values() for f in s.files]
        from_files = select_files(paths)  # what training reads
        candidates = [c for c, _ in classify_files(paths).values()]
        study = StudyInputs(
            "S",
            "baseline",
            [
                SeriesFacts(c.series_uid, c.role, c.instances, c.referenced_series_uid)
                for c in candidates
            ],
        )  # fmt: skip  (what the daemon's index holds of the same study)
        for case in decide_cases([study]):
            recorded = recorded_series(case.inputs, case.kind)["baseline"]
            for role, uid in recorded.images.items():  # what the work order reads
                assert from_files.images[role].series_uid == uid
            masks = {m.series_uid for m in from_files.masks}
            assert set(recorded.masks) <= masks
