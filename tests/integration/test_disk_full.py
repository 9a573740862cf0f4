"""A storage file system running out of space, for real: a small tmpfs holds larc's data.

Below the watermark (storage.min_free_bytes) new instances get 0xA700 Out of Resources with the
reason recorded, the health check and the metrics say so, nothing half-written is left, and
storing resumes by itself once space is freed. A large object spooled as it arrives stops
before it would take the reserve.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from daemon.index import Index
from daemon.settings import Settings
from daemon.web.monitor import Health, IndexCollector
from dicom_io.synthetic.cohort import CohortResult
from tests.conftest import start_daemon, stop_process, storescu
from tests.integration.test_listener import _multiframe

pytestmark = pytest.mark.integration

SIZE_MIB, MIN_FREE_MIB = 24, 8


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 24 MiB tmpfs, mounted for the test and unmounted after it."""
    where = tmp_path / "small-disk"
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={SIZE_MIB}m", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs (needs root): {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def _sop_uids(folder: Path) -> set[str]:
    return {
        str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID)
        for p in folder.glob("*.dcm")
    }


def test_a_full_disk_refuses_with_out_of_resources_and_storing_resumes_by_itself(
    small_disk: Path, tmp_path: Path, cohort: CohortResult
) -> None:
    patient = cohort.out_dir / cohort.patients[0].patient_id
    first, second = sorted(patient.rglob("*_t2w"))[:2]  # baseline and restaging T2W series
    data_dir = small_disk / "data"
    config = tmp_path / "larc.yaml"
    config.write_text(f"storage:\n  min_free_bytes: {MIN_FREE_MIB * 2**20}\n")
    daemon = start_daemon(data_dir, config=config)
    try:
        sent = storescu(daemon.port, first)
        assert sent.returncode == 0, sent.stderr[-2000:]

        # fill the file system to 1 MiB under the watermark
        free = shutil.disk_usage(small_disk).free
        ballast = small_disk / "ballast"
        ballast.write_bytes(b"\0" * (free - (MIN_FREE_MIB - 1) * 2**20))
        refused = storescu(daemon.port, second, options=("-v", "-nh"))
        said = refused.stdout + refused.stderr
        # every instance answered, each with Out of Resources
        assert said.count("Received Store Response (Refused: OutOfResources)") == len(
            _sop_uids(second)
        ), said[-2000:]
        with sqlite3.connect(data_dir / "index.sqlite3") as db:
            stored = {r[0] for r in db.execute("SELECT sop_uid FROM instances")}
            rejections = db.execute("SELECT status, reason, sop_uid FROM rejections").fetchall()
        assert stored == _sop_uids(first), "nothing of the refused series is stored"
        assert {r[2] for r in rejections} == _sop_uids(second)
        assert {r[0] for r in rejections} == {0xA700}
        assert all("storage.min_free_bytes" in r[1] for r in rejections)
        assert not list(data_dir.rglob("*.part")), "nothing half-written"
        # one line for the operator when storing stops, not one per instance
        assert daemon.log().count("storage is almost full") == 1

        settings = Settings.model_validate(
            {"storage": {"data_dir": data_dir, "min_free_bytes": MIN_FREE_MIB * 2**20}}
        )
        index = Index(data_dir / "index.sqlite3")
        health = Health(index, settings, listener_ok=lambda: True).check()
        assert health["status"] == "failing"
        assert "storage" in health["failing"]
        assert "0xA700" in health["checks"]["storage"]["detail"]
        metrics = {m.name: m for m in IndexCollector(index, settings).collect()}
        assert metrics["larc_storage_accepting"].samples[0].value == 0
        assert metrics["larc_storage_free_bytes"].samples[0].value < MIN_FREE_MIB * 2**20

        # space comes back: the same daemon stores again, without a restart
        ballast.unlink()
        resent = storescu(daemon.port, second)
        assert resent.returncode == 0, resent.stderr[-2000:]
        with sqlite3.connect(data_dir / "index.sqlite3") as db:
            stored = {r[0] for r in db.execute("SELECT sop_uid FROM instances")}
        assert stored == _sop_uids(first) | _sop_uids(second)
        assert "storage has room again" in daemon.log()
        assert Health(index, settings, listener_ok=lambda: True).check()["status"] == "ok"
        metrics = {m.name: m for m in IndexCollector(index, settings).collect()}
        assert metrics["larc_storage_accepting"].samples[0].value == 1
    finally:
        stop_process(daemon.proc)


def test_a_large_object_that_would_eat_the_reserve_is_refused_as_it_arrives(
    small_disk: Path, tmp_path: Path, cohort: CohortResult
) -> None:
    """A 10 MiB object (spooled to disk as it arrives) when only 6 MiB are free above the
    watermark: its spool file stops before taking the reserve, the sender gets 0xA700 with the
    reason recorded (not an aborted association, not a full disk), and once space returns the
    same object is stored."""
    template = pydicom.dcmread(next(cohort.out_dir.rglob("*_t2w/*.dcm")))
    large = _multiframe(template, tmp_path / "large.dcm", 20, "reserve")  # 10 MiB of pixels
    data_dir = small_disk / "data"
    config = tmp_path / "larc.yaml"
    config.write_text(f"storage:\n  min_free_bytes: {MIN_FREE_MIB * 2**20}\n")
    daemon = start_daemon(data_dir, config=config)
    try:
        free = shutil.disk_usage(small_disk).free
        ballast = small_disk / "ballast"
        ballast.write_bytes(b"\0" * (free - (MIN_FREE_MIB + 6) * 2**20))
        refused = storescu(daemon.port, large, options=("-v",))
        said = refused.stdout + refused.stderr
        assert "Received Store Response (Refused: OutOfResources)" in said, said[-2000:]
        assert shutil.disk_usage(small_disk).free >= MIN_FREE_MIB * 2**20, "reserve kept"
        with sqlite3.connect(data_dir / "index.sqlite3") as db:
            (stored,) = db.execute("SELECT COUNT(*) FROM instances").fetchone()
            rejections = db.execute("SELECT status, reason FROM rejections").fetchall()
        assert stored == 0
        assert [r[0] for r in rejections] == [0xA700]
        assert "more would leave less than" in rejections[0][1]
        assert not list((data_dir / "spool").iterdir()), "its spool file is gone"
        assert "refused an instance" in daemon.log()

        ballast.unlink()
        resent = storescu(daemon.port, large)
        assert resent.returncode == 0, resent.stderr[-2000:]
        with sqlite3.connect(data_dir / "index.sqlite3") as db:
            (stored,) = db.execute("SELECT COUNT(*) FROM instances").fetchone()
        assert stored == 1
    finally:
        stop_process(daemon.proc)
