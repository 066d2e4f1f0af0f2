"""`newsmon init`: a commented starter configuration and a migrated database."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import click

from scheduler.config import DEFAULT_CONFIG_NAME, load_config
from scheduler.context import AppContext, fail, pass_app
from scheduler.errors import ConfigError


def starter_config() -> str:
    """The commented starter file: settings, then the built-in sources and organisations."""
    head = resources.files("scheduler").joinpath("data/starter.toml").read_text("utf-8")
    data = resources.files("crawler").joinpath("data")
    sources = data.joinpath("sources.toml").read_text("utf-8")
    organisations = data.joinpath("organisations.toml").read_text("utf-8")
    rule = "# " + "-" * 90 + "\n"
    return (f"{head}\n{rule}# Sources: the built-in catalogue. Edit, disable (enabled = false) "
            f"or add your own.\n{rule}{sources.rstrip()}\n\n{rule}# Organisations to track.\n"
            f"{rule}{organisations.rstrip()}\n")


@click.command()
@click.option("--force", is_flag=True, help="Overwrite an existing configuration file.")
@pass_app
def init(app: AppContext, force: bool) -> None:
    """Write a commented newsmon.toml with the built-in catalogue and create or migrate the
    database it names."""
    path = Path(app.config_path or DEFAULT_CONFIG_NAME)
    if path.exists() and not force:
        click.echo(f"{path} exists; keeping it (use --force to overwrite)", err=True)
    else:
        text = starter_config()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
        click.echo(f"wrote {path}")
    try:
        app._loaded = load_config(str(path))
    except ConfigError as exc:
        fail(str(exc), 2)
    app.engine  # noqa: B018 - opening it creates and migrates the database
    sources = app.config.sources
    click.echo(f"database ready: {app.config.storage.url} ({len(sources)} sources, "
               f"{len(app.config.organisations)} organisations)")


COMMANDS: list[click.Command] = [init]
