"""The harness: larc as a hospital runs it, on one machine, on free loopback ports.

A real Orthanc (Debian package) plays the PACS with the configuration shipped in
``daemon/harness/orthanc/`` (``deploy/orthanc/`` links to it; its Lua script forwards every
stable MR study with its RTSTRUCT/SEG to larc; larc is declared as a modality, so C-MOVE of
priors works), a private Redis is the broker, ``larc serve`` is the daemon (priors from and
results to the Orthanc) and one or more
``larc worker`` processes score; optionally the OHIF viewer reads the Orthanc over DICOMweb
(:mod:`daemon.harness.viewer`) and the worklist links to it. Everything is started by this
module and stopped by PID, leaving no process behind. Used by ``larc harness``, the
end-to-end tests and the benchmarks.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from daemon.cases import FINISHED
from daemon.harness.peers import Orthanc, Redis, free_port, store_files, wait_for_port
from daemon.harness.viewer import OhifViewer
from daemon.index import INDEX_FILE, AutoMaskState, Index

ORTHANC_CONFIG = Path(__file__).resolve().parent / "orthanc" / "orthanc.json"  # package data
LARC = str(Path(sys.executable).parent / "larc")


@dataclass
class LarcProcess:
    """A ``larc`` process the harness started (daemon or worker), in its own session so that
    stopping it also stops a worker's pool processes."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        """Its log so far."""
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM to its process group (a worker finishes the task in hand), SIGKILL after
        ``timeout_s``; then SIGKILL to whatever of the group is left (pool processes)."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=timeout_s)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)


def start_larc(
    name: str, args: list[str], folder: Path, env: dict[str, str] | None = None
) -> LarcProcess:
    """Start ``larc ARGS`` with its output in ``folder/<name>.log``."""
    folder.mkdir(parents=True, exist_ok=True)
    log_path = folder / f"{name}.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [LARC, *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )
    return LarcProcess(name, proc, log_path)


def read_index(data_dir: Path, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    """Rows of ad-hoc read-only SQL on the index under ``data_dir`` while larc serve runs
    (tests and benchmarks; empty while the index does not exist yet or is being created)."""
    try:
        index = Index(data_dir / INDEX_FILE, read_only=True)
    except FileNotFoundError:
        return []
    try:
        return [dict(row) for row in index.query(sql, params)]
    except sqlite3.OperationalError:  # being created
        return []
    finally:
        index.close()


@dataclass
class HarnessSpec:
    """What the harness runs.

    ``forward``: load the shipped Lua forwarding (off: Orthanc only answers C-FIND/C-MOVE
    and receives results). ``workers`` larc worker processes on Redis, or none: the daemon then
    scores in its own threads (embedded default, no Redis started). ``viewer``: OHIF's built
    ``dist/`` to serve against Orthanc's DICOMweb (loaded only then), or ``None``.
    """

    folder: Path
    bundle: Path
    workers: int = 1
    worker_concurrency: int = 1
    forward: bool = True
    orthanc_stable_age_s: int = 2
    stable_age_s: float = 1.0
    log_level: str = "INFO"
    settings: dict[str, Any] = field(default_factory=dict)
    viewer: Path | None = None


class Harness:
    """Orthanc + Redis + ``larc serve`` + ``larc worker``s; a context manager that stops all."""

    def __init__(self, spec: HarnessSpec) -> None:
        self.spec = spec
        self.folder = spec.folder
        self.orthanc: Orthanc | None = None
        self.redis: Redis | None = None
        self.daemon: LarcProcess | None = None
        self.workers: list[LarcProcess] = []
        self.viewer: OhifViewer | None = None
        self.daemon_port = 0
        self.web_port = 0
        self.web_token = secrets.token_urlsafe(24)
        self.config_path = self.folder / "larc.yaml"
        self.data_dir = self.folder / "larc-data"

    def __enter__(self) -> Harness:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def pacs(self) -> Orthanc:
        """The Orthanc playing the PACS."""
        if self.orthanc is None:
            raise RuntimeError("the harness is not started")
        return self.orthanc

    def start(self) -> None:
        """Start everything; on any failure, stop what was started and raise."""
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        spec = self.spec
        if not ORTHANC_CONFIG.exists():
            raise FileNotFoundError(
                f"{ORTHANC_CONFIG} not found: reinstall larc (the file ships in its package)"
            )
        self.daemon_port = free_port()
        self.web_port = free_port()
        extra: dict[str, Any] = {"StableAge": spec.orthanc_stable_age_s}
        if not spec.forward:
            extra["LuaScripts"] = []
        self.orthanc = Orthanc.start(
            self.folder / "orthanc",
            modalities={"larc": ["LARC", "127.0.0.1", self.daemon_port]},
            base_config=ORTHANC_CONFIG,
            dicomweb=spec.viewer is not None,
            **extra,
        )
        if spec.viewer is not None:
            self.viewer = OhifViewer(spec.viewer, self.orthanc.dicomweb_url)
        if spec.workers > 0:
            self.redis = Redis.start(self.folder / "redis")
        self.config_path.write_text(yaml.safe_dump(self.settings()))
        self.daemon = start_larc(
            "larc-serve",
            ["--log-level", spec.log_level, "serve", "--config", str(self.config_path)],
            self.folder,
        )
        try:
            wait_for_port(self.daemon_port, self.daemon.proc, timeout_s=60)
        except (RuntimeError, TimeoutError) as exc:
            raise RuntimeError(f"larc serve did not start:\n{self.daemon.log()[-3000:]}") from exc
        for n in range(spec.workers):
            args = ["--log-level", spec.log_level, "worker", "--config", str(self.config_path)]
            args += ["--queues", "cpu,gpu", "--concurrency", str(spec.worker_concurrency)]
            # each worker keeps its own (empty) data dir: it needs none of the daemon's storage
            env = {"LARC_STORAGE__DATA_DIR": str(self.folder / f"worker-{n + 1}-data")}
            self.workers.append(start_larc(f"larc-worker-{n + 1}", args, self.folder, env))
        deadline = time.monotonic() + 120
        for worker in self.workers:
            while "ready." not in worker.log():
                if worker.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{worker.name} did not start:\n{worker.log()[-3000:]}")
                time.sleep(0.3)

    def settings(self) -> dict[str, Any]:
        """larc's configuration for this harness (written to ``larc.yaml`` in the folder)."""
        pacs = self.pacs
        values: dict[str, Any] = {
            "scp": {"ae_title": "LARC", "bind_address": "127.0.0.1", "port": self.daemon_port},
            "storage": {"data_dir": str(self.data_dir)},
            "assembly": {"stable_age_s": self.spec.stable_age_s},
            "pacs": {"ae_title": pacs.aet, "host": "127.0.0.1", "port": pacs.dicom_port},
            "models": {"bundle_dir": str(self.spec.bundle)},
            "web": {
                "port": self.web_port,
                "token": self.web_token,
                "viewer_url": (
                    self.viewer.study_url()
                    if self.viewer is not None
                    else f"{pacs.url}/app/explorer.html#study?uuid={{orthanc_study_id}}"
                ),
            },
            "export": {  # Orthanc knows larc (DicomModalities): it commits what it stored
                "destinations": [
                    {
                        "ae_title": pacs.aet,
                        "host": "127.0.0.1",
                        "port": pacs.dicom_port,
                        "commitment": "required",
                    }
                ]
            },
        }
        if self.redis is not None:
            values["broker"] = {"url": self.redis.url}
        for section, overrides in self.spec.settings.items():
            values.setdefault(section, {}).update(overrides)
        return values

    def stop(self) -> None:
        """Stop workers, daemon, Redis and Orthanc, each by PID."""
        for worker in self.workers:
            worker.stop()
        if self.daemon is not None:
            self.daemon.stop()
        if self.redis is not None:
            self.redis.stop()
        if self.viewer is not None:
            self.viewer.stop()
        if self.orthanc is not None:
            self.orthanc.stop()

    def processes(self) -> list[subprocess.Popen[bytes]]:
        """Every process the harness started."""
        procs = [p.proc for p in [*self.workers, *([self.daemon] if self.daemon else [])]]
        procs += [s.proc for s in (self.redis, self.orthanc) if s is not None]
        return procs

    def send_to_pacs(self, *paths: Path, calling_ae: str = "MRSCANNER") -> None:
        """Send files or folders into Orthanc with dcmtk storescu, as a scanner does."""
        self._send("Orthanc", self.pacs.dicom_port, self.pacs.aet, paths, calling_ae)

    def send_to_larc(self, *paths: Path, calling_ae: str = "MRSCANNER") -> None:
        """Send files or folders straight to larc with dcmtk storescu."""
        self._send("larc", self.daemon_port, "LARC", paths, calling_ae)

    @staticmethod
    def _send(
        name: str, port: int, called_ae: str, paths: tuple[Path, ...], calling_ae: str
    ) -> None:
        run = store_files(port, called_ae, *paths, calling_ae=calling_ae)
        if run.returncode != 0:
            raise RuntimeError(f"storescu into {name} failed: {run.stderr[-2000:]}")

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        """Rows of larc's index, read-only (empty while the index does not exist yet)."""
        return read_index(self.data_dir, sql, params)

    def pacs_busy(self) -> bool:
        """Whether Orthanc still has a forwarding job to run or studies not yet stable."""
        jobs = self.pacs.get("/jobs?expand")
        if any(job.get("State") in ("Pending", "Running", "Retry") for job in jobs):
            return True
        studies = self.pacs.get("/studies?expand")
        return any(not study.get("IsStable", True) for study in studies)

    def settled(self) -> bool:
        """Nothing left to do: Orthanc has forwarded everything, every study larc holds is stable,
        no automatic outline is being made, and every case is finished (exported, failed,
        failed-export or waiting for an input)."""
        if self.pacs_busy():
            return False
        try:
            index = Index(self.data_dir / INDEX_FILE, read_only=True)
        except FileNotFoundError:
            return True  # nothing received yet
        try:
            if index.has_unstable_study():
                return False
            # a case waiting for its automatic outline is not finished: the outline is on its
            # way (the first one also loads the networks, seconds without a change in the index)
            if index.auto_masks(AutoMaskState.REQUESTED) or index.auto_masks(AutoMaskState.QUEUED):
                return False
            return all(state in FINISHED for state in index.case_states())
        except sqlite3.OperationalError:  # being created
            return False
        finally:
            index.close()

    def wait_settled(self, timeout_s: float = 600, quiet_s: float = 3.0) -> None:
        """Wait until :meth:`settled` has held for ``quiet_s`` seconds in a row."""
        deadline = time.monotonic() + timeout_s
        since: float | None = None
        while time.monotonic() < deadline:
            for proc in self.processes():
                if proc.poll() is not None:
                    raise RuntimeError(f"a harness process exited ({proc.args!r})\n{self.logs()}")
            if self.settled():
                since = since or time.monotonic()
                if time.monotonic() - since >= quiet_s:
                    return
            else:
                since = None
            time.sleep(0.5)
        raise TimeoutError(f"the harness did not settle within {timeout_s:.0f} s\n{self.logs()}")

    def status(self) -> str:
        """``larc status`` on this harness's configuration, as an operator runs it."""
        run = subprocess.run(
            [LARC, "status", "--config", str(self.config_path)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if run.returncode != 0:
            raise RuntimeError(f"larc status failed: {run.stderr[-2000:]}")
        return run.stdout

    def logs(self, tail: int = 3000) -> str:
        """The last lines of every larc log, for error messages."""
        parts = [
            f"--- {p.name}\n{p.log()[-tail:]}"
            for p in [*([self.daemon] if self.daemon else []), *self.workers]
        ]
        return "\n".join(parts)

    @property
    def web_url(self) -> str:
        """The worklist's address."""
        return f"http://127.0.0.1:{self.web_port}/"

    def describe(self) -> dict[str, Any]:
        """Where everything listens (printed by ``larc harness``)."""
        pacs = self.pacs
        return {
            "orthanc": {"rest": pacs.url, "dicom": f"{pacs.aet}@127.0.0.1:{pacs.dicom_port}"},
            "larc": {
                "dicom": f"LARC@127.0.0.1:{self.daemon_port}",
                "config": str(self.config_path),
            },
            "web": {"worklist": self.web_url, "token": self.web_token},
            "viewer": self.viewer.url if self.viewer is not None else None,
            "redis": self.redis.url if self.redis else None,
            "workers": [w.name for w in self.workers],
            "folder": str(self.folder),
        }
