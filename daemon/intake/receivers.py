"""More processes receiving on the DICOM port (``scp.listener_processes`` > 1).

The main process's listener and each receiver process bind the same address and port with
SO_REUSEPORT (Linux, same user); the kernel spreads incoming associations over them. A
receiver is a listener and an ingest with an index connection of its own, nothing else: the
same checks, durable store and index as the main process, so what an association stores does
not depend on the process that took it. Several senders at once then use several cores (in
one process the associations are threads that share one interpreter lock); one association is
served by one process.

Receivers are processes of their own (``python -m daemon.intake.receivers``, given their
settings on standard input), stop on SIGTERM (open associations are ended:
nothing they had not acknowledged is lost) and end by themselves when the daemon's process is
gone, even after a SIGKILL (a thread watches their parent from their first moment). One that
dies is started again.
"""

from __future__ import annotations

import logging
import os
import pickle
import select
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

from daemon.index import INDEX_FILE, Index
from daemon.intake.ingest import Ingest
from daemon.logs import configure_logging
from daemon.settings import TlsSettings
from dicom_io.scp import Listener, ListenerOptions
from dicom_io.storage import InstanceStore, Watermark

logger = logging.getLogger(__name__)

START_TIMEOUT_S = 60.0
PARENT_CHECK_S = 0.5
RESTARTS_PER_MINUTE = 5


@dataclass(frozen=True)
class ReceiverSpec:
    """What a receiver process needs (picklable: the TLS context is made in the process)."""

    options: ListenerOptions  # port: the one the main listener bound; reuse_port on
    tls: TlsSettings
    store_root: Path
    data_dir: Path
    duplicate_policy: str
    watermark: Watermark | None
    log_level: str
    log_json: bool


def _watch_parent(parent: int, number: int) -> None:
    """End this process as soon as ``parent`` (the daemon) is gone, whatever the rest of it is
    doing: nothing it has not acknowledged is lost, and a partly received instance's spool file
    is removed when the next daemon starts."""
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_S)
    logger.warning("receiver process %d: the daemon is gone, stopping", number)
    os._exit(0)


def receive(spec: ReceiverSpec, number: int, parent: int) -> None:
    """A receiver process's body: listen until SIGTERM, or until ``parent`` is gone. Says
    ``listening`` on standard output once it is."""
    threading.Thread(target=_watch_parent, args=(parent, number), daemon=True).start()
    configure_logging(spec.log_level, spec.log_json)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the daemon, which stops us
    index = Index(spec.data_dir / INDEX_FILE)
    ingest = Ingest(InstanceStore(spec.store_root), index, spec.duplicate_policy, spec.watermark)
    listener = Listener(replace(spec.options, ssl_context=spec.tls.server_context()), ingest)
    listener.start()
    logger.info("receiver process %d (pid %d) listening on port %d", number, os.getpid(),
                listener.port)  # fmt: skip
    sys.stdout.write("listening\n")
    sys.stdout.flush()
    stop.wait()
    listener.stop()
    index.close()


class Receivers:
    """The receiver processes of a daemon: :meth:`start` after the main listener is bound."""

    def __init__(self, spec: ReceiverSpec, count: int) -> None:
        self.spec = spec
        self.count = count
        self._processes: dict[int, subprocess.Popen[bytes]] = {}
        self._restarts: list[float] = []
        self._gave_up = False
        self._stopping = threading.Event()
        self._watch = threading.Thread(target=self._supervise, name="receivers", daemon=True)

    def _spawn(self, number: int) -> subprocess.Popen[bytes]:
        """Start receiver ``number`` (``python -m daemon.intake.receivers``: it imports the
        listener and the ingest, not the rest of the daemon) and wait until it listens."""
        process = subprocess.Popen(
            [sys.executable, "-m", __name__, str(number), str(os.getpid())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert process.stdin is not None  # noqa: S101
        assert process.stdout is not None  # noqa: S101
        process.stdin.write(pickle.dumps(self.spec))
        process.stdin.close()
        ready, _, _ = select.select([process.stdout], [], [], START_TIMEOUT_S)
        said = process.stdout.readline() if ready else b""
        process.stdout.close()
        if said.strip() != b"listening":
            process.kill()
            process.wait(10)
            raise RuntimeError(
                f"receiver process {number} did not start listening within "
                f"{START_TIMEOUT_S:.0f} s (exit code {process.returncode}; see the log above)"
            )
        return process

    def start(self, port: int) -> None:
        """Start the receivers on ``port`` (the main listener's); raises ``RuntimeError`` when
        one does not come up."""
        self.spec = replace(self.spec, options=replace(self.spec.options, port=port))
        for number in range(2, self.count + 2):
            self._processes[number] = self._spawn(number)
        self._watch.start()
        logger.info(
            "%d receiver process(es) share port %d with this one (scp.listener_processes)",
            self.count, port,
        )  # fmt: skip

    def alive(self) -> bool:
        """Whether every receiver is running."""
        return all(p.poll() is None for p in self._processes.values())

    def _supervise(self) -> None:
        while not self._stopping.wait(1.0):
            for number, process in list(self._processes.items()):
                if process.poll() is None or self._stopping.is_set():
                    continue
                now = time.monotonic()
                self._restarts = [t for t in self._restarts if now - t < 60]
                if len(self._restarts) >= RESTARTS_PER_MINUTE:
                    if not self._gave_up:
                        logger.error(
                            "receiver processes ended %d times within a minute: not starting "
                            "them again for now (/healthz fails; see the errors above)",
                            len(self._restarts),
                        )
                    self._gave_up = True
                    continue
                self._gave_up = False
                self._restarts.append(now)
                logger.error(
                    "receiver process %d (pid %s) ended with exit code %s: starting it again",
                    number, process.pid, process.returncode,
                )  # fmt: skip
                try:
                    self._processes[number] = self._spawn(number)
                except RuntimeError:
                    logger.exception("receiver process %d could not be started again", number)

    def stop(self) -> None:
        """SIGTERM every receiver and wait for it (SIGKILL after 15 s)."""
        self._stopping.set()
        for process in self._processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self._processes.values():
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


if __name__ == "__main__":  # a receiver process, started by Receivers._spawn
    receive(pickle.load(sys.stdin.buffer), int(sys.argv[1]), int(sys.argv[2]))  # noqa: S301
