"""The error and retry policy every larc task follows.

- :class:`TransientError` (and broker/network hiccups): retried with exponential backoff and
  jitter, up to ``workers.max_retries``.
- A permanent fault (bad or missing input, a bundle that does not fit the case): not retried;
  the task returns ``{"failed": reason, "stage": ...}`` and the daemon marks the case failed
  with that reason.
- Tasks are acknowledged after they finish (``acks_late``) and given back when their worker
  dies (``reject_on_worker_lost``), so a killed worker's task runs again elsewhere; results are
  keyed by the idempotency key, so running twice gives the same objects, not two.
"""

from __future__ import annotations

from typing import Any

from dicom_io.errors import InvalidInputError
from pipeline.errors import ModelError, PipelineInputError
from pipeline.manifest import BundleError


class TransientError(RuntimeError):
    """A fault that may pass (a service briefly unreachable): the task is retried."""


class ModelMismatchError(ValueError):
    """The worker's model bundle is not the one the case was queued for."""


# faults a retry cannot mend: the case fails with the message
PERMANENT_ERRORS: tuple[type[BaseException], ...] = (
    PipelineInputError,
    InvalidInputError,
    BundleError,
    ModelError,
    ModelMismatchError,
)


# what a task catches and reports as failed: the permanent faults and a payload that is not one
NOT_RETRIED: tuple[type[BaseException], ...] = (*PERMANENT_ERRORS, ValueError, KeyError)


def failure(stage: str, exc: BaseException) -> dict[str, Any]:
    """The result of a task that failed for good: the stage and the reason."""
    return {"failed": f"{stage}: {exc}", "stage": stage}
