"""Which of a patient's studies is the baseline and which the restaging."""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
from enum import StrEnum


class Timepoint(StrEnum):
    """What a study is in a patient's treatment."""

    BASELINE = "baseline"  # before neoadjuvant therapy
    RESTAGING = "restaging"  # after it, before surgery
    OTHER = "other"  # neither (a third study, undated, out of the interval)


BASELINE, RESTAGING, OTHER = Timepoint.BASELINE, Timepoint.RESTAGING, Timepoint.OTHER


@dataclass(frozen=True)
class StudyFacts:
    """What pairing looks at for one study."""

    study_uid: str
    study_date: str  # YYYYMMDD
    description: str
    time_point_id: str = ""  # ClinicalTrialTimePointID, when the site sets it


@dataclass(frozen=True)
class PairingPolicy:
    """Description patterns first, then date order within an interval."""

    restaging_pattern: str
    baseline_pattern: str
    min_interval_days: int
    max_interval_days: int


def _date(value: str) -> datetime.date | None:
    try:
        return datetime.datetime.strptime(value[:8], "%Y%m%d").date()
    except ValueError:
        return None


BY_DATE_ORDER = "earliest study of the patient"  # a baseline by date alone, nothing marks it


def assign_timepoints(
    studies: list[StudyFacts], policy: PairingPolicy
) -> dict[str, tuple[str, str]]:
    """{study_uid: (timepoint, reason)} for one patient's rectal MR studies."""
    out: dict[str, tuple[str, str]] = {}
    dated = sorted(
        (s for s in studies if _date(s.study_date) is not None),
        key=lambda s: (s.study_date, s.study_uid),
    )
    for study in studies:
        if _date(study.study_date) is None:
            out[study.study_uid] = (OTHER, "no valid StudyDate: cannot be ordered")

    def mark(study: StudyFacts) -> str | None:
        """What the explicit time point ID, else the description, says the study is."""
        for text in (study.time_point_id, study.description):
            if text and re.search(policy.restaging_pattern, text, re.IGNORECASE):
                return RESTAGING
            if text and re.search(policy.baseline_pattern, text, re.IGNORECASE):
                return BASELINE
        return None

    def source(study: StudyFacts) -> str:
        if study.time_point_id and mark(StudyFacts("", "", "", study.time_point_id)):
            return f"ClinicalTrialTimePointID {study.time_point_id!r}"
        return f"description {study.description!r}"

    marked_restaging = [s for s in dated if mark(s) == RESTAGING]
    marked_baseline = [s for s in dated if mark(s) == BASELINE]
    baseline: StudyFacts | None
    if marked_baseline:
        baseline = marked_baseline[0]
        why = f"{source(baseline)} marks a baseline"
    else:
        unmarked = [s for s in dated if s not in marked_restaging]
        baseline = unmarked[0] if unmarked else None
        why = BY_DATE_ORDER
    if baseline is None:
        for study in marked_restaging:
            out[study.study_uid] = (
                RESTAGING,
                f"{source(study)} marks a restaging; no baseline on hand",
            )
        return out
    out[baseline.study_uid] = (BASELINE, why)
    start = _date(baseline.study_date) or datetime.date.min
    restaging: StudyFacts | None = None
    for study in dated:
        if study is baseline:
            continue
        gap = ((_date(study.study_date) or start) - start).days
        in_range = policy.min_interval_days <= gap <= policy.max_interval_days
        if restaging is None and in_range and (study in marked_restaging or not marked_restaging):
            restaging = study
            what = (
                f"{source(study)} marks a restaging" if study in marked_restaging else "next study"
            )
            out[study.study_uid] = (RESTAGING, f"{what}, {gap} days after the baseline")
        else:
            out[study.study_uid] = (
                OTHER,
                f"{gap} days after the baseline: not the restaging "
                f"(pairing.min/max_interval_days {policy.min_interval_days}-"
                f"{policy.max_interval_days})",
            )
    return out
