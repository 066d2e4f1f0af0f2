"""`newsmon run`: the daemon."""

from __future__ import annotations

import sys

import click

from scheduler.context import AppContext, pass_app


@click.command()
@pass_app
def run(app: AppContext) -> None:
    """Run the daemon: poll every enabled source on its schedule, store and match what is new,
    and send alerts; stops cleanly on SIGTERM/SIGINT (exit 0).

    SQLite allows one daemon per database; on PostgreSQL run as many workers as you like.
    """
    from scheduler.daemon import Daemon

    sys.exit(Daemon(app).run())


COMMANDS: list[click.Command] = [run]
