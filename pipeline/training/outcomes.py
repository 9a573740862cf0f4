"""Outcome spreadsheets as hospitals keep them: CSV or Excel, with a site's own column names and
words, mapped to larc's columns and checked before anything is trained.

A mapping file (``--columns MAP.yaml``)::

    columns:                     # larc's column: the spreadsheet's column
      patient_id: "MRN"
      good_response: "Responder (0/1)"
      pre_mrt: "cT"
      dm_event: "Metastasis"
      dm_time_months: "Months to DM or last follow-up"
    values:                      # per larc column: the spreadsheet's word -> larc's value
      good_response: {"Responder": 1, "Non-responder": 0}

Without a mapping the spreadsheet's columns must carry larc's names. Common words are read as
they are in any case: yes/no, y/n, true/false, positive/negative for the 0/1 columns,
male/female (m/f) for sex, stages written T3a, cT3b, ypN1b, N2a for the stage columns. Every
value of every column larc reads is checked: :class:`OutcomesError` names each column that is
missing or unreadable, with the first bad value, its row and patient.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from pipeline.feature_names import CANDIDATES, parse_value

BINARY = {"good_response", "dm_event", "rfs_event", "pre_crm", "pre_emvi", "post_crm",
          "post_emvi"}  # fmt: skip
NUMBERS = {"dm_time_months", "rfs_time_months", "trg"}
OTHER = {"patient_id", "baseline_study_uid", "restaging_study_uid"}
KNOWN = (*sorted(OTHER), "good_response", "trg", "dm_event", "dm_time_months", "rfs_event",
         "rfs_time_months", "ypn_stage", *CANDIDATES)  # fmt: skip
_YES = {"1", "yes", "y", "true", "t", "positive", "pos", "+", "present", "ja", "oui", "si"}
_NO = {"0", "no", "n", "false", "f", "negative", "neg", "-", "absent", "nein", "non"}
_SEX = {"male": "M", "man": "M", "m": "M", "female": "F", "woman": "F", "f": "F", "w": "F"}


class OutcomesError(ValueError):
    """What is wrong with an outcomes spreadsheet or its mapping, every problem in one message."""


def read_table(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """(header, rows as text) of a CSV (any common delimiter) or an Excel workbook's first sheet."""
    if path.suffix.lower() in (".xlsx", ".xlsm"):
        import pandas as pd  # noqa: PLC0415  (only for Excel)

        frame = pd.read_excel(path, dtype=str, keep_default_na=False)
        header = [str(c).strip() for c in frame.columns]
        records = frame.to_dict(orient="records")
        return header, [{h: str(r[c]) for h, c in zip(header, frame.columns, strict=True)}
                        for r in records]  # fmt: skip
    with path.open(newline="", encoding="utf-8-sig") as handle:
        sample = handle.read(8192)
        handle.seek(0)
        try:
            dialect: Any = csv.Sniffer().sniff(sample, delimiters=",;\t")
        except csv.Error:
            dialect = csv.excel
        reader = csv.DictReader(handle, dialect=dialect)
        header = [h.strip() for h in reader.fieldnames or []]
        rows = [{h.strip(): (v or "") for h, v in row.items() if h is not None} for row in reader]
    return header, rows


def load_mapping(path: Path) -> dict[str, Any]:
    """A ``--columns`` file, checked: only larc's column names, text for columns, word maps."""
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise OutcomesError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict) or set(data) - {"columns", "values"}:
        raise OutcomesError(f"{path}: expected the keys 'columns' and 'values' only")
    columns = data.get("columns") or {}
    values = data.get("values") or {}
    problems = [f"'{k}' is not a column larc reads" for k in (*columns, *values) if k not in KNOWN]
    problems += [f"columns.{k}: give the spreadsheet's column name as text"
                 for k, v in columns.items() if not isinstance(v, str | int)]  # fmt: skip
    problems += [f"values.{k}: give a map of the spreadsheet's words to larc's values"
                 for k, v in values.items() if not isinstance(v, dict)]  # fmt: skip
    if problems:
        raise OutcomesError(f"{path}: " + "; ".join(problems) + f" (larc's columns: "
                            f"{', '.join(KNOWN)})")  # fmt: skip
    return {"columns": {k: str(v) for k, v in columns.items()},
            "values": {k: {str(w).strip().lower(): v for w, v in m.items()}
                       for k, m in values.items()}}  # fmt: skip


def _normalise(name: str, text: str, words: Mapping[str, Any]) -> str:
    """One cell in larc's form; ``ValueError`` saying why it cannot be read."""
    value = text.strip()
    if value.lower() in words:
        value = str(words[value.lower()])
    if value == "" or value.lower() in ("nan", "na", "n/a", "unknown", "?", "missing", "."):
        return ""
    if name in BINARY:
        if value.lower() in _YES:
            return "1"
        if value.lower() in _NO:
            return "0"
        raise ValueError(f"expected 0/1 or yes/no, got {text!r}")
    if name == "trg":
        if value not in ("0", "1", "2", "3"):
            raise ValueError(f"expected a tumour regression grade 0-3, got {text!r}")
        return value
    if name == "sex":
        value = _SEX.get(value.lower(), value)
    if name in NUMBERS or name in CANDIDATES or name == "ypn_stage":
        return _number(name, value, text)
    return value


def _number(name: str, value: str, text: str) -> str:
    """A stage, sex or number cell checked (``value``: after the word map, ``text``: as given)."""
    stage = name.endswith(("_mrt", "_mrn", "_stage")) or name == "sex"
    if not stage:
        value = value.replace(",", ".")  # a decimal comma, as many sites write it
    try:
        number = parse_value(name, value)
    except ValueError as exc:
        if stage:
            raise ValueError(str(exc).split(": ", 1)[-1]) from exc
        raise ValueError(f"expected a number, got {text!r}") from exc
    if math.isnan(number) or (name in NUMBERS and number < 0):
        raise ValueError(f"expected a number of at least 0, got {text!r}")
    return value


def read_outcomes(
    path: Path, mapping: Mapping[str, Any] | None = None
) -> dict[str, dict[str, str]]:
    """Rows of the outcomes spreadsheet by patient id, in larc's column names and values.

    Columns larc does not read are kept as they are. Raises :class:`OutcomesError` naming every
    mapped column the spreadsheet lacks and, per column, the first value that cannot be read
    (with its row number as a spreadsheet shows it, and the patient)."""
    header, rows = read_table(path)
    mapping = mapping or {"columns": {}, "values": {}}
    columns: dict[str, str] = dict(mapping["columns"])
    missing = [f"{source!r} (for {name})" for name, source in columns.items()
               if source not in header]  # fmt: skip
    source_of = {name: columns.get(name, name) for name in KNOWN}
    if "patient_id" not in columns and "patient_id" not in header:
        missing.append("'patient_id' (map the patient id column with columns.patient_id)")
    if missing:
        raise OutcomesError(
            f"{path}: no column {', '.join(missing)}; the spreadsheet's columns are: "
            + ", ".join(repr(h) for h in header)
        )
    renamed = {source: name for name, source in source_of.items() if source in header}
    out: dict[str, dict[str, str]] = {}
    bad: dict[str, str] = {}
    for number, row in enumerate(rows, start=2):  # row 1 is the header
        record = {renamed.get(h, h): v for h, v in row.items()}
        patient = record.get("patient_id", "").strip()
        if not patient:
            if any(v.strip() for v in row.values()):
                bad.setdefault("patient_id", f"row {number}: no patient id")
            continue
        for name in set(record) & set(KNOWN) - OTHER:
            try:
                record[name] = _normalise(name, record[name], mapping["values"].get(name, {}))
            except ValueError as exc:
                where = f"column {source_of[name]!r}" + (
                    f" ({name})" if source_of[name] != name else ""
                )
                bad.setdefault(name, f"{where}, row {number} (patient {patient}): {exc}")
        if patient in out:
            bad.setdefault("patient_id", f"row {number}: patient {patient} appears twice")
        out[patient] = record
    if bad:
        raise OutcomesError(f"{path}: " + "; ".join(bad.values()))
    return out
