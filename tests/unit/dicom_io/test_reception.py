"""The spool pynetdicom writes received data sets into: memory first, a file past a limit."""

from __future__ import annotations

from pathlib import Path

import pytest

from dicom_io import reception
from dicom_io.scp import StoreRequest, first_group_in_file_format
from dicom_io.storage import Watermark


def test_a_small_data_set_stays_in_memory_and_leaves_no_file(tmp_path: Path) -> None:
    spool = reception.Spool(tmp_path)
    spool.write(b"abc")
    spool.file.flush()
    spool.close()
    assert spool.contents() == b"abc"
    assert not list(tmp_path.iterdir())


def test_a_large_data_set_spills_to_its_file_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reception, "SPILL_BYTES", 10)
    spool = reception.Spool(tmp_path)
    for chunk in (b"0123456", b"789abc", b"def"):
        spool.write(chunk)
        spool.file.flush()
    spool.close()
    assert spool.contents() is None
    assert Path(spool.name).parent == tmp_path
    assert Path(spool.name).name.startswith(reception.SPOOL_PREFIX)
    assert Path(spool.name).read_bytes() == b"0123456789abcdef"


def _file_format(dataset: bytes) -> bytes:
    meta = b"\x02\x00\x00\x00UL\x04\x00" + (6).to_bytes(4, "little") + b"\x02\x00\x01\x00OB"
    return b"\x00" * 128 + b"DICM" + meta[:12] + b"\x00" * 6 + dataset


def test_the_first_group_is_read_past_the_file_meta_in_memory_and_on_disk(
    tmp_path: Path,
) -> None:
    data = _file_format(b"\x08\x00\x16\x00")  # (0008,0016) first: a proper data set
    path = tmp_path / "x.dcm"
    path.write_bytes(data)
    assert first_group_in_file_format(data, "1.2.840.10008.1.2.1") == 0x0008
    assert first_group_in_file_format(path, "1.2.840.10008.1.2.1") == 0x0008
    meta_first = _file_format(b"\x02\x00\x10\x00")
    assert first_group_in_file_format(meta_first, "1.2.840.10008.1.2.1") == 0x0002
    assert first_group_in_file_format(b"not dicom", "1.2.840.10008.1.2.1") is None


def test_a_spooled_request_has_the_size_of_its_file(tmp_path: Path) -> None:
    path = tmp_path / "x.dcm"
    path.write_bytes(b"x" * 1234)
    request = StoreRequest("A", "127.0.0.1", "1.2", "1.2.3", "1.2.840.10008.1.2.1", b"", 8, path)
    assert request.size == 1234


def test_a_spool_that_would_take_the_reserve_is_refused_and_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reception, "SPILL_BYTES", 10)
    keep_everything = Watermark(tmp_path, min_free_bytes=2**62)
    spool = reception.Spool(tmp_path, keep_everything)
    for chunk in (b"0123456", b"789abc", b"def"):
        assert spool.write(chunk) == len(chunk)  # read from the network all the same
    spool.close()
    assert spool.refused is not None
    assert "must stay free" in spool.refused
    assert spool.contents() is None
    assert not list(tmp_path.iterdir())
