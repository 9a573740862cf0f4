"""``larc config check`` and ``larc config reference``."""

from __future__ import annotations

import typer

from daemon.cli.common import ConfigOption, settings_or_exit
from daemon.settings import ConfigError

config_app = typer.Typer(help="Check and show the configuration.", no_args_is_help=True)


@config_app.command("check")
def config_check(config: ConfigOption = None) -> None:
    """Validate the configuration (file + environment) and print the result as YAML."""
    import yaml

    settings = settings_or_exit(config)
    try:
        settings.check_secure()
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from exc
    typer.echo(yaml.safe_dump(settings.model_dump(mode="json"), sort_keys=False).rstrip())
    typer.echo("configuration OK", err=True)


@config_app.command("reference")
def config_reference() -> None:
    """Print the configuration reference (Markdown): every setting, default, variable, meaning."""
    from daemon.settings import reference_markdown

    typer.echo(reference_markdown().rstrip())
