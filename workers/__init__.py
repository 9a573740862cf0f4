"""Celery application and tasks: thin wrappers over :mod:`pipeline`, run by ``larc worker``
processes on a broker or by the daemon's own threads (embedded default).

``app`` (the Celery app, queues and routing), ``payload`` (what a task receives: a
self-contained work order), ``analysis`` (the ``gpu`` part: networks, scores, heat maps),
``results`` (the ``cpu`` part: SR and Secondary Captures), ``tasks`` (the tasks), ``base`` (the
error and retry policy every task follows). Workers never read the daemon's storage or index.
"""
