"""The instance store: only valid UIDs reach a path; writes are atomic."""

from __future__ import annotations

from pathlib import Path

import pytest

from dicom_io.errors import InvalidInputError
from dicom_io.storage import InstanceStore, Watermark, validate_uid


@pytest.mark.parametrize(
    "uid",
    ["", "1.2.abc", "../../etc/passwd", "1.02.3", "1..2", "1.2.", "1." + "2" * 70, "1.2/3"],
)
def test_malformed_uids_never_become_paths(tmp_path: Path, uid: str) -> None:
    store = InstanceStore(tmp_path)
    with pytest.raises(InvalidInputError):
        store.path_for("1.2.3", "1.2.3.4", uid)
    with pytest.raises(InvalidInputError):
        store.path_for(uid, "1.2.3.4", "1.2.3.4.5")


def test_valid_uid_with_trailing_padding_is_accepted() -> None:
    assert validate_uid("1.2.840.10008.1.1\x00", "X") == "1.2.840.10008.1.1"
    assert validate_uid("0.1.2", "X") == "0.1.2"


def test_write_is_atomic_and_leaves_no_temp_files(tmp_path: Path) -> None:
    store = InstanceStore(tmp_path)
    path = store.path_for("1.2.3", "1.2.3.4", "1.2.3.4.5")
    first = store.write(path, b"first version")
    assert path.read_bytes() == b"first version"
    second = store.write(path, b"second")
    assert path.read_bytes() == b"second"
    assert first.sha256 != second.sha256
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_leftover_partial_files_are_removed_at_start(tmp_path: Path) -> None:
    store = InstanceStore(tmp_path)
    path = store.path_for("1.2.3", "1.2.3.4", "1.2.3.4.5")
    store.write(path, b"kept")
    (path.parent / ".incoming-abc.part").write_bytes(b"half")
    assert store.remove_leftovers() == 1
    assert path.read_bytes() == b"kept"


def test_the_watermark_keeps_the_larger_of_bytes_and_percent(tmp_path: Path) -> None:
    free, total = Watermark(tmp_path).space()
    assert 0 < free <= total
    assert Watermark(tmp_path, 100, 0).required(1000) == 100
    assert Watermark(tmp_path, 100, 50).required(1000) == 500
    assert Watermark(tmp_path, 0).shortfall() is None
    # an instance that would take the free space below the mark is refused, with the reason
    reason = Watermark(tmp_path, 2**20).shortfall(incoming=free)
    assert reason is not None
    assert "storage.min_free_bytes" in reason
    assert "cannot read the free space" in str(Watermark(tmp_path / "gone").shortfall())


def test_adopt_moves_a_received_file_into_place_without_leaving_it_behind(
    tmp_path: Path,
) -> None:
    store = InstanceStore(tmp_path / "instances")
    spool = tmp_path / "spool"
    spool.mkdir()
    received = spool / "c-store-1.dcm"
    received.write_bytes(b"DICOM bytes")
    path = store.path_for("1.2.3", "1.2.3.4", "1.2.3.4.5")
    stored = store.adopt(received, path, "cafe")
    assert stored.path == path
    assert stored.size == len(b"DICOM bytes")
    assert path.read_bytes() == b"DICOM bytes"
    assert not received.exists()
    assert not list(spool.iterdir())
