"""The Celery app: JSON only, late acknowledgement, one task at a time per worker process,
``larc.analyse`` and ``larc.segment`` on the ``gpu`` queue, ``larc.report`` on the ``cpu``
queue.

Configured once by the entry point (:func:`configure`) from plain values; nothing is read from
the environment at import time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from celery import Celery

CPU_QUEUE, GPU_QUEUE = "cpu", "gpu"
ANALYSE, REPORT, SEGMENT = "larc.analyse", "larc.report", "larc.segment"

app = Celery("larc", include=["workers.tasks"])
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    task_track_started=True,
    worker_prefetch_multiplier=1,
    task_default_queue=CPU_QUEUE,
    task_routes={
        ANALYSE: {"queue": GPU_QUEUE},
        SEGMENT: {"queue": GPU_QUEUE},
        REPORT: {"queue": CPU_QUEUE},
    },
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    result_expires=7 * 24 * 3600,
)


@dataclass(frozen=True)
class CeleryConfig:
    """What the app needs from larc's settings."""

    broker_url: str
    result_backend: str
    visibility_timeout_s: float
    task_time_limit_s: float
    max_retries: int
    retry_backoff_max_s: float
    bundle_dir: Path | None


def configure(config: CeleryConfig) -> Celery:
    """Point the app at the broker and set the limits; returns the app."""
    transport = {"visibility_timeout": config.visibility_timeout_s}
    app.conf.update(
        broker_url=config.broker_url,
        result_backend=config.result_backend,
        broker_transport_options=transport,
        result_backend_transport_options=transport,
        task_time_limit=config.task_time_limit_s,
        task_soft_time_limit=max(config.task_time_limit_s - 30, config.task_time_limit_s * 0.9),
        task_annotations={
            "*": {
                "max_retries": config.max_retries,
                "retry_backoff_max": config.retry_backoff_max_s,
            }
        },
        larc_bundle_dir=str(config.bundle_dir) if config.bundle_dir else None,
    )
    return app
