"""The background loop every stage of ``larc serve`` runs in (assembly, dispatch, export): one
pass at a time in its own thread, every interval or when woken; an exception in a pass is
logged with the stage's name and the next pass retries, so the daemon stays up."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

logger = logging.getLogger(__name__)


class BackgroundLoop:
    """Runs ``run_once`` in a thread named ``name`` until :meth:`stop`."""

    def __init__(self, name: str, run_once: Callable[[], object], interval_s: float) -> None:
        self.name = name
        self.run_once = run_once
        self.interval_s = interval_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def stopping(self) -> bool:
        """Whether :meth:`stop` was called (a long pass should end early)."""
        return self._stop.is_set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:  # keep the stage alive; the next pass retries
                logger.exception("%s pass failed", self.name)
            self._wake.wait(self.interval_s)
            self._wake.clear()

    def start(self) -> None:
        """Start the thread."""
        self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Run the next pass now."""
        self._wake.set()

    def stop(self, timeout_s: float = 60.0) -> None:
        """End the loop after the current pass."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)
