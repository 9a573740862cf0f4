"""Health (``/healthz``) and Prometheus metrics (``/metrics``), read from the index and the
parts larc depends on at the time of the request (nothing is counted in memory, so a restarted
daemon reports the same totals)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import redis
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from daemon.cases import CaseState
from daemon.index import ExportState, Index
from daemon.settings import Settings
from dicom_io.scu import PacsNode, PacsUnavailableError, echo
from workers.app import CPU_QUEUE, GPU_QUEUE

# Celery's Redis transport keeps a queue's priorities in separate lists
_PRIORITY_SUFFIXES = ("", "\x06\x163", "\x06\x166", "\x06\x169")
STAGE_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900, 3600)
# stage -> (state it starts in, state it ends in)
STAGES = {
    "wait_in_queue": (CaseState.QUEUED, CaseState.RUNNING),
    "scoring": (CaseState.RUNNING, CaseState.DONE),
    "export": (CaseState.DONE, CaseState.EXPORTED),
    "ready_to_exported": (CaseState.READY, CaseState.EXPORTED),
}


@dataclass
class Health:
    """Checks of the daemon's parts; the PACS echo is cached (``pacs_every_s``)."""

    index: Index
    settings: Settings
    listener_ok: Callable[[], bool]
    pacs_every_s: float = 30.0
    _pacs: tuple[float, dict[str, Any]] | None = field(default=None, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def check(self) -> dict[str, Any]:
        """{"status": "ok"|"failing", "checks": {name: {"ok": bool, "detail": str}}}."""
        checks = {
            "daemon": {
                "ok": self.listener_ok(),
                "detail": f"DICOM listener on port {self.settings.scp.port}",
            },
            "index": self._index(),
            "storage": self._storage(),
            "broker": self._broker(),
            "pacs": self._pacs_check(),
        }
        failing = [n for n, c in checks.items() if c["ok"] is False]
        return {"status": "failing" if failing else "ok", "failing": failing, "checks": checks}

    def _index(self) -> dict[str, Any]:
        try:
            self.index.query("SELECT 1 FROM schema_version")
        except Exception as exc:  # noqa: BLE001 (any database fault is "not ok")
            return {"ok": False, "detail": f"{type(exc).__name__}: {exc}"}
        return {"ok": True, "detail": str(self.index.path)}

    def _storage(self) -> dict[str, Any]:
        watermark = self.settings.storage.watermark()
        reason = watermark.shortfall()
        if reason is not None:
            return {"ok": False, "detail": f"new instances refused (0xA700): {reason}"}
        free, _ = watermark.space()
        return {"ok": True, "detail": f"{free / 2**30:,.1f} GiB free under {watermark.root}"}

    def _broker(self) -> dict[str, Any]:
        url = self.settings.broker.url
        if url is None:
            return {"ok": None, "detail": "no broker: scoring in larc serve's threads"}
        try:
            client = redis.Redis.from_url(url.get_secret_value(), socket_timeout=3)
            client.ping()
        except (redis.RedisError, OSError, ValueError) as exc:
            return {"ok": False, "detail": f"broker unreachable: {type(exc).__name__}"}
        return {"ok": True, "detail": "broker answers"}

    def _pacs_check(self) -> dict[str, Any]:
        pacs = self.settings.pacs
        if pacs.ae_title is None or pacs.host is None or pacs.port is None:
            return {"ok": None, "detail": "no PACS configured"}
        with self._lock:
            if self._pacs is not None and time.monotonic() - self._pacs[0] < self.pacs_every_s:
                return self._pacs[1]
        node = PacsNode(pacs.ae_title, pacs.host, pacs.port, self.settings.scp.ae_title)
        try:
            echo(node)
            found: dict[str, Any] = {"ok": True, "detail": f"C-ECHO {pacs.ae_title} answered"}
        except (PacsUnavailableError, OSError, RuntimeError) as exc:
            found = {"ok": False, "detail": str(exc)}
        with self._lock:
            self._pacs = (time.monotonic(), found)
        return found


def queue_depth(settings: Settings) -> dict[str, int]:
    """Tasks waiting in the broker's queues (Redis), by queue; empty without a broker."""
    url = settings.broker.url
    if url is None:
        return {}
    client = redis.Redis.from_url(url.get_secret_value(), socket_timeout=3)
    return {
        queue: sum(int(client.llen(queue + suffix)) for suffix in _PRIORITY_SUFFIXES)
        for queue in (CPU_QUEUE, GPU_QUEUE)
    }


class IndexCollector(Collector):
    """larc's metrics, computed from the index at each scrape."""

    def __init__(self, index: Index, settings: Settings) -> None:
        self.index = index
        self.settings = settings

    def _one(self, sql: str, params: tuple[str, ...] = ()) -> float:
        return float(self.index.query(sql, params)[0]["n"] or 0)

    def collect(self) -> Iterator[Metric]:
        """The metric families (see docs/operations.md for their meaning)."""
        yield CounterMetricFamily(
            "larc_instances_received", "DICOM instances stored and indexed",
            value=self._one("SELECT COUNT(*) AS n FROM instances"),
        )  # fmt: skip
        watermark = self.settings.storage.watermark()
        try:
            free, total = watermark.space()
        except OSError:
            pass  # /healthz says why
        else:
            yield GaugeMetricFamily(
                "larc_storage_free_bytes", "Free bytes on the storage's file system", value=free
            )
            required = watermark.required(total)
            yield GaugeMetricFamily(
                "larc_storage_required_free_bytes",
                "Free bytes the storage must keep (storage.min_free_bytes / min_free_percent)",
                value=required,
            )
            yield GaugeMetricFamily(
                "larc_storage_accepting",
                "1 while new instances are stored, 0 while they are refused for want of space",
                value=float(free >= required),  # Watermark.shortfall's rule, from one reading
            )
        rejected = CounterMetricFamily(
            "larc_instances_rejected", "DICOM instances refused, by status", labels=["status"]
        )
        for row in self.index.query("SELECT status, COUNT(*) AS n FROM rejections GROUP BY status"):
            rejected.add_metric([f"0x{row['status']:04X}"], row["n"])
        yield rejected
        cases = GaugeMetricFamily("larc_cases", "Cases by kind and state", labels=["kind", "state"])
        for row in self.index.query(
            "SELECT kind, state, COUNT(*) AS n FROM cases GROUP BY kind, state"
        ):
            cases.add_metric([row["kind"], row["state"]], row["n"])
        yield cases
        depth = GaugeMetricFamily(
            "larc_queue_depth",
            "Work not yet started: cases ready or queued in the daemon (queue=daemon), tasks in "
            "the broker's queues (queue=cpu, gpu)",
            labels=["queue"],
        )
        depth.add_metric(
            ["daemon"],
            self._one(
                "SELECT COUNT(*) AS n FROM cases WHERE state IN (?, ?)",
                (CaseState.READY, CaseState.QUEUED),
            ),
        )
        try:
            for queue, count in queue_depth(self.settings).items():
                depth.add_metric([queue], count)
        except (redis.RedisError, OSError):
            pass  # the broker's health is in /healthz; the daemon's own depth still counts
        yield depth
        yield from self._stages()
        failures = CounterMetricFamily(
            "larc_export_failures",
            "Failed tries to send results to a destination (every try that did not succeed)",
            labels=["destination"],
        )
        parked = GaugeMetricFamily(
            "larc_exports_failed", "Exports given up after export.max_attempts",
            labels=["destination"],
        )  # fmt: skip
        pending = GaugeMetricFamily(
            "larc_exports_commitment_pending",
            "Exports sent and waiting for the destination's storage commitment",
            labels=["destination"],
        )
        committed = GaugeMetricFamily(
            "larc_exports_committed",
            "Exports whose every object the destination committed (storage commitment)",
            labels=["destination"],
        )
        verified = GaugeMetricFamily(
            "larc_exports_verified",
            "Exports whose every object the destination listed when read back (C-FIND, QIDO-RS)",
            labels=["destination"],
        )
        for row in self.index.query(
            "SELECT destination, SUM(attempts - (state IN (?, ?))) AS tries, "
            "SUM(state = ?) AS parked, SUM(state = ?) AS pending, "
            "SUM(committed_by IS NOT NULL) AS committed, "
            "SUM(verified_by IS NOT NULL) AS verified FROM exports GROUP BY destination",
            (ExportState.SENT, ExportState.COMMITTING, ExportState.FAILED,
             ExportState.COMMITTING),
        ):  # fmt: skip
            failures.add_metric([row["destination"]], row["tries"] or 0)
            parked.add_metric([row["destination"]], row["parked"] or 0)
            pending.add_metric([row["destination"]], row["pending"] or 0)
            committed.add_metric([row["destination"]], row["committed"] or 0)
            verified.add_metric([row["destination"]], row["verified"] or 0)
        yield failures
        yield parked
        yield pending
        yield committed
        yield verified

    def _stages(self) -> Iterator[Metric]:
        histogram = HistogramMetricFamily(
            "larc_stage_seconds",
            "Time a case version spent in each stage (from the case history)",
            labels=["stage"],
        )
        for stage, (start, end) in STAGES.items():
            rows = self.index.query(
                "SELECT MAX(e.at - s.at, 0) AS d FROM "
                "(SELECT case_id, version, MIN(at) AS at FROM case_history WHERE state = ? "
                " GROUP BY case_id, version) s JOIN "
                "(SELECT case_id, version, MIN(at) AS at FROM case_history WHERE state = ? "
                " GROUP BY case_id, version) e USING (case_id, version)",
                (start, end),
            )
            durations = [float(r["d"]) for r in rows]
            buckets = [(str(b), float(sum(d <= b for d in durations))) for b in STAGE_BUCKETS]
            buckets.append(("+Inf", float(len(durations))))
            histogram.add_metric([stage], buckets, sum_value=sum(durations))
        yield histogram
