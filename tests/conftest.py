"""Shared fixtures: small synthetic cohorts, and real servers on free loopback ports."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

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
