"""How the exporter takes storage commitment reports (the live exchange with a real Orthanc is
in tests/integration/test_commitment.py): a report that comes after its deadline, a report for
a transaction nobody waits for, and a failure report for an optional commitment."""

from __future__ import annotations

from pathlib import Path

from daemon.cases import CaseState
from daemon.export import Exporter
from daemon.index import ExportState, Index, InstanceRecord
from daemon.settings import Destination, ExportSettings
from dicom_io.commitment import CommitmentReport
from dicom_io.scp import STATUS_SUCCESS


def _exporter(tmp_path: Path, commitment: str) -> tuple[Index, Exporter, int]:
    index = Index(tmp_path / "index.sqlite3")
    destination = Destination(ae_title="PACS", host="127.0.0.1", port=104, commitment=commitment)
    exporter = Exporter(index, tmp_path, ExportSettings(destinations=(destination,)), "LARC")
    record = InstanceRecord(
        patient_id="P1", patient_name="", birth_date="", sex="", study_uid="1", study_date="",
        study_time="", study_description="", accession_number="", time_point_id="",
        series_uid="1.1", modality="MR", series_number=1, series_description="",
        frame_of_reference_uid="", sop_class_uid="1.2.840.10008.5.1.4.1.1.4", sop_uid="1.1.1",
        instance_number=1, transfer_syntax_uid="",
    )  # fmt: skip
    index.record_instance(record, tmp_path / "x.dcm", 1, "0", "TEST")
    index.upsert_case(
        {"case_id": "resp-1", "patient_id": "P1", "kind": "response", "version": 1,
         "state": "ready", "reason": "", "baseline_study_uid": None,
         "restaging_study_uid": None, "inputs": "{}", "fingerprint": "f"},
        new_version=True,
    )  # fmt: skip
    for state in (CaseState.QUEUED, CaseState.RUNNING, CaseState.DONE):
        index.set_case_state("resp-1", 1, state, state)
    index.record_result(
        {"work_key": "k", "case_id": "resp-1", "version": 1, "study_uid": "1",
         "sr_sop_uid": "2", "sr_series_uid": "3", "scores": "{}", "files": "results/a.dcm"},
        exporter.destinations(),
    )  # fmt: skip
    export_id = int(index.query("SELECT id FROM exports")[0]["id"])
    return index, exporter, export_id


def test_a_report_after_the_deadline_still_completes_the_export(tmp_path: Path) -> None:
    index, exporter, export_id = _exporter(tmp_path, "required")
    try:
        index.await_commitment(export_id, 1, "1.2.3", deadline=0.0, wait=True)
        exporter.run_due(now=10.0)  # overdue: a failed try, retried later
        assert index.query("SELECT state FROM exports")[0]["state"] == ExportState.PENDING
        late = CommitmentReport("1.2.3", "PACS", committed=("2",))
        assert exporter.on_commitment(late) == STATUS_SUCCESS
        row = index.query("SELECT state, committed_by, last_error FROM exports")[0]
        assert tuple(row) == (ExportState.SENT, "PACS", None)  # nothing to send again
        case = index.query("SELECT state, reason FROM cases")[0]
        assert case["state"] == CaseState.EXPORTED
        assert case["reason"] == "results sent to PACS@127.0.0.1:104 (committed by PACS)"
        # a report for a transaction nobody waits for changes nothing
        stray = CommitmentReport("9.9", "PACS", failed=(("2", 0x112),))
        assert exporter.on_commitment(stray) == STATUS_SUCCESS
        assert index.query("SELECT state FROM exports")[0]["state"] == ExportState.SENT
    finally:
        index.close()


def test_an_optional_commitment_that_fails_leaves_the_export_sent(tmp_path: Path) -> None:
    index, exporter, export_id = _exporter(tmp_path, "optional")
    try:
        index.await_commitment(export_id, 1, "1.2.4", deadline=0.0, wait=False)
        exporter.update_case("k", "resp-1", 1)
        assert index.query("SELECT state FROM cases")[0]["state"] == CaseState.EXPORTED
        exporter.run_due(now=10.0)  # nothing is waited for
        failed = CommitmentReport("1.2.4", "PACS", failed=(("2", 0x0112),))
        assert failed.describe_failures() == "1 of 1 objects: ...2 (no such object instance)"
        exporter.on_commitment(failed)
        row = index.query("SELECT state, committed_by FROM exports")[0]
        assert tuple(row) == (ExportState.SENT, None)
    finally:
        index.close()
