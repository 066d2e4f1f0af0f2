"""`newsmon match` (try the matcher on a text) and `newsmon rematch` (re-run it over history)."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, TextIO, TypedDict

import click

from scheduler.context import AppContext, fail, pass_app

if TYPE_CHECKING:
    from crawler.matching import OrgMatcher


class ShownMatch(TypedDict):
    """One match as `newsmon match` prints it (a row of the table, an object of the JSON)."""

    organisation: str
    alias: str
    form: str
    start: int
    end: int
    snippet: str
    confidence: float
    evidence: list[str]
    explanation: str


def build_matcher(app: AppContext, only: tuple[str, ...] = ()) -> OrgMatcher:
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
@click.option("--language", metavar="LANG", help="The text's language (ru, en, az, kk, …); default: guessed.")
@click.option("--source", "source_id", metavar="ID", help="Match as for this source (its language and topic).")
@click.option("--all", "show_all", is_flag=True,
              help="Also show candidates that do not count (no evidence, another language, vetoed).")
@pass_app
def match(app: AppContext, text: str | None, file_path: TextIO | None, fmt: str, language: str | None,
          source_id: str | None, show_all: bool) -> None:
    """Run the organisation matcher on TEXT (or --file PATH, or - for stdin) and print every
    match: organisation, alias, the form found, a snippet, its confidence and the evidence
    (why an ambiguous acronym counts). Exits 0 with or without matches.

    \b
    Example:
      newsmon match "Делегация прибыла на заседание Совещания по взаимодействию и мерам доверия в Азии"
      newsmon match --all "SCO foreign ministers met in Tashkent. The SCO Group sued IBM."
    """
    if file_path is not None:
        text = file_path.read()
    elif text is None or text == "-":
        text = sys.stdin.read()
    topic = None
    if source_id is not None:
        source = next((s for s in app.config.sources if s.id == source_id), None)
        if source is None:
            fail(f"--source: unknown source {source_id!r}", 2)
        language, topic = language or source.language, source.topic
    from crawler.evidence import MIN_COUNTED

    found = build_matcher(app).explain(text, language, topic)
    rows: list[ShownMatch] = [{"organisation": m.organisation, "alias": m.alias, "form": m.form, "start": m.start,
             "end": m.end, "snippet": m.snippet, "confidence": m.confidence,
             "evidence": list(m.evidence), "explanation": m.explanation()} for m in found]
    counted = [r for r in rows if r["confidence"] >= MIN_COUNTED]
    rejected = [r for r in rows if r["confidence"] < MIN_COUNTED]
    if fmt == "json":
        document = {"matches": counted, **({"rejected": rejected} if show_all else {})}
        click.echo(json.dumps(document, ensure_ascii=False, indent=2))
        return
    if not counted and not (show_all and rejected):
        click.echo("no matches")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table()
    for column in ("organisation", "form", "alias", "at", "confidence", "why", "snippet"):
        table.add_column(column, overflow="fold")
    for r in counted + (rejected if show_all else []):
        why = " + ".join(r["evidence"])
        mark = f"{r['confidence']:.2f}" if r["confidence"] >= MIN_COUNTED else "not counted"
        table.add_row(r["organisation"], r["form"], r["alias"], f"{r['start']}–{r['end']}", mark,
                      why, r["snippet"])
    Console().print(table)


@click.command()
@click.option("--org", "orgs", multiple=True, metavar="ID", help="Only re-match these organisations.")
@click.option("--dry-run", is_flag=True, help="Report the matches gained and lost; store nothing.")
@click.option("--alert", is_flag=True, help="Also alert the matches gained (off: old items stay quiet).")
@pass_app
def rematch(app: AppContext, orgs: tuple[str, ...], dry_run: bool, alert: bool) -> None:
    """Re-run matching over stored history after the organisations changed; prints the matches
    gained and lost, and stores them unless --dry-run."""
    from storage.repository import ChannelRule, MatchRow
    from storage.transfer import iter_items
    from storage.writes import rematch_item

    matcher = build_matcher(app, orgs)
    only = frozenset(orgs) if orgs else None
    channels = [ChannelRule(a.channel_id, frozenset(a.organisations) if a.organisations else None,
                            timedelta(seconds=a.max_age), a.min_confidence, frozenset(a.events),
                            frozenset(a.sources) if a.sources is not None else None, a.query)
                 for a in app.config.alerts]
    sources = {s.id: s for s in app.config.sources}
    gained = lost = scanned = 0
    session = app.sessions()
    try:
        for item in iter_items(session):
            scanned += 1
            source = sources.get(item.source_id)
            found = matcher.find(f"{item.title}\n{item.text}", item.language,
                                 source.topic if source else None)
            rows = [MatchRow(m.organisation, m.alias, m.form, m.snippet, m.start, m.end,
                             confidence=m.confidence) for m in found]
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
