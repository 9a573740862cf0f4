"""With TLS configured, a TLS client can store and a plain client cannot."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid
from pynetdicom import AE

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
