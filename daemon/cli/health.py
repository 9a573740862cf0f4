"""``larc echo`` and ``larc ping-workers``: liveness checks for operators and container
healthchecks (exit code 0 when healthy, 1 with the reason otherwise)."""

from __future__ import annotations

import socket
from typing import Annotated

import typer

from daemon.cli.common import ConfigOption, settings_or_exit


def echo(
    config: ConfigOption = None,
    host: Annotated[
        str | None, typer.Option(help="Host to C-ECHO [default: larc serve's, from the config].")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port [default: scp.port].")] = None,
    aec: Annotated[
        str | None, typer.Option(help="Called AE title [default: scp.ae_title].")
    ] = None,
    aet: Annotated[str, typer.Option(help="Our (calling) AE title.")] = "LARCECHO",
) -> None:
    """Send a DICOM C-ECHO (verification) and say whether it succeeded.

    Without options it checks the configured larc serve (as a container healthcheck does);
    with --host/--port/--aec any DICOM node, e.g. the PACS. A larc serve with an allow-list
    must allow the calling AE title (--aet).
    """
    from dicom_io.errors import StorageError
    from dicom_io.scu import PacsNode
    from dicom_io.scu import echo as c_echo

    settings = settings_or_exit(config)
    scp = settings.scp
    wildcard = scp.bind_address in ("0.0.0.0", "::", "")  # noqa: S104 - not binding, reading
    bound = "127.0.0.1" if wildcard else scp.bind_address
    node = PacsNode(aec or scp.ae_title, host or bound, port or scp.port, calling_ae=aet)
    try:
        c_echo(node)
    except (StorageError, OSError) as exc:
        typer.echo(f"C-ECHO {node.ae_title}@{node.host}:{node.port} failed: {exc}", err=True)
        raise typer.Exit(code=1) from exc
    typer.echo(f"C-ECHO {node.ae_title}@{node.host}:{node.port}: success")


def ping_workers(
    config: ConfigOption = None,
    this_host: Annotated[
        bool, typer.Option(help="Only count workers running on this host (container checks).")
    ] = False,
    timeout_s: Annotated[float, typer.Option(help="Seconds to wait for answers.")] = 5.0,
) -> None:
    """Ask every larc worker on the broker (broker.url) to answer; list those that do.

    Exits 1 when the broker cannot be reached or no worker (on this host, with --this-host)
    answers.
    """
    from daemon.service import celery_config
    from workers.app import configure

    settings = settings_or_exit(config)
    try:
        app = configure(celery_config(settings))
        replies = app.control.ping(timeout=timeout_s)
    except (ValueError, OSError) as exc:
        typer.echo(f"cannot ask the workers: {exc}", err=True)
        raise typer.Exit(code=1) from exc
    names = sorted(name for reply in replies for name in reply)
    if this_host:
        names = [n for n in names if n.endswith("@" + socket.gethostname())]
    if not names:
        typer.echo("no larc worker answered", err=True)
        raise typer.Exit(code=1)
    for name in names:
        typer.echo(f"{name}: ok")
