"""`newsmon backfill`: fill one source's history backwards (thin over crawler.backfill)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING

import click

from scheduler.context import AppContext, fail, pass_app

if TYPE_CHECKING:
    from crawler.backfill import BackfillReport

STOPS = {
    "since": "reached a page entirely older than {since}",
    "max-pages": "stopped after --max-pages; run it again to continue",
    "end": "no older page",
    "done": "already filled back to {since}: nothing to do",
    "error": "stopped",
}


def _duration(ctx: click.Context, param: click.Parameter, value: str) -> float:
    from crawler.units import parse_duration

    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command()
@click.argument("source_id", metavar="ID")
@click.option("--since", "since_day", metavar="DATE", help="Go back to this day (YYYY-MM-DD, inclusive, "
              "in the source's timezone); default: as far as the pages go.")
@click.option("--max-pages", type=click.IntRange(min=1), default=100, show_default=True,
              help="Read at most this many pages in this run.")
@click.option("--delay", default="1s", show_default=True, metavar="DURATION", callback=_duration,
              help="Wait at least this long between two pages (500ms, 2s …); robots.txt applies too.")
@pass_app
def backfill(app: AppContext, source_id: str, since_day: str | None, max_pages: int, delay: float) -> None:
    """Fill the history of one source backwards: follow its older pages (listing pagination,
    telegram ?before=, sitemaps, JSON pages; a feed through its site's sitemap) politely back
    to DATE, storing and matching what they hold. Sends no alerts. Interrupted, it continues
    where it stopped on the next run.

    \b
    Examples:
      newsmon backfill mfa-az --since 2025-01-01
      newsmon backfill mid-telegram-ru --since 2025-06-01 --max-pages 50
      newsmon backfill own-archive --delay 200ms
    """
    from crawler.backfill import backfill_source, since_start
    from crawler.errors import BackfillError
    from scheduler.daemon import source_rows
    from storage.repository import sync_sources

    spec = app.config.source(source_id)
    if spec is None:
        known = ", ".join(sorted(s.id for s in app.config.sources))
        fail(f"unknown source id {source_id!r} (configured: {known})", 2)
    since = None
    if since_day:
        try:
            since = since_start(date.fromisoformat(since_day), spec.timezone)
        except ValueError:
            fail(f"--since: {since_day!r} is not a date (YYYY-MM-DD)", 2)
    with app.sessions.begin() as session:
        sync_sources(session, source_rows(app.config), datetime.now(UTC))
    try:
        with progress(max_pages) as on_page:
            report = backfill_source(spec, crawl=app.config.crawl, organisations=app.config.organisations,
                                     sessions=app.sessions, since=since, max_pages=max_pages, on_page=on_page,
                                     delay=delay)
    except BackfillError as exc:
        fail(str(exc), 1)
    print_summary(report, since_day, spec.timezone)
    if report.stopped == "error":
        fail(f"{report.error} (what was stored stays; run it again to retry from this page)", 1)


@contextmanager
def progress(total: int) -> Iterator[Callable[[BackfillReport], None]]:
    """A progress bar on a terminal; nothing otherwise (the summary follows)."""
    if not sys.stderr.isatty():
        yield lambda report: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("pages"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
                  TimeElapsedColumn(), console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("", total=total)

        def update(report: BackfillReport) -> None:
            oldest = report.oldest_at.date().isoformat() if report.oldest_at else "-"
            bar.update(task, completed=report.pages,
                       description=f"{report.new} new, {report.known} known, back to {oldest}")

        yield update


def print_summary(report: BackfillReport, since_day: str | None, timezone: str = "UTC") -> None:
    """One line: pages, items new and known, the oldest date reached (in the source's zone)."""
    from zoneinfo import ZoneInfo

    oldest = report.oldest_at.astimezone(ZoneInfo(timezone)).date().isoformat() if report.oldest_at else "-"
    how = STOPS[report.stopped].format(since=since_day or "the start")
    resumed = " (continued)" if report.resumed else ""
    click.echo(f"{report.source}: {report.pages} pages{resumed}, {report.new} new items, "
               f"{report.known} known, oldest {oldest}; {how}")


COMMANDS: list[click.Command] = [backfill]
