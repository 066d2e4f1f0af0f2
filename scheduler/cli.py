"""The `newsmon` command line: a click group; each command lives in scheduler/commands/."""

from __future__ import annotations

import click

from scheduler.context import AppContext, fail
from scheduler.logs import setup_logging


class NewsmonGroup(click.Group):
    """Turns database failures anywhere in a command into one clear line and exit 1."""

    def invoke(self, ctx: click.Context) -> object:
        from sqlalchemy.exc import DBAPIError

        from storage.errors import DatabaseError

        try:
            return super().invoke(ctx)
        except DatabaseError as exc:
            fail(str(exc), 1)
        except DBAPIError as exc:
            fail(f"database error: {exc.orig}", 1)


@click.group(cls=NewsmonGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--config", "config_path", metavar="PATH", envvar="NEWSMON_CONFIG",
              help="Configuration file (default: $NEWSMON_CONFIG, else ./newsmon.toml, else built-in defaults).")
@click.option("--log-level", default="INFO", show_default=True,
              type=click.Choice(["TRACE", "DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
@click.option("--log-json", is_flag=True, help="Log one JSON object per line (for journald and log shippers).")
@click.version_option(package_name="newsmon")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, log_level: str, log_json: bool) -> None:
    """newsmon: monitor what ministries and regional media publish about international
    organisations."""
    setup_logging(log_level, log_json)
    ctx.obj = AppContext(config_path, log_level.upper(), log_json)


def _register() -> None:
    from scheduler.commands import REGISTRY

    for command in REGISTRY:
        cli.add_command(command)


_register()
