"""``predictions.csv`` of ``larc evaluate``: one row per patient and case kind, every score the
bundle gives, the observed outcome, and why a patient could not be scored - for the AI team to
audit, re-analyse or join with their own data.

Patients are named by their id, or with ``--hash-ids`` by a keyed hash (HMAC-SHA256 with a
site's secret key) so that the file can leave the hospital without ids and still be joined
back by whoever holds the key.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.kinds import SIGNATURES
from pipeline.training.cohort import patient_hash
from pipeline.validation import withheld

RESPONSE_SCORES = ("p_good_FDL", "p_good_CR", "p_good_CRD", *SIGNATURES)
BASELINE_SCORES = ("t2w_prob", "adc_prob", "dl_prob", "dlrs", "dm_risk_group", "dmfs_3y",
                   "nomogram_dmfs_3y", "subtype", "rrs", "rfs_5y")  # fmt: skip
COLUMNS = ("patient", "kind", "split", *RESPONSE_SCORES, *BASELINE_SCORES, "good_response",
           "trg", "dm_event", "dm_time_months", "rfs_event", "rfs_time_months", "not_scored",
           "not_sent_by_default")  # fmt: skip
OBSERVED = {"response": ("good_response", "trg"),
            "baseline": ("dm_event", "dm_time_months", "rfs_event", "rfs_time_months")}  # fmt: skip


def keyed_id(patient_id: str, key: bytes) -> str:
    """The patient's id as HMAC-SHA256 under ``key`` (hex, 32 characters)."""
    return hmac.new(key, patient_id.encode(), hashlib.sha256).hexdigest()[:32]


def split_of(patient_id: str, manifest: Mapping[str, Any]) -> str:
    """train, held-out (kept out of training by larc train models) or external."""
    data = manifest.get("training_data") or {}
    hashed = patient_hash(patient_id)
    if hashed in set(data.get("train_patients_sha256", [])):
        return "train"
    if hashed in set(data.get("test_patients_sha256", [])):
        return "held-out"
    return "external"


def _response_values(scores: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for model in ("FDL", "CR", "CRD"):
        found = scores.get(f"response_{model}")
        if found:
            out[f"p_good_{model}"] = found["p_good_response"]
    out |= scores.get("signatures") or {}
    return out


def _baseline_values(scores: Mapping[str, Any]) -> dict[str, Any]:
    dm = scores.get("distant_metastasis") or {}
    out = {k: dm[k] for k in ("t2w_prob", "adc_prob", "dl_prob", "dlrs", "dmfs_3y",
                              "nomogram_dmfs_3y") if k in dm}  # fmt: skip
    if "risk_group" in dm:
        out["dm_risk_group"] = dm["risk_group"]
    recurrence = scores.get("recurrence") or {}
    out |= {k: recurrence[k] for k in ("subtype", "rrs", "rfs_5y") if k in recurrence}
    return out


def write_predictions(
    path: Path,
    manifest: Mapping[str, Any],
    scores: Mapping[str, Mapping[str, Any]],
    rows: Mapping[str, Mapping[str, str]],
    skipped: Mapping[str, str],
    key: bytes | None = None,
) -> int:
    """Write the file (scores: every output, as :meth:`Bundle.score` gives them with
    ``require_validated=False``; ``skipped``: patients that could not be prepared, with why;
    ``key``: hash the ids with it). Returns the number of rows."""
    gate = withheld(manifest)
    written = 0
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for patient in sorted(set(scores) | set(skipped)):
            for kind in ("response", "baseline"):
                row: dict[str, Any] = {
                    "patient": keyed_id(patient, key) if key else patient,
                    "kind": kind,
                    "split": split_of(patient, manifest),
                }
                outcome = rows.get(patient, {})
                row |= {c: outcome.get(c, "") for c in OBSERVED[kind]}
                if patient in scores:
                    found = scores[patient]
                    row |= (_response_values if kind == "response" else _baseline_values)(found)
                    row["not_scored"] = "; ".join(
                        f"{name}: {why}" for name, why in sorted(found["not_scored"].items())
                        if name.startswith("response_") == (kind == "response")
                    )  # fmt: skip
                    row["not_sent_by_default"] = "; ".join(
                        name for name in gate if name.startswith("response_") == (
                            kind == "response")
                    )  # fmt: skip
                else:
                    row["not_scored"] = f"could not be prepared: {skipped[patient]}"
                writer.writerow(row)
                written += 1
    return written
