"""`newsmon crawl` and `newsmon status`: one crawl round now, and the health of every source."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click
from loguru import logger

from scheduler.context import AppContext, fail, pass_app

if TYPE_CHECKING:
    from crawler.job import SourceEvent

SUMMARY_COLUMNS = ("source", "outcome", "new", "updated", "unchanged", "matched", "errors")


@click.command()
@click.option("--source", "source_ids", multiple=True, metavar="ID",
              help="Poll only this source (repeatable); default: every enabled source.")
@click.option("--timeout", type=float, default=None, metavar="SECONDS",
              help="Deadline of the round (default: [daemon] round_timeout).")
@pass_app
def crawl(app: AppContext, source_ids: tuple[str, ...], timeout: float | None) -> None:
    """Poll all (or the named) sources once now, then send pending alerts.

    Exit status: 0 when the round ran, 1 when every source failed or any failed through
    newsmon's own fault (classes internal, extract, storage, crash), 2 on bad configuration
    or an unknown source id.

    \b
    Examples:
      newsmon crawl
      newsmon crawl --source mid-ru --source trend
    """
    from scheduler.daemon import source_rows
    from scheduler.runner import crawl_round
    from storage.repository import sync_sources

    config = app.config
    known = {s.id for s in config.sources}
    unknown = [s for s in source_ids if s not in known]
    if unknown:
        fail(f"unknown source id(s): {', '.join(unknown)} (configured: {', '.join(sorted(known))})", 2)
    with app.sessions.begin() as session:
        sync_sources(session, source_rows(config), datetime.now(UTC))
    ids = list(source_ids) or None
    planned = len(source_ids) or sum(1 for s in config.sources if s.enabled)
    with progress_reporter(planned) as on_event:
        report = crawl_round(config, ids, timeout=timeout, on_event=on_event,
                                 log_level=_child_level(app.log_level), log_json=app.log_json)
    print_summary(report.sources)
    dispatch_alerts(app)
    if own := report.own_faults:
        click.echo(f"newsmon: {len(own)} source(s) failed through newsmon's own fault "
                   f"({', '.join(sorted({e.error_class or '' for e in own}))}): see the log above "
                   "and `newsmon doctor`", err=True)
    if report.all_failed or own:
        sys.exit(1)


def _child_level(level: str) -> str:
    return level if level in ("TRACE", "DEBUG", "ERROR") else "WARNING"


@contextmanager
def progress_reporter(planned: int) -> Iterator[Callable[[dict[str, Any]], None]]:
    """A rich progress bar on a terminal; one log line per finished source otherwise."""
    if not sys.stderr.isatty():
        def log_line(event: dict[str, Any]) -> None:
            if event.get("kind") == "source":
                level = "WARNING" if event.get("outcome") == "error" else "INFO"
                logger.log(level, "{}: {}{}", event["source_id"], event.get("error_class") or event["outcome"],
                           f" ({event['new']} new)" if event.get("new") else "")
        yield log_line
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=Console(stderr=True), transient=True) as bar:
        requests = bar.add_task("requests", total=None)
        sources = bar.add_task("sources", total=planned)

        def update(event: dict[str, Any]) -> None:
            if event.get("kind") == "progress":
                bar.update(requests, completed=event["done"], total=event["total"])
            elif event.get("kind") == "source":
                bar.advance(sources)

        yield update


def summary_rows(events: Sequence[SourceEvent]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for e in sorted(events, key=lambda e: e.source_id):
        outcome = e.error_class if e.outcome == "error" else e.outcome
        errors = (e.message or "")[:80] if e.outcome == "error" else ""
        rows.append((e.source_id, outcome or "", str(e.new), str(e.updated), str(e.unchanged),
                     str(e.matched), errors))
    return rows


def print_summary(events: Sequence[SourceEvent]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="crawl round", title_justify="left")
    for column in SUMMARY_COLUMNS:
        table.add_column(column, justify="right" if column in ("new", "updated", "unchanged",
                                                                "matched") else "left")
    for row in summary_rows(events):
        table.add_row(*row)
    failed = sum(1 for e in events if e.outcome == "error")
    console = Console(file=sys.stdout, width=None if sys.stdout.isatty() else 160)
    console.print(table)
    console.print(f"{len(events)} sources, {failed} failed, "
                  f"{sum(e.new for e in events)} new items, {sum(e.matched for e in events)} matched")


def dispatch_alerts(app: AppContext) -> None:
    """Send what the round (and earlier ones) left in the outbox, once."""
    if not app.config.alerts:
        return
    from scheduler import jobs
    from scheduler.daemon import build_channels, worker_identity

    worker_id, host, pid = worker_identity()
    rt = jobs.Runtime(config=app.config, sessions=app.sessions, worker_id=worker_id,
                      channels=build_channels(app.config), crawl_round=lambda ids, sink: None,
                      host=host, pid=pid)
    try:
        sent = jobs.dispatch_all(rt)
    except Exception as exc:  # the command's boundary: the round itself has been stored
        logger.opt(exception=exc).error("sending alerts failed: {}", exc)
        return
    if sent:
        logger.info("sent {} alert(s)", sent)


@click.command()
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True)
@pass_app
def status(app: AppContext, fmt: str) -> None:
    """Per source: last poll, last success, last new item, last error and its class, items,
    next poll, consecutive failures, and whether it has gone silent; plus workers and alert
    latency."""
    from scheduler.daemon import source_rows
    from storage.queries import status_dict

    with app.sessions() as session:
        doc = status_dict(session, configured=source_rows(app.config))
    if fmt == "json":
        click.echo(json.dumps(doc, ensure_ascii=False, indent=2))
        return
    print_status(doc)


def print_status(doc: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="sources", title_justify="left")
    for column in ("id", "enabled", "last poll", "last success", "last new", "next poll", "items",
                   "failures", "silent", "revisits", "last error"):
        table.add_column(column)
    for s in doc["sources"]:
        error = s["last_error"]
        table.add_row(s["id"], "yes" if s["enabled"] else "no", _short(s["last_poll"]),
                      _short(s["last_success"]), _short(s["last_new_item"]), _short(s["next_poll"]),
                      str(s["items"]), str(s["failures"]), "SILENT" if s["silent"] else "",
                      _revisits(s.get("revisits") or {}),
                      f"{error['class']}: {(error['message'] or '')[:60]}" if error else "")
    console = Console(file=sys.stdout, width=None if sys.stdout.isatty() else 200)
    console.print(table)
    for w in doc["workers"]:
        holds = ", ".join(w["holds"][:10]) + (" …" if len(w["holds"]) > 10 else "")
        console.print(f"worker {w['id']}: heartbeat {w['heartbeat_age_seconds']}s ago, "
                      f"{w['polls']} polls, holds {w['sources_held']} sources"
                      f"{f' ({holds})' if holds else ''}, {w['events_held']} alert events")
    latency = doc.get("latency", {}).get("published_to_delivered", {})
    if latency.get("count"):
        console.print(f"alert latency published → delivered: p50 {latency['p50']}s, "
                      f"p95 {latency['p95']}s over {latency['count']} alerts")


def _revisits(found: dict[str, Any]) -> str:
    """"12 done, 3 due, 2 edited (17%), 1 removed"."""
    if not found.get("done") and not found.get("due"):
        return "-"
    rate = found.get("edit_rate")
    text = f"{found['done']} done, {found['due']} due, {found['edited']} edited"
    text += f" ({rate:.0%})" if rate is not None else ""
    return text + (f", {found['removed']} removed" if found.get("removed") else "")


def _short(value: str | None) -> str:
    return value[:19].replace("T", " ") if value else "-"


COMMANDS: list[click.Command] = [crawl, status]
