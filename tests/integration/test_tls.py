"""With TLS configured, a TLS client can store and a plain client cannot."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid
from pynetdicom import AE

from daemon.cases import CaseState
from daemon.export import Exporter
from daemon.index import Index, InstanceRecord
from daemon.settings import ClientTlsSettings, Destination, ExportSettings
from dicom_io.synthetic.cohort import CohortResult
from tests.conftest import require_tool, start_daemon, stop_process

pytestmark = pytest.mark.integration


def _self_signed(folder: Path) -> tuple[Path, Path]:
    openssl = require_tool("openssl")
    key, cert = folder / "key.pem", folder / "cert.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return key, cert


def test_tls_client_stores_and_plain_client_cannot(tmp_path: Path, cohort: CohortResult) -> None:
    key, cert = _self_signed(tmp_path)
    config = tmp_path / "larc.yaml"
    config.write_text(f"scp:\n  tls:\n    cert_file: {cert}\n    key_file: {key}\n")
    ds = pydicom.dcmread(next(cohort.out_dir.rglob("*_t2w/*.dcm")))
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    port = None
    daemon = None
    try:
        # start_daemon's readiness probe is a plain echo, which TLS refuses: start it by hand
        daemon = start_daemon(tmp_path / "data", config=config, probe_tls=cert)
        port = daemon.port
        client_context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cert))
        ae = AE(ae_title="TLSCLIENT")
        ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
        assoc = ae.associate(
            "127.0.0.1", port, ae_title="LARC", tls_args=(client_context, "127.0.0.1")
        )
        assert assoc.is_established
        assert assoc.send_c_store(ds).Status == 0x0000
        assoc.release()

        plain = AE(ae_title="PLAIN")
        plain.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
        plain.acse_timeout = 5
        plain.network_timeout = 5
        refused = plain.associate("127.0.0.1", port, ae_title="LARC")
        assert not refused.is_established
    finally:
        if daemon is not None:
            stop_process(daemon.proc)


def test_results_are_exported_over_tls_to_a_tls_destination(
    tmp_path: Path, cohort: CohortResult
) -> None:
    """The export path with a TLS destination (here another larc acting as the PACS)."""
    key, cert = _self_signed(tmp_path)
    config = tmp_path / "pacs.yaml"
    config.write_text(f"scp:\n  tls:\n    cert_file: {cert}\n    key_file: {key}\n")
    pacs = start_daemon(tmp_path / "pacs", config=config, probe_tls=cert)
    source = next(cohort.out_dir.rglob("*_t2w/*.dcm"))
    ds = pydicom.dcmread(source, stop_before_pixels=True)
    data_dir = tmp_path / "data"
    index = Index(data_dir / "index.sqlite3")
    try:
        result = data_dir / "results" / "x.dcm"  # stands in for a stored SR
        result.parent.mkdir(parents=True)
        result.write_bytes(source.read_bytes())
        index.record_instance(_record(ds), source, 1, "0", "TEST")
        index.upsert_case(
            {"case_id": "resp-1", "patient_id": ds.PatientID, "kind": "response", "version": 1,
             "state": "ready", "reason": "", "baseline_study_uid": None,
             "restaging_study_uid": None, "inputs": "{}", "fingerprint": "f"},
            new_version=True,
        )  # fmt: skip
        for state in (CaseState.QUEUED, CaseState.RUNNING, CaseState.DONE):  # as when scored
            index.set_case_state("resp-1", 1, state, state)
        destination = Destination(
            ae_title="LARC", host="127.0.0.1", port=pacs.port,
            tls=ClientTlsSettings(enabled=True, ca_file=cert),
        )  # fmt: skip
        exporter = Exporter(index, data_dir, ExportSettings(destinations=(destination,)), "LARC")
        index.record_result(
            {"work_key": "k", "case_id": "resp-1", "version": 1, "study_uid": "1",
             "sr_sop_uid": "2", "sr_series_uid": "3", "scores": "{}", "files": "results/x.dcm"},
            exporter.destinations(),
        )  # fmt: skip
        outcome = exporter.run_due()
        assert outcome.sent == 1, index.query("SELECT * FROM exports")
        assert index.query("SELECT state FROM cases")[0]["state"] == "exported"
    finally:
        index.close()
        stop_process(pacs.proc)
    received = Index(tmp_path / "pacs" / "index.sqlite3")
    try:
        assert received.instance(str(ds.SOPInstanceUID)) is not None
    finally:
        received.close()


def _record(ds: pydicom.Dataset) -> InstanceRecord:
    return InstanceRecord(
        patient_id=ds.PatientID, patient_name="", birth_date="", sex="",
        study_uid=ds.StudyInstanceUID, study_date="", study_time="", study_description="",
        accession_number="", time_point_id="", series_uid=ds.SeriesInstanceUID, modality="MR",
        series_number=1, series_description="", frame_of_reference_uid="",
        sop_class_uid=ds.SOPClassUID, sop_uid=ds.SOPInstanceUID, instance_number=1,
        transfer_syntax_uid="",
    )  # fmt: skip
