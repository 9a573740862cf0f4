"""Study assembly: after a quiet period a study is stable; its series get roles, the patient's
studies get timepoints, and the patient's cases are (re)decided (:func:`daemon.cases.decide_cases`,
which selects each study's series once). A late instance re-opens a study.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import pydicom

from daemon.cases import (
    AutoMask,
    CaseDecision,
    CaseKind,
    CaseState,
    SeriesFacts,
    StudyInputs,
    case_fingerprint,
    case_id,
    decide_cases,
    held_decision,
    t2w_without_mask,
)
from daemon.index import AutoMaskRow, Index
from daemon.index.rows import SeriesRow
from daemon.loops import BackgroundLoop
from dicom_io.pairing import (
    BASELINE,
    BY_DATE_ORDER,
    RESTAGING,
    PairingChoice,
    PairingPolicy,
    StudyFacts,
    assign_timepoints,
)
from dicom_io.roles import DEFAULT_RULES, RoleRule, SeriesRole, classify_series

logger = logging.getLogger(__name__)

ReadyHandler = Callable[[str, int, str], None]  # (case id, version, kind)
_IMAGING_ROLES = {SeriesRole.T2W_AX, SeriesRole.DWI, SeriesRole.ADC, SeriesRole.CE_T1}


class PriorSource(Protocol):
    """Where a patient's prior studies come from: the PACS (:mod:`daemon.intake.priors`)."""

    def request(self, patient_id: str, case_id: str) -> None:
        """Ask for the patient's studies we do not hold (once per patient)."""

    def finished(self, patient_id: str) -> bool:
        """Whether the PACS has answered for this patient (studies moved, none, or failed)."""

    def take_answered(self) -> list[str]:
        """The patients the PACS has answered for since the last call."""


@dataclass(frozen=True)
class AutoSegmentation:
    """How T2W series without a drawn mask get one (``segmentation.*``; ``None``: manual)."""

    model: str  # the bundle's label ("name version") that segments
    always: bool = False  # auto_always: segment every T2W and score only automatic masks


def log_ready(case: str, version: int, kind: str) -> None:
    """The hand-off until workers exist: say that a case is ready."""
    logger.info("case %s (%s) version %d is ready", case, kind, version)


class Assembler:
    """Turns stable studies into roles, timepoints and cases; :meth:`run_once` does one pass."""

    def __init__(
        self,
        index: Index,
        stable_age_s: float,
        policy: PairingPolicy,
        rules: Sequence[RoleRule] = DEFAULT_RULES,
        on_ready: ReadyHandler = log_ready,
        priors: PriorSource | None = None,
        auto: AutoSegmentation | None = None,
        on_request: Callable[[], None] | None = None,
    ) -> None:
        """``auto``: segment T2W series without a mask (``None``: cases wait for a drawn one);
        ``on_request``: called when an automatic mask was asked for (the dispatcher's wake)."""
        self.index = index
        self.auto = auto
        self.on_request = on_request
        self.stable_age_s = stable_age_s
        self.policy = policy
        self.rules = rules
        self.on_ready = on_ready
        self.priors = priors
        self._loop = BackgroundLoop("assembly", self.run_once, min(1.0, stable_age_s / 4))
        self._pass = threading.Lock()  # one pass at a time, whoever calls run_once

    def run_once(self, now: float | None = None) -> list[str]:
        """Process studies that became stable; returns their UIDs."""
        with self._pass:
            return self._run_once(time.time() if now is None else now)

    def _run_once(self, now: float) -> list[str]:
        due = self.index.studies_due(now - self.stable_age_s)
        patients = set(self.priors.take_answered()) if self.priors is not None else set()
        patients.update(self.index.take_new_choices())  # an operator chose timepoints
        patients.update(self.index.take_finished_auto_masks())  # segmented, or reviewed
        for study in due:
            self._classify(study.study_uid)
            self.index.mark_stable(study.study_uid, now)
            patients.add(study.patient_id)
            logger.info("study %s is stable", study.study_uid[-12:])
        for patient_id in sorted(patients):
            self._update_patient(patient_id)
        return [s.study_uid for s in due]

    def _classify(self, study_uid: str) -> None:
        for series in self.index.series_of_study(study_uid):
            paths = self.index.instance_paths(series.series_uid)
            if not paths:
                continue
            try:
                headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]
                found = classify_series(headers, self.rules)
                role, reason, reference = found.role, found.reason, found.referenced_series_uid
                b_values = json.dumps(list(found.b_values))
                made_by = found.machine_made_by
            except (OSError, ValueError, AttributeError) as exc:
                role, reason, reference, b_values, made_by = (
                    SeriesRole.IGNORED,
                    f"headers unreadable: {exc}",
                    None,
                    "[]",
                    None,
                )
            self.index.set_series_role(
                series.series_uid, role, reason, b_values, reference, made_by
            )

    def _update_patient(self, patient_id: str) -> None:
        if self.index.has_unstable_study(patient_id):
            return  # decided once the patient's last study is stable too
        studies = self.index.studies_of_patient(patient_id, stable_only=True)
        auto_rows = {r.image_series_uid: r for r in self.index.auto_masks(patient_id=patient_id)}
        series_of: dict[str, list[SeriesFacts]] = {}
        for study in studies:
            series_of[study.study_uid] = self._series_facts(
                self.index.series_of_study(study.study_uid), auto_rows
            )
        imaging = [
            StudyFacts(
                s.study_uid,
                s.study_date or "",
                s.description or "",
                s.time_point_id or "",
            )
            for s in studies
            if any(f.role in _IMAGING_ROLES for f in series_of[s.study_uid])
        ]
        choice = self._choice(patient_id)
        pairing = assign_timepoints(imaging, self.policy, choice)
        timepoints = pairing.timepoints
        self.index.set_timepoints(timepoints)
        if pairing.conflict is not None:
            for kind in CaseKind:
                self._store_case(patient_id, held_decision(kind, pairing.conflict))
            return
        inputs = [
            StudyInputs(uid, timepoint, series_of[uid])
            for uid, (timepoint, _) in timepoints.items()
        ]
        found = {timepoint for timepoint, _ in timepoints.values()}
        # A lone study that only date order calls a baseline may be a restaging study whose
        # baseline sits in the PACS: ask first, and hold its cases until the PACS has answered.
        lone = [reason for _, reason in timepoints.values()] == [BY_DATE_ORDER]
        hold = False
        asked = lone or (RESTAGING in found and BASELINE not in found)
        if self.priors is not None and choice is None and asked:
            self.priors.request(patient_id, case_id(patient_id, CaseKind.RESPONSE))
            hold = lone and not self.priors.finished(patient_id)
        for decided in decide_cases(inputs, self._auto_masks(patient_id, inputs, auto_rows)):
            if hold and decided.state == CaseState.READY:
                reason = (
                    "asking the PACS for prior studies first "
                    "(the only study on hand may be a restaging study)"
                )
                decided = replace(decided, state=CaseState.WAITING, reason=reason)  # noqa: PLW2901
            if choice is not None:
                decided = replace(  # noqa: PLW2901
                    decided, reason=f"{decided.reason} (timepoints chosen by {choice.who})"
                )
            self._store_case(patient_id, decided)

    def _series_facts(
        self, rows: Sequence[SeriesRow], auto_rows: dict[str, AutoMaskRow]
    ) -> list[SeriesFacts]:
        """A study's series as case building sees them: larc's own SEGs marked automatic, masks
        another program made on its own marked with its name, a rejected automatic outline
        left out, and (auto_always) drawn masks on the T2W too."""
        automatic = {r.seg_series_uid: r for r in auto_rows.values() if r.seg_series_uid}
        t2w = {r.series_uid for r in rows if r.role == SeriesRole.T2W_AX}
        facts = []
        for r in rows:
            made = automatic.get(r.series_uid)
            if made is not None and made.review == "rejected":
                continue
            drawn = r.role in (SeriesRole.RTSTRUCT, SeriesRole.SEG) and made is None
            if (
                drawn
                and self.auto is not None
                and self.auto.always
                and (r.referenced_series_uid in t2w)
            ):
                continue
            facts.append(
                SeriesFacts(
                    r.series_uid, r.role or "", r.instances, r.referenced_series_uid,
                    automatic=made is not None,
                    made_elsewhere_by=None if made is not None else r.machine_made_by,
                )
            )  # fmt: skip
        return facts

    def _auto_masks(
        self, patient_id: str, studies: Sequence[StudyInputs], rows: dict[str, AutoMaskRow]
    ) -> dict[str, AutoMask]:
        """The automatic masks of the patient's T2W series, asking for those still needed."""
        if self.auto is not None:
            asked = False
            for study in studies:
                if study.timepoint not in (BASELINE, RESTAGING):
                    continue
                uid = t2w_without_mask(study)
                if uid is None or uid in rows:
                    continue
                if self.index.request_auto_mask(uid, study.study_uid, patient_id, self.auto.model):
                    logger.info("automatic tumour segmentation asked for series %s", uid[-12:])
                    asked = True
            if asked:
                rows = {r.image_series_uid: r for r in self.index.auto_masks(patient_id=patient_id)}
                if self.on_request is not None:
                    self.on_request()
        return {
            uid: AutoMask(r.state, r.reason, r.review, r.reviewed_by or "", r.review_note)
            for uid, r in rows.items()
        }

    def _choice(self, patient_id: str) -> PairingChoice | None:
        row = self.index.timepoint_choice(patient_id)
        if row is None:
            return None
        at = time.strftime("%Y-%m-%d %H:%M", time.localtime(row.at))
        return PairingChoice(row.baseline_study_uid or "", row.restaging_study_uid, row.who, at)

    def _store_case(self, patient_id: str, decision: CaseDecision) -> None:
        cid = case_id(patient_id, decision.kind)
        old = self.index.case(cid)
        fingerprint = case_fingerprint(decision.inputs, self.index.readings(cid))
        waiting = CaseState.WAITING
        if old is not None and old.fingerprint == fingerprint and old.state != waiting:
            return  # same inputs, already past waiting: nothing new
        version = 1 if old is None else old.version
        new_version = old is None
        decided = decision.state in (CaseState.READY, CaseState.DECLINED)
        if old is not None and old.state != waiting and (decided or old.state != CaseState.HELD):
            # new inputs for a case that was already ready or further: a new version, also
            # when it must wait again (a rejected outline), so that its old results keep
            # their version and the next ones get another
            version += 1
            new_version = True
        changed = old is None or old.state != decision.state or new_version
        self.index.upsert_case(
            {
                "case_id": cid,
                "patient_id": patient_id,
                "kind": decision.kind,
                "version": version,
                "state": decision.state,
                "reason": decision.reason,
                "baseline_study_uid": decision.baseline_study_uid,
                "restaging_study_uid": decision.restaging_study_uid,
                "inputs": json.dumps(decision.inputs, sort_keys=True),
                "fingerprint": fingerprint,
            },
            new_version=changed,
        )
        if decision.state == CaseState.READY and changed:
            self.on_ready(cid, version, decision.kind)
        elif changed and decision.state in (CaseState.HELD, CaseState.DECLINED):
            logger.warning(
                "case %s (%s) %s: %s", cid, decision.kind, decision.state, decision.reason
            )
        elif changed:
            logger.info("case %s (%s) waiting: %s", cid, decision.kind, decision.reason)

    # -- background loop -----------------------------------------------------------------------

    def start(self) -> None:
        """Run :meth:`run_once` in a thread, a few times per stable age."""
        self._loop.start()

    def stop(self) -> None:
        """End the loop (after the current pass)."""
        self._loop.stop(timeout_s=30)
