"""Fuzzing the C-STORE path over real associations (hypothesis).

Valid instances of the synthetic cohort (an MR image, an RTSTRUCT, a SEG) are mutated: bytes
flipped, inserted and cut, element lengths and VRs rewritten, sequences nested hundreds deep, a
transfer syntax declared that the bytes do not follow. Each mutant carries a fresh SOP Instance
UID and is sent as it is (pynetdicom sends the file's bytes without decoding them) to a running
``larc serve``. What must hold for every one:

- the listener answers it (a status, never a dropped association) and stays up;
- a success means the bytes are stored whole and indexed; a refusal is recorded with a reason;
- nothing stored before is harmed.

The number of examples (each: one association, 20 mutants) is ``LARC_FUZZ_EXAMPLES`` (CI: 100,
so 2,000 mutants, with a fixed seed); set it higher, and ``LARC_FUZZ_RANDOM=1`` for a fresh
seed, for a longer run (figures in the README).
"""

from __future__ import annotations

import hashlib
import io
import itertools
import os
import socket
import sqlite3
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, Association, _config
from pynetdicom.dsutils import split_dataset

from dicom_io.scp import ACCEPTED_TRANSFER_SYNTAXES
from dicom_io.synthetic.cohort import CohortResult
from tests.conftest import echo, start_daemon, stop_process

pytestmark = pytest.mark.integration

EXAMPLES = int(os.environ.get("LARC_FUZZ_EXAMPLES", "100"))
PER_ASSOCIATION = 20
# every mutant's SOP Instance UID has this length, so offsets found once stay right
PLACEHOLDER = "2.25.1" + "0" * 38
_serial = itertools.count(1)
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR",
             b"UT", b"UV"}  # fmt: skip
_VRS = [b"AE", b"AS", b"CS", b"DA", b"DS", b"FL", b"IS", b"LO", b"OB", b"OW", b"PN", b"SH",
        b"SQ", b"SS", b"UI", b"UL", b"UN", b"US", b"UT", b"XX", b"\x00\x00"]  # fmt: skip


@dataclass(frozen=True)
class Base:
    """A valid instance: its SOP class, encoded body (explicit VR little endian, the SOP
    Instance UID a placeholder) and where its top-level elements' headers start."""

    sop_class: str
    body: bytes = field(repr=False)
    headers: tuple[tuple[int, bool], ...] = field(repr=False)  # (offset, long VR form)


def _encode(ds: Dataset, uid: str | None = PLACEHOLDER) -> bytes:
    if uid is not None:
        ds.SOPInstanceUID = uid
    out = io.BytesIO()
    dcmwrite(out, ds, enforce_file_format=False, little_endian=True, implicit_vr=False)
    return out.getvalue()


def _base(path: Path) -> Base:
    ds = pydicom.dcmread(path)
    body = _encode(Dataset(ds))
    headers = []
    offset = 0
    while offset + 8 <= len(body):  # walk the top-level elements of the explicit VR encoding
        vr = body[offset + 4 : offset + 6]
        long_form = vr in _LONG_VRS
        length = int.from_bytes(
            body[offset + 8 : offset + 12] if long_form else body[offset + 6 : offset + 8],
            "little",
        )
        headers.append((offset, long_form))
        if length == 0xFFFFFFFF:
            break  # undefined length: the walk stops here (the writer above never makes one)
        offset += (12 if long_form else 8) + length
    return Base(str(ds.SOPClassUID), body, tuple(headers))


def _deep(levels: int, undefined: bool) -> bytes:
    """A data set whose sequence is nested ``levels`` deep."""
    inner = Dataset()
    inner.CodeValue = "X"
    for _ in range(levels):
        outer = Dataset()
        outer.ContentSequence = Sequence([inner])
        if undefined:
            outer["ContentSequence"].is_undefined_length = True
        inner = outer
    return _encode(inner, uid=None)


@dataclass(frozen=True)
class Mutant:
    """A mutated instance: what was done (its repr, short enough to report) and the result."""

    what: str
    sop_class: str
    syntax: str
    body: bytes = field(repr=False)


@st.composite
def mutant(draw: st.DrawFn, bases: list[Base]) -> Mutant:
    """A mutation of one of ``bases`` (its body still holds the placeholder UID)."""
    which = draw(st.integers(0, len(bases) - 1))
    base = bases[which]
    body = bytearray(base.body)
    syntax = str(ExplicitVRLittleEndian)
    kind = draw(
        st.sampled_from(["flip", "insert", "cut", "length", "vr", "deep", "syntax", "none"])
    )
    before = bytes(body)
    if kind == "flip":
        for _ in range(draw(st.integers(1, 8))):
            body[draw(st.integers(0, len(body) - 1))] = draw(st.integers(0, 255))
    elif kind == "insert":
        at = draw(st.integers(0, len(body)))
        body[at:at] = draw(st.binary(min_size=1, max_size=64))
    elif kind == "cut":
        del body[draw(st.integers(0, len(body) - 1)) :]
    elif kind == "length":
        offset, long_form = base.headers[draw(st.integers(0, len(base.headers) - 1))]
        field = slice(offset + 8, offset + 12) if long_form else slice(offset + 6, offset + 8)
        size = field.stop - field.start
        value = draw(st.sampled_from([0, 1, 2**(8 * size) - 1, 2**(8 * size) - 2])
                     | st.integers(0, 2 ** (8 * size) - 1))  # fmt: skip
        body[field] = value.to_bytes(size, "little")
    elif kind == "vr":
        offset, _ = base.headers[draw(st.integers(0, len(base.headers) - 1))]
        body[offset + 4 : offset + 6] = draw(st.sampled_from(_VRS))
    elif kind == "deep":
        body = bytearray(
            base.body + _deep(draw(st.integers(1, 400)), draw(st.booleans()))
        )  # appended after the valid elements: tags out of order, nesting deep
    elif kind == "syntax":  # the bytes stay explicit VR little endian
        syntax = draw(st.sampled_from(ACCEPTED_TRANSFER_SYNTAXES))
    first = next((i for i, (a, b) in enumerate(zip(before, body, strict=False)) if a != b), None)
    what = f"{kind} of base {which}: {len(before)} -> {len(body)} bytes, first change at {first}"
    return Mutant(f"{what}, syntax {syntax}", base.sop_class, syntax, bytes(body))


def _fresh_uid() -> str:
    uid = f"2.25.1{next(_serial):038d}"
    assert len(uid) == len(PLACEHOLDER)
    return uid


def _write(folder: Path, sop_class: str, syntax: str, body: bytes) -> tuple[Path, str, bytes]:
    uid = _fresh_uid()
    body = body.replace(PLACEHOLDER.encode(), uid.encode())
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = uid
    meta.TransferSyntaxUID = syntax
    head = io.BytesIO()
    shell = Dataset()
    shell.file_meta = meta
    dcmwrite(head, shell, enforce_file_format=True)
    path = folder / f"{uid}.dcm"
    path.write_bytes(head.getvalue() + body)
    # what pynetdicom sends: the bytes after the file meta as it reads them (a mutant whose
    # first element is a group 0002 one has that element read as file meta, not sent)
    _, offset = split_dataset(path)
    return path, uid, path.read_bytes()[offset:]


def _nodelay(assoc: Association) -> None:
    """Nagle off (pynetdicom leaves it on: each small instance would wait for a delayed ACK)."""
    raw = getattr(assoc.dul.socket, "socket", None)
    if isinstance(raw, socket.socket):
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _stored_body(path: str) -> bytes:
    _, offset = split_dataset(Path(path))
    return Path(path).read_bytes()[offset:]


def test_mutated_instances_each_get_a_status_and_harm_nothing(
    tmp_path: Path, cohort: CohortResult
) -> None:
    study = cohort.out_dir / cohort.patients[0].patient_id
    files = [next(study.rglob(f"*_{series}/*.dcm")) for series in ("t2w", "rtstruct", "seg")]
    bases = [_base(p) for p in files]
    daemon = start_daemon(tmp_path / "data")
    index = daemon.data_dir / "index.sqlite3"
    _config.STORE_SEND_CHUNKED_DATASET = True  # send each file's bytes as they are
    ae = AE(ae_title="FUZZER")
    for context in {(b.sop_class, s) for b in bases for s in ACCEPTED_TRANSFER_SYNTAXES}:
        ae.add_requested_context(context[0], context[1])
    ae.add_requested_context("1.2.840.10008.1.1")
    outcomes: dict[str, int] = {}
    problems: list[str] = []
    try:
        # what was stored before the fuzzing, and must stay so
        before_dir = tmp_path / "before"
        before_dir.mkdir()
        assoc = ae.associate("127.0.0.1", daemon.port, ae_title="LARC")
        assert assoc.is_established
        for base in bases:
            path, _, _ = _write(before_dir, base.sop_class, str(ExplicitVRLittleEndian),
                                base.body)  # fmt: skip
            assert assoc.send_c_store(path).Status == 0
        assoc.release()
        with sqlite3.connect(index) as db:
            kept = {uid: (path, hashlib.sha256(Path(path).read_bytes()).hexdigest())
                    for uid, path in db.execute("SELECT sop_uid, path FROM instances")}  # fmt: skip
        assert len(kept) == len(bases)

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            derandomize=os.environ.get("LARC_FUZZ_RANDOM") != "1",
            suppress_health_check=list(HealthCheck),
            phases=[Phase.explicit, Phase.generate],  # no shrinking: each try is an association
        )
        @given(st.lists(mutant(bases), min_size=PER_ASSOCIATION, max_size=PER_ASSOCIATION))
        def one_association(mutants: list[Mutant]) -> None:
            # problems are collected, not raised: hypothesis would replay the association
            with tempfile.TemporaryDirectory(dir=tmp_path) as folder:
                assoc = ae.associate("127.0.0.1", daemon.port, ae_title="LARC")
                if not assoc.is_established:
                    problems.append("the listener refused a new association")
                    return
                _nodelay(assoc)
                sent = []
                try:
                    for one in mutants:
                        path, uid, sent_body = _write(
                            Path(folder), one.sop_class, one.syntax, one.body
                        )
                        answer = assoc.send_c_store(path)
                        if "Status" not in answer:
                            problems.append(f"no status for {one}")
                            return
                        sent.append((one, uid, int(answer.Status), sent_body))
                finally:
                    assoc.release()
            with sqlite3.connect(index) as db:
                for one, uid, status, body in sent:
                    outcomes[uid] = status
                    row = db.execute("SELECT path FROM instances WHERE sop_uid = ?", (uid,))
                    stored = row.fetchone()
                    refused = db.execute(
                        "SELECT reason FROM rejections WHERE sop_uid = ?", (uid,)
                    ).fetchone()
                    if status == 0 and stored is None:
                        problems.append(f"acknowledged, not stored: {one}")
                    elif status == 0 and _digest(_stored_body(stored[0])) != _digest(body):
                        problems.append(f"not stored whole: {one}")
                    elif status != 0 and stored is not None:
                        problems.append(f"refused (0x{status:04X}) but stored: {one}")
                    elif status != 0 and refused is None:
                        problems.append(f"no reason recorded for 0x{status:04X}: {one}")

        one_association()
        assert not problems, "\n".join(problems[:10])
        assert echo(daemon.port, calling_ae="LARCTEST"), "the listener is still up"
        assert daemon.proc.poll() is None
        for uid, (path, sha256) in kept.items():
            assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == sha256, uid
        assert not list(daemon.data_dir.rglob("*.part"))
        log = daemon.log()
        assert "Traceback" not in log, log[-3000:]
        # the fuzzing reached both sides of the check
        assert any(s == 0 for s in outcomes.values())
        assert any(s != 0 for s in outcomes.values())
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = False
        stop_process(daemon.proc)
    statuses = sorted({f"0x{s:04X}" for s in outcomes.values()})
    print(f"{len(outcomes)} mutants: " + ", ".join(
        f"{s} x {sum(1 for v in outcomes.values() if f'0x{v:04X}' == s)}" for s in statuses
    ))  # fmt: skip
