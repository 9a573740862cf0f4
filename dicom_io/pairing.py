"""Which of a patient's studies is the baseline and which the restaging.

Date order is a hard fact; descriptions and ClinicalTrialTimePointID only label. The rules, in
order (the README's "Pairing rules" lists them for sites):

1. A study without a valid StudyDate cannot be ordered: it is ``other``.
2. Each dated study gets a label from its ClinicalTrialTimePointID, else its StudyDescription:
   ``restaging`` (``pairing.restaging_pattern``), ``baseline`` (``pairing.baseline_pattern``),
   ``neither`` (``pairing.other_pattern``: mid-treatment, follow-up; checked first) or none.
   A time point ID and a description that give opposite labels are a conflict.
3. Conflicts hold the patient's cases (:attr:`Pairing.conflict`), nothing is guessed:
   two studies labelled baseline; a study labelled baseline on or after one labelled
   restaging; a study labelled baseline with an unlabelled study on or before it within
   ``max_interval_days`` (that one could be the real baseline).
4. The baseline is the study labelled baseline; else, among unlabelled studies (before the
   first labelled restaging, if any), the earliest that has a restaging candidate; else, with
   no such pair, the earliest study when all the others follow it within
   ``min_interval_days`` (repeats), or the only study. Studies further apart with no pair
   between them hold: any of them could be the baseline.
5. Restaging candidates are the studies ``min_interval_days``..``max_interval_days`` after
   the baseline: the labelled restaging studies when any study is labelled restaging, else the
   unlabelled ones. One candidate is the restaging; several hold (a mid-treatment study, a
   restaging and a follow-up cannot be told apart by date alone).
6. Every other study is ``other``, with the reason.

An operator's choice (:class:`PairingChoice`) replaces rules 2-5 for the patient, but not
date order: the restaging must be dated after the baseline.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum


class Timepoint(StrEnum):
    """What a study is in a patient's treatment."""

    BASELINE = "baseline"  # before neoadjuvant therapy
    RESTAGING = "restaging"  # after it, before surgery
    OTHER = "other"  # neither (a third study, undated, out of the interval)
    UNDECIDED = "undecided"  # the patient's timepoints conflict; an operator decides


BASELINE, RESTAGING, OTHER = Timepoint.BASELINE, Timepoint.RESTAGING, Timepoint.OTHER
UNDECIDED = Timepoint.UNDECIDED
_NEITHER = "neither"  # the label of a study that other_pattern marks


@dataclass(frozen=True)
class StudyFacts:
    """What pairing looks at for one study."""

    study_uid: str
    study_date: str  # YYYYMMDD
    description: str
    time_point_id: str = ""  # ClinicalTrialTimePointID, when the site sets it


@dataclass(frozen=True)
class PairingPolicy:
    """Label patterns and the baseline-restaging interval (see the module doc)."""

    restaging_pattern: str
    baseline_pattern: str
    min_interval_days: int
    max_interval_days: int
    other_pattern: str = ""  # "": no study is labelled neither


@dataclass(frozen=True)
class PairingChoice:
    """An operator's choice of a patient's baseline and restaging studies (audited)."""

    baseline_study_uid: str
    restaging_study_uid: str | None
    who: str
    at: str  # when, as text for the reasons (YYYY-MM-DD HH:MM)


@dataclass(frozen=True)
class Pairing:
    """The timepoint of each study with the reason; ``conflict`` says why the patient's cases
    are held (every study is then ``undecided``)."""

    timepoints: dict[str, tuple[Timepoint, str]] = field(default_factory=dict)
    conflict: str | None = None


BY_DATE_ORDER = "earliest study of the patient"  # a baseline by date alone, nothing marks it
_PAIRED = "date order: the earliest study with a restaging in the interval"


def study_date(value: str) -> datetime.date | None:
    """A StudyDate (YYYYMMDD) as a date, or ``None`` when it is not a valid one."""
    try:
        return datetime.datetime.strptime(value[:8], "%Y%m%d").date()
    except ValueError:
        return None


def _days(a: StudyFacts, b: StudyFacts) -> int:
    """Days from ``a`` to ``b`` (both dated)."""
    first, second = study_date(a.study_date), study_date(b.study_date)
    if first is None or second is None:
        raise ValueError("only dated studies have a gap")
    return (second - first).days


def describe(study: StudyFacts) -> str:
    """A study as a reason names it: its date and description."""
    date = study_date(study.study_date)
    when = date.isoformat() if date else "undated"
    return f"the {when} study {study.description or '(no description)'!r}"


@dataclass(frozen=True)
class _Label:
    label: str | None  # BASELINE, RESTAGING, _NEITHER or None
    source: str  # "ClinicalTrialTimePointID 'X'" / "description 'Y'"
    conflict: str | None = None


def _match(text: str, policy: PairingPolicy) -> str | None:
    if not text:
        return None
    if policy.other_pattern and re.search(policy.other_pattern, text, re.IGNORECASE):
        return _NEITHER
    if re.search(policy.restaging_pattern, text, re.IGNORECASE):
        return RESTAGING
    if re.search(policy.baseline_pattern, text, re.IGNORECASE):
        return BASELINE
    return None


def _label(study: StudyFacts, policy: PairingPolicy) -> _Label:
    by_id = _match(study.time_point_id, policy)
    by_text = _match(study.description, policy)
    id_source = f"ClinicalTrialTimePointID {study.time_point_id!r}"
    text_source = f"description {study.description!r}"
    if by_id and by_text and by_id != by_text and {by_id, by_text} <= {BASELINE, RESTAGING}:
        return _Label(
            None,
            id_source,
            f"{describe(study)} has {id_source} (a {by_id}) but its {text_source} says {by_text}",
        )
    if by_id:
        return _Label(by_id, id_source)
    return _Label(by_text, text_source)


def _interval(policy: PairingPolicy) -> str:
    return f"pairing.min/max_interval_days {policy.min_interval_days}-{policy.max_interval_days}"


def _held(studies: Sequence[StudyFacts], conflict: str) -> Pairing:
    reason = f"on hold: timepoints conflict ({conflict})"
    return Pairing(
        {
            s.study_uid: (UNDECIDED, reason) if study_date(s.study_date) else (OTHER, _UNDATED)
            for s in studies
        },
        conflict,
    )


_UNDATED = "no valid StudyDate: cannot be ordered"


def _chosen(dated: list[StudyFacts], choice: PairingChoice) -> Pairing:
    by_uid = {s.study_uid: s for s in dated}
    baseline = by_uid.get(choice.baseline_study_uid)
    restaging = by_uid.get(choice.restaging_study_uid or "")
    who = f"chosen by {choice.who} on {choice.at}"
    if baseline is None or (choice.restaging_study_uid and restaging is None):
        return _held(dated, f"the studies {who} are no longer all on hand: choose again")
    if restaging is not None and _days(baseline, restaging) <= 0:
        return _held(dated, f"{who}: {describe(restaging)} is not dated after {describe(baseline)}")
    out: dict[str, tuple[Timepoint, str]] = {baseline.study_uid: (BASELINE, who)}
    if restaging is not None:
        out[restaging.study_uid] = (
            RESTAGING,
            f"{who}, {_days(baseline, restaging)} days after the baseline",
        )
    for study in dated:
        if study.study_uid not in out:
            out[study.study_uid] = (OTHER, f"not chosen ({who})")
    return Pairing(out)


def _conflict(
    dated: list[StudyFacts], labels: dict[str, _Label], policy: PairingPolicy
) -> str | None:
    """Rule 3: why the labels cannot be trusted, or None."""
    for study in dated:
        if labels[study.study_uid].conflict:
            return labels[study.study_uid].conflict
    baselines = [s for s in dated if labels[s.study_uid].label == BASELINE]
    restagings = [s for s in dated if labels[s.study_uid].label == RESTAGING]
    if len(baselines) > 1:
        named = " and ".join(f"{describe(s)} ({labels[s.study_uid].source})" for s in baselines)
        return f"{len(baselines)} studies are labelled baseline: {named}"
    if not baselines:
        return None
    baseline = baselines[0]
    for restaging in restagings:
        if _days(restaging, baseline) >= 0:
            return (
                f"{describe(baseline)} is labelled baseline ({labels[baseline.study_uid].source})"
                f" but {describe(restaging)}, {_days(restaging, baseline)} days earlier, is "
                f"labelled restaging ({labels[restaging.study_uid].source}): a baseline cannot "
                "follow its restaging"
            )
    for earlier in dated:
        if earlier is baseline or labels[earlier.study_uid].label is not None:
            continue
        gap = _days(earlier, baseline)
        if 0 <= gap <= policy.max_interval_days:
            return (
                f"{describe(baseline)} is labelled baseline ({labels[baseline.study_uid].source})"
                f" but {describe(earlier)} is {gap} days earlier and could be the baseline"
            )
    return None


def assign_timepoints(
    studies: Sequence[StudyFacts],
    policy: PairingPolicy,
    choice: PairingChoice | None = None,
) -> Pairing:
    """The timepoints of one patient's rectal MR studies (the rules of the module doc)."""
    dated = sorted(
        (s for s in studies if study_date(s.study_date) is not None),
        key=lambda s: (s.study_date, s.study_uid),
    )
    undated = {s.study_uid: (OTHER, _UNDATED) for s in studies if study_date(s.study_date) is None}
    if choice is not None:
        chosen = _chosen(dated, choice)
        return Pairing({**undated, **chosen.timepoints}, chosen.conflict)
    labels = {s.study_uid: _label(s, policy) for s in dated}
    conflict = _conflict(dated, labels, policy)
    if conflict is not None:
        return _held(studies, conflict)
    found = _pair(dated, labels, policy)
    if isinstance(found, str):
        return _held(studies, found)
    return Pairing({**undated, **found})


def _in_range(baseline: StudyFacts, study: StudyFacts, policy: PairingPolicy) -> bool:
    return policy.min_interval_days <= _days(baseline, study) <= policy.max_interval_days


def _baseline(
    dated: list[StudyFacts],
    labels: dict[str, _Label],
    policy: PairingPolicy,
    candidates: Callable[[StudyFacts], list[StudyFacts]],
) -> tuple[StudyFacts | None, str] | str:
    """Rule 4: the baseline and why (``None``: none on hand), or why the patient is held."""

    def label(study: StudyFacts) -> str | None:
        return labels[study.study_uid].label

    restagings = [s for s in dated if label(s) == RESTAGING]
    baseline: StudyFacts | None = None
    why = ""
    labelled = [s for s in dated if label(s) == BASELINE]
    unlabelled = [s for s in dated if label(s) is None]
    if labelled:
        baseline = labelled[0]
        why = f"{labels[baseline.study_uid].source} labels a baseline"
    elif restagings:  # the baseline lies within the interval before a labelled restaging
        paired = [s for s in unlabelled if candidates(s)]
        if paired:
            baseline, why = paired[0], _PAIRED
    elif unlabelled:
        paired = [s for s in unlabelled if candidates(s)]
        if paired:
            baseline, why = paired[0], _PAIRED
        else:
            first = unlabelled[0]
            far = [s for s in unlabelled[1:] if _days(first, s) > policy.min_interval_days]
            if far:
                named = ", ".join(f"{describe(s)} ({_days(first, s)} days later)" for s in far)
                return (
                    f"no two studies are a baseline and its restaging ({_interval(policy)}): "
                    f"{describe(first)} and {named} could each be the baseline"
                )
            baseline, why = first, BY_DATE_ORDER
    if baseline is not None and why in (BY_DATE_ORDER, _PAIRED):
        same_day = [s for s in unlabelled if s is not baseline and _days(baseline, s) == 0]
        if same_day:
            named = " and ".join(describe(s) for s in (baseline, *same_day))
            return f"{named} are on the same day: either could be the baseline"
    return baseline, why


def _pair(
    dated: list[StudyFacts], labels: dict[str, _Label], policy: PairingPolicy
) -> dict[str, tuple[Timepoint, str]] | str:
    """Rules 4-6 on conflict-free labels: the timepoints, or why the patient is held."""

    def label(study: StudyFacts) -> str | None:
        return labels[study.study_uid].label

    restagings = [s for s in dated if label(s) == RESTAGING]

    def candidates(baseline: StudyFacts) -> list[StudyFacts]:
        wanted = RESTAGING if restagings else None
        return [
            s for s in dated if label(s) == wanted and s is not baseline
            and _in_range(baseline, s, policy)
        ]  # fmt: skip

    chosen = _baseline(dated, labels, policy, candidates)
    if isinstance(chosen, str):
        return chosen
    baseline, why = chosen
    out: dict[str, tuple[Timepoint, str]] = {}
    if baseline is None:
        for study in dated:
            if label(study) == RESTAGING:
                out[study.study_uid] = (
                    RESTAGING,
                    f"{labels[study.study_uid].source} labels a restaging; no baseline on hand",
                )
                break
        for study in dated:
            if study.study_uid not in out:
                out[study.study_uid] = (OTHER, _other_reason(study, None, labels, policy))
        return out
    out[baseline.study_uid] = (BASELINE, why)
    found = candidates(baseline)
    if len(found) > 1:
        named = ", ".join(f"{describe(s)} ({_days(baseline, s)} days)" for s in found)
        return f"several studies could be the restaging of {describe(baseline)}: {named}"
    if found:
        restaging = found[0]
        what = (
            f"{labels[restaging.study_uid].source} labels a restaging"
            if label(restaging) == RESTAGING
            else "next study"
        )
        out[restaging.study_uid] = (
            RESTAGING,
            f"{what}, {_days(baseline, restaging)} days after the baseline",
        )
    for study in dated:
        if study.study_uid not in out:
            out[study.study_uid] = (OTHER, _other_reason(study, baseline, labels, policy))
    return out


def _other_reason(
    study: StudyFacts,
    baseline: StudyFacts | None,
    labels: dict[str, _Label],
    policy: PairingPolicy,
) -> str:
    found = labels[study.study_uid]
    if found.label == _NEITHER:
        return f"{found.source} labels neither a baseline nor a restaging (pairing.other_pattern)"
    if baseline is None:
        return "no baseline on hand"
    gap = _days(baseline, study)
    if gap < 0:
        return f"{-gap} days before the baseline: an earlier study, not this treatment's"
    said = f" ({found.source} labels a {found.label})" if found.label else ""
    return (
        f"{gap} days after the baseline{said}: not the restaging ({_interval(policy)})"
        if not _in_range(baseline, study, policy)
        else f"{gap} days after the baseline: not the restaging (another study is labelled so)"
    )
