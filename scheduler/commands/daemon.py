"""`newsmon run`: the daemon."""

from __future__ import annotations

import sys

import click

from scheduler.context import AppContext, pass_app


@click.command()
@click.option("--serve/--no-serve", default=None,
              help="Also serve the web page and API on [server] host:port (default: [server] enabled, true).")
@click.option("--insecure", is_flag=True,
              help="Allow serving on a non-loopback [server] host without api_token.")
@pass_app
def run(app: AppContext, serve: bool | None, insecure: bool) -> None:
    """Run the daemon: poll every enabled source on its schedule, store and match what is new,
    send alerts, and serve the web page and API (as `newsmon serve` does) on [server] host and
    port; stops cleanly on SIGTERM/SIGINT (exit 0).

    Without [[alerts]], each new match is printed in the log (the built-in log channel).
    SQLite allows one daemon per database; on PostgreSQL run as many workers as you like and
    start all but the one that serves with --no-serve (or give each its own [server] port).
    """
    from scheduler.daemon import Daemon

    sys.exit(Daemon(app, serve=serve, insecure=insecure).run())


COMMANDS: list[click.Command] = [run]
