"""Shared fixtures: small synthetic cohorts, and real servers on free loopback ports."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pynetdicom import AE

from dicom_io.synthetic.cohort import CohortResult, CohortSpec, generate_cohort

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    """Stop a server we started, by its PID: SIGTERM, then SIGKILL if it lingers."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout_s)


@dataclass(frozen=True)
class OrthancServer:
    """A private Orthanc on loopback: its DICOM port, AE title and REST base URL."""

    dicom_port: int
    aet: str
    http_port: int
    pid: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def get(self, path: str) -> object:
        with urllib.request.urlopen(self.url + path, timeout=30) as response:  # noqa: S310
            return json.loads(response.read())

    def get_bytes(self, path: str) -> tuple[str, bytes]:
        with urllib.request.urlopen(self.url + path, timeout=30) as response:  # noqa: S310
            return response.headers.get("Content-Type", ""), response.read()


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[OrthancServer]:
    """Orthanc (Debian package) with its own storage, on free ports; stopped by PID afterwards."""
    binary = require_tool("/usr/sbin/Orthanc")
    dicom_port, http_port = free_port(), free_port()
    config = {
        "Name": "larc-test-orthanc",
        "StorageDirectory": str(tmp_path / "storage"),
        "IndexDirectory": str(tmp_path / "index"),
        "DicomAet": "ORTHANC",
        "DicomPort": dicom_port,
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomCheckCalledAet": False,
        "Plugins": [],
        "StableAge": 2,
    }
    config_path = tmp_path / "orthanc.json"
    config_path.write_text(json.dumps(config))
    log = (tmp_path / "orthanc.log").open("wb")
    proc = subprocess.Popen(
        [binary, str(config_path)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "TCP_NODELAY": "1"},
    )
    server = OrthancServer(dicom_port, "ORTHANC", http_port, proc.pid)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"Orthanc exited at start-up: {(tmp_path / 'orthanc.log').read_text()[-2000:]}"
                )
            with contextlib.suppress(OSError):
                server.get("/system")
                break
            if time.monotonic() > deadline:
                pytest.fail("Orthanc did not answer on its REST port within 30 s")
            time.sleep(0.2)
        yield server
    finally:
        stop_process(proc)
        log.close()


LARC = str(Path(sys.executable).parent / "larc")


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
    log = log_path.open("ab")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    log.close()
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


def echo(port: int, calling_ae: str = "ECHOSCU", called_ae: str = "LARC") -> bool:
    """Whether dcmtk's echoscu gets a C-ECHO success."""
    run = subprocess.run(
        ["/usr/bin/echoscu", "-aet", calling_ae, "-aec", called_ae, "127.0.0.1", str(port)],
        capture_output=True,
        timeout=30,
        check=False,
        env={**os.environ, "TCP_NODELAY": "1"},
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


def storescu(
    port: int,
    *paths: Path,
    calling_ae: str = "SCANNER",
    verbose: bool = False,
    timeout: float = 600,
) -> subprocess.CompletedProcess[str]:
    """dcmtk storescu (not pynetdicom's) sending files or folders in one association."""
    args = [
        require_tool("/usr/bin/storescu"),
        "--required",
        "-aet",
        calling_ae,
        "-aec",
        "LARC",
        "+sd",
        "+r",
    ]
    if verbose:
        args.append("-v")
    return subprocess.run(
        [*args, "127.0.0.1", str(port), *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, "TCP_NODELAY": "1"},
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
