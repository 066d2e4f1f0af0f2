"""`newsmon sources add|test|import|export`: turning a URL into a source, dry-running a source,
and moving feed subscriptions in and out as OPML. Thin over crawler.discovery, crawler.trial,
crawler.opml and scheduler.sourcefile."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from scheduler.context import AppContext, fail, pass_app

if TYPE_CHECKING:
    from crawler.discovery import Candidate, Discovery
    from crawler.sources import SourceSpec
    from crawler.trial import Trial

PREVIEW_ITEMS = 10


@click.group()
def sources() -> None:
    """Add, try, import and export sources."""


def _typed_private(url: str) -> bool:
    """True when the URL the user typed is on a loopback/private address (allowed for it)."""
    from crawler.addresses import destination_problem, url_host

    return destination_problem(url_host(url)) is not None


def _check_url(url: str) -> str:
    from crawler.sources import check_http_url

    try:
        return check_http_url(url)
    except ValueError as exc:
        fail(f"URL: {exc}", 2)


def _config_file(app: AppContext) -> Path:
    from scheduler.config import DEFAULT_CONFIG_NAME

    return app.loaded.path or Path(app.config_path or DEFAULT_CONFIG_NAME)


def _discover(app: AppContext, url: str, language: str | None) -> tuple[Discovery, bool]:
    from crawler.discovery import discover

    private = _typed_private(url)
    click.echo(f"Reading {url} …", err=True)
    found = discover(url, crawl=app.config.crawl, taken=[s.id for s in app.config.sources],
                     allow_private=private, language=language)
    if found.blocked:
        fail(f"{url}: blocked by an anti-bot page ({found.blocked}); if a browser gets through, "
             'add the source by hand with render = "browser"', 1)
    if found.error:
        fail(f"{url}: {found.error}", 1)
    if not found.candidates:
        fail(f"{url}: no feed, sitemap, channel or list of articles found on this page; try the "
             "site's news listing page", 1)
    return found, private


def _trial(app: AppContext, spec: SourceSpec) -> Trial:
    from crawler.trial import trial_source

    return trial_source(spec, crawl=app.config.crawl, organisations=app.config.organisations)


@sources.command()
@click.argument("url")
@click.option("--id", "source_id", metavar="ID", help="The source's id (default: from the host and path).")
@click.option("--name", metavar="N", help="The source's name (default: the page's title or the host).")
@click.option("--language", metavar="L", help="The source's language (default: the page's).")
@click.option("--dry-run", is_flag=True, help="Print the table that would be added; write nothing.")
@click.option("--yes", "-y", is_flag=True, help="Write without asking.")
@pass_app
def add(app: AppContext, url: str, source_id: str | None, name: str | None, language: str | None,
        dry_run: bool, yes: bool) -> None:
    """Turn a site or page URL into a source: find its feeds (or propose CSS selectors for a
    listing page without one), preview what it would store, and write the [[sources]] table
    into newsmon.toml, keeping the file's comments and layout.

    \b
    Examples:
      newsmon sources add https://mfa.gov.az/en/news
      newsmon sources add https://example.org/ --id example-news --dry-run
    """
    from crawler.sources import SOURCE_ID
    from scheduler.sourcefile import sources_toml

    url = _check_url(url)
    if source_id is not None and not SOURCE_ID.match(source_id):
        fail(f"--id: {source_id!r} is not a valid id: use lower-case letters, digits and -", 2)
    if source_id and app.config.source(source_id):
        fail(f"--id: a source {source_id!r} is configured already", 2)
    found, private = _discover(app, url, language)
    best = found.candidates[0]
    spec = _final_spec(best, source_id=source_id, name=name or found.title, language=language or found.language,
                       private=private)
    _print_candidates(found.candidates)
    trial = _trial(app, spec)
    _print_trial(trial, limit=PREVIEW_ITEMS)
    click.echo()
    click.echo(sources_toml([spec]))
    if dry_run:
        return
    if trial.outcome != "ok":
        click.echo(f"warning: the dry run ended with {trial.outcome!r}"
                   f"{': ' + trial.message if trial.message else ''}", err=True)
    path = _config_file(app)
    if not yes:
        spec = _confirm_timezone(spec)
        if not click.confirm(f"Add this source to {path}?", default=trial.outcome == "ok"):
            click.echo("Nothing written.")
            return
    _write(app, path, [spec])
    click.echo(f"Added source {spec.id!r} to {path}.")


def _final_spec(best: Candidate, *, source_id: str | None, name: str | None, language: str | None,
                private: bool) -> SourceSpec:
    from urllib.parse import urlsplit

    spec = best.spec
    update: dict[str, object] = {"allow_private": private}
    if source_id:
        update["id"] = source_id
    update["name"] = name or spec.name or (urlsplit(spec.url).hostname or spec.id).removeprefix("www.")
    if language:
        update["language"] = language
    return spec.model_validate({**spec.model_dump(exclude_defaults=True), **update})


def _confirm_timezone(spec: SourceSpec) -> SourceSpec:
    """Ask for the time zone of the site's dates (the guess from its country is the default)."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    def check(value: str) -> str:
        try:
            ZoneInfo(value.strip())
        except (ZoneInfoNotFoundError, ValueError):
            raise click.BadParameter(f"{value!r} is not a time zone (e.g. Asia/Baku, Europe/Moscow, UTC)") from None
        return value.strip()

    zone = click.prompt("Time zone of the site's dates", default=spec.timezone, value_proc=check)
    return spec.model_copy(update={"timezone": zone})


def _print_candidates(candidates: list[Candidate]) -> None:
    click.echo("Found:")
    for index, c in enumerate(candidates):
        mark = "*" if index == 0 else " "
        newest = c.newest.date().isoformat() if c.newest else "-"
        click.echo(f" {mark} {c.spec.kind:<9} {c.spec.url}  ({c.how}; {len(c.entries)} items, newest {newest})")
    if len(candidates) > 1:
        click.echo("   (* chosen; run `newsmon sources add URL` with another URL to choose it)")


def _write(app: AppContext, path: Path, specs: list[SourceSpec]) -> None:
    from crawler.catalogue import builtin_sources
    from scheduler.errors import ConfigError
    from scheduler.sourcefile import add_sources

    try:
        had_none = app.loaded.path is None or not _file_has_sources(path)
        wrote = add_sources(path, specs, builtins=builtin_sources() if had_none else ())
    except ConfigError as exc:
        fail(str(exc), 2)
    except OSError as exc:
        fail(f"{path}: cannot write: {exc}", 1)
    if wrote:
        click.echo(f"note: {path} had no [[sources]] (the built-in catalogue was in use): the "
                   "catalogue's sources were written out first, so they stay", err=True)


def _file_has_sources(path: Path) -> bool:
    import tomllib

    try:
        return bool(tomllib.loads(path.read_text(encoding="utf-8")).get("sources"))
    except (OSError, tomllib.TOMLDecodeError):
        return False


@sources.command("test")
@click.argument("target", metavar="(ID | URL)")
@click.option("--format", "fmt", default="table", show_default=True, type=click.Choice(["table", "json"]))
@pass_app
def test_(app: AppContext, target: str, fmt: str) -> None:
    """A dry run of one configured source (ID), or of a URL with guessed settings: fetch,
    parse, extract, match and print the items with their dates and matches. Nothing is
    stored and nobody is alerted (the run uses a scratch database). Exit status 1 when the
    outcome is not ok.

    \b
    Examples:
      newsmon sources test mfa-az
      newsmon sources test https://mfa.gov.az/en/news --format json
    """
    spec = app.config.source(target)
    if spec is None:
        if "://" not in target:
            known = ", ".join(sorted(s.id for s in app.config.sources))
            fail(f"unknown source id {target!r} (configured: {known}); or give a URL", 2)
        found, private = _discover(app, _check_url(target), None)
        spec = _final_spec(found.candidates[0], source_id=None, name=None, language=found.language,
                           private=private)
        if fmt == "table":
            click.echo(f"Guessed: {spec.kind} source {spec.url}", err=True)
    trial = _trial(app, spec)
    if fmt == "json":
        click.echo(json.dumps(trial.as_dict(), ensure_ascii=False, indent=2))
    else:
        _print_trial(trial)
    if trial.outcome != "ok":
        sys.exit(1)


def _print_trial(trial: Trial, limit: int | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{trial.source}: {trial.outcome}"
                  + (f" ({trial.message})" if trial.message and trial.outcome != "ok" else ""),
                  title_justify="left")
    for column in ("published", "title", "text", "matches", "url"):
        table.add_column(column, overflow="fold", justify="right" if column == "text" else "left")
    shown = trial.items if limit is None else trial.items[:limit]
    for item in shown:
        table.add_row((item.published_at or "-")[:16].replace("T", " "), item.title[:80],
                      str(item.text_length), ", ".join(item.organisations), item.url)
    console = Console(file=sys.stdout, width=None if sys.stdout.isatty() else 160)
    console.print(table)
    matched = sum(1 for i in trial.items if i.organisations)
    more = f" (first {len(shown)} shown)" if len(shown) < len(trial.items) else ""
    console.print(f"{len(trial.items)} items{more}, {matched} matched; nothing stored")


@sources.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Print the tables that would be added; write nothing.")
@pass_app
def import_(app: AppContext, file: Path, dry_run: bool) -> None:
    """Add a feed source for every outline with an xmlUrl of an OPML file (1.0 or 2.0,
    nested folders included). Ids come from the titles, made unique; feeds whose URL a
    source has already are skipped.

    \b
    Example:
      newsmon sources import subscriptions.opml
    """
    from crawler.opml import OpmlError, import_subscriptions, read_opml
    from scheduler.sourcefile import sources_toml

    try:
        subscriptions = read_opml(file.read_bytes())
    except OSError as exc:
        fail(f"{file}: cannot read: {exc}", 2)
    except OpmlError as exc:
        fail(f"{file}: {exc}", 2)
    result = import_subscriptions(subscriptions, app.config.sources)
    for message in result.skipped:
        click.echo(f"skipped {message}", err=True)
    if not result.sources:
        click.echo(f"Nothing to add ({len(subscriptions)} feeds in {file}).")
        return
    if dry_run:
        click.echo(sources_toml(result.sources))
        return
    path = _config_file(app)
    _write(app, path, result.sources)
    click.echo(f"Added {len(result.sources)} feed sources to {path} "
               f"({len(result.skipped)} skipped): {', '.join(s.id for s in result.sources)}")


@sources.command()
@click.option("--format", "fmt", default="opml", show_default=True, type=click.Choice(["opml", "toml"]))
@pass_app
def export(app: AppContext, fmt: str) -> None:
    """Print the feed sources as OPML (for a feed reader), or every source as [[sources]]
    tables (--format toml).

    \b
    Example:
      newsmon sources export > newsmon.opml
    """
    from crawler.opml import write_opml
    from scheduler.sourcefile import sources_toml

    if fmt == "opml":
        click.echo(write_opml(app.config.sources), nl=False)
    else:
        click.echo(sources_toml(app.config.sources), nl=False)


COMMANDS: list[click.Command] = [sources]
