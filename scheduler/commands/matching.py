"""`newsmon match` (try the matcher on a text) and `newsmon rematch` (re-run it over history)."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta

import click

from scheduler.context import AppContext, fail, pass_app


def build_matcher(app: AppContext, only: tuple[str, ...] = ()):  # noqa: ANN201 - OrgMatcher
    from crawler.matching import OrgMatcher

    organisations = app.config.organisations
    known = {o.id for o in organisations}
    for org in only:
        if org not in known:
            fail(f"--org: unknown organisation {org!r} (known: {', '.join(sorted(known))})", 2)
    return OrgMatcher([o for o in organisations if not only or o.id in only])


@click.command()
@click.argument("text", required=False)
@click.option("--file", "file_path", type=click.File("r", encoding="utf-8"), help="Read the text from a file.")
@click.option("--format", "fmt", default="table", show_default=True, type=click.Choice(["table", "json"]))
@pass_app
def match(app: AppContext, text: str | None, file_path, fmt: str) -> None:  # noqa: ANN001
    """Run the organisation matcher on TEXT (or --file PATH, or - for stdin) and print every
    match: organisation, alias, the form found and a snippet. Exits 0 with or without matches.

    \b
    Example:
      newsmon match "Делегация прибыла на заседание Совещания по взаимодействию и мерам доверия в Азии"
    """
    if file_path is not None:
        text = file_path.read()
    elif text is None or text == "-":
        text = sys.stdin.read()
    found = build_matcher(app).find(text)
    rows = [{"organisation": m.organisation, "alias": m.alias, "form": m.form, "start": m.start,
             "end": m.end, "snippet": m.snippet} for m in found]
    if fmt == "json":
        click.echo(json.dumps({"matches": rows}, ensure_ascii=False, indent=2))
        return
    if not rows:
        click.echo("no matches")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table()
    for column in ("organisation", "form", "alias", "at", "snippet"):
        table.add_column(column, overflow="fold")
    for r in rows:
        table.add_row(r["organisation"], r["form"], r["alias"], f"{r['start']}–{r['end']}", r["snippet"])
    Console().print(table)


@click.command()
@click.option("--org", "orgs", multiple=True, metavar="ID", help="Only re-match these organisations.")
@click.option("--dry-run", is_flag=True, help="Report the matches gained and lost; store nothing.")
@click.option("--alert", is_flag=True, help="Also alert the matches gained (off: old items stay quiet).")
@pass_app
def rematch(app: AppContext, orgs: tuple[str, ...], dry_run: bool, alert: bool) -> None:
    """Re-run matching over stored history after the organisations changed; prints the matches
    gained and lost, and stores them unless --dry-run."""
    from storage.repository import ChannelRule, MatchRow, rematch_item
    from storage.transfer import iter_items

    matcher = build_matcher(app, orgs)
    only = frozenset(orgs) if orgs else None
    channels = [ChannelRule(a.channel_id, frozenset(a.organisations) if a.organisations else None,
                            timedelta(seconds=a.max_age)) for a in app.config.alerts]
    gained = lost = scanned = 0
    session = app.sessions()
    try:
        for item in iter_items(session):
            scanned += 1
            rows = [MatchRow(m.organisation, m.alias, m.form, m.snippet, m.start, m.end)
                    for m in matcher.find(f"{item.title}\n{item.text}")]
            result = rematch_item(session, item, rows, only, channels, alert, datetime.now(UTC))
            for org in result.gained:
                click.echo(f"+ {org}\t#{item.id}\t{item.title}")
            for org in result.lost:
                click.echo(f"- {org}\t#{item.id}\t{item.title}")
            gained, lost = gained + len(result.gained), lost + len(result.lost)
            if dry_run:
                session.rollback()
            elif scanned % 200 == 0:
                session.commit()
        if not dry_run:
            session.commit()
    finally:
        session.close()
    verb = "would change" if dry_run else "changed"
    click.echo(f"{scanned} items scanned; {verb}: {gained} matches gained, {lost} lost", err=True)


COMMANDS: list[click.Command] = [match, rematch]
