"""Executors: where a case's analyse + report tasks (and the segment task of an automatic
mask) run. :class:`EmbeddedExecutor` (worker
threads in this process, no broker: the embedded default) and :class:`CeleryExecutor` (the
``larc.analyse`` / ``larc.report`` chain on a Redis broker, ``larc worker`` processes anywhere)
run the same task functions. Both are polled by the dispatcher, which keeps the handle in the
index, so the index stays the queue.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

import redis
from celery import chain
from celery.result import AsyncResult

from workers.app import ANALYSE, REPORT, SEGMENT, app


class WorkState(StrEnum):
    """Where a submitted piece of work stands, as its executor sees it."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    LOST = "lost"  # the executor does not know the handle (the process that started it died)


QUEUED, RUNNING, DONE, FAILED, LOST = (
    WorkState.QUEUED, WorkState.RUNNING, WorkState.DONE, WorkState.FAILED, WorkState.LOST
)  # fmt: skip


@dataclass(frozen=True)
class Poll:
    """Where a submitted piece of work stands."""

    state: WorkState
    result: dict[str, Any] | None = None
    error: str | None = None


class Executor(Protocol):
    """Runs a case's analyse + report tasks somewhere."""

    def submit(self, payload: dict[str, Any]) -> str:
        """Start the work; returns a handle to :meth:`poll` (kept in the index)."""

    def submit_segment(self, payload: dict[str, Any]) -> str:
        """Start an automatic mask's segment task (``workers.segmentation``); a handle."""

    def poll(self, handle: str) -> Poll:
        """The state of the work behind ``handle``."""

    def broker_restarted(self) -> bool:
        """Whether the broker restarted since the last call (the work it held may be gone)."""

    def shutdown(self) -> None:
        """Stop taking work."""


class EmbeddedExecutor:
    """Worker threads in the daemon: the embedded default, no broker. Durable because the
    index is the queue: work lost with the process is queued again at the next start."""

    def __init__(self, threads: int, bundle_dir: Path) -> None:
        self.bundle_dir = bundle_dir
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="score")
        self._futures: dict[str, Future[dict[str, Any]]] = {}
        self._started: set[str] = set()
        self._lock = threading.Lock()

    def _score(self, payload: dict[str, Any]) -> dict[str, Any]:
        # imported here: torch and the networks load with the first case, not at start-up
        from workers.tasks import run_analyse, run_report  # noqa: PLC0415

        return run_report(run_analyse(payload, self.bundle_dir), payload)

    def _segment(self, payload: dict[str, Any]) -> dict[str, Any]:
        from workers.segmentation import run_segment  # noqa: PLC0415  (torch: see _score)

        return run_segment(payload, self.bundle_dir)

    def _queue(
        self, kind: str, work: Callable[[dict[str, Any]], dict[str, Any]], payload: dict[str, Any]
    ) -> str:
        handle = f"{kind}:{payload['key']}:{time.monotonic_ns()}"

        def run() -> dict[str, Any]:
            with self._lock:
                self._started.add(handle)
            return work(payload)

        with self._lock:
            self._futures[handle] = self._pool.submit(run)
        return handle

    def submit(self, payload: dict[str, Any]) -> str:
        """Queue the work on the threads."""
        return self._queue("embedded", self._score, payload)

    def submit_segment(self, payload: dict[str, Any]) -> str:
        """Queue the segment task on the threads."""
        return self._queue("embedded-segment", self._segment, payload)

    def poll(self, handle: str) -> Poll:
        """State of the work (``lost`` when this process did not start it)."""
        with self._lock:
            future = self._futures.get(handle)
            started = handle in self._started
        if future is None:
            return Poll(LOST)
        if not future.done():
            return Poll(RUNNING if started else QUEUED)
        with self._lock:
            self._futures.pop(handle, None)
            self._started.discard(handle)
        error = future.exception()
        if error is not None:
            return Poll(FAILED, error=f"{type(error).__name__}: {error}")
        return Poll(DONE, result=future.result())

    def broker_restarted(self) -> bool:
        """No broker: never."""
        return False

    def shutdown(self) -> None:
        """Finish the task in hand; queued ones are picked up again at the next start."""
        self._pool.shutdown(wait=False, cancel_futures=True)


class CeleryExecutor:
    """``larc.analyse`` (gpu queue) then ``larc.report`` (cpu queue) through the broker."""

    def __init__(self) -> None:
        self._run_ids: dict[str, str] = {}
        self._clients: dict[str, redis.Redis] = {}

    def broker_restarted(self) -> bool:
        """Whether a Redis of the broker or result backend has a new ``run_id`` (it restarts
        with a new one; without persistence its queues and results are then gone, and Celery
        would call the lost tasks PENDING for ever). A Redis that does not answer now is
        compared when it answers again."""
        restarted = False
        for url in {str(app.conf.broker_url or ""), str(app.conf.result_backend or "")}:
            if not url.startswith(("redis://", "rediss://")):
                continue
            client = self._clients.setdefault(url, redis.Redis.from_url(url, socket_timeout=3))
            try:
                run_id = str(client.info("server")["run_id"])
            except (redis.RedisError, OSError, KeyError):
                continue
            if self._run_ids.get(url, run_id) != run_id:
                restarted = True
            self._run_ids[url] = run_id
        return restarted

    def submit(self, payload: dict[str, Any]) -> str:
        """Send the chain (tasks by name: the daemon never imports the networks); the handle
        holds both task ids."""
        analyse = app.signature(ANALYSE, args=(payload,))
        report = app.signature(REPORT, args=(payload,))
        result = chain(analyse, report).apply_async()
        return json.dumps({"analyse": result.parent.id, "report": result.id})

    def submit_segment(self, payload: dict[str, Any]) -> str:
        """Send ``larc.segment`` (by name); the handle holds its task id."""
        result = app.signature(SEGMENT, args=(payload,)).apply_async()
        return json.dumps({"segment": result.id})

    def poll(self, handle: str) -> Poll:
        """State from the result backend (the workers' reports)."""
        try:
            ids = json.loads(handle)
        except ValueError:
            return Poll(LOST)
        if "segment" in ids:
            return self._poll_one(AsyncResult(ids["segment"], app=app))
        report, analyse = AsyncResult(ids["report"], app=app), AsyncResult(ids["analyse"], app=app)
        if report.state == "SUCCESS":
            return Poll(DONE, result=report.result)
        for step in (report, analyse):
            if step.state == "FAILURE":
                return Poll(FAILED, error=f"{type(step.result).__name__}: {step.result}")
        if analyse.state in ("STARTED", "RETRY", "SUCCESS"):
            return Poll(RUNNING)
        return Poll(QUEUED)

    @staticmethod
    def _poll_one(step: AsyncResult) -> Poll:
        if step.state == "SUCCESS":
            return Poll(DONE, result=step.result)
        if step.state == "FAILURE":
            return Poll(FAILED, error=f"{type(step.result).__name__}: {step.result}")
        return Poll(RUNNING if step.state in ("STARTED", "RETRY") else QUEUED)

    def shutdown(self) -> None:
        """Nothing to stop: the work stays with the broker and the workers."""
