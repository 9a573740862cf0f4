"""Bad instances get a failure status and a recorded reason; daemon and store survive."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, StoragePresentationContexts

from dicom_io.synthetic.cohort import CohortResult
from tests.conftest import DaemonProcess, echo, larc_status

pytestmark = pytest.mark.integration


def _send(daemon: DaemonProcess, *items: Dataset | Path) -> list[int]:
    """C-STORE each item (a data set, or a file sent as its raw bytes) in one association."""
    ae = AE(ae_title="BADSCU")
    for context in StoragePresentationContexts:
        ae.add_requested_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES[:4])
    assoc = ae.associate("127.0.0.1", daemon.port, ae_title="LARC")
    assert assoc.is_established
    try:
        return [int(assoc.send_c_store(item).Status) for item in items]
    finally:
        assoc.release()


def _mr(cohort: CohortResult) -> Dataset:
    ds = pydicom.dcmread(next(cohort.out_dir.rglob("*_t2w/*.dcm")))
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    return ds


def _rows(daemon: DaemonProcess, sql: str) -> list[sqlite3.Row]:
    with sqlite3.connect(daemon.data_dir / "index.sqlite3") as db:
        db.row_factory = sqlite3.Row
        return db.execute(sql).fetchall()


def test_bad_instances_are_refused_with_a_reason(
    daemon: DaemonProcess, cohort: CohortResult
) -> None:
    good = _mr(cohort)
    assert _send(daemon, good) == [0x0000]
    good_path = Path(_rows(daemon, "SELECT path FROM instances")[0]["path"])
    good_hash = hashlib.sha256(good_path.read_bytes()).hexdigest()

    short_pixels = _mr(cohort)
    short_pixels.PixelData = short_pixels.PixelData[:-100]
    no_pixels = _mr(cohort)
    del no_pixels.PixelData
    no_patient = _mr(cohort)
    no_patient.PatientID = ""
    statuses = _send(daemon, short_pixels, no_pixels, no_patient)
    assert statuses == [0xA900, 0xA900, 0xA900]

    reasons = [r["reason"] for r in _rows(daemon, "SELECT reason FROM rejections ORDER BY id")]
    assert "Pixel Data has" in reasons[0]
    assert "no Pixel Data" in reasons[1]
    assert "PatientID is empty" in reasons[2]
    assert len(_rows(daemon, "SELECT * FROM instances")) == 1
    assert hashlib.sha256(good_path.read_bytes()).hexdigest() == good_hash
    assert echo(daemon.port)


def test_broken_files_are_not_understood(
    daemon: DaemonProcess, cohort: CohortResult, tmp_path: Path
) -> None:
    source = next(cohort.out_dir.rglob("*_t2w/*.dcm"))
    data = source.read_bytes()
    # the UIDs a sender needs, then an element that claims more bytes than follow, then junk
    head = Dataset()
    head.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    head.SOPInstanceUID = generate_uid()
    head.file_meta = pydicom.dcmread(source, stop_before_pixels=True).file_meta
    head.file_meta.MediaStorageSOPInstanceUID = head.SOPInstanceUID
    garbage = tmp_path / "garbage.dcm"
    head.save_as(garbage, enforce_file_format=True)
    with garbage.open("ab") as handle:
        handle.write(b"\x10\x00\x10\x00PN\xff\x7f" + b"\x00\x01junk" * 10)
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(data[: len(data) // 2])
    statuses = _send(daemon, garbage, truncated)
    assert all(s in (0xC000, 0xA900) for s in statuses), [hex(s) for s in statuses]
    assert _rows(daemon, "SELECT * FROM instances") == []
    assert len(_rows(daemon, "SELECT * FROM rejections")) == 2
    assert echo(daemon.port)


def test_other_storage_classes_are_stored_and_marked_ignored(daemon: DaemonProcess) -> None:
    ct = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    assert _send(daemon, ct) == [0x0000]
    (series,) = _rows(daemon, "SELECT * FROM series")
    assert "not used by larc" in series["ignored_reason"]
    run = larc_status(daemon.data_dir)
    assert run.returncode == 0, run.stderr
    assert "not used by larc" in run.stdout


def test_utf8_names_are_kept_as_sent(daemon: DaemonProcess, cohort: CohortResult) -> None:
    ds = _mr(cohort)
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = "Müller^José=山田^太郎"
    assert _send(daemon, ds) == [0x0000]
    (patient,) = _rows(daemon, "SELECT * FROM patients")
    assert patient["patient_name"] == "Müller^José=山田^太郎"


def test_duplicates_same_bytes_are_no_ops_and_changed_ones_are_audited(
    daemon: DaemonProcess, cohort: CohortResult
) -> None:
    ds = _mr(cohort)
    assert _send(daemon, ds, ds) == [0x0000, 0x0000]
    assert _rows(daemon, "SELECT * FROM duplicates") == []
    changed = pydicom.dcmread(_rows(daemon, "SELECT path FROM instances")[0]["path"])
    changed.SeriesDescription = "corrected by the technologist"
    assert _send(daemon, changed) == [0x0000]
    (audit,) = _rows(daemon, "SELECT * FROM duplicates")
    assert audit["policy"] == "keep_newest"
    assert audit["action"] == "replaced"
    (row,) = _rows(daemon, "SELECT * FROM instances")
    assert pydicom.dcmread(row["path"]).SeriesDescription == "corrected by the technologist"
    assert row["sha256"] == audit["new_sha256"]
