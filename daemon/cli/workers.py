"""``larc worker`` (a Celery worker for the cpu and/or gpu queues) and ``larc retry-exports``."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Annotated

import typer

from daemon.cli.common import ConfigOption, settings_or_exit


def worker(
    config: ConfigOption = None,
    queues: Annotated[
        str,
        typer.Option(
            help="Queues to take work from, comma-separated: 'gpu' (networks, heat maps) on a "
            "GPU host, 'cpu' (SR and Secondary Capture writing) elsewhere, or both."
        ),
    ] = "cpu,gpu",
    concurrency: Annotated[
        int, typer.Option(min=1, max=64, help="Tasks at a time (worker processes).")
    ] = 1,
    pool: Annotated[
        str, typer.Option(help="Celery pool: prefork (default), solo or threads.")
    ] = "prefork",
    bundle: Annotated[
        Path | None, typer.Option(help="Model bundle folder [default: models.bundle_dir].")
    ] = None,
) -> None:
    """Run a Celery worker on the broker larc serve uses (broker.url).

    Workers need the model bundle and the broker, not larc serve's storage: each task carries
    the case's prepared inputs and the DICOM headers its results reference. Stops after the
    task in hand on SIGTERM (a task cut off by a kill goes back to the queue).
    """
    from daemon.service import celery_config
    from pipeline.manifest import BundleError, verify_bundle
    from workers.app import CPU_QUEUE, GPU_QUEUE, configure

    settings = settings_or_exit(config, models={"bundle_dir": bundle} if bundle else None)
    chosen = [q.strip() for q in queues.split(",") if q.strip()]
    unknown = set(chosen) - {CPU_QUEUE, GPU_QUEUE}
    if not chosen or unknown:
        raise typer.BadParameter(f"queues must be cpu, gpu or both, got {queues!r}")
    if pool not in ("prefork", "solo", "threads"):
        raise typer.BadParameter(f"unknown pool {pool!r}", param_hint="--pool")
    try:
        config_values = celery_config(settings)
        if GPU_QUEUE in chosen:  # this worker scores: its bundle must load
            if settings.models.bundle_dir is None:
                raise ValueError("a gpu-queue worker needs models.bundle_dir (or --bundle)")
            # checked without torch: a prefork parent must not start torch's threads
            manifest, _ = verify_bundle(settings.models.bundle_dir)
            typer.echo(f"model bundle {manifest['name']} {manifest['version']}", err=True)
    except (ValueError, BundleError, OSError) as exc:
        typer.echo(f"error: cannot start the worker: {exc}", err=True)
        raise typer.Exit(code=2) from exc
    app = configure(config_values)
    name = f"larc-{'-'.join(chosen)}-{os.getpid()}@{socket.gethostname()}"
    typer.echo(f"worker {name} taking {', '.join(chosen)}", err=True)
    app.worker_main(
        [
            "worker",
            "--queues",
            ",".join(chosen),
            "--concurrency",
            str(concurrency),
            "--pool",
            pool,
            "--hostname",
            name,
            "--loglevel",
            settings.log.level,
            "--without-gossip",
            "--without-mingle",
        ]
    )


def retry_exports(config: ConfigOption = None) -> None:
    """Send again every export parked as failed (failed-export), now, and report the outcome.

    Safe while larc serve runs (the index is shared); the objects are read from
    <data_dir>/results/, so nothing has to be scored again.
    """
    from daemon.cli.common import open_index
    from daemon.export import Exporter
    from daemon.index import ExportState

    settings = settings_or_exit(config)
    index = open_index(settings)
    try:
        exporter = Exporter(
            index, settings.storage.data_dir, settings.export, settings.scp.ae_title
        )
        count = exporter.requeue_failed()
        outcome = exporter.run_due()
        typer.echo(
            f"{count} failed export(s) queued again: {outcome.sent} sent, "
            f"{outcome.retrying} will be retried by larc serve, {outcome.failed} failed again"
        )
        for row in index.exports_in(ExportState.PENDING, ExportState.FAILED):
            typer.echo(f"  {row.destination}: {row.state} - {row.last_error}")
    finally:
        index.close()
    if outcome.failed or outcome.retrying:
        raise typer.Exit(code=1)
