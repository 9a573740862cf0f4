"""What the worklist and the case page show, read from the index (SQL here, no HTML)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom

from daemon.cases import CaseKind, CaseState, recorded_series
from daemon.index import Index
from daemon.web.outlines import case_outlines, outline_marks
from dicom_io.sr import read_report
from pipeline.validation import unavailable

STATES = tuple(CaseState)
KINDS = (CaseKind.RESPONSE, CaseKind.BASELINE)
RISK_GROUPS = ("high", "low")
SR_MODALITY = "SR"

# sort key -> SQL expression (an allow-list: nothing from the request reaches the SQL text)
SORTS = {
    "patient": "c.patient_id",
    "kind": "c.kind",
    "state": "c.state",
    "study_date": "study_date",
    "received": "received_at",
    "scored": "scored_at",
    "p_good": "p_good",
    "risk": "risk_group",
    "updated": "c.updated_at",
}

_SELECT = """
SELECT c.case_id, c.patient_id, p.patient_name, c.kind, c.version, c.state, c.reason,
       c.updated_at, c.inputs, b.study_date AS baseline_date, r.study_date AS restaging_date,
       COALESCE(r.study_date, b.study_date) AS study_date,
       MIN(COALESCE(b.first_received, r.first_received),
           COALESCE(r.first_received, b.first_received)) AS received_at,
       res.scores AS scores, res.created_at AS scored_at, res.version AS result_version,
       json_extract(res.scores, '$.model') AS model,
       json_extract(res.scores, '$.response_FDL.p_good_response') AS p_good,
       json_extract(res.scores, '$.distant_metastasis.risk_group') AS risk_group
FROM cases c JOIN patients p USING (patient_id)
LEFT JOIN studies b ON b.study_uid = c.baseline_study_uid
LEFT JOIN studies r ON r.study_uid = c.restaging_study_uid
LEFT JOIN results res ON res.work_key = (
    SELECT work_key FROM results WHERE case_id = c.case_id ORDER BY created_at DESC LIMIT 1)
"""


class QueryError(ValueError):
    """A filter or sort the worklist does not know; the message says what is allowed."""


@dataclass(frozen=True)
class WorklistQuery:
    """Filters, sort and page of the worklist (all optional)."""

    state: str | None = None
    kind: str | None = None
    risk_group: str | None = None
    date_from: str | None = None  # YYYY-MM-DD, on the case's latest study date
    date_to: str | None = None
    patient: str | None = None  # patient id, prefix or part
    sort: str = "updated"
    order: str = "desc"
    page: int = 1
    page_size: int = 50

    def check(self) -> None:
        """:class:`QueryError` naming the first bad parameter."""
        for name, value, allowed in (
            ("state", self.state, STATES),
            ("kind", self.kind, KINDS),
            ("risk_group", self.risk_group, RISK_GROUPS),
            ("sort", self.sort, tuple(SORTS)),
            ("order", self.order, ("asc", "desc")),
        ):
            if value and value not in allowed:
                raise QueryError(f"{name}={value!r}: use one of {', '.join(allowed)}")
        for name, value in (("date_from", self.date_from), ("date_to", self.date_to)):
            if value and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
                raise QueryError(f"{name}={value!r}: use YYYY-MM-DD")
        if self.page < 1 or not 1 <= self.page_size <= 500:
            raise QueryError("page and page_size: use a page of 1 or more, a page_size of 1-500")


def _where(query: WorklistQuery) -> tuple[str, list[Any]]:
    clauses, params = [], []
    if query.state:
        clauses.append("c.state = ?")
        params.append(query.state)
    if query.kind:
        clauses.append("c.kind = ?")
        params.append(query.kind)
    if query.risk_group:
        clauses.append("risk_group = ?")
        params.append(query.risk_group)
    if query.date_from:
        clauses.append("study_date >= ?")
        params.append(query.date_from.replace("-", ""))
    if query.date_to:
        clauses.append("study_date <= ?")
        params.append(query.date_to.replace("-", ""))
    if query.patient:
        escaped = re.sub(r"([\\%_])", r"\\\1", query.patient.strip())
        clauses.append("c.patient_id LIKE ? ESCAPE '\\'")
        params.append(f"%{escaped}%")
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def study_date(value: str | None) -> str:
    """YYYYMMDD as YYYY-MM-DD (as is when it is something else)."""
    if value and re.fullmatch(r"\d{8}", value):
        return f"{value[:4]}-{value[4:6]}-{value[6:]}"
    return value or ""


def timestamp(value: float | None) -> str | None:
    """Epoch seconds as local ISO time (minutes)."""
    if value is None:
        return None
    return dt.datetime.fromtimestamp(value).isoformat(sep=" ", timespec="minutes")


def score_summary(kind: str, scores: dict[str, Any] | None) -> dict[str, Any]:
    """The scores the worklist shows: P(good response) per model, or the DM risk."""
    if not scores:
        return {}
    out: dict[str, Any] = {
        # outputs not sent (not in the bundle, or not backed by its validation), in words
        "unavailable": unavailable(scores, kind == "response")
    }
    if kind == "response":
        for model in ("FDL", "CR", "CRD"):
            found = scores.get(f"response_{model}")
            if found:
                out[f"p_good_{model.lower()}"] = found["p_good_response"]
        fdl = scores.get("response_FDL")
        if fdl:
            out["predicted"] = fdl["predicted"]
        return out
    dm = scores.get("distant_metastasis") or {}
    out |= {k: dm[k] for k in ("risk_group", "dlrs", "dmfs_3y", "nomogram_dmfs_3y") if k in dm}
    if scores.get("recurrence"):
        out["subtype"] = scores["recurrence"]["subtype"]
    return out


def _case_fields(row: Any) -> dict[str, Any]:
    """What the worklist row and the case page both say of a case (row of cases + patients)."""
    return {
        "case_id": row["case_id"],
        "patient_id": row["patient_id"],
        "patient_name": row["patient_name"] or "",
        "kind": row["kind"],
        "version": row["version"],
        "state": row["state"],
        "reason": row["reason"] or "",
        "updated_at": timestamp(row["updated_at"]),
    }


def _row(row: Any, timepoints: dict[str, list[str]], outlines: list[str]) -> dict[str, Any]:
    scores = json.loads(row["scores"]) if row["scores"] else None
    return {
        **_case_fields(row),
        "automatic_outlines": outlines,
        "baseline_date": study_date(row["baseline_date"]),
        "restaging_date": study_date(row["restaging_date"]),
        "timepoints": timepoints.get(row["patient_id"], []),
        "scores": score_summary(row["kind"], scores),
        "scored_version": row["result_version"],
        "model": row["model"],
        "received_at": timestamp(row["received_at"]),
        "scored_at": timestamp(row["scored_at"]),
    }


def worklist(index: Index, query: WorklistQuery) -> dict[str, Any]:
    """One page of cases and the total, with the count of cases in each state."""
    query.check()
    where, params = _where(query)
    column = SORTS[query.sort]
    order = "ASC" if query.order == "asc" else "DESC"
    rows = index.query(
        f"SELECT * FROM ({_SELECT}) c {where} "  # noqa: S608 (allow-listed)
        f"ORDER BY {column} IS NULL, {column} {order}, c.case_id LIMIT ? OFFSET ?",
        (*params, query.page_size, (query.page - 1) * query.page_size),
    )
    total = index.query(
        f"SELECT COUNT(*) AS n FROM ({_SELECT}) c {where}",  # noqa: S608 (allow-listed)
        tuple(params),
    )[0]["n"]
    patients = sorted({r["patient_id"] for r in rows})
    timepoints: dict[str, list[str]] = {}
    if patients:
        marks = ",".join("?" * len(patients))
        for found in index.query(
            f"SELECT DISTINCT patient_id, timepoint FROM studies "  # noqa: S608 (placeholders)
            f"WHERE patient_id IN ({marks}) AND timepoint IS NOT NULL ORDER BY timepoint",
            tuple(patients),
        ):
            timepoints.setdefault(found["patient_id"], []).append(found["timepoint"])
    outlines = outline_marks(index, rows)
    counts = {
        r["state"]: r["n"]
        for r in index.query("SELECT state, COUNT(*) AS n FROM cases GROUP BY state")
    }
    return {
        "total": total,
        "page": query.page,
        "page_size": query.page_size,
        "pages": max(1, -(-total // query.page_size)),
        "counts": counts,
        "items": [_row(r, timepoints, outlines.get(r["case_id"], [])) for r in rows],
    }


def orthanc_study_id(patient_id: str, study_uid: str) -> str:
    """Orthanc's identifier of a study (SHA-1 of "PatientID|StudyInstanceUID" in 5 groups)."""
    digest = hashlib.sha1(f"{patient_id}|{study_uid}".encode()).hexdigest()  # noqa: S324
    return "-".join(digest[i : i + 8] for i in range(0, 40, 8))


def viewer_link(template: str | None, study: Any) -> str | None:
    """The PACS viewer URL of a study from ``web.viewer_url``."""
    if not template:
        return None
    return template.format(
        study_uid=study["study_uid"],
        patient_id=study["patient_id"],
        accession_number=study["accession_number"] or "",
        orthanc_study_id=orthanc_study_id(study["patient_id"], study["study_uid"]),
    )


def _result(index: Index, data_dir: Path, row: Any, kind: str) -> dict[str, Any]:
    files = [f for f in row["files"].split("\n") if f]
    sr: dict[str, Any] = {"sop_instance_uid": row["sr_sop_uid"]}
    images = []
    for name in files:
        path = data_dir / name
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (OSError, pydicom.errors.InvalidDicomError) as exc:
            sr.setdefault("unreadable", []).append(f"{name}: {exc}")
            continue
        if ds.Modality == SR_MODALITY:  # no pixel data: the header read holds the content
            report = read_report(ds)
            sr["groups"] = [
                {
                    "method": g.method,
                    "time_point": g.time_point,
                    "measurements": [
                        {"code": c, "name": n, "value": v, "unit": u}
                        for c, n, v, u in g.measurements
                    ],
                    "evaluations": [
                        {"code": c, "name": n, "value": v} for c, n, v in g.evaluations
                    ],
                }
                for g in report.groups
            ]
            sr["comments"] = report.comments
            sr["predecessors"] = report.predecessors
        else:
            images.append(
                {"sop_instance_uid": str(ds.SOPInstanceUID), "caption": ds.get("ImageComments")}
            )
    scores = json.loads(row["scores"])
    exports = index.query(
        "SELECT destination, state, attempts, last_error, sent_at, committed_by, verified_by "
        "FROM exports "
        "WHERE work_key = ? ORDER BY id",
        (row["work_key"],),
    )
    return {
        "version": row["version"],
        "created_at": timestamp(row["created_at"]),
        "model": scores.get("model"),
        "scores": score_summary(kind, scores),
        "not_scored": {  # what this kind of case should have scored but could not
            name: why
            for name, why in (scores.get("not_scored") or {}).items()
            if name.startswith("response_") == (kind == "response")
        },
        "measured_features": scores.get("measured_features", []),
        "sr": sr,
        "images": images,
        "exports": [{**dict(e), "sent_at": timestamp(e["sent_at"])} for e in exports],
    }


def case_detail(
    index: Index, data_dir: Path, case_id: str, viewer_url: str | None = None
) -> dict[str, Any] | None:
    """Everything the case page shows; ``None`` when there is no such case."""
    rows = index.query(
        "SELECT c.*, p.patient_name, p.birth_date, p.sex FROM cases c JOIN patients p "
        "USING (patient_id) WHERE case_id = ?",
        (case_id,),
    )
    if not rows:
        return None
    case = rows[0]
    recorded = recorded_series(json.loads(case["inputs"] or "{}"), CaseKind(case["kind"])).values()
    masks = {uid for study in recorded for uid in study.masks}
    used = {uid for study in recorded for uid in study.images.values()}
    studies = []
    for study in index.query(
        "SELECT * FROM studies WHERE patient_id = ? ORDER BY study_date, study_time",
        (case["patient_id"],),
    ):
        series = index.series_of_study(study["study_uid"])
        studies.append(
            {
                "study_uid": study["study_uid"],
                "date": study_date(study["study_date"]),
                "description": study["description"] or "",
                "accession_number": study["accession_number"] or "",
                "timepoint": study["timepoint"],
                "timepoint_reason": study["timepoint_reason"] or "",
                "stable": study["stable_at"] is not None,
                "in_case": study["study_uid"]
                in (case["baseline_study_uid"], case["restaging_study_uid"]),
                "viewer_url": viewer_link(viewer_url, study),
                "series": [
                    {
                        "series_uid": s.series_uid,
                        "number": s.series_number,
                        "modality": s.modality,
                        "description": s.description or "",
                        "instances": s.instances,
                        "role": s.role,
                        "reason": s.role_reason or s.ignored_reason or "",
                        "used": s.series_uid in used,
                        "mask": s.series_uid in masks,
                    }
                    for s in series
                ],
            }
        )
    results = [
        _result(index, data_dir, r, case["kind"])
        for r in index.query(
            "SELECT * FROM results WHERE case_id = ? ORDER BY created_at DESC", (case_id,)
        )
    ]
    history = [
        {"version": h["version"], "state": h["state"], "reason": h["reason"] or "",
         "at": timestamp(h["at"])}
        for h in index.query(
            "SELECT * FROM case_history WHERE case_id = ? ORDER BY id DESC", (case_id,)
        )
    ]  # fmt: skip
    audit = [
        {**dict(a), "at": timestamp(a["at"])}
        for a in index.query(
            "SELECT case_version, field, old_value, new_value, who, via, at FROM reading_audit "
            "WHERE case_id = ? ORDER BY id DESC",
            (case_id,),
        )
    ]
    choices = [
        {"baseline_study_uid": c.baseline_study_uid, "restaging_study_uid": c.restaging_study_uid,
         "who": c.who, "via": c.via, "note": c.note, "at": timestamp(c.at)}
        for c in index.timepoint_choices(case["patient_id"])
    ]  # fmt: skip
    outlines = [
        {**o, "reviewed_at": timestamp(o["reviewed_at"]),
         "reviews": [{**r, "at": timestamp(r["at"])} for r in o["reviews"]]}
        for o in case_outlines(index, json.loads(case["inputs"] or "{}"), case["kind"])
    ]  # fmt: skip
    return {
        **_case_fields(case),
        "outlines": outlines,
        "studies": studies,
        "pairing_choices": choices,
        "results": results,
        "history": history,
        "readings": index.readings(case_id),
        "audit": audit,
    }


def image_path(index: Index, data_dir: Path, case_id: str, sop_uid: str) -> Path | None:
    """The stored Secondary Capture ``sop_uid`` of one of the case's results, or ``None``."""
    for row in index.query("SELECT files FROM results WHERE case_id = ?", (case_id,)):
        for name in row["files"].split("\n"):
            if name.endswith(f"/{sop_uid}.dcm"):
                return data_dir / str(name)
    return None
