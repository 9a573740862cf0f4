"""Synthetic index rows for the web app's tests and benchmark: many cases without DICOM."""

from __future__ import annotations

import json
import sqlite3
import time

# state of patient n's two cases: STATES[n % len(STATES)]
STATES = ("exported", "exported", "exported", "waiting", "failed", "running", "queued")


def seed_cases(db: sqlite3.Connection, patients: int) -> None:
    """Two cases per patient: response (P(good) varies) and baseline (risk high/low)."""
    now = time.time()
    pts, studies, cases, results = [], [], [], []
    for n in range(patients):
        pid = f"P{n:07d}"
        pts.append((pid, f"DOE^JANE{n}", "19600101", "F", now))
        base, rest = f"1.2.3.{n}.1", f"1.2.3.{n}.2"
        day = 1 + n % 28
        studies += [
            (base, pid, f"2024{1 + n % 12:02d}{day:02d}", "baseline", now - 3600),
            (rest, pid, f"2025{1 + n % 12:02d}{day:02d}", "restaging", now - 1800),
        ]
        state = STATES[n % len(STATES)]
        for kind, study in (("response", rest), ("baseline", base)):
            cid = f"{kind[:4]}-{n:07d}"
            restaging = rest if kind == "response" else None
            cases.append((cid, pid, kind, 1, state, f"reason {state}", base, restaging, "{}",
                          f"fp{n}", now - n))  # fmt: skip
            if state == "exported":
                scores = (
                    {
                        "model": "larc 1.0",
                        "response_FDL": {"p_good_response": (n % 97) / 97, "predicted": "good"},
                    }
                    if kind == "response"
                    else {
                        "model": "larc 1.0",
                        "distant_metastasis": {
                            "risk_group": "high" if n % 3 == 0 else "low",
                            "dlrs": 0.1,
                            "dmfs_3y": 0.8,
                        },
                    }
                )
                results.append((f"key-{cid}", cid, 1, study, f"2.25.{n}", f"2.25.{n}.1",
                                json.dumps(scores), "", now - n + 5))  # fmt: skip
    db.executemany("INSERT INTO patients VALUES (?, ?, ?, ?, ?)", pts)
    db.executemany(
        "INSERT INTO studies (study_uid, patient_id, study_date, timepoint, first_received, "
        "last_received, stable_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        [(u, p, d, t, r, r, r) for u, p, d, t, r in studies],
    )
    db.executemany(
        "INSERT INTO cases (case_id, patient_id, kind, version, state, reason, "
        "baseline_study_uid, restaging_study_uid, inputs, fingerprint, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        cases,
    )
    db.executemany("INSERT INTO results VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", results)
    db.commit()
