"""`newsmon doctor`: a read-only self-check of the installation and the configuration."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

import click

from scheduler.context import AppContext, pass_app

if TYPE_CHECKING:
    from scheduler.checks import CheckResult


@click.command()
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("--send-test", is_flag=True, help="Also send one test notification through every alert channel.")
@pass_app
def doctor(app: AppContext, fmt: str, send_test: bool) -> None:
    """Check the installation and the configuration without changing anything: configuration
    valid, database reachable and migrated (or migratable), feed parsing, article extraction and
    morphology on built-in samples, Chromium when a source renders, alert channel URLs. One row
    per check with what to do when it fails.

    Exit status: 0 when every check passes, 1 when one fails, 2 when the configuration is invalid.

    \b
    Examples:
      newsmon doctor
      newsmon doctor --format json
      newsmon doctor --send-test
    """
    from scheduler.checks import run_checks

    rows, config_ok = run_checks(app.config_path, send=send_test)
    ok = all(row.ok for row in rows)
    if fmt == "json":
        click.echo(json.dumps({"ok": ok, "checks": [row.as_json() for row in rows]}, ensure_ascii=False, indent=2))
    else:
        print_checks(rows)
    if not config_ok:
        sys.exit(2)
    if not ok:
        sys.exit(1)


def print_checks(rows: Sequence[CheckResult]) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title="newsmon doctor", title_justify="left")
    for column in ("check", "result", "detail", "fix"):
        table.add_column(column, overflow="fold")
    for row in rows:
        result = Text("ok", style="green") if row.ok else Text("FAIL", style="bold red")
        table.add_row(Text(row.name), result, Text(row.detail), Text(row.fix))  # no markup in details
    failed = sum(1 for row in rows if not row.ok)
    console = Console(file=sys.stdout, width=None if sys.stdout.isatty() else 160)
    console.print(table)
    console.print(f"{len(rows)} checks, {failed} failed" if failed else f"{len(rows)} checks, all passed")


COMMANDS: list[click.Command] = [doctor]
