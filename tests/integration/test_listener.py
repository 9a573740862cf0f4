"""`larc serve` as a DICOM node, driven by dcmtk (an independent implementation)."""

from __future__ import annotations

import os
import signal
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
    assert not list((daemon.data_dir / "spool").iterdir())


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
        assert not list((data_dir / "spool").iterdir()), "nor a partly received one"
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


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def _multiframe(template: pydicom.Dataset, path: Path, frames: int, tag: str) -> Path:
    """An Enhanced MR Image-class object of ``frames`` 512 x 512 16-bit frames (0.5 MiB each)."""
    ds = template.copy()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4.1"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(
        entropy_srcs=["multiframe", tag]
    )
    ds.Rows = ds.Columns = 512
    ds.NumberOfFrames = frames
    ds.PixelData = bytes(range(256)) * (512 * 512 * 2 * frames // 256)
    ds.save_as(path, enforce_file_format=True)
    return path


def test_a_large_multiframe_object_is_spooled_not_held_in_memory_and_a_cut_transfer_leaves_nothing(
    tmp_path: Path, cohort: CohortResult
) -> None:
    """A 96 MiB multi-frame object goes to disk as it arrives (the daemon's peak memory grows by
    far less than its size) and is stored whole; a transfer cut off half-way is neither stored
    nor acknowledged, and its spool file is removed when the association drops."""
    template = pydicom.dcmread(next(cohort.out_dir.rglob("*_t2w/*.dcm")))
    whole = _multiframe(template, tmp_path / "whole.dcm", 192, "whole")
    daemon = start_daemon(tmp_path / "data")
    try:
        before = _peak_rss_mb(daemon.proc.pid)
        sent = storescu(daemon.port, whole)
        assert sent.returncode == 0, sent.stderr[-2000:]
        growth = _peak_rss_mb(daemon.proc.pid) - before
        assert growth < 48, f"peak RSS grew by {growth:.0f} MB receiving a 96 MiB object"
        with _index(daemon) as db:
            (path,) = db.execute("SELECT path FROM instances").fetchone()
        original = pydicom.dcmread(whole)
        stored = pydicom.dcmread(path)
        assert stored.PixelData == original.PixelData
        assert stored.SOPInstanceUID == original.SOPInstanceUID
        spool = daemon.data_dir / "spool"
        assert not list(spool.iterdir()), "nothing stays in the spool folder"

        cut = _multiframe(template, tmp_path / "cut.dcm", 192, "cut")
        sender = subprocess.Popen(
            ["/usr/bin/storescu", "--required", "-aet", "SCANNER", "-aec", "LARC",
             "127.0.0.1", str(daemon.port), str(cut)],
            env={"PATH": "/usr/bin:/bin"},
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while not any(p.stat().st_size > 2**20 for p in spool.glob("*")):
                assert time.monotonic() < deadline, "the transfer never reached the spool"
                assert sender.poll() is None, "storescu finished before it could be cut"
                time.sleep(0.005)
        finally:
            sender.kill()
            sender.wait()
        deadline = time.monotonic() + 30
        while list(spool.iterdir()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not list(spool.iterdir()), "the cut transfer's spool file was removed"
        assert "partly received" in daemon.log()
        with _index(daemon) as db:
            (count,) = db.execute("SELECT COUNT(*) FROM instances").fetchone()
        assert count == 1, "the cut object was not stored"
        assert echo(daemon.port), "the listener is still up"
    finally:
        stop_process(daemon.proc)


def _listening(port: int, pids: list[int]) -> set[int]:
    """Which of ``pids`` hold a TCP socket listening on ``port`` (read from /proc)."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A" and int(fields[1].split(":")[1], 16) == port:
            inodes.add(fields[9])
    holders = set()
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = str(fd.readlink())
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in inodes:
                holders.add(pid)
    return holders


def _receiver_pids(parent: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == parent and b"daemon.intake.receivers" in cmdline:
            found.append(int(stat.parent.name))
    return found


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"


def test_listener_processes_share_the_port_and_go_with_the_daemon(
    tmp_path: Path, cohort: CohortResult
) -> None:
    """scp.listener_processes: 2 — a receiver process listens on the same port beside the
    daemon; six senders at once are all stored; a receiver killed is started again; SIGKILL the
    daemon and the receiver goes too, leaving the port to the next daemon."""
    template = pydicom.dcmread(next(cohort.out_dir.rglob("*_t2w/*.dcm")))
    source = tmp_path / "senders"
    for n in range(180):
        template.SOPInstanceUID = generate_uid(entropy_srcs=["receivers", str(n)])
        template.file_meta.MediaStorageSOPInstanceUID = template.SOPInstanceUID
        folder = source / f"sender{n % 6}"
        folder.mkdir(parents=True, exist_ok=True)
        template.save_as(folder / f"{n:04d}.dcm")
    config = tmp_path / "larc.yaml"
    config.write_text("scp:\n  listener_processes: 2\n")
    data_dir = tmp_path / "data"
    daemon = start_daemon(data_dir, config=config)
    try:
        deadline = time.monotonic() + 60  # the receiver starts just after the main listener
        while "share port" not in daemon.log() and time.monotonic() < deadline:
            time.sleep(0.1)
        receivers = _receiver_pids(daemon.proc.pid)
        assert len(receivers) == 1, receivers
        pids = [daemon.proc.pid, *receivers]
        assert _listening(daemon.port, pids) == set(pids), "both processes listen on the port"
        assert "receiver process 2 (pid" in daemon.log()
        senders = [
            subprocess.Popen(
                ["/usr/bin/storescu", "--required", "-aet", "SCANNER", "-aec", "LARC", "+sd",
                 "127.0.0.1", str(daemon.port), str(source / f"sender{k}")],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                env={"TCP_NODELAY": "1", "PATH": "/usr/bin:/bin"},
            )
            for k in range(6)
        ]  # fmt: skip
        for sender in senders:
            output, _ = sender.communicate(timeout=120)
            assert sender.returncode == 0, output[-2000:]
        with _index(daemon) as db:
            (count,) = db.execute("SELECT COUNT(*) FROM instances").fetchone()
        assert count == 180
        os.kill(receivers[0], signal.SIGKILL)  # a receiver that dies is started again
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            receivers = [p for p in _receiver_pids(daemon.proc.pid) if not _gone(p)]
            if len(receivers) == 1 and _listening(daemon.port, receivers) == set(receivers):
                break
            time.sleep(0.2)
        assert "ended with exit code -9: starting it again" in daemon.log()
        assert _listening(daemon.port, receivers) == set(receivers), receivers
        daemon.proc.kill()  # the receiver has no one to tell it: it must notice by itself
        daemon.proc.wait()
        deadline = time.monotonic() + 15
        while not all(_gone(pid) for pid in receivers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert all(_gone(pid) for pid in receivers), "the receiver went with the daemon"
    finally:
        stop_process(daemon.proc)
        for pid in _receiver_pids(daemon.proc.pid):
            os.kill(pid, signal.SIGKILL)
    restarted = start_daemon(data_dir, port=daemon.port)
    try:
        assert _listening(restarted.port, [restarted.proc.pid]) == {restarted.proc.pid}
        again = storescu(restarted.port, source / "sender0")
        assert again.returncode == 0, again.stderr[-2000:]
    finally:
        stop_process(restarted.proc)


def test_listener_processes_refuse_storage_commitment(tmp_path: Path) -> None:
    config = tmp_path / "larc.yaml"
    config.write_text(
        "scp:\n  listener_processes: 2\nexport:\n  destinations:\n    - ae_title: PACS\n"
        "      host: 127.0.0.1\n      port: 11112\n      commitment: required\n"
    )
    run = subprocess.run(
        [LARC, "serve", "--config", str(config), "--port", str(free_port()), "--data-dir",
         str(tmp_path / "d")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert run.returncode == 2
    assert "scp.listener_processes" in run.stderr
    assert "commitment" in run.stderr
