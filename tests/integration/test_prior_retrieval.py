"""A restaging study arrives alone; the daemon pulls its baseline from a real Orthanc."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from dicom_io.peers import Orthanc, free_port, store_files
from dicom_io.synthetic.cohort import CohortResult
from tests.conftest import require_tool, start_daemon, stop_process, storescu

pytestmark = pytest.mark.integration


def test_restaging_alone_pulls_its_baseline_from_the_pacs(
    tmp_path: Path, cohort: CohortResult
) -> None:
    require_tool("/usr/sbin/Orthanc")
    patient = cohort.patients[0]
    daemon_port, orthanc_port = free_port(), free_port()
    orthanc = Orthanc.start(
        tmp_path / "orthanc",
        modalities={"larc": ["LARC", "127.0.0.1", daemon_port]},
        dicom_port=orthanc_port,
    )
    config = tmp_path / "larc.yaml"
    config.write_text(f"pacs:\n  ae_title: ORTHANC\n  host: 127.0.0.1\n  port: {orthanc_port}\n")
    daemon = start_daemon(
        tmp_path / "data", port=daemon_port, config=config, extra=("--stable-age-s", "1")
    )
    try:
        baseline = patient.studies["baseline"]
        assert store_files(orthanc.dicom_port, orthanc.aet, baseline.directory).returncode == 0
        assert storescu(daemon.port, patient.studies["restaging"].directory).returncode == 0
        deadline = time.monotonic() + 90
        state = None
        while time.monotonic() < deadline:
            with sqlite3.connect(daemon.data_dir / "index.sqlite3") as db:
                row = db.execute("SELECT state FROM cases WHERE kind = 'response'").fetchone()
            state = row[0] if row else None
            if state == "ready":
                break
            time.sleep(0.5)
        assert state == "ready", daemon.log()[-3000:]
        with sqlite3.connect(daemon.data_dir / "index.sqlite3") as db:
            timepoints = dict(db.execute("SELECT study_uid, timepoint FROM studies").fetchall())
        assert timepoints[baseline.study_instance_uid] == "baseline"
        assert "prior retrieval moved" in daemon.log()
    finally:
        stop_process(daemon.proc)
        orthanc.stop()
