"""The ``larc`` command: one Typer app; each command group lives in its own module here and
shares only :mod:`daemon.cli.common` (pynetdicom's apps do the same)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import typer

from daemon import __version__
from daemon.cli import (
    config,
    demo,
    harness,
    health,
    outline,
    pair,
    serve,
    status,
    synth,
    train,
    workers,
)
from daemon.logs import configure_logging

app = typer.Typer(
    name="larc",
    help=(
        "larc: AI scoring of rectal-cancer MRI next to a PACS (research use only - not for "
        "diagnostic decisions).\n\nlarc serve receives studies over DICOM, stores and indexes "
        "them, pairs each patient's baseline and restaging studies, scores every ready case "
        "(worker threads, or larc worker processes on a Redis broker) and sends the results - "
        "a TID 1500 SR and heat-map Secondary Captures - back to the PACS (or an outbox "
        "folder). Also: status, pair (choose a held patient's baseline and restaging studies), "
        "outline (review automatic tumour outlines), "
        "config, retry-exports, worker, health checks (echo, "
        "ping-workers), the synthetic cohort generator (synth), the demo, the harness (a real "
        "Orthanc, Redis and workers on this machine), and training and evaluation of the "
        "models (train, evaluate). With web.token set, larc serve also serves the web worklist, "
        "its JSON API, /healthz and /metrics on web.port."
    ),
    no_args_is_help=True,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"larc {__version__}")
        raise typer.Exit


@app.callback()
def main(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
    log_level: Annotated[
        str | None,
        typer.Option("--log-level", help="DEBUG, INFO, WARNING or ERROR [default: log.level]."),
    ] = None,
    log_json: Annotated[
        bool, typer.Option("--log-json", help="Log JSON lines instead of plain text.")
    ] = False,
) -> None:
    """Common options."""
    if log_level is not None and log_level.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise typer.BadParameter(f"unknown log level {log_level!r}", param_hint="--log-level")
    # what the global options asked for; commands that load settings fill the gaps from `log.*`
    ctx.obj = {"log_level": log_level, "log_json": log_json}
    configure_logging(log_level or "INFO", log_json)


COMMANDS: dict[str, Callable[..., None]] = {
    "synth": synth.synth,
    "serve": serve.serve,
    "status": status.status,
    "pair": pair.pair,
    "outline": outline.outline,
    "demo": demo.demo,
    "harness": harness.harness,
    "echo": health.echo,
    "ping-workers": health.ping_workers,
    "evaluate": train.evaluate,
    "worker": workers.worker,
    "retry-exports": workers.retry_exports,
}
for _name, _command in COMMANDS.items():
    app.command(_name)(_command)
app.add_typer(config.config_app, name="config")
app.add_typer(train.train_app, name="train")
