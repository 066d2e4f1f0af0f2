"""`newsmon search`, `show`, `export` and `import`: the stored history for people and programs."""

from __future__ import annotations

import csv
import json
import os
import sys
import tempfile
import textwrap
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import click

from scheduler.context import AppContext, fail, pass_app


def parse_when(value: str | None, *, end_of_day: bool = False) -> datetime | None:
    """An ISO date or time as UTC (a bare date means its start, or its end for --until)."""
    from storage.queries import parse_when as parse

    if value is None:
        return None
    try:
        return parse(value, end_of_day=end_of_day)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _since(ctx: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
    return parse_when(value)


def _until(ctx: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
    return parse_when(value, end_of_day=True)


CSV_COLUMNS = ["id", "source", "published_at", "first_seen_at", "organisations", "title", "url",
               "canonical_url", "language", "story_id", "version", "content_hash"]


TABLE_MAX = 1000  # rows the table format shows (it is laid out whole); the others stream


def print_items(items: Iterable[dict[str, Any]], fmt: str, out: IO[str]) -> None:
    """Write ``items`` as they come: only the current item is held (the table excepted)."""
    if fmt == "json":
        _write_json_array(items, out)
    elif fmt == "jsonl":
        for item in items:
            out.write(json.dumps(item, ensure_ascii=False) + "\n")
    elif fmt == "csv":
        writer = csv.writer(out)
        writer.writerow(CSV_COLUMNS)
        for item in items:
            row = {**item, "organisations": ";".join(item["organisations"])}
            writer.writerow([row.get(c) if row.get(c) is not None else "" for c in CSV_COLUMNS])
    else:
        _print_table(list(items))


def _write_json_array(items: Iterable[dict[str, Any]], out: IO[str]) -> None:
    """The bytes of ``json.dumps(list(items), ensure_ascii=False, indent=2)``, one item at a time."""
    separator = "[\n"
    for item in items:
        out.write(separator + textwrap.indent(json.dumps(item, ensure_ascii=False, indent=2), "  "))
        separator = ",\n"
    out.write("[]\n" if separator == "[\n" else "\n]\n")


def _print_table(items: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not items:
        console.print("no items")
        return
    table = Table(show_lines=False)
    for column in ("id", "published", "source", "organisations", "title"):
        table.add_column(column, overflow="fold")
    for item in items:
        when = (item["published_at"] or item["first_seen_at"] or "")[:16].replace("T", " ")
        table.add_row(str(item["id"]), when, item["source"], ", ".join(item["organisations"]),
                      item["title"])
    console.print(table)


@click.command()
@click.argument("query", required=False)
@click.option("--org", "orgs", multiple=True, metavar="ID", help="Only items matching this organisation.")
@click.option("--source", "sources", multiple=True, metavar="ID", help="Only items of this source.")
@click.option("--since", callback=_since, metavar="T", help="From this ISO date or time.")
@click.option("--until", callback=_until, metavar="T", help="Up to this ISO date or time.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1), metavar="N",
              help=f"Up to N items (no maximum; the table format shows at most {TABLE_MAX:,} "
                   "and says so when there are more).")
@click.option("--format", "fmt", default="table", show_default=True,
              type=click.Choice(["table", "json", "jsonl", "csv"]))
@pass_app
def search(app: AppContext, query: str | None, orgs: tuple[str, ...], sources: tuple[str, ...],
           since: datetime | None, until: datetime | None, limit: int, fmt: str) -> None:
    """Search stored history, newest first.

    QUERY is full text: words (all must appear), "exact phrases", OR between
    alternatives, -word to exclude. Words match in any grammatical form.
    json, jsonl and csv stream any number of items in constant memory.

    \b
    Examples:
      newsmon search СВМДА
      newsmon search '"мерам доверия" OR CICA -спорт' --since 2025-01-01
      newsmon search --org CICA --format json --limit 10
    """
    from storage.queries import SearchFilter, iter_search

    table = fmt == "table"
    flt = SearchFilter(query=query, organisations=orgs, sources=sources, since=since,
                       until=until, limit=min(limit, TABLE_MAX + 1) if table else limit)
    with app.sessions() as session:
        items = iter_search(session, flt)
        if not table:
            print_items(items, fmt, sys.stdout)
            return
        rows = list(items)
    print_items(rows[:TABLE_MAX], fmt, sys.stdout)
    if len(rows) > TABLE_MAX:
        click.echo(f"newsmon: the table shows the first {TABLE_MAX:,} items and there are more; "
                   f"use --format json, jsonl or csv for up to --limit {limit:,}", err=True)


@click.command()
@click.argument("item_id", type=int)
@click.option("--versions", is_flag=True, help="Include every stored version.")
@click.option("--format", "fmt", default="text", show_default=True, type=click.Choice(["text", "json"]))
@pass_app
def show(app: AppContext, item_id: int, versions: bool, fmt: str) -> None:
    """Show one item with its matches, story and (with --versions) every version."""
    from storage.queries import get_item

    with app.sessions() as session:
        item = get_item(session, item_id, versions=versions, story=fmt == "text")
    if item is None:
        fail(f"no item {item_id}", 1)
    if fmt == "json":
        click.echo(json.dumps(item, ensure_ascii=False, indent=2))
        return
    _print_item_text(item)


def _print_item_text(item: dict[str, Any]) -> None:
    click.echo(f"#{item['id']}  {item['title']}")
    click.echo(f"source: {item['source']}   published: {item['published_at'] or '-'}   "
               f"first seen: {item['first_seen_at']}")
    click.echo(f"url: {item['url']}")
    click.echo(f"story: {item['story_id']}   version: {item['version']}   {item['content_hash']}")
    if item.get("removed"):
        click.echo("REMOVED: the page is gone (404/410, or a redirect to the home page or a listing); "
                   "the text is the last one seen")
    for match in item["matches"]:
        click.echo(f"match: {match['organisation']} ({match['form']}): {match['snippet']}")
    for sibling in item.get("story", []):
        if sibling["id"] != item["id"]:
            click.echo(f"same story: #{sibling['id']} {sibling['source']}: {sibling['title']}")
    click.echo("")
    click.echo(item["text"])
    _print_versions(item.get("versions", []))


def _print_versions(versions: list[dict[str, Any]]) -> None:
    """The first version whole, then each one as a word diff from the one before it
    ([-removed-] {+added+}); a removal is marked as such."""
    from storage.diffs import word_diff

    previous: dict[str, Any] | None = None
    for version in versions:
        removed = "  REMOVED (the page was gone)" if version.get("removed") else ""
        click.echo(f"\n--- version {version['version']} fetched {version['fetched_at']} "
                   f"{version['content_hash']}{removed}")
        if previous is None:
            click.echo(version["title"])
            click.echo(version["text"])
        elif previous.get("removed") and not version.get("removed") and \
                (previous["title"], previous["text"]) == (version["title"], version["text"]):
            click.echo("the page is back, unchanged")
        elif not version.get("removed"):
            title = word_diff(previous["title"], version["title"])
            click.echo(f"title: {title}" if title else "title: unchanged")
            click.echo(word_diff(previous["text"], version["text"]) or "text: unchanged")
        previous = version


@contextmanager
def _output(path: str | None, binary: bool) -> Iterator[IO[Any]]:  # IO[bytes] if binary else IO[str]
    """stdout, or a file written whole: a temporary file renamed into place on success."""
    if path is None or path == "-":
        yield sys.stdout.buffer if binary else sys.stdout
        return
    target = Path(path)
    fd, tmp = tempfile.mkstemp(dir=target.parent or Path("."), prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8") as fh:
            yield fh
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@click.command()
@click.option("--since-id", default=0, show_default=True, type=click.IntRange(0), metavar="N",
              help="Only items with an id greater than N (a cursor).")
@click.option("--format", "fmt", default="jsonl", show_default=True, type=click.Choice(["jsonl", "warc"]))
@click.option("--out", "out_path", metavar="PATH", help="Write to PATH instead of stdout.")
@pass_app
def export(app: AppContext, since_id: int, fmt: str, out_path: str | None) -> None:
    """Export every item after a cursor with all its versions (JSONL), or the raw fetched
    responses of every version (WARC), streaming in constant memory."""
    from storage.transfer import export_jsonl, export_warc

    with app.sessions() as session, _output(out_path, fmt == "warc") as out:
        count = export_warc(session, out, since_id) if fmt == "warc" else export_jsonl(session, out, since_id)
    click.echo(f"exported {count} {'records' if fmt == 'warc' else 'items'}", err=True)


@click.command(name="import")
@click.argument("path", type=click.File("rb"))  # UTF-8, decoded line by line where it is parsed
@pass_app
def import_(app: AppContext, path: IO[bytes]) -> None:
    """Load items (with their versions) from JSONL in the export format; `-` reads stdin.
    Idempotent: importing the same file twice changes nothing."""
    from storage.transfer import Importer

    now = datetime.now(UTC)
    with app.sessions() as session:
        report = Importer(session, now).feed(path)
    for number, reason in report.errors:
        click.echo(f"newsmon: line {number}: {reason}", err=True)
    click.echo(f"imported {report.items_new} new items, {report.versions_new} new versions, "
               f"{report.unchanged} unchanged; {len(report.errors)} bad lines", err=True)
    if report.errors:
        sys.exit(1)


COMMANDS: list[click.Command] = [search, show, export, import_]
