"""A real Orthanc, configured with deploy/orthanc/, forwards a stable study to `larc serve`."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from dicom_io.peers import Orthanc, store_files
from dicom_io.synthetic.cohort import CohortResult
from tests.conftest import DaemonProcess, require_tool

pytestmark = pytest.mark.integration
DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "orthanc" / "orthanc.json"


def _count(daemon: DaemonProcess) -> int:
    with sqlite3.connect(daemon.data_dir / "index.sqlite3") as db:
        (count,) = db.execute("SELECT COUNT(*) FROM instances").fetchone()
    return int(count)


def test_orthanc_forwards_a_stable_study_to_larc(
    tmp_path: Path, daemon: DaemonProcess, cohort: CohortResult
) -> None:
    require_tool("/usr/sbin/Orthanc")
    orthanc = Orthanc.start(
        tmp_path / "orthanc",
        modalities={"larc": ["LARC", "127.0.0.1", daemon.port]},
        base_config=DEPLOY,
        StableAge=1,
    )
    try:
        patient = cohort.patients[1]
        study = patient.studies["baseline"]
        files = sorted(study.directory.rglob("*.dcm"))
        run = store_files(orthanc.dicom_port, orthanc.aet, study.directory)
        assert run.returncode == 0, run.stderr[-2000:]
        deadline = time.monotonic() + 90
        while _count(daemon) < len(files) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _count(daemon) == len(files)
        with sqlite3.connect(daemon.data_dir / "index.sqlite3") as db:
            (calling,) = {row[0] for row in db.execute("SELECT calling_ae FROM instances")}
        assert calling == "ORTHANC"
    finally:
        orthanc.stop()
