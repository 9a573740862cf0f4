"""Shared fixtures: small synthetic cohorts, and real servers on free loopback ports."""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pynetdicom import AE

from daemon.harness import REDIS_SERVER, Redis
from daemon.harness.peers import (
    NODELAY_ENV,
    Orthanc,
    free_port,
    stop_process,
    store_files,
)
from dicom_io.synthetic.cohort import CohortResult, CohortSpec, generate_cohort
from pipeline.config import PreprocessConfig

__all__ = ["free_port", "stop_process"]

LARC = str(Path(sys.executable).parent / "larc")

# The session's bundles are trained for seconds and their validation backs no output, so with
# the default scoring.require_validated larc would send no score at all. Every daemon, worker
# and harness these tests start (they inherit the environment) sends every output, so that the
# plumbing's numbers can be checked; tests/integration/test_validation_gate.py turns the gate
# back on and checks what it withholds.
GATE_OFF = {"LARC_SCORING__REQUIRE_VALIDATED": "false"}
os.environ.update(GATE_OFF)


def require_tool(path: str) -> str:
    """The path of an external tool the suite needs; fail (not skip) when setup missed it."""
    found = shutil.which(path) or (path if Path(path).is_file() else None)
    if found is None:
        pytest.fail(f"{path} not found: run `bash deploy/setup.sh --dev` to install it")
    return found


@pytest.fixture(scope="session")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> CohortResult:
    """Four complete patients (both studies, ADC and SEG everywhere), matrix 48, 12 slices."""
    spec = CohortSpec(
        patients=4, seed=11, matrix=48, slices=12, missing_fraction=0.0, seg_fraction=1.0
    )
    return generate_cohort(spec, tmp_path_factory.mktemp("cohort"), workers=2)


@dataclass
class TrainedBundle:
    """A small model bundle trained by ``larc train models`` on a synthetic cohort."""

    cohort: CohortResult
    folder: Path
    run: subprocess.CompletedProcess[str]
    preprocess: PreprocessConfig


@pytest.fixture(scope="session")
def trained_bundle(tmp_path_factory: pytest.TempPathFactory) -> TrainedBundle:
    """48 patients (matrix 48, 12 slices: the geometry of ``cohort``, so that its cases lie
    inside the training envelope), tiny networks, 32-pixel inputs, no N4, a segmenter trained
    for 3 epochs: checks plumbing, not
    quality (bench/models.py measures that). Trained once per test session."""
    root = tmp_path_factory.mktemp("trained")
    spec = CohortSpec(patients=48, seed=21, matrix=48, slices=12, missing_fraction=0.0)
    cohort = generate_cohort(spec, root / "cohort", workers=2)
    folder = root / "bundle"
    args = [
        LARC, "train", "models", "--cohort", str(cohort.out_dir), "--out", str(folder),
        "--version", "9.9.9", "--folds", "2", "--epochs", "2", "--patience", "2",
        "--width", "0.25", "--image-size", "32", "--stack-size", "32",
        "--stack-depth", "8", "--no-n4", "--segmentation-epochs", "3",
        "--segmentation-steps", "10",
    ]  # fmt: skip
    run = subprocess.run(
        args,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if run.returncode != 0:
        pytest.fail(f"larc train models failed:\n{run.stderr[-3000:]}")
    preprocess = PreprocessConfig(slice_size=32, stack_size=32, stack_depth=8, n4=False)
    return TrainedBundle(cohort, folder, run, preprocess)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[Redis]:
    """A private Redis for one test; stopped by PID afterwards."""
    require_tool(REDIS_SERVER)
    server = Redis.start(tmp_path / "redis")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[Orthanc]:
    """Orthanc (Debian package) with its own storage, on free ports; stopped by PID afterwards."""
    require_tool("/usr/sbin/Orthanc")
    server = Orthanc.start(tmp_path / "orthanc")
    try:
        yield server
    finally:
        server.stop()


@dataclass
class DaemonProcess:
    """``larc serve`` running as its own process, as in production."""

    port: int
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen[bytes]
    ae_title: str = "LARC"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def echo(port: int, calling_ae: str = "ECHOSCU", called_ae: str = "LARC") -> bool:
    """Whether dcmtk's echoscu gets a C-ECHO success."""
    run = subprocess.run(
        ["/usr/bin/echoscu", "-aet", calling_ae, "-aec", called_ae, "127.0.0.1", str(port)],
        capture_output=True,
        timeout=30,
        check=False,
        env=NODELAY_ENV,
    )
    return run.returncode == 0


def tls_echo(port: int, ca_file: Path) -> bool:
    """Whether a C-ECHO over TLS (pynetdicom, trusting ``ca_file``) succeeds."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_file))
    ae = AE(ae_title="LARCTEST")
    ae.add_requested_context("1.2.840.10008.1.1")
    try:
        assoc = ae.associate("127.0.0.1", port, ae_title="LARC", tls_args=(context, "127.0.0.1"))
    except OSError:
        return False
    if not assoc.is_established:
        return False
    ok = bool(assoc.send_c_echo().Status == 0)
    assoc.release()
    return ok


def start_daemon(
    data_dir: Path,
    port: int | None = None,
    config: Path | None = None,
    extra: tuple[str, ...] = (),
    probe_tls: Path | None = None,
) -> DaemonProcess:
    """Start ``larc serve`` and wait until it answers C-ECHO (dcmtk echoscu; over TLS, trusting
    the certificate ``probe_tls``, when given)."""
    port = port or free_port()
    log_path = data_dir.parent / f"{data_dir.name}-serve.log"
    args = [LARC, "serve", "--port", str(port), "--data-dir", str(data_dir), *extra]
    if config is not None:
        args += ["--config", str(config)]
    with log_path.open("ab") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    daemon = DaemonProcess(port, data_dir, log_path, proc)
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            pytest.fail(f"larc serve exited at start-up:\n{daemon.log()[-3000:]}")
        if tls_echo(port, probe_tls) if probe_tls else echo(port, calling_ae="LARCTEST"):
            return daemon
        if time.monotonic() > deadline:
            stop_process(proc)
            pytest.fail(f"larc serve did not answer C-ECHO within 60 s:\n{daemon.log()[-3000:]}")
        time.sleep(0.3)


def storescu(
    port: int, *paths: Path, calling_ae: str = "SCANNER", options: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """dcmtk storescu (not pynetdicom's) sending files or folders to larc in one association."""
    require_tool("/usr/bin/storescu")
    return store_files(port, "LARC", *paths, calling_ae=calling_ae, options=options)


def larc_status(data_dir: Path) -> subprocess.CompletedProcess[str]:
    """`larc status` on the index under ``data_dir``, as an operator runs it."""
    return subprocess.run(
        [LARC, "status"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"LARC_STORAGE__DATA_DIR": str(data_dir), "PATH": "/usr/bin:/bin"},
    )


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[DaemonProcess]:
    """A fresh ``larc serve`` on a free port with its own data directory."""
    require_tool("/usr/bin/echoscu")
    process = start_daemon(tmp_path / "data")
    try:
        yield process
    finally:
        stop_process(process.proc)
