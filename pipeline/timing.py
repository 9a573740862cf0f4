"""Per-stage timing with exclusive time: a stage entered inside another pauses the outer one."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


class Stopwatch:
    """Seconds spent per named stage; nested stages are not counted twice."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._running: list[tuple[str, float]] = []

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Count the time inside the block (minus inner stages) towards ``name``."""
        now = time.perf_counter()
        if self._running:
            outer, since = self._running[-1]
            self.seconds[outer] = self.seconds.get(outer, 0.0) + now - since
        self._running.append((name, now))
        try:
            yield
        finally:
            end = time.perf_counter()
            _, since = self._running.pop()
            self.seconds[name] = self.seconds.get(name, 0.0) + end - since
            if self._running:
                outer, _ = self._running[-1]
                self._running[-1] = (outer, end)
