"""``larc serve``: the daemon."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from daemon.cli.common import ConfigOption, settings_or_exit
from daemon.logs import configure_logging
from daemon.settings import ConfigError


def serve(
    ctx: typer.Context,
    config: ConfigOption = None,
    port: Annotated[int | None, typer.Option(help="DICOM port (scp.port).")] = None,
    ae_title: Annotated[str | None, typer.Option(help="Our AE title (scp.ae_title).")] = None,
    bind: Annotated[
        str | None, typer.Option(help="Address to listen on (scp.bind_address).")
    ] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Storage root (storage.data_dir).")] = None,
    stable_age_s: Annotated[
        float | None, typer.Option(help="Quiet seconds before a study is stable.")
    ] = None,
    bundle: Annotated[
        Path | None, typer.Option(help="Model bundle folder (models.bundle_dir).")
    ] = None,
    web_port: Annotated[
        int | None, typer.Option(help="Port of the web worklist (web.port).")
    ] = None,
) -> None:
    """Run the daemon: DICOM listener, durable store and index, study assembly, scoring, export.

    Every instance is fsynced and indexed before the sender hears success. Ready cases are
    scored in worker threads (no broker.url) or by larc worker processes (broker.url set);
    results go to export.destinations, or to <data_dir>/outbox/. With web.token (or
    web.trusted_user_header) set, the web worklist, its JSON API (/api, OpenAPI at
    /api/openapi.json), /healthz and /metrics listen on web.bind_address:web.port. Stops
    cleanly on SIGTERM or Ctrl-C. Refuses to start when reachable from the network with no
    allow-list.
    """
    from daemon.service import Daemon

    settings = settings_or_exit(
        config,
        scp={
            k: v
            for k, v in {"port": port, "ae_title": ae_title, "bind_address": bind}.items()
            if v is not None
        },
        storage={"data_dir": data_dir} if data_dir else None,
        assembly={"stable_age_s": stable_age_s} if stable_age_s else None,
        models={"bundle_dir": bundle} if bundle else None,
        web={"port": web_port} if web_port else None,
    )
    asked = ctx.obj or {}
    configure_logging(
        asked.get("log_level") or settings.log.level,
        bool(asked.get("log_json")) or settings.log.json_lines,
    )
    try:
        daemon = Daemon(settings)
        daemon.start()
    except (ConfigError, ValueError, OSError, RuntimeError) as exc:
        typer.echo(f"error: cannot start: {exc}", err=True)
        raise typer.Exit(code=2) from exc
    typer.echo(
        f"larc listening as {settings.scp.ae_title} on {settings.scp.bind_address}:"
        f"{daemon.listener.port}, storing under {settings.storage.data_dir}",
        err=True,
    )
    daemon.wait()
