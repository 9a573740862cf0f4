"""The index: SQLite (WAL) record of patients, studies, series, instances, cases, results,
exports, rejections and audit.

The index is the source of truth: a restarted daemon resumes from it. One connection is shared
by the listener's threads behind a lock; every write is one transaction, committed (and synced,
``synchronous=FULL``) before the caller acknowledges anything. The rest of larc reads it through
the named readers below (frozen rows from :mod:`daemon.index.rows`) and changes it through the
named writers; every change of a case's state is checked against
:data:`daemon.cases.TRANSITIONS` here, the one place states are written.
"""

from __future__ import annotations

import datetime
import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemon.cases import CaseState, case_fingerprint, check_transition
from daemon.index.rows import (
    AutoMaskReviewRow,
    AutoMaskRow,
    AutoMaskState,
    CaseRow,
    ExportRow,
    ExportState,
    InstanceRecord,
    PatientRow,
    RejectionRow,
    ResultRow,
    SeriesRow,
    StoredInstance,
    StudyRow,
    TimepointChoiceRow,
)
from daemon.index.schema import create_or_upgrade
from dicom_io.pairing import study_date

INDEX_FILE = "index.sqlite3"  # under storage.data_dir


def _append_history(db: sqlite3.Connection, case_id: str, at: float) -> None:
    """Add the case's current version, state and reason to its history (in a transaction)."""
    db.execute(
        "INSERT INTO case_history (case_id, version, state, reason, fingerprint, at) "
        "SELECT case_id, version, state, reason, fingerprint, ? FROM cases WHERE case_id = ?",
        (at, case_id),
    )


@dataclass(frozen=True)
class ReadingsSaved:
    """What saving a case's readings did."""

    version: int  # the case's version afterwards
    changes: list[tuple[str, str | None, str | None]]  # field, old, new
    rescore: bool  # a new version was made ready


class Index:
    """The SQLite index under the storage root."""

    def __init__(self, path: Path, read_only: bool = False) -> None:
        """Open (creating or upgrading) the index at ``path``; ``read_only`` opens an existing
        one for reading only, beside a running larc serve (``FileNotFoundError`` if none)."""
        self.path = path
        self._lock = threading.Lock()
        if read_only:
            if not path.exists():
                raise FileNotFoundError(f"no index at {path}")
            self._db = sqlite3.connect(
                f"file:{path}?mode=ro", uri=True, check_same_thread=False, timeout=10
            )
            self._db.row_factory = sqlite3.Row
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        create_or_upgrade(self._db, path)

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def instance(self, sop_uid: str) -> StoredInstance | None:
        """The index row of an instance, or ``None``."""
        rows = self._read("SELECT * FROM instances WHERE sop_uid = ?", (sop_uid,))
        return StoredInstance.from_row(rows[0]) if rows else None

    def record_instance(
        self, record: InstanceRecord, path: Path, size: int, sha256: str, calling_ae: str
    ) -> None:
        """Add (or replace) one stored instance and its patient, study and series, atomically.

        A study that was stable is re-opened: its ``stable_at`` is cleared.
        """
        now = time.time()
        with self._transaction() as db:
            db.execute(
                "INSERT INTO patients VALUES (?, ?, ?, ?, ?) ON CONFLICT(patient_id) DO UPDATE "
                "SET patient_name = excluded.patient_name",
                (record.patient_id, record.patient_name, record.birth_date, record.sex, now),
            )
            db.execute(
                "INSERT INTO studies (study_uid, patient_id, study_date, study_time, description, "
                "accession_number, first_received, last_received, time_point_id) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(study_uid) DO UPDATE SET last_received = excluded.last_received, "
                "stable_at = NULL",
                (
                    record.study_uid,
                    record.patient_id,
                    record.study_date,
                    record.study_time,
                    record.study_description,
                    record.accession_number,
                    now,
                    now,
                    record.time_point_id,
                ),
            )
            db.execute(
                "INSERT INTO series (series_uid, study_uid, modality, sop_class_uid, "
                "series_number, description, frame_of_reference_uid, ignored_reason) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(series_uid) DO NOTHING",
                (
                    record.series_uid,
                    record.study_uid,
                    record.modality,
                    record.sop_class_uid,
                    record.series_number,
                    record.series_description,
                    record.frame_of_reference_uid,
                    record.ignored_reason,
                ),
            )
            db.execute(
                "INSERT OR REPLACE INTO instances VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.sop_uid,
                    record.series_uid,
                    record.sop_class_uid,
                    record.instance_number,
                    str(path),
                    size,
                    sha256,
                    record.transfer_syntax_uid,
                    calling_ae,
                    now,
                ),
            )

    def record_rejection(
        self, calling_ae: str, sop_class_uid: str, sop_uid: str, status: int, reason: str
    ) -> None:
        """Remember an instance we refused, and why."""
        with self._transaction() as db:
            db.execute(
                "INSERT INTO rejections (received_at, calling_ae, sop_class_uid, sop_uid, "
                "status, reason) VALUES (?, ?, ?, ?, ?, ?)",
                (time.time(), calling_ae, sop_class_uid, sop_uid, status, reason),
            )

    def record_duplicate(
        self,
        sop_uid: str,
        old_sha256: str,
        new_sha256: str,
        policy: str,
        action: str,
        calling_ae: str,
    ) -> None:
        """Audit a SOP Instance UID received again with different content."""
        with self._transaction() as db:
            db.execute(
                "INSERT INTO duplicates (at, sop_uid, old_sha256, new_sha256, policy, action, "
                "calling_ae) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (time.time(), sop_uid, old_sha256, new_sha256, policy, action, calling_ae),
            )

    # -- assembly, roles, timepoints, cases ----------------------------------------------------

    def studies_due(self, quiet_since: float) -> list[StudyRow]:
        """Studies not yet stable whose last instance arrived before ``quiet_since``."""
        rows = self._read(
            "SELECT * FROM studies WHERE stable_at IS NULL AND last_received <= ?", (quiet_since,)
        )
        return [StudyRow.from_row(r) for r in rows]

    def mark_stable(self, study_uid: str, at: float) -> None:
        """Record that a study became stable (unless an instance arrived meanwhile)."""
        with self._transaction() as db:
            db.execute(
                "UPDATE studies SET stable_at = ? WHERE study_uid = ? AND last_received <= ?",
                (at, study_uid, at),
            )

    def set_series_role(
        self,
        series_uid: str,
        role: str,
        reason: str,
        b_values: str,
        referenced: str | None,
        machine_made_by: str | None = None,
    ) -> None:
        """Store the role given to a series and why (masks: what they were drawn on, and the
        program that made one with no person, if one did)."""
        with self._transaction() as db:
            db.execute(
                "UPDATE series SET role = ?, role_reason = ?, b_values = ?, "
                "referenced_series_uid = ?, machine_made_by = ? WHERE series_uid = ?",
                (role, reason, b_values, referenced, machine_made_by, series_uid),
            )

    def set_timepoints(self, timepoints: Mapping[str, tuple[str, str]]) -> None:
        """Store each study's timepoint and the reason: {study_uid: (timepoint, reason)}."""
        with self._transaction() as db:
            db.executemany(
                "UPDATE studies SET timepoint = ?, timepoint_reason = ? WHERE study_uid = ?",
                [(tp, reason, uid) for uid, (tp, reason) in timepoints.items()],
            )

    def upsert_case(self, row: dict[str, Any], new_version: bool) -> None:
        """Insert or update a case (the case builder's decision), adding a history entry when
        ``new_version`` (a new case, version or state)."""
        now = time.time()
        with self._transaction() as db:
            old = db.execute(
                "SELECT state, version FROM cases WHERE case_id = ?", (row["case_id"],)
            ).fetchone()
            check_transition(
                CaseState(old["state"]) if old else None,
                CaseState(row["state"]),
                new_version=old is not None and int(old["version"]) != int(row["version"]),
            )
            db.execute(
                "INSERT INTO cases (case_id, patient_id, kind, version, state, reason, "
                "baseline_study_uid, restaging_study_uid, inputs, fingerprint, updated_at) "
                "VALUES (:case_id, :patient_id, :kind, :version, :state, :reason, "
                ":baseline_study_uid, :restaging_study_uid, :inputs, :fingerprint, :now) "
                "ON CONFLICT(case_id) DO UPDATE SET version = excluded.version, "
                "state = excluded.state, reason = excluded.reason, "
                "baseline_study_uid = excluded.baseline_study_uid, "
                "restaging_study_uid = excluded.restaging_study_uid, inputs = excluded.inputs, "
                "fingerprint = excluded.fingerprint, updated_at = excluded.updated_at",
                {**row, "now": now},
            )
            if new_version:
                db.execute(
                    "INSERT INTO case_history (case_id, version, state, reason, fingerprint, at) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        row["case_id"],
                        row["version"],
                        row["state"],
                        row["reason"],
                        row["fingerprint"],
                        now,
                    ),
                )

    def set_case_state(
        self,
        case_id: str,
        version: int,
        state: CaseState,
        reason: str,
        work_key: str | None = None,
        task: str | None = None,
    ) -> bool:
        """Move one case version to ``state`` (with a history entry). ``False`` when the case
        has moved on to another version meanwhile (the change is then dropped);
        :class:`daemon.cases.InvalidTransitionError` when the table does not allow it."""
        now = time.time()
        with self._transaction() as db:
            old = db.execute(
                "SELECT state FROM cases WHERE case_id = ? AND version = ?", (case_id, version)
            ).fetchone()
            if old is None:
                return False
            check_transition(CaseState(old["state"]), CaseState(state))
            changed = db.execute(
                "UPDATE cases SET state = ?, reason = ?, updated_at = ?, "
                "work_key = COALESCE(?, work_key), task = COALESCE(?, task) "
                "WHERE case_id = ? AND version = ?",
                (state, reason, now, work_key, task, case_id, version),
            ).rowcount
            if changed:
                _append_history(db, case_id, now)
        return bool(changed)

    def record_result(self, row: dict[str, Any], destinations: list[str]) -> bool:
        """Store a case version's result and queue its exports; ``False`` when the work key
        has a result already (a redelivered task: nothing is added)."""
        now = time.time()
        with self._transaction() as db:
            added = db.execute(
                "INSERT INTO results (work_key, case_id, version, study_uid, sr_sop_uid, "
                "sr_series_uid, scores, files, created_at) VALUES (:work_key, :case_id, "
                ":version, :study_uid, :sr_sop_uid, :sr_series_uid, :scores, :files, :now) "
                "ON CONFLICT(work_key) DO NOTHING",
                {**row, "now": now},
            ).rowcount
            if added:
                db.executemany(
                    "INSERT INTO exports (work_key, destination, state, next_at) "
                    "VALUES (?, ?, ?, ?)",
                    [(row["work_key"], d, ExportState.PENDING, now) for d in destinations],
                )
        return bool(added)

    def update_export(self, export_id: int, state: ExportState, attempts: int, next_at: float,
                      error: str | None, verified_by: str | None = None) -> None:  # fmt: skip
        """Record the outcome of one try of an export (``verified_by``: how a sent export was
        read back from its destination, when it was)."""
        with self._transaction() as db:
            db.execute(
                "UPDATE exports SET state = ?, attempts = ?, next_at = ?, last_error = ?, "
                "verified_by = ?, sent_at = CASE WHEN ? THEN ? ELSE sent_at END WHERE id = ?",
                (
                    state,
                    attempts,
                    next_at,
                    error,
                    verified_by,
                    state == ExportState.SENT,
                    time.time(),
                    export_id,
                ),
            )

    def await_commitment(self, export_id: int, attempts: int, transaction_uid: str,
                         deadline: float, wait: bool,
                         verified_by: str | None = None) -> None:  # fmt: skip
        """A send succeeded and its storage commitment was asked under ``transaction_uid``:
        ``wait`` (required) keeps the export committing until ``deadline``; otherwise it is
        sent and the report, when it comes, only records who committed (``verified_by``: how
        the send was read back, for an optional commitment)."""
        state = ExportState.COMMITTING if wait else ExportState.SENT
        with self._transaction() as db:
            db.execute(
                "UPDATE exports SET state = ?, attempts = ?, next_at = ?, last_error = NULL, "
                "transaction_uid = ?, committed_by = NULL, verified_by = ?, sent_at = ? "
                "WHERE id = ?",
                (state, attempts, deadline, transaction_uid, verified_by, time.time(), export_id),
            )

    def export_of_transaction(self, transaction_uid: str) -> ExportRow | None:
        """The export whose last send asked for commitment under ``transaction_uid``."""
        rows = self._read(self._EXPORTS + " WHERE e.transaction_uid = ?", (transaction_uid,))
        return ExportRow.from_row(rows[0]) if rows else None

    def record_committed(self, export_id: int, committed_by: str) -> None:
        """Every object of the export's last send was committed by ``committed_by``: it is
        sent, also when the report came after its deadline (nothing to send again)."""
        with self._transaction() as db:
            db.execute(
                "UPDATE exports SET state = ?, committed_by = ?, last_error = NULL WHERE id = ?",
                (ExportState.SENT, committed_by, export_id),
            )

    def commitments_overdue(self, now: float) -> list[ExportRow]:
        """Committing exports whose report did not come in time."""
        rows = self._read(
            self._EXPORTS + " WHERE e.state = ? AND e.next_at <= ? ORDER BY e.id",
            (ExportState.COMMITTING, now),
        )
        return [ExportRow.from_row(r) for r in rows]

    def series_of_study(self, study_uid: str) -> list[SeriesRow]:
        """A study's series in series-number order, each with its instance count."""
        rows = self._read(
            "SELECT r.*, COUNT(i.sop_uid) AS instances FROM series r LEFT JOIN instances i "
            "USING (series_uid) WHERE r.study_uid = ? GROUP BY r.series_uid "
            "ORDER BY r.series_number, r.series_uid",
            (study_uid,),
        )
        return [SeriesRow.from_row(r) for r in rows]

    def readings(self, case_id: str) -> dict[str, str]:
        """The radiologist-read values entered for a case (feature name -> value as entered)."""
        rows = self._read("SELECT vals FROM readings WHERE case_id = ?", (case_id,))
        return dict(json.loads(rows[0]["vals"])) if rows else {}

    def save_readings(
        self, case_id: str, values: dict[str, str], who: str, via: str
    ) -> ReadingsSaved:
        """Store a case's readings (an empty value removes one) with an audit row per change.

        A case past waiting gets a new version, ready again, so that it is re-scored with the
        readings (its new SR supersedes the last one); a waiting case keeps its version.
        ``KeyError`` when there is no such case.
        """
        now = time.time()
        with self._transaction() as db:
            case = db.execute("SELECT * FROM cases WHERE case_id = ?", (case_id,)).fetchone()
            if case is None:
                raise KeyError(case_id)
            row = db.execute("SELECT vals FROM readings WHERE case_id = ?", (case_id,)).fetchone()
            old: dict[str, str] = json.loads(row["vals"]) if row else {}
            new = {k: v for k, v in {**old, **values}.items() if v != ""}
            changes = [
                (name, old.get(name), new.get(name))
                for name in sorted(set(old) | set(new))
                if old.get(name) != new.get(name)
            ]
            version = int(case["version"])
            if not changes:
                return ReadingsSaved(version, [], False)
            db.execute(
                "INSERT INTO readings VALUES (?, ?, ?, ?) ON CONFLICT(case_id) DO UPDATE SET "
                "vals = excluded.vals, updated_at = excluded.updated_at, "
                "updated_by = excluded.updated_by",
                (case_id, json.dumps(new, sort_keys=True), now, who),
            )
            fingerprint = case_fingerprint(json.loads(case["inputs"] or "{}"), new)
            rescore = case["state"] not in (CaseState.WAITING, CaseState.HELD)
            if rescore:
                version += 1
                check_transition(CaseState(case["state"]), CaseState.READY, new_version=True)
                listed = ", ".join(f"{n} {o or '-'} -> {v or '-'}" for n, o, v in changes)
                db.execute(
                    "UPDATE cases SET version = ?, state = ?, reason = ?, fingerprint = ?, "
                    "updated_at = ? WHERE case_id = ?",
                    (version, CaseState.READY, f"re-scoring: readings changed ({listed})",
                     fingerprint, now, case_id),
                )  # fmt: skip
                _append_history(db, case_id, now)
            else:
                db.execute(
                    "UPDATE cases SET fingerprint = ? WHERE case_id = ?", (fingerprint, case_id)
                )
            db.executemany(
                "INSERT INTO reading_audit (case_id, case_version, field, old_value, new_value, "
                "who, via, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(case_id, version, n, o, v, who, via, now) for n, o, v in changes],
            )
        return ReadingsSaved(version, changes, rescore)

    def choose_timepoints(
        self,
        patient_id: str,
        baseline_study_uid: str | None,
        restaging_study_uid: str | None,
        who: str,
        via: str,
        note: str = "",
    ) -> None:
        """Record an operator's choice of a patient's baseline and restaging studies (audited;
        ``None`` for both: back to larc's own rules). The assembler applies it on its next
        pass (:meth:`take_new_choices`): the patient's cases are decided again, a held case as
        a new version. ``ValueError`` when a study is not the patient's or the restaging is not
        dated after the baseline (date order binds operators too)."""
        if restaging_study_uid and not baseline_study_uid:
            raise ValueError("choose the baseline study too (a restaging needs its baseline)")
        with self._transaction() as db:
            known = db.execute("SELECT 1 FROM patients WHERE patient_id = ?", (patient_id,))
            if known.fetchone() is None:
                raise ValueError("no such patient in the index")
            dates: dict[str, datetime.date] = {}
            for uid in (baseline_study_uid, restaging_study_uid):
                if not uid:
                    continue
                row = db.execute(
                    "SELECT study_date FROM studies WHERE study_uid = ? AND patient_id = ?",
                    (uid, patient_id),
                ).fetchone()
                if row is None:
                    raise ValueError(f"study {uid} is not one of this patient's studies")
                date = study_date(row["study_date"] or "")
                if date is None:
                    raise ValueError(f"study {uid} has no valid StudyDate: it cannot be ordered")
                dates[uid] = date
            if baseline_study_uid and restaging_study_uid:
                if baseline_study_uid == restaging_study_uid:
                    raise ValueError("the baseline and the restaging must be different studies")
                if not dates[baseline_study_uid] < dates[restaging_study_uid]:
                    raise ValueError(
                        f"the restaging study ({dates[restaging_study_uid]}) must be dated "
                        f"after the baseline ({dates[baseline_study_uid]})"
                    )
            db.execute(
                "INSERT INTO timepoint_choices (patient_id, baseline_study_uid, "
                "restaging_study_uid, who, via, note, at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (patient_id, baseline_study_uid, restaging_study_uid, who, via, note, time.time()),
            )

    def timepoint_choice(self, patient_id: str) -> TimepointChoiceRow | None:
        """The operator's latest choice of timepoints for a patient (``None``: larc's rules)."""
        rows = self._read(
            "SELECT * FROM timepoint_choices WHERE patient_id = ? ORDER BY id DESC LIMIT 1",
            (patient_id,),
        )
        if not rows or rows[0]["baseline_study_uid"] is None:
            return None
        return TimepointChoiceRow.from_row(rows[0])

    def timepoint_choices(self, patient_id: str) -> list[TimepointChoiceRow]:
        """Every choice of timepoints made for a patient, newest first (the audit)."""
        rows = self._read(
            "SELECT * FROM timepoint_choices WHERE patient_id = ? ORDER BY id DESC",
            (patient_id,),
        )
        return [TimepointChoiceRow.from_row(r) for r in rows]

    def take_new_choices(self) -> list[str]:
        """The patients with a choice of timepoints not yet applied; marks them applied."""
        with self._transaction() as db:
            rows = db.execute(
                "SELECT DISTINCT patient_id FROM timepoint_choices WHERE applied_at IS NULL"
            ).fetchall()
            db.execute(
                "UPDATE timepoint_choices SET applied_at = ? WHERE applied_at IS NULL",
                (time.time(),),
            )
        return [r["patient_id"] for r in rows]

    # -- automatic masks -------------------------------------------------------------------------

    def request_auto_mask(
        self, image_series_uid: str, study_uid: str, patient_id: str, model: str
    ) -> bool:
        """Ask for the automatic tumour mask of an image series (once per series); whether
        this call asked (``False``: it was asked before)."""
        now = time.time()
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT OR IGNORE INTO auto_masks (image_series_uid, study_uid, patient_id, "
                "model, state, requested_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (image_series_uid, study_uid, patient_id, model, AutoMaskState.REQUESTED,
                 now, now),
            )  # fmt: skip
        return cursor.rowcount == 1

    def set_auto_mask(
        self,
        image_series_uid: str,
        state: AutoMaskState,
        reason: str = "",
        *,
        task: str | None = None,
        seg_series_uid: str | None = None,
        volume_ml: float | None = None,
        mean_probability: float | None = None,
    ) -> None:
        """Move an automatic mask on; a finished one (passed or failed) is announced to the
        assembler (:meth:`take_finished_auto_masks`)."""
        finished = state in (AutoMaskState.PASSED, AutoMaskState.FAILED)
        with self._transaction() as db:
            db.execute(
                "UPDATE auto_masks SET state = ?, reason = ?, task = ?, seg_series_uid = "
                "COALESCE(?, seg_series_uid), volume_ml = COALESCE(?, volume_ml), "
                "mean_probability = COALESCE(?, mean_probability), updated_at = ?, "
                "announced = CASE WHEN ? THEN 0 ELSE announced END WHERE image_series_uid = ?",
                (state, reason, task, seg_series_uid, volume_ml, mean_probability, time.time(),
                 finished, image_series_uid),
            )  # fmt: skip

    def auto_mask(self, image_series_uid: str) -> AutoMaskRow | None:
        """The automatic mask of an image series, or ``None``."""
        rows = self._read(
            "SELECT * FROM auto_masks WHERE image_series_uid = ?", (image_series_uid,)
        )
        return AutoMaskRow.from_row(rows[0]) if rows else None

    def auto_mask_of_seg(self, seg_series_uid: str) -> AutoMaskRow | None:
        """The automatic mask stored as the SEG series ``seg_series_uid``, or ``None`` (a
        drawn mask)."""
        rows = self._read("SELECT * FROM auto_masks WHERE seg_series_uid = ?", (seg_series_uid,))
        return AutoMaskRow.from_row(rows[0]) if rows else None

    def auto_masks(
        self, *states: AutoMaskState, patient_id: str | None = None
    ) -> list[AutoMaskRow]:
        """Automatic masks in ``states`` (all when none given), of one patient or all."""
        where: list[str] = []
        params: list[str] = []
        if states:
            where.append(f"state IN ({', '.join('?' * len(states))})")
            params.extend(states)
        if patient_id is not None:
            where.append("patient_id = ?")
            params.append(patient_id)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        rows = self._read(f"SELECT * FROM auto_masks{clause} ORDER BY requested_at", tuple(params))  # noqa: S608
        return [AutoMaskRow.from_row(r) for r in rows]

    def take_finished_auto_masks(self) -> list[str]:
        """The patients with an automatic mask finished or reviewed since the last call."""
        with self._transaction() as db:
            rows = db.execute(
                "SELECT DISTINCT patient_id FROM auto_masks WHERE announced = 0"
            ).fetchall()
            db.execute("UPDATE auto_masks SET announced = 1 WHERE announced = 0")
        return [r["patient_id"] for r in rows]

    def review_auto_mask(
        self, image_series_uid: str, decision: str, who: str, via: str, note: str = ""
    ) -> None:
        """A radiologist accepts or rejects an automatic outline (audited); the assembler
        decides the patient's cases again: accepted, the next SR records it as reviewed;
        rejected, the case waits for a drawn mask. ``ValueError`` for no such mask, one that
        is not stored (failed or still being made) or another decision."""
        if decision not in ("accepted", "rejected"):
            raise ValueError("a review is 'accepted' or 'rejected'")
        now = time.time()
        with self._transaction() as db:
            row = db.execute(
                "SELECT state FROM auto_masks WHERE image_series_uid = ?", (image_series_uid,)
            ).fetchone()
            if row is None:
                raise ValueError("no automatic mask on that series")
            if row["state"] != AutoMaskState.PASSED:
                raise ValueError(
                    f"the automatic mask is {row['state']}: there is no outline to review"
                )
            db.execute(
                "UPDATE auto_masks SET review = ?, reviewed_by = ?, reviewed_at = ?, "
                "review_note = ?, announced = 0 WHERE image_series_uid = ?",
                (decision, who, now, note, image_series_uid),
            )
            db.execute(
                "INSERT INTO auto_mask_reviews (image_series_uid, decision, who, via, note, at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (image_series_uid, decision, who, via, note, now),
            )

    def auto_mask_reviews(self, image_series_uid: str) -> list[AutoMaskReviewRow]:
        """Every review of an automatic mask, newest first (the audit)."""
        rows = self._read(
            "SELECT * FROM auto_mask_reviews WHERE image_series_uid = ? ORDER BY id DESC",
            (image_series_uid,),
        )
        return [AutoMaskReviewRow.from_row(r) for r in rows]

    # -- named readers ---------------------------------------------------------------------------

    def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return list(self._db.execute(sql, params).fetchall())

    def patients(self) -> list[PatientRow]:
        """Every patient, by patient id."""
        return [PatientRow.from_row(r) for r in self._read("SELECT * FROM patients ORDER BY 1")]

    def studies_of_patient(self, patient_id: str, stable_only: bool = False) -> list[StudyRow]:
        """A patient's studies by date, each with its instance count."""
        sql = (
            "SELECT s.*, (SELECT COUNT(*) FROM instances i JOIN series r USING (series_uid) "
            "WHERE r.study_uid = s.study_uid) AS instances FROM studies s WHERE patient_id = ? "
        )
        if stable_only:
            sql += "AND stable_at IS NOT NULL "
        rows = self._read(sql + "ORDER BY study_date, study_time, study_uid", (patient_id,))
        return [StudyRow.from_row(r) for r in rows]

    def has_unstable_study(self, patient_id: str | None = None) -> bool:
        """Whether a study (of ``patient_id``, or any) is still receiving."""
        sql = "SELECT 1 FROM studies WHERE stable_at IS NULL"
        if patient_id is None:
            return bool(self._read(sql + " LIMIT 1"))
        return bool(self._read(sql + " AND patient_id = ? LIMIT 1", (patient_id,)))

    def study_uids_of_patient(self, patient_id: str) -> set[str]:
        """The Study Instance UIDs held for a patient."""
        rows = self._read("SELECT study_uid FROM studies WHERE patient_id = ?", (patient_id,))
        return {r["study_uid"] for r in rows}

    def series(self, series_uid: str) -> SeriesRow | None:
        """One series with its instance count, or ``None``."""
        rows = self._read(
            "SELECT r.*, COUNT(i.sop_uid) AS instances FROM series r LEFT JOIN instances i "
            "USING (series_uid) WHERE r.series_uid = ? GROUP BY r.series_uid",
            (series_uid,),
        )
        return SeriesRow.from_row(rows[0]) if rows else None

    def instance_paths(self, series_uid: str) -> list[Path]:
        """The stored files of a series, in instance-number order."""
        rows = self._read(
            "SELECT path FROM instances WHERE series_uid = ? ORDER BY instance_number, sop_uid",
            (series_uid,),
        )
        return [Path(r["path"]) for r in rows]

    def first_instance(self, series_uid: str) -> StoredInstance | None:
        """The series' first instance by number (then UID), or ``None``."""
        rows = self._read(
            "SELECT * FROM instances WHERE series_uid = ? ORDER BY instance_number, sop_uid "
            "LIMIT 1",
            (series_uid,),
        )
        return StoredInstance.from_row(rows[0]) if rows else None

    def case(self, case_id: str) -> CaseRow | None:
        """One case, or ``None``."""
        rows = self._read("SELECT * FROM cases WHERE case_id = ?", (case_id,))
        return CaseRow.from_row(rows[0]) if rows else None

    def cases(
        self, *states: CaseState, patient_id: str | None = None, with_task: bool = False
    ) -> list[CaseRow]:
        """Cases in any of ``states`` (all when none given), of ``patient_id`` when given,
        only those handed to an executor when ``with_task``; oldest change first."""
        where: list[str] = []
        params: list[str] = []
        if states:
            where.append(f"state IN ({', '.join('?' * len(states))})")
            params += [str(s) for s in states]
        if patient_id is not None:
            where.append("patient_id = ?")
            params.append(patient_id)
        if with_task:
            where.append("task IS NOT NULL")
        # only constant fragments and ? placeholders are joined: values travel as parameters
        sql = "SELECT * FROM cases" + (" WHERE " + " AND ".join(where) if where else "")  # noqa: S608
        rows = self._read(sql + " ORDER BY updated_at, case_id", tuple(params))
        return [CaseRow.from_row(r) for r in rows]

    def case_states(self) -> list[CaseState]:
        """The state of every case (for progress checks)."""
        return [CaseState(r["state"]) for r in self._read("SELECT state FROM cases")]

    def version_started_at(self, case_id: str, version: int) -> float | None:
        """When a case version first entered its history (it became ready or waiting)."""
        rows = self._read(
            "SELECT MIN(at) AS at FROM case_history WHERE case_id = ? AND version = ?",
            (case_id, version),
        )
        return float(rows[0]["at"]) if rows and rows[0]["at"] is not None else None

    def result(self, work_key: str) -> ResultRow | None:
        """The result stored under a work key, or ``None``."""
        rows = self._read("SELECT * FROM results WHERE work_key = ?", (work_key,))
        return ResultRow.from_row(rows[0]) if rows else None

    def latest_result(self, case_id: str, other_than: str | None = None) -> ResultRow | None:
        """A case's newest result (other than work key ``other_than``), or ``None``."""
        rows = self._read(
            "SELECT * FROM results WHERE case_id = ? AND work_key != ? "
            "ORDER BY created_at DESC LIMIT 1",
            (case_id, other_than or ""),
        )
        return ResultRow.from_row(rows[0]) if rows else None

    _EXPORTS = (
        "SELECT e.*, r.files, r.case_id, r.version FROM exports e JOIN results r USING (work_key)"
    )

    def exports_of(self, work_key: str) -> list[ExportRow]:
        """The exports of one result, in the order they were queued."""
        rows = self._read(self._EXPORTS + " WHERE e.work_key = ? ORDER BY e.id", (work_key,))
        return [ExportRow.from_row(r) for r in rows]

    def exports_due(self, now: float) -> list[ExportRow]:
        """Pending exports whose next try is due."""
        rows = self._read(
            self._EXPORTS + " WHERE e.state = ? AND e.next_at <= ? ORDER BY e.id",
            (ExportState.PENDING, now),
        )
        return [ExportRow.from_row(r) for r in rows]

    def exports_in(self, *states: ExportState) -> list[ExportRow]:
        """Exports in any of ``states``."""
        rows = self._read(
            self._EXPORTS + f" WHERE e.state IN ({', '.join('?' * len(states))}) ORDER BY e.id",
            tuple(str(s) for s in states),
        )
        return [ExportRow.from_row(r) for r in rows]

    def recent_rejections(self, limit: int = 20) -> list[RejectionRow]:
        """The latest refused instances, newest first."""
        rows = self._read("SELECT * FROM rejections ORDER BY id DESC LIMIT ?", (limit,))
        return [RejectionRow.from_row(r) for r in rows]

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        """Raw read-only SQL: for the web read model (:mod:`daemon.web.queries`,
        :mod:`daemon.web.monitor`), tests and one-off reports. Everything else reads through the
        named readers above."""
        return self._read(sql, params)
