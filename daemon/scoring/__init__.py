"""Scoring: ready cases become self-contained work orders for the workers, and their results
come back. ``model`` (what the daemon reads of the bundle), ``work_order`` (a case's prepared
inputs and the DICOM headers its results reference), ``executors`` (worker threads, or Celery on
a broker) and ``dispatcher`` (the loop)."""
