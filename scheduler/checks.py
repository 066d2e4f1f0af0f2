"""`newsmon doctor`'s self-checks: the configuration, the database, every component the
configuration needs (run on built-in samples) and the alert channels; each one a row.

Every check is read-only and catches its own exceptions: a broken library becomes a failed row
naming the component, never a traceback. Nothing is sent unless ``send_test`` is asked for.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scheduler.config import BUILTIN_LOG_CHANNEL, LoadedConfig, load_config
from scheduler.errors import ConfigError

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

    from scheduler.config import AlertSpec, AppConfig
    from storage.outbox import ClaimedEvent

REINSTALL = "reinstall the locked dependencies: `make install` (or `uv sync --frozen`)"
SAMPLE_URL = "https://newsmon.invalid/doctor/"
# What the built-in samples must give (scheduler/data/doctor/).
FEED_TITLE = "Андрей Руденко и Рахман Мустафаев обсудили СВМДА"
ARTICLE_PHRASE = "Совещания по взаимодействию и мерам доверия в Азии (СВМДА)"
ARTICLE_BOILERPLATE = "Контактная информация"  # the page's menu: extraction must drop it
MORPHOLOGY_ALIAS = "Совещание по взаимодействию и мерам доверия в Азии"
MORPHOLOGY_TEXT = "Делегация прибыла на заседание Совещания по взаимодействию и мерам доверия в Азии."
CHROMIUM_TIMEOUT = 15.0


@dataclass(frozen=True)
class CheckResult:
    """One row: what was checked, whether it passed, what was found and what to do."""

    name: str
    ok: bool
    detail: str
    fix: str = ""

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def passed(name: str, detail: str) -> CheckResult:
    return CheckResult(name, True, detail, "")


def run_check(name: str, fix: str, check: Callable[[], CheckResult]) -> CheckResult:
    """Run one check; any exception it raises is its failure (``fix`` says what to do)."""
    try:
        return check()
    except ImportError as exc:
        what = f"cannot import {exc.name}" if exc.name else type(exc).__name__
        return CheckResult(name, False, f"{what}: {exc}", REINSTALL)
    except Exception as exc:  # the check's boundary: a broken component is a failed row
        return CheckResult(name, False, f"{type(exc).__name__}: {exc}", fix)


# --- configuration --------------------------------------------------------------------------------


def config_row(loaded: LoadedConfig) -> CheckResult:
    config = loaded.config
    origin = str(loaded.path) if loaded.path else "built-in defaults"
    enabled = sum(1 for s in config.sources if s.enabled)
    return passed("configuration", f"{origin}: {len(config.sources)} sources ({enabled} enabled), "
                                   f"{len(config.organisations)} organisations, "
                                   f"{len(config.alerts)} alert channel{'' if len(config.alerts) == 1 else 's'}")


def config_error_row(error: ConfigError) -> CheckResult:
    """A bad configuration: the file, the key and what is wrong, as every command says it."""
    where = error.path if error.path != "<defaults>" else "the configuration"
    fix = f"edit {where}: fix `{error.key}`" if error.key else f"fix {where}"
    return CheckResult("configuration", False, str(error), f"{fix} (see README.md, Configuration)")


# --- database -------------------------------------------------------------------------------------


def check_database(real_url: str) -> CheckResult:
    """Reachable, and at the newest migration or migratable; reads only."""
    from storage.db import make_readonly_engine, schema_status, sqlite_file

    name = "database"
    path = sqlite_file(real_url)
    url = shown_url(real_url)
    if path is not None and not path.exists():
        return _missing_sqlite(name, path)
    engine = make_readonly_engine(real_url)
    try:
        status = schema_status(engine)
    except Exception as exc:
        from sqlalchemy.exc import DBAPIError

        reason = exc.orig if isinstance(exc, DBAPIError) else exc
        return CheckResult(name, False, f"{url}: cannot connect: {str(reason).strip().splitlines()[0]}",
                           "start the database server, create the database, or fix [storage] url "
                           "(or NEWSMON_DATABASE_URL)")
    finally:
        engine.dispose()
    if status.unknown:
        return CheckResult(name, False, f"{url}: schema revision {', '.join(status.unknown)} is newer than "
                                        f"this version of newsmon knows ({', '.join(status.heads)})",
                           "upgrade newsmon to the version that migrated this database, or use another one")
    if status.is_current:
        return passed(name, f"{url}: reachable, schema at the newest migration ({', '.join(status.heads)})")
    if status.empty:
        return passed(name, f"{url}: reachable and empty; the schema is created on first start")
    if not status.current:
        return CheckResult(name, False, f"{url}: holds tables but no newsmon schema (no alembic_version)",
                           "point [storage] url at an empty database or one that newsmon created")
    return passed(name, f"{url}: reachable, {status.pending} migration(s) pending "
                        f"({', '.join(status.current)} → {', '.join(status.heads)}); applied on next start")


def shown_url(url: str) -> str:
    """The database URL without its password."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL at all: make_readonly_engine says so
        return url


def _missing_sqlite(name: str, path: Path) -> CheckResult:
    """A SQLite file that does not exist yet: fine if its directory can be created there."""
    parent = path.resolve().parent
    existing = next((p for p in (parent, *parent.parents) if p.exists()), None)
    if existing is None or not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        return CheckResult(name, False, f"{path} does not exist and cannot be created "
                                        f"({existing or parent} is not a writable directory)",
                           "fix [storage] url, or create the directory and make it writable")
    return passed(name, f"{path} does not exist yet; it is created on first start (`newsmon init` or `newsmon run`)")


# --- components on built-in samples ---------------------------------------------------------------


def _sample(name: str) -> Traversable:
    return resources.files("scheduler").joinpath("data", "doctor", name)


def check_feed_parsing() -> CheckResult:
    """A real feedparser parse of the built-in sample feed."""
    from crawler.feeds import parse_feed

    name = "feed parsing"
    body = _sample("feed.rss").read_bytes()
    result = parse_feed(body, url=f"{SAMPLE_URL}feed.rss", content_type="application/rss+xml; charset=utf-8",
                        language="ru")
    problem = result.error or result.warning
    if problem or len(result.entries) != 2:
        return CheckResult(name, False, f"sample feed: {len(result.entries)} of 2 entries"
                                        f"{f' ({problem})' if problem else ''}", REINSTALL)
    first = result.entries[0]
    if first.title != FEED_TITLE or first.published_at is None or not first.url.startswith(SAMPLE_URL):
        return CheckResult(name, False, f"sample feed parsed wrongly: {first.title!r}, {first.url}, "
                                        f"{first.published_at}", REINSTALL)
    import feedparser

    return passed(name, f"feedparser {feedparser.__version__}: sample RSS, 2 entries, "
                        f"dates and relative links resolved")


def check_article_extraction() -> CheckResult:
    """A real trafilatura extraction (no CSS selector) of the built-in sample article page."""
    from crawler.articles import extract_article

    name = "article extraction"
    html = _sample("article.html").read_text("utf-8")
    article = extract_article(html, url=f"{SAMPLE_URL}news/rudenko-mustafaev-svmda.html")
    text = " ".join(article.text.split())
    if ARTICLE_PHRASE not in text:
        return CheckResult(name, False, f"sample article: the text ({len(text)} chars) lacks "
                                        f"{ARTICLE_PHRASE!r}", REINSTALL)
    if ARTICLE_BOILERPLATE in text:
        return CheckResult(name, False, "sample article: the site menu was not removed", REINSTALL)
    from importlib.metadata import version

    return passed(name, f"trafilatura {version('trafilatura')} (lxml {version('lxml')}): "
                        f"sample article, {len(text)} chars of text")


def check_morphology() -> CheckResult:
    """pymorphy3's Russian dictionaries, and one inflected name found through the matcher."""
    from pymorphy3 import MorphAnalyzer

    from crawler.matching import OrgMatcher
    from crawler.organisations import OrganisationSpec

    name = "morphology"
    dictionary = MorphAnalyzer(lang="ru").dictionary
    spec = OrganisationSpec(id="CICA", aliases=(MORPHOLOGY_ALIAS,))
    found = OrgMatcher([spec]).find(MORPHOLOGY_TEXT)
    forms = [m.form for m in found if m.organisation == "CICA"]
    if not forms:
        return CheckResult(name, False, f"{MORPHOLOGY_TEXT!r}: no CICA match for the alias {MORPHOLOGY_ALIAS!r}",
                           REINSTALL)
    meta = dictionary.meta
    return passed(name, f"pymorphy3 ru dictionaries (OpenCorpora {meta.get('source_version', '?')}, "
                        f"{meta.get('source_lexemes_count', '?')} lexemes): found CICA as {forms[0]!r}")


def check_chromium(config: AppConfig) -> CheckResult:
    """The Chromium that browser-rendered sources use, only when an enabled source renders."""
    name = "chromium"
    rendering = [s.id for s in config.sources if s.enabled and s.renders]
    if not rendering:
        return passed(name, 'not needed: no enabled source has render = "browser"')
    from crawler.rendering import CHROMIUM, browser_available

    sources = ", ".join(rendering[:5]) + (" …" if len(rendering) > 5 else "")
    fix = f"install Debian's chromium package ({CHROMIUM}), or disable the sources' render = \"browser\""
    if not browser_available():
        return CheckResult(name, False, f"{CHROMIUM} not found or not executable (needed by {sources})", fix)
    import scrapy_playwright  # noqa: F401 - the handler that drives it

    done = subprocess.run([CHROMIUM, "--version"], capture_output=True, text=True, timeout=CHROMIUM_TIMEOUT,
                          check=False)
    version = next((line.strip() for line in done.stdout.splitlines() if "chrom" in line.lower()), "")
    if done.returncode != 0 or not version:
        return CheckResult(name, False, f"{CHROMIUM} --version failed (exit {done.returncode}): "
                                        f"{(done.stderr or done.stdout).strip()[:200]}", fix)
    return passed(name, f"{version} (for {sources})")


# --- alert channels -------------------------------------------------------------------------------


def check_channel_url(spec: AlertSpec) -> CheckResult:
    """A webhook URL must be http(s); an Apprise URL must pass Apprise's own parser. Sends nothing."""
    name = f"alerts: {spec.channel_id}"
    if spec.kind == "log":
        return passed(name, "log: each new match is printed in the log")
    if spec.kind == "webhook":
        from crawler.sources import check_http_url

        try:
            check_http_url(spec.url)
        except ValueError as exc:
            return CheckResult(name, False, f"webhook: {exc}", "use an http:// or https:// URL in [[alerts]] url")
        return passed(name, f"webhook {spec.url}")
    from scheduler.notifiers import AppriseChannel

    channel = AppriseChannel(spec)
    try:
        valid = channel.valid
    finally:
        channel.close()
    if not valid:
        return CheckResult(name, False, f"apprise: {spec.url!r} is not a URL Apprise can use",
                           "write the URL as Apprise's documentation for the service shows "
                           "(https://github.com/caronc/apprise/wiki)")
    return passed(name, f"apprise {spec.url.split('://', 1)[0]}:// URL")


def send_test(spec: AlertSpec) -> CheckResult:
    """One test notification through the product's own channel code."""
    from scheduler.notifiers import build_channel

    name = f"alerts: {spec.channel_id}: test send"
    event = doctor_event(spec.channel_id)
    channel = build_channel(spec)
    try:
        delivery = channel.send(event)
    finally:
        channel.close()
    if not delivery.ok:
        return CheckResult(name, False, f"not delivered: {delivery.error}",
                           "check that the receiver is up and the URL, credentials and network are right")
    return passed(name, f"test notification delivered ({event.event_id})")


def doctor_event(channel_id: str) -> ClaimedEvent:
    """A ``test`` event shaped like a real alert, so receivers see what they will get."""
    from datetime import UTC, datetime

    from storage.outbox import ClaimedEvent

    event_id = f"doctor-test-{uuid.uuid4()}"
    now = datetime.now(UTC).isoformat()
    item = {"id": 0, "source": "newsmon-doctor", "url": f"{SAMPLE_URL}test", "canonical_url": f"{SAMPLE_URL}test",
            "title": "newsmon doctor: test notification", "published_at": now, "first_seen_at": now,
            "language": "en", "organisations": [], "matches": [], "story_id": None, "version": 1,
            "content_hash": None}
    body = {"event_id": event_id, "event": "test", "organisations": [], "item": item}
    return ClaimedEvent(id=0, event_id=event_id, channel=channel_id, organisations=[],
                        payload=json.dumps(body, ensure_ascii=False), attempts=0)


# --- all of them ----------------------------------------------------------------------------------


def run_checks(config_path: str | None, *, send: bool = False) -> tuple[list[CheckResult], bool]:
    """Every row, and whether the configuration loaded (False: the command exits 2)."""
    try:
        loaded = load_config(config_path)
    except ConfigError as exc:
        database, chromium, alerts = unchecked_rows(exc)
        return [config_error_row(exc), database, *sample_rows(), chromium, alerts], False
    config = loaded.config
    rows = [config_row(loaded),
            run_check("database", "check [storage] url", lambda: check_database(config.storage.url)),
            *sample_rows(),
            run_check("chromium", "install Debian's chromium package", lambda: check_chromium(config)),
            *alert_rows(config, send)]
    return rows, True


def sample_rows() -> list[CheckResult]:
    """The checks that need no configuration: the built-in samples."""
    return [run_check("feed parsing", REINSTALL, check_feed_parsing),
            run_check("article extraction", REINSTALL, check_article_extraction),
            run_check("morphology", REINSTALL, check_morphology)]


def unchecked_rows(error: ConfigError) -> list[CheckResult]:
    """The checks a bad configuration prevents; the one it concerns repeats the error."""
    table = "storage" if error.path == "NEWSMON_DATABASE_URL" else re.split(r"[.\[]", error.key, maxsplit=1)[0]
    concerned = config_error_row(error)
    return [CheckResult(name, False, concerned.detail, concerned.fix) if table == key_table
            else CheckResult(name, False, "not checked: the configuration is invalid", "fix the configuration first")
            for name, key_table in (("database", "storage"), ("chromium", "sources"), ("alerts", "alerts"))]


def alert_rows(config: AppConfig, send: bool) -> list[CheckResult]:
    """One row per channel (its URL), plus one per test notification with ``send``."""
    if config.alerts == (BUILTIN_LOG_CHANNEL,):
        return [passed("alerts", "no [[alerts]]: each new match is printed in the log (built-in log channel)")]
    rows = []
    for spec in config.alerts:
        name = f"alerts: {spec.channel_id}"
        row = run_check(name, "fix the [[alerts]] url", partial(check_channel_url, spec))
        rows.append(row)
        if send and row.ok:
            rows.append(run_check(f"{name}: test send", "check the receiver", partial(send_test, spec)))
    return rows
