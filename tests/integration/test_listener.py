"""`larc serve` as a DICOM node, driven by dcmtk (an independent implementation)."""

from __future__ import annotations

import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from dicom_io.synthetic.cohort import CohortResult
from tests.conftest import (
    LARC,
    DaemonProcess,
    echo,
    free_port,
    start_daemon,
    stop_process,
    storescu,
)

pytestmark = pytest.mark.integration


def _index(daemon: DaemonProcess) -> sqlite3.Connection:
    db = sqlite3.connect(daemon.data_dir / "index.sqlite3")
    db.row_factory = sqlite3.Row
    return db


def test_echo_and_a_clean_stop_on_sigterm(daemon: DaemonProcess) -> None:
    assert echo(daemon.port)
    stop_process(daemon.proc)
    assert daemon.proc.returncode == 0
    assert "Traceback" not in daemon.log()
    assert "stopped" in daemon.log()


def test_storescu_stores_every_instance_byte_for_byte_and_indexes_it(
    daemon: DaemonProcess, cohort: CohortResult
) -> None:
    patient = cohort.patients[0]
    folder = cohort.out_dir / patient.patient_id
    files = sorted(folder.rglob("*.dcm"))
    run = storescu(daemon.port, folder)
    assert run.returncode == 0, run.stderr[-2000:]
    with _index(daemon) as db:
        rows = {r["sop_uid"]: r for r in db.execute("SELECT * FROM instances")}
        studies = db.execute("SELECT * FROM studies").fetchall()
    assert len(rows) == len(files)
    assert {s["study_uid"] for s in studies} == {
        s.study_instance_uid for s in patient.studies.values()
    }
    for path in files:
        sent = pydicom.dcmread(path)
        row = rows[sent.SOPInstanceUID]
        stored = pydicom.dcmread(row["path"])
        assert stored == sent  # every element, pixel data included
        assert Path(row["path"]).is_relative_to(daemon.data_dir)
    assert not list(daemon.data_dir.rglob("*.part"))


def test_only_allowed_callers_may_associate(tmp_path: Path, cohort: CohortResult) -> None:
    config = tmp_path / "larc.yaml"
    config.write_text(
        "scp:\n  allowed_callers:\n    - ae_title: SCANNER\n    - ae_title: LARCTEST\n"
        "      host: 127.0.0.0/8\n"
    )
    daemon = start_daemon(tmp_path / "data", config=config)
    try:
        one_file = next((cohort.out_dir / cohort.patients[0].patient_id).rglob("*.dcm"))
        refused = storescu(daemon.port, one_file, calling_ae="INTRUDER")
        assert refused.returncode != 0
        assert "INTRUDER" in daemon.log()
        assert "scp.allowed_callers" in daemon.log()
        allowed = storescu(daemon.port, one_file, calling_ae="SCANNER")
        assert allowed.returncode == 0, allowed.stderr
        with _index(daemon) as db:
            (count,) = db.execute("SELECT COUNT(*) FROM instances").fetchone()
        assert count == 1
    finally:
        stop_process(daemon.proc)


def test_refuses_to_listen_on_the_network_without_an_allow_list(tmp_path: Path) -> None:
    run = subprocess.run(
        [
            LARC,
            "serve",
            "--bind",
            "0.0.0.0",  # noqa: S104  (the point of the test)
            "--port",
            str(free_port()),
            "--data-dir",
            str(tmp_path / "d"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 2
    assert "scp.allowed_callers" in run.stderr


def test_sigkill_mid_burst_loses_nothing_that_was_acknowledged(
    tmp_path: Path, cohort: CohortResult
) -> None:
    """Kill -9 while three senders (three associations) transfer 500 instances, restart,
    resend: every instance acknowledged on any association is there, whole."""
    source = tmp_path / "five-hundred"
    template = pydicom.dcmread(next(cohort.out_dir.rglob("*_t2w/*.dcm")))
    for n in range(500):
        template.SOPInstanceUID = generate_uid(entropy_srcs=["sigkill", str(n)])
        template.file_meta.MediaStorageSOPInstanceUID = template.SOPInstanceUID
        template.InstanceNumber = n + 1
        folder = source / f"sender{n % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        template.save_as(folder / f"{n:04d}.dcm")
    data_dir = tmp_path / "data"
    daemon = start_daemon(data_dir)
    command = ["/usr/bin/storescu", "--required", "-v", "-aet", "SCANNER", "-aec", "LARC",
               "+sd", "127.0.0.1", str(daemon.port)]  # fmt: skip
    senders = [
        subprocess.Popen(
            [*command, str(source / f"sender{k}")],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={"TCP_NODELAY": "1", "PATH": "/usr/bin:/bin"},
        )
        for k in range(3)
    ]
    acknowledged: list[str] = []
    lock = threading.Lock()

    def read(sender: subprocess.Popen[str]) -> None:
        assert sender.stdout is not None
        current = None
        for line in sender.stdout:
            if line.startswith("I: Sending file: "):
                current = Path(line.removeprefix("I: Sending file: ").strip())
            elif "Received Store Response (Success)" in line and current:
                with lock:
                    acknowledged.append(str(current))

    readers = [threading.Thread(target=read, args=(s,), daemon=True) for s in senders]
    for reader in readers:
        reader.start()
    try:
        deadline = time.monotonic() + 120
        while len(acknowledged) < 150 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        daemon.proc.kill()  # SIGKILL: no chance to clean up
        daemon.proc.wait()
        for sender in senders:
            sender.wait(timeout=30)  # each sees its association drop
        for reader in readers:
            reader.join(timeout=30)
    assert len(acknowledged) >= 150, daemon.log()[-2000:]
    by_sender = {Path(p).parent.name for p in acknowledged}
    assert len(by_sender) == 3, f"every association stored some before the kill: {by_sender}"

    restarted = start_daemon(data_dir, port=daemon.port, extra=("--stable-age-s", "1"))
    try:
        with _index(restarted) as db:
            stored = {r["sop_uid"]: r["path"] for r in db.execute("SELECT * FROM instances")}
        for name in acknowledged:
            uid = pydicom.dcmread(name, stop_before_pixels=True).SOPInstanceUID
            assert uid in stored, f"{name} was acknowledged but is not in the index"
            assert pydicom.dcmread(stored[uid]).pixel_array.shape == (48, 48)
        assert not list(data_dir.rglob("*.part")), "no half-written file survives a restart"
        resend = storescu(restarted.port, source)
        assert resend.returncode == 0, resend.stderr[-2000:]
        with _index(restarted) as db:
            (count,) = db.execute("SELECT COUNT(*) FROM instances").fetchone()
            (dupes,) = db.execute("SELECT COUNT(*) FROM duplicates").fetchone()
        assert count == 500
        assert dupes == 0, "re-sent identical instances are no-ops, not duplicates"
        # the study still becomes stable, and its patient gets one case of each kind, once
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with _index(restarted) as db:
                stable = db.execute("SELECT stable_at FROM studies").fetchone()[0]
                cases = db.execute("SELECT kind FROM cases ORDER BY kind").fetchall()
            if stable and len(cases) == 2:
                break
            time.sleep(0.3)
        assert stable
        assert [c[0] for c in cases] == ["baseline", "response"]
    finally:
        stop_process(restarted.proc)
