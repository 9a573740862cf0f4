"""DICOMweb both ways, and read-back confirmation, against a real Orthanc with Debian's
DICOMweb plugin (orthanc-dicomweb): results sent by STOW-RS (basic auth) and confirmed by
QIDO-RS; a wrong password and an object the server does not keep are failed tries with the
reason; a C-STORE destination without storage commitment confirmed by an image-level C-FIND;
priors fetched over QIDO-RS + WADO-RS through the same ingest as a C-STORE."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydantic import SecretStr

from daemon.export import Exporter
from daemon.export.destinations import dicomweb_node
from daemon.harness.peers import Orthanc, store_files
from daemon.index import Index
from daemon.intake.ingest import Ingest
from daemon.intake.priors import DicomWebArchive, PriorRetriever
from daemon.settings import Destination as CStoreSettings
from daemon.settings import (
    DicomWebAuth,
    DicomWebServer,
    ExportSettings,
    StowDestination,
)
from dicom_io.scp import StoreRequest
from dicom_io.storage import InstanceStore
from dicom_io.synthetic.cohort import CohortResult
from tests.conftest import require_tool
from tests.integration.test_commitment import (
    DELETE_ONE,
    Setup,
    _case,
    _results,
    _until,
    lua_scripts,
)

pytestmark = pytest.mark.integration

USER = ("larc", "s3cret-password")


def _orthanc(tmp_path: Path, files: list[Path], lua: str | None) -> Orthanc:
    """Orthanc with DICOMweb and basic auth; it knows larc (C-FIND is only for known nodes)."""
    require_tool("/usr/sbin/Orthanc")
    require_tool("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
    config = lua_scripts(tmp_path, lua, files)
    return Orthanc.start(
        tmp_path / "orthanc", modalities={"LARC": ["LARC", "127.0.0.1", 104]},
        dicomweb=True, user=USER, **config,
    )  # fmt: skip


@pytest.fixture
def setup(tmp_path: Path, cohort: CohortResult, request: pytest.FixtureRequest) -> Iterator[Setup]:
    """An Orthanc with DICOMweb and basic auth, and an exporter with one destination;
    ``request.param``: (destination kind "stow", "cstore" or "cstore-optional" (storage
    commitment asked, not waited for), password, Lua script or None)."""
    kind, password, lua = request.param
    data_dir = tmp_path / "data"
    files = _results(data_dir, cohort, 3)
    orthanc = _orthanc(tmp_path, files, lua)
    destination: StowDestination | CStoreSettings
    if kind == "stow":
        destination = StowDestination(
            url=orthanc.dicomweb_url,
            auth=DicomWebAuth(username=USER[0], password=SecretStr(password)),
        )
    else:
        destination = CStoreSettings(
            ae_title="ORTHANC", host="127.0.0.1", port=orthanc.dicom_port, read_back=True,
            commitment="optional" if kind == "cstore-optional" else "off",
        )  # fmt: skip
    index = Index(data_dir / "index.sqlite3")
    settings = ExportSettings(destinations=(destination,), max_attempts=2, backoff_s=0.2)
    exporter = Exporter(index, data_dir, settings, "LARC")
    _case(index, files, exporter.destinations())
    try:
        yield Setup(index, exporter, orthanc, files)
    finally:
        orthanc.stop()
        index.close()


def _scanner_store(path: Path, ds: pydicom.Dataset) -> StoreRequest:
    """The StoreRequest the listener makes of a scanner's C-STORE of ``path``."""
    return StoreRequest(
        calling_ae="SCANNER", peer_address="127.0.0.1", sop_class_uid=str(ds.SOPClassUID),
        sop_instance_uid=str(ds.SOPInstanceUID),
        transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID), data=path.read_bytes(),
    )  # fmt: skip


def _sop(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


@pytest.mark.parametrize("setup", [("stow", USER[1], None)], indirect=True)
def test_stow_rs_results_are_exported_once_qido_rs_lists_every_one(setup: Setup) -> None:
    done = _until(setup, "exported")
    url = setup.orthanc.dicomweb_url
    assert done["destination"] == url
    assert done["verified_by"] == "QIDO-RS read-back, 3 of 3"
    assert done["reason"] == f"results sent to {url} (confirmed by QIDO-RS read-back, 3 of 3)"
    held = {setup.orthanc.get(f"/instances/{i}")["MainDicomTags"]["SOPInstanceUID"]
            for i in setup.orthanc.get("/instances")}  # fmt: skip
    assert held == {_sop(f) for f in setup.files}


@pytest.mark.parametrize("setup", [("stow", "wrong-password", None)], indirect=True)
def test_a_refused_sign_in_is_a_failed_try_that_says_so(setup: Setup) -> None:
    failed = _until(setup, "failed-export")
    assert failed["attempts"] == 2
    error = str(failed["last_error"])
    assert error.startswith(f"{setup.orthanc.dicomweb_url}: STOW-RS answered HTTP 401"), error
    assert "check export/pacs auth" in error
    assert "wrong-password" not in error
    assert setup.orthanc.get("/instances") == []


@pytest.mark.parametrize("setup", [("stow", USER[1], DELETE_ONE)], indirect=True)
def test_an_object_the_server_does_not_keep_fails_the_qido_rs_read_back(setup: Setup) -> None:
    failed = _until(setup, "failed-export")
    gone = _sop(setup.files[1])
    assert failed["last_error"] == (
        f"QIDO-RS read-back: {setup.orthanc.dicomweb_url} does not list 1 of 3 objects sent: "
        f"...{gone[-8:]}"
    )
    assert failed["verified_by"] is None


@pytest.mark.parametrize(
    "setup", [("cstore", USER[1], None), ("cstore-optional", USER[1], None)], indirect=True
)
def test_a_c_store_destination_without_commitment_is_confirmed_by_c_find(setup: Setup) -> None:
    done = _until(setup, "exported")
    assert done["verified_by"] == "C-FIND read-back, 3 of 3"
    assert str(done["reason"]).endswith("(confirmed by C-FIND read-back, 3 of 3)")


@pytest.mark.parametrize("setup", [("cstore", USER[1], DELETE_ONE)], indirect=True)
def test_an_object_missing_from_the_c_find_read_back_is_a_failed_try(setup: Setup) -> None:
    failed = _until(setup, "failed-export")
    gone = _sop(setup.files[1])
    assert failed["last_error"] == (
        f"C-FIND read-back: ORTHANC does not list 1 of 3 objects sent: ...{gone[-8:]}"
    )
    assert failed["attempts"] == 2


def test_priors_come_over_qido_rs_and_wado_rs_through_the_ingest(
    tmp_path: Path, cohort: CohortResult
) -> None:
    patient = cohort.patients[0]
    baseline, restaging = patient.studies["baseline"], patient.studies["restaging"]
    orthanc = _orthanc(tmp_path, [], None)
    index = Index(tmp_path / "larc" / "index.sqlite3")
    try:
        sent = store_files(orthanc.dicom_port, "ORTHANC", baseline.directory)
        assert sent.returncode == 0, sent.stderr
        in_pacs = len(orthanc.get("/instances"))
        # larc already holds the restaging study: it must not be fetched again
        store_files(orthanc.dicom_port, "ORTHANC", restaging.directory)
        ingest = Ingest(InstanceStore(tmp_path / "larc" / "store"), index, "keep_newest")
        for path in sorted(restaging.directory.rglob("*.dcm")):
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            assert ingest(_scanner_store(path, ds)) == 0
        server = DicomWebServer(
            url=orthanc.dicomweb_url,
            auth=DicomWebAuth(username=USER[0], password=SecretStr(USER[1])),
        )
        archive = DicomWebArchive(dicomweb_node(server), ingest)
        retriever = PriorRetriever(archive, index.study_uids_of_patient)
        try:
            fetched = retriever.retrieve(patient.patient_id)
        finally:
            retriever.stop()
        rows = index.query(
            "SELECT i.calling_ae, COUNT(*) AS n FROM instances i JOIN series s USING "
            "(series_uid) WHERE s.study_uid = ? GROUP BY i.calling_ae",
            (baseline.study_instance_uid,),
        )
        assert fetched == in_pacs
        assert [(r["calling_ae"], r["n"]) for r in rows] == [("DICOMWEB", in_pacs)]
        assert index.study_uids_of_patient(patient.patient_id) == {
            baseline.study_instance_uid, restaging.study_instance_uid,
        }  # fmt: skip
        assert index.query("SELECT COUNT(*) AS n FROM rejections")[0]["n"] == 0
        # a second look finds nothing new to fetch
        assert (
            PriorRetriever(archive, index.study_uids_of_patient).retrieve(patient.patient_id) == 0
        )
    finally:
        orthanc.stop()
        index.close()
