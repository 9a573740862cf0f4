"""Real DICOM peers on loopback for tests, benchmarks and the harness: Orthanc, dcmtk storescp.

Each is started on free ports with its own folders and stopped by PID. dcmtk and Orthanc read
TCP_NODELAY from the environment; it is set, or small instances crawl at ~15/s (Nagle).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ORTHANC = "/usr/sbin/Orthanc"
# Debian's orthanc-dicomweb (STOW-RS, QIDO-RS, WADO-RS under /dicom-web/)
ORTHANC_DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
STORESCP = "/usr/bin/storescp"
STORESCU = "/usr/bin/storescu"  # dcmtk's; the venv's pynetdicom also installs a 'storescu'
NODELAY_ENV = {**os.environ, "TCP_NODELAY": "1"}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    """Stop a process we started: SIGTERM, then SIGKILL if it lingers."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout_s)


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    """Wait until something accepts connections on 127.0.0.1:``port``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on port {port} after {timeout_s} s")


@dataclass
class Orthanc:
    """A private Orthanc: DICOM port, AE title, REST port, and its process."""

    dicom_port: int
    http_port: int
    proc: subprocess.Popen[bytes]
    aet: str = "ORTHANC"
    user: tuple[str, str] | None = None  # basic-auth user name and password, when required

    @property
    def url(self) -> str:
        """Base URL of the REST API."""
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        """The DICOMweb root (started with ``dicomweb=True``)."""
        return f"{self.url}/dicom-web"

    def _request(self, path: str, data: bytes | None = None) -> urllib.request.Request:
        request = urllib.request.Request(  # noqa: S310 - our own loopback Orthanc
            self.url + path, data=data, method="POST" if data is not None else "GET"
        )
        if self.user is not None:
            token = base64.b64encode(":".join(self.user).encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        return request

    def get(self, path: str) -> Any:
        """GET a REST resource as JSON."""
        with urllib.request.urlopen(self._request(path), timeout=30) as response:  # noqa: S310
            return json.loads(response.read())

    def post(self, path: str, body: Any) -> Any:
        """POST JSON to a REST resource; the answer as JSON."""
        request = self._request(path, json.dumps(body).encode())
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return json.loads(response.read())

    def get_bytes(self, path: str) -> tuple[str, bytes]:
        """GET a REST resource as (content type, bytes)."""
        with urllib.request.urlopen(self._request(path), timeout=30) as response:  # noqa: S310
            return response.headers.get("Content-Type", ""), response.read()

    def stop(self) -> None:
        """Stop Orthanc by its PID."""
        stop_process(self.proc)

    @classmethod
    def start(
        cls,
        folder: Path,
        modalities: dict[str, list[Any]] | None = None,
        base_config: Path | None = None,
        dicom_port: int | None = None,
        dicomweb: bool = False,
        user: tuple[str, str] | None = None,
        **config: Any,
    ) -> Orthanc:
        """Start Orthanc (Debian package) with storage under ``folder``; waits for its REST API.

        ``base_config`` (e.g. deploy/orthanc/orthanc.json) is read first; ports, folders,
        ``modalities`` and ``config`` replace its values, and its Lua scripts are taken from
        beside it. ``dicomweb``: load the DICOMweb plugin (``/dicom-web/``); ``user``: require
        HTTP basic auth with this user name and password.
        """
        if not Path(ORTHANC).exists():
            raise FileNotFoundError(f"{ORTHANC} not found: install the Debian package 'orthanc'")
        plugins: list[str] = []
        if dicomweb:
            if not Path(ORTHANC_DICOMWEB_PLUGIN).exists():
                raise FileNotFoundError(
                    f"{ORTHANC_DICOMWEB_PLUGIN} not found: install the Debian package "
                    "'orthanc-dicomweb'"
                )
            plugins.append(ORTHANC_DICOMWEB_PLUGIN)
            config.setdefault("DicomWeb", {"Enable": True, "Root": "/dicom-web/"})
        if user is not None:
            config.update(AuthenticationEnabled=True, RegisteredUsers={user[0]: user[1]})
        dicom_port, http_port = dicom_port or free_port(), free_port()
        base: dict[str, Any] = {}
        if base_config is not None:
            base = json.loads(base_config.read_text())
            base["LuaScripts"] = [
                str(base_config.parent / script) for script in base.get("LuaScripts", [])
            ]
            base.pop("RegisteredUsers", None)
        settings = {
            **base,
            "Name": "larc-peer-orthanc",
            "StorageDirectory": str(folder / "storage"),
            "IndexDirectory": str(folder / "index"),
            "DicomAet": "ORTHANC",
            "DicomPort": dicom_port,
            "HttpPort": http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomCheckCalledAet": False,
            "DicomModalities": modalities or base.get("DicomModalities", {}),
            "Plugins": plugins,
            **config,
        }
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "orthanc.json").write_text(json.dumps(settings, indent=2))
        with (folder / "orthanc.log").open("wb") as log:
            proc = subprocess.Popen(
                [ORTHANC, str(folder / "orthanc.json")],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=NODELAY_ENV,
            )
        server = cls(dicom_port, http_port, proc, user=user)
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                log_tail = (folder / "orthanc.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"Orthanc exited at start-up:\n{log_tail}")
            with contextlib.suppress(OSError):
                server.get("/system")
                return server
            if time.monotonic() > deadline:
                server.stop()
                raise TimeoutError("Orthanc did not answer on its REST port within 30 s")
            time.sleep(0.2)


@dataclass
class Storescp:
    """dcmtk's storescp writing every received instance to a folder."""

    port: int
    proc: subprocess.Popen[bytes]
    aet: str = "STORESCP"

    def stop(self) -> None:
        """Stop storescp by its PID."""
        stop_process(self.proc)

    @classmethod
    def start(cls, folder: Path) -> Storescp:
        """Start storescp on a free port, writing into ``folder``."""
        binary = shutil.which(STORESCP) or STORESCP
        folder.mkdir(parents=True, exist_ok=True)
        port = free_port()
        proc = subprocess.Popen(
            [binary, "-aet", "STORESCP", "-od", str(folder), str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=NODELAY_ENV,
        )
        wait_for_port(port, proc)
        return cls(port, proc)


def store_files(
    port: int,
    called_ae: str,
    *paths: Path,
    calling_ae: str = "SCANNER",
    timeout_s: float = 600,
    options: tuple[str, ...] = (),
) -> subprocess.CompletedProcess[str]:
    """Send files or folders with dcmtk storescu in one association (only the needed contexts).

    ``options`` go to storescu, e.g. ``("-xr",)`` to propose RLE for RLE-compressed files.
    """
    args = [STORESCU, "--required", *options, "-aet", calling_ae, "-aec", called_ae, "+sd", "+r"]
    return subprocess.run(
        [*args, "127.0.0.1", str(port), *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
        env=NODELAY_ENV,
    )


REDIS_SERVER = "/usr/bin/redis-server"


@dataclass
class Redis:
    """redis-server (Debian package) on a free loopback port; nothing persisted."""

    port: int
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        """The broker URL for larc (``broker.url``)."""
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        """Stop Redis by its PID."""
        stop_process(self.proc)

    @classmethod
    def start(cls, folder: Path, port: int | None = None) -> Redis:
        """Start redis-server on ``port`` (default: a free one), its log and working folder in
        ``folder``."""
        if not Path(REDIS_SERVER).exists():
            raise FileNotFoundError(f"{REDIS_SERVER} not found: install the package redis-server")
        folder.mkdir(parents=True, exist_ok=True)
        port = port or free_port()
        args = [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "no", "--dir", str(folder)]
        with (folder / "redis.log").open("ab") as log:
            proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for_port(port, proc)
        except (RuntimeError, TimeoutError):
            stop_process(proc)
            raise
        return cls(port, proc)
