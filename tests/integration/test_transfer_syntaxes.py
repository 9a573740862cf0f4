"""Compressed and legacy transfer syntaxes are accepted, stored as sent, and decodable."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from tests.conftest import DaemonProcess, storescu

pytestmark = pytest.mark.integration

# real files shipped with pydicom (see its test-file provenance notes)
# and the storescu option that makes it propose the file's own transfer syntax
FILES = {
    "MR_small_implicit.dcm": "-xi",
    "MR_small_bigendian.dcm": "-xb",
    "MR_small_RLE.dcm": "-xr",
    "MR_small_jpeg_ls_lossless.dcm": "-xt",
    "MR_small_jp2klossless.dcm": "-xv",
    "SC_rgb_jpeg_dcmtk.dcm": "-xy",
    "JPGExtended.dcm": "-xx",
    "emri_small_jpeg_2k_lossless.dcm": "-xv",
}


def test_each_transfer_syntax_is_stored_as_sent_and_decodes(
    daemon: DaemonProcess, tmp_path: Path
) -> None:
    paths = []
    for name in FILES:
        ds = pydicom.dcmread(str(get_testdata_file(name)))
        if not ds.get("PatientID"):  # larc refuses instances it cannot pair: give one an id
            ds.PatientID = "TS-TEST"
        # the MR_small variants share one SOP Instance UID: make each its own instance
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.save_as(tmp_path / name)  # the pixel data stays encoded as it was
        paths.append(tmp_path / name)
    for path in paths:  # one association each, proposing the file's syntax and uncompressed ones
        run = storescu(daemon.port, path, options=(FILES[path.name],))
        assert run.returncode == 0, f"{path.name}: {run.stderr[-2000:]}"
    with sqlite3.connect(daemon.data_dir / "index.sqlite3") as db:
        stored = dict(db.execute("SELECT sop_uid, path FROM instances").fetchall())
    for path in paths:
        sent = pydicom.dcmread(path)
        kept = pydicom.dcmread(stored[sent.SOPInstanceUID])
        assert kept.file_meta.TransferSyntaxUID == sent.file_meta.TransferSyntaxUID, path.name
        assert kept.PixelData == sent.PixelData
        assert kept.pixel_array.shape == sent.pixel_array.shape  # the decoders are installed
