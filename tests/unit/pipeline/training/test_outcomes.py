"""Outcome spreadsheets as a hospital keeps them: own column names and words, CSV or Excel, and
clear errors for what cannot be read."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from pipeline.training.cohort import good_response, read_labels
from pipeline.training.outcomes import OutcomesError, load_mapping, read_outcomes

SITE = """MRN;Responder;Gender;cT;cN;CEA;Metastasis;Months to DM;ypN;Comment
P001;Responder;male;cT3b;N1b;4,2;No;36,5;ypN0;first
P002;Non-responder;Female;T4a;N2a;12.0;yes;14;N1a;
P003;non-responder;F;T2;N0;;no;60;N0;no CEA taken
"""
MAPPING = {
    "columns": {
        "patient_id": "MRN", "good_response": "Responder", "sex": "Gender", "pre_mrt": "cT",
        "pre_mrn": "cN", "cea_ng_ml": "CEA", "dm_event": "Metastasis",
        "dm_time_months": "Months to DM", "ypn_stage": "ypN",
    },
    "values": {"good_response": {"Responder": 1, "Non-responder": 0}},
}  # fmt: skip


def _files(tmp_path: Path, table: str = SITE, mapping: object = MAPPING) -> tuple[Path, Path]:
    sheet = tmp_path / "site.csv"
    sheet.write_text(table)
    columns = tmp_path / "columns.yaml"
    columns.write_text(yaml.safe_dump(mapping))
    return sheet, columns


def test_a_sites_own_columns_and_words_are_read_as_larcs(tmp_path: Path) -> None:
    sheet, columns = _files(tmp_path)
    rows = read_labels(sheet, columns)
    assert list(rows) == ["P001", "P002", "P003"]
    first = rows["P001"]
    assert first["patient_id"] == "P001"
    assert good_response(first) == 1
    assert good_response(rows["P002"]) == 0
    assert good_response(rows["P003"]) == 0  # the word map ignores case
    assert first["sex"] == "M"
    assert rows["P002"]["sex"] == "F"
    assert first["cea_ng_ml"] == "4.2"  # a decimal comma
    assert rows["P003"]["cea_ng_ml"] == ""  # empty stays missing
    assert first["dm_event"] == "0"
    assert rows["P002"]["dm_event"] == "1"
    assert first["dm_time_months"] == "36.5"
    assert first["pre_mrt"] == "cT3b"  # stages are read to their digit where used
    assert first["Comment"] == "first"  # columns larc does not read are kept


def test_an_excel_export_reads_like_its_csv(tmp_path: Path) -> None:
    sheet, columns = _files(tmp_path)
    excel = tmp_path / "site.xlsx"
    pd.read_csv(sheet, sep=";", dtype=str, keep_default_na=False).to_excel(excel, index=False)
    assert read_labels(excel, columns) == read_labels(sheet, columns)


def test_every_missing_column_is_named_with_the_ones_there_are(tmp_path: Path) -> None:
    mapping = {"columns": {**MAPPING["columns"], "dm_event": "DM", "ypn_stage": "ypN stage"}}
    sheet, columns = _files(tmp_path, mapping=mapping)
    with pytest.raises(OutcomesError) as raised:
        read_labels(sheet, columns)
    message = str(raised.value)
    assert "no column 'DM' (for dm_event), 'ypN stage' (for ypn_stage)" in message
    assert "'Months to DM'" in message  # the columns the spreadsheet has


def test_the_first_bad_value_of_each_column_is_named_with_its_row(tmp_path: Path) -> None:
    bad = SITE.replace("cT3b", "T?").replace("36,5", "about 3 years").replace(";yes;", ";maybe;")
    sheet, columns = _files(tmp_path, bad)
    with pytest.raises(OutcomesError) as raised:
        read_labels(sheet, columns)
    message = str(raised.value)
    assert "column 'cT' (pre_mrt), row 2 (patient P001): cannot read a stage from 'T?'" in message
    assert (
        "column 'Months to DM' (dm_time_months), row 2 (patient P001): expected a number, got "
        "'about 3 years'" in message
    )
    assert (
        "column 'Metastasis' (dm_event), row 3 (patient P002): expected 0/1 or yes/no, got "
        "'maybe'" in message
    )


def test_larcs_own_names_need_no_mapping_and_are_checked_too(tmp_path: Path) -> None:
    plain = tmp_path / "labels.csv"
    plain.write_text("patient_id,trg,dm_event,dm_time_months,sex\nA,1,1,12,M\nB,5,0,30,F\nA,0,,,\n")
    with pytest.raises(OutcomesError) as raised:
        read_outcomes(plain)
    message = str(raised.value)
    assert "column 'trg', row 3 (patient B): expected a tumour regression grade 0-3, got '5'" in (
        message
    )
    assert "row 4: patient A appears twice" in message


def test_a_mapping_may_only_name_larcs_columns(tmp_path: Path) -> None:
    path = tmp_path / "columns.yaml"
    path.write_text(yaml.safe_dump({"columns": {"responder": "Responder", "sex": ["a"]}}))
    with pytest.raises(OutcomesError) as raised:
        load_mapping(path)
    message = str(raised.value)
    assert "'responder' is not a column larc reads" in message
    assert "columns.sex: give the spreadsheet's column name as text" in message
    assert "good_response" in message  # the names it could have used
