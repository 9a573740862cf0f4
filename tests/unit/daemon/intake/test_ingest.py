"""The store handler's refusals that need no network: File Meta in the data set, no room."""

from __future__ import annotations

from pathlib import Path

from daemon.index import Index
from daemon.intake.ingest import Ingest
from dicom_io.scp import (
    STATUS_CANNOT_UNDERSTAND,
    STATUS_OUT_OF_RESOURCES,
    StoreRequest,
    first_group,
)
from dicom_io.storage import InstanceStore, Watermark

MR = "1.2.840.10008.5.1.4.1.1.4"


def _request(first: int | None) -> StoreRequest:
    return StoreRequest("SCANNER", "127.0.0.1", MR, "1.2.3.4", "1.2.840.10008.1.2.1", b"", first)


def test_file_meta_elements_in_the_data_set_are_refused_with_the_reason(tmp_path: Path) -> None:
    index = Index(tmp_path / "index.sqlite3")
    ingest = Ingest(InstanceStore(tmp_path / "instances"), index, "keep_newest")
    assert ingest(_request(0x0002)) == STATUS_CANNOT_UNDERSTAND
    (row,) = index.query("SELECT status, reason, sop_uid FROM rejections")
    assert row["status"] == STATUS_CANNOT_UNDERSTAND
    assert "group 0002" in row["reason"]
    assert row["sop_uid"] == "1.2.3.4"


def test_no_room_is_out_of_resources_before_anything_is_read(tmp_path: Path) -> None:
    index = Index(tmp_path / "index.sqlite3")
    free, _ = Watermark(tmp_path).space()
    full = Watermark(tmp_path, min_free_bytes=free + 2**30)
    ingest = Ingest(InstanceStore(tmp_path / "instances"), index, "keep_newest", full)
    assert ingest(_request(0x0008)) == STATUS_OUT_OF_RESOURCES
    (row,) = index.query("SELECT status, reason FROM rejections")
    assert "storage.min_free_bytes" in row["reason"]


def test_the_first_group_is_read_in_the_transfer_syntax_byte_order() -> None:
    assert first_group(b"\x08\x00\x05\x00", "1.2.840.10008.1.2.1") == 0x0008
    assert first_group(b"\x00\x08\x00\x05", "1.2.840.10008.1.2.2") == 0x0008
    assert first_group(b"\x78\x9c", "1.2.840.10008.1.2.1.99") is None  # deflated: not known
    assert first_group(b"", "1.2.840.10008.1.2") is None
