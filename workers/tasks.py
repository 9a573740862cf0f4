"""larc's tasks: thin wrappers over :mod:`workers.analysis` and :mod:`workers.results`.

The plain functions :func:`run_analyse` and :func:`run_report` are what both the Celery tasks
(with a broker) and the daemon's worker threads (embedded default) run.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from celery import Task
from kombu.exceptions import OperationalError
from redis.exceptions import ConnectionError as RedisConnectionError

from dicom_io.sr import Algorithm
from workers.analysis import analyse, bundle_at
from workers.app import ANALYSE, REPORT, SEGMENT, app
from workers.base import NOT_RETRIED, TransientError, failure
from workers.payload import CasePayload
from workers.results import encode_objects, result_objects
from workers.segmentation import run_segment

logger = logging.getLogger(__name__)


def run_analyse(payload_json: dict[str, Any], bundle_dir: Path | None) -> dict[str, Any]:
    """Scores and heat maps, or ``{"failed": reason}`` for a fault a retry cannot mend."""
    try:
        payload = CasePayload.from_json(payload_json)
        if bundle_dir is None:
            raise ValueError("this worker has no models.bundle_dir configured")
        return analyse(payload, bundle_at(bundle_dir))
    except NOT_RETRIED as exc:
        logger.error("case %s cannot be scored: %s", payload_json.get("case_id"), exc)
        return failure("analyse", exc)


def run_report(analysis: dict[str, Any], payload_json: dict[str, Any]) -> dict[str, Any]:
    """The SR and Secondary Captures (base64) with the scores, or the failure passed on."""
    if analysis.get("failed"):
        return analysis
    try:
        payload = CasePayload.from_json(payload_json)
        algorithm = Algorithm(**payload.algorithm)
        objects = result_objects(payload, analysis, algorithm)
    except NOT_RETRIED as exc:
        logger.error("case %s: result objects not written: %s", payload_json.get("case_id"), exc)
        return failure("report", exc)
    return {"scores": analysis["scores"], "objects": encode_objects(objects)}


class LarcTask(Task):  # type: ignore[misc]
    """The policy of every larc task (see :mod:`workers.base`)."""

    autoretry_for = (TransientError, OperationalError, RedisConnectionError)
    retry_backoff = True
    retry_backoff_max = 600
    retry_jitter = True
    max_retries = 5
    acks_late = True
    reject_on_worker_lost = True


@app.task(name=ANALYSE, base=LarcTask, bind=True)  # type: ignore[untyped-decorator]
def analyse_task(self: Task, payload_json: dict[str, Any]) -> dict[str, Any]:
    """``larc.analyse`` (gpu queue)."""
    folder = self.app.conf.get("larc_bundle_dir")
    return run_analyse(payload_json, Path(folder) if folder else None)


@app.task(name=REPORT, base=LarcTask, bind=True)  # type: ignore[untyped-decorator]
def report_task(
    self: Task, analysis: dict[str, Any], payload_json: dict[str, Any]
) -> dict[str, Any]:
    """``larc.report`` (cpu queue)."""
    return run_report(analysis, payload_json)


@app.task(name=SEGMENT, base=LarcTask, bind=True)  # type: ignore[untyped-decorator]
def segment_task(self: Task, payload_json: dict[str, Any]) -> dict[str, Any]:
    """``larc.segment`` (gpu queue): the automatic tumour mask of one T2W series."""
    folder = self.app.conf.get("larc_bundle_dir")
    return run_segment(payload_json, Path(folder) if folder else None)
