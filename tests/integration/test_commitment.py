"""Confirmed delivery: results sent to a real Orthanc (the Debian package, a Storage Commitment
SCP since 1.6.0) with ``commitment: required``, Orthanc's N-EVENT-REPORT coming back on an
association of its own to larc's listener. A case is exported only once Orthanc has committed
every object; an object Orthanc does not hold (a Lua script deletes it as it arrives) and a
report that never comes (Orthanc told a wrong port for larc) are failed tries with the reason."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest

from daemon.cases import CaseState
from daemon.export import Exporter
from daemon.harness.peers import Orthanc
from daemon.index import Index
from daemon.settings import Destination, ExportSettings
from dicom_io.scp import STATUS_SUCCESS, Listener, ListenerOptions
from dicom_io.synthetic.cohort import CohortResult
from tests.conftest import free_port, require_tool
from tests.integration.test_tls import _record

pytestmark = pytest.mark.integration


@dataclass
class Setup:
    index: Index
    exporter: Exporter
    orthanc: Orthanc
    files: list[Path]


def _results(data_dir: Path, cohort: CohortResult, count: int) -> list[Path]:
    """``count`` instances of a cohort T2W series standing in for a case's result objects."""
    sources = sorted(next(cohort.out_dir.rglob("*_t2w")).glob("*.dcm"))[:count]
    folder = data_dir / "results"
    folder.mkdir(parents=True)
    out = []
    for source in sources:
        shutil.copyfile(source, folder / source.name)
        out.append(folder / source.name)
    return out


def _case(index: Index, files: list[Path], destinations: list[str]) -> None:
    ds = pydicom.dcmread(files[0], stop_before_pixels=True)
    index.record_instance(_record(ds), files[0], 1, "0", "TEST")
    index.upsert_case(
        {"case_id": "resp-1", "patient_id": ds.PatientID, "kind": "response", "version": 1,
         "state": "ready", "reason": "", "baseline_study_uid": None,
         "restaging_study_uid": None, "inputs": "{}", "fingerprint": "f"},
        new_version=True,
    )  # fmt: skip
    for state in (CaseState.QUEUED, CaseState.RUNNING, CaseState.DONE):  # as when scored
        index.set_case_state("resp-1", 1, state, state)
    index.record_result(
        {"work_key": "k", "case_id": "resp-1", "version": 1, "study_uid": "1",
         "sr_sop_uid": "2", "sr_series_uid": "3", "scores": "{}",
         "files": "\n".join(f"results/{f.name}" for f in files)},
        destinations,
    )  # fmt: skip


def lua_scripts(folder: Path, lua: str | None, files: list[Path]) -> dict[str, list[str]]:
    """Orthanc settings loading ``lua`` (``@UID@``: the second file's SOP Instance UID), or none."""
    if lua is None:
        return {}
    script = folder / "orthanc.lua"
    uid = str(pydicom.dcmread(files[1], stop_before_pixels=True).SOPInstanceUID)
    script.write_text(lua.replace("@UID@", uid))
    return {"LuaScripts": [str(script)]}


@pytest.fixture
def setup(tmp_path: Path, cohort: CohortResult, request: pytest.FixtureRequest) -> Iterator[Setup]:
    """larc's listener (with the exporter's commitment handler) and an Orthanc that knows it;
    ``request.param``: (Orthanc's port for larc: "right" or "wrong", Lua script or None)."""
    require_tool("/usr/sbin/Orthanc")
    where, lua = request.param
    data_dir = tmp_path / "data"
    files = _results(data_dir, cohort, 3)
    port = free_port()
    config = lua_scripts(tmp_path, lua, files)
    larc_port = port if where == "right" else free_port()  # a wrong port: no report arrives
    orthanc = Orthanc.start(
        tmp_path / "orthanc", modalities={"LARC": ["LARC", "127.0.0.1", larc_port]}, **config
    )
    destination = Destination(
        ae_title="ORTHANC", host="127.0.0.1", port=orthanc.dicom_port,
        commitment="required", commitment_timeout_s=3.0,
    )  # fmt: skip
    index = Index(data_dir / "index.sqlite3")
    settings = ExportSettings(destinations=(destination,), max_attempts=2, backoff_s=0.5)
    exporter = Exporter(index, data_dir, settings, "LARC")
    listener = Listener(
        ListenerOptions(ae_title="LARC", bind_address="127.0.0.1", port=port),
        on_store=lambda _: STATUS_SUCCESS,
        on_commitment=exporter.on_commitment,
    )
    listener.start()
    _case(index, files, exporter.destinations())
    try:
        yield Setup(index, exporter, orthanc, files)
    finally:
        listener.stop()
        orthanc.stop()
        index.close()


def _until(setup: Setup, done: str, timeout_s: float = 30) -> dict[str, object]:
    """Run the exporter's passes until the case reaches ``done``; its row and its export's."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        setup.exporter.run_due()
        case = dict(setup.index.query("SELECT state, reason FROM cases")[0])
        if case["state"] == done:
            return case | dict(setup.index.query("SELECT * FROM exports")[0])
        time.sleep(0.2)
    exports = [dict(r) for r in setup.index.query("SELECT * FROM exports")]
    pytest.fail(f"case never {done}: {exports}")


@pytest.mark.parametrize("setup", [("right", None)], indirect=True)
def test_a_case_is_exported_once_orthanc_has_committed_every_object(setup: Setup) -> None:
    first = setup.exporter.run_due()
    assert first.sent == 1
    row = setup.index.query("SELECT state FROM exports")[0]
    case = setup.index.query("SELECT state FROM cases")[0]
    # sent, not yet exported, unless Orthanc's report already came back in between
    assert (row["state"], case["state"]) in (("committing", "done"), ("sent", "exported"))
    done = _until(setup, "exported")
    assert done["committed_by"] == "ORTHANC"
    assert done["reason"] == (
        f"results sent to ORTHANC@127.0.0.1:{setup.orthanc.dicom_port} (committed by ORTHANC)"
    )
    assert len(setup.orthanc.get("/instances")) == len(setup.files)


DELETE_ONE = """
function OnStoredInstance(instanceId, tags, metadata, origin)
  if tags['SOPInstanceUID'] == '@UID@' then
    Delete(instanceId)
  end
end
"""


@pytest.mark.parametrize("setup", [("right", DELETE_ONE)], indirect=True)
def test_an_object_orthanc_does_not_hold_fails_the_commitment_with_its_reason(
    setup: Setup,
) -> None:
    failed = _until(setup, "failed-export")
    gone = str(pydicom.dcmread(setup.files[1], stop_before_pixels=True).SOPInstanceUID)
    assert failed["state"] == "failed"
    assert failed["attempts"] == 2  # sent and asked again after the first failure
    assert str(failed["last_error"]).startswith("commitment failed for 1 of 3 objects: ")
    assert f"...{gone[-12:]} (no such object instance)" in str(failed["last_error"])
    assert failed["committed_by"] is None


@pytest.mark.parametrize("setup", [("wrong", None)], indirect=True)
def test_a_commitment_that_never_comes_is_a_failed_try(setup: Setup) -> None:
    failed = _until(setup, "failed-export")
    assert failed["last_error"] == (
        f"no storage commitment from ORTHANC@127.0.0.1:{setup.orthanc.dicom_port} within 3 s"
    )
    assert failed["attempts"] == 2
    assert len(setup.orthanc.get("/instances")) == len(setup.files)  # it did store them
