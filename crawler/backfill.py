"""Filling a source's history backwards (``newsmon backfill``): its older pages (listing
pagination beyond ``max_pages``, telegram ``?before=``, a sitemap index's child sitemaps, a JSON
API's next page, or a feed's site sitemap), one page at a time through one fetch session with
the crawler's rules; every item stored and matched through storage.writes like a poll's, with
no alert channel (nothing is alerted). The position is kept in the database after each page,
so an interrupted run continues where it stopped."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit
from zoneinfo import ZoneInfo

from crawler.articles import extract_article
from crawler.discovery import robots_sitemaps, robots_url
from crawler.encoding import decode_body
from crawler.errors import BackfillError
from crawler.fetching import Fetched, FetchSession
from crawler.items import Entry, ParseResult
from crawler.pipelines import MAX_TEXT, MAX_TITLE, _plausible_date, find_matches
from crawler.spiders.kinds import parse_document
from crawler.stories import MinHashStories
from crawler.text import clean_text, content_hash
from crawler.urls import canonical_url, is_http_url
from storage.backfills import backfill_of, hold_source, json_list, lease_owner, let_go, start_backfill
from storage.db import lock_writes
from storage.repository import ItemWrite
from storage.writes import save_items

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from crawler.matching import OrgMatcher
    from crawler.organisations import OrganisationSpec
    from crawler.sources import CrawlSettings, SourceSpec
    from storage.models import Backfill

LEASE_SECONDS = 600.0
LEASE_WAIT = 120.0  # seconds to wait for a poll of the daemon to give the source back
MAX_ARTICLES_PER_PAGE = 100


@dataclass
class BackfillReport:
    source: str
    pages: int = 0
    new: int = 0
    known: int = 0
    oldest_at: datetime | None = None
    stopped: str = "end"  # since, max-pages, end (no older page), done (nothing left), error
    error: str | None = None
    resumed: bool = False
    pending: int = 0  # pages still to read when it stopped


def since_start(day: date, timezone: str) -> datetime:
    """The first instant of ``day`` in ``timezone``, in UTC (DATE is inclusive)."""
    return datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(timezone)).astimezone(UTC)


def backfill_source(spec: SourceSpec, *, crawl: CrawlSettings, organisations: tuple[OrganisationSpec, ...],
                    sessions: sessionmaker[Session], since: datetime | None, max_pages: int,
                    on_page: Callable[[BackfillReport], None] | None = None, delay: float = 1.0) -> BackfillReport:
    """Walk ``spec``'s older pages back to ``since`` (or as far as they go), at most
    ``max_pages`` pages in this run; continues a stopped run of the same source.

    :param sessions: the database (the source's row must exist: ``sync_sources``).
    :param delay: seconds between two requests (politeness; a poll's per-host rules apply too).
    :raises BackfillError: when the source cannot go back or is held by someone else.
    """
    from crawler.matching import OrgMatcher

    owner = f"backfill:{socket.gethostname()}:{os.getpid()}"
    private = spec.url if spec.allow_private else None
    with FetchSession(crawl=crawl, private_host_url=private, delay=delay) as fetcher, sessions() as session:
        _hold(session, spec.id, owner)
        try:
            walk = _Walk(spec, crawl, OrgMatcher(list(organisations)), fetcher, session, since)
            walk.owner = owner
            return walk.run(max_pages, on_page)
        finally:
            let_go(session, spec.id, owner)


def _hold(session: Session, source_id: str, owner: str) -> None:
    deadline = time.monotonic() + LEASE_WAIT
    held_by = lease_owner(session, source_id)
    dead = held_by if _dead_backfill(held_by) else None
    while not hold_source(session, source_id, owner, datetime.now(UTC), LEASE_SECONDS, replacing=dead):
        if time.monotonic() > deadline:
            raise BackfillError(f"{source_id} is being polled by another process; try again later")
        time.sleep(2.0)


def _dead_backfill(owner: str | None) -> bool:
    """True for the lease of a backfill of this machine whose process is gone (killed)."""
    kind, _, rest = (owner or "").partition(":")
    host, _, pid = rest.rpartition(":")
    if kind != "backfill" or host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


class _Walk:
    def __init__(self, spec: SourceSpec, crawl: CrawlSettings, matcher: OrgMatcher, fetcher: FetchSession,
                 session: Session, since: datetime | None) -> None:
        self.spec, self.crawl, self.matcher, self.fetcher, self.session = spec, crawl, matcher, fetcher, session
        self.since = since
        self.stories = MinHashStories()
        self.owner = ""

    def run(self, max_pages: int, on_page: Callable[[BackfillReport], None] | None) -> BackfillReport:
        report = BackfillReport(source=self.spec.id)
        row = self._position(report)
        if row is None:
            report.stopped = "done"
            return report
        self.read = self.spec if self.spec.kind != "feed" else self.spec.model_copy(update={"kind": "sitemap"})
        pending, seen = json.loads(row.pending), set(json.loads(row.seen))
        while pending and report.pages < max_pages:
            url = pending.pop(0)
            if canonical_url(url) in seen:
                continue
            outcome = self._page(url, report, row)
            if outcome is None:
                pending.insert(0, url)  # not read: the next run tries it again
                break
            seen.add(canonical_url(url))
            older, entirely_older = outcome
            if entirely_older:
                row.reached_since = True
                report.stopped = "since"
            else:
                pending = [u for u in older if canonical_url(u) not in seen] + pending
            row.pending, row.seen = json_list(pending), json_list(sorted(seen))
            row.updated_at = datetime.now(UTC)
            self.session.commit()
            if self.owner:  # a long backfill keeps its lease
                hold_source(self.session, self.spec.id, self.owner, row.updated_at, LEASE_SECONDS)
            if on_page:
                on_page(report)
            if entirely_older:
                break
        else:
            if pending and report.pages >= max_pages:
                report.stopped = "max-pages"
        report.pending = len(pending)
        report.oldest_at = row.oldest_at
        return report

    def _position(self, report: BackfillReport) -> Backfill | None:
        """The stored position to continue from, or a fresh one; None when a previous run went
        back to this date already."""
        row = backfill_of(self.session, self.spec.id)
        if row is not None and json.loads(row.pending or "[]"):
            reached = row.reached_since and row.since is not None and (
                self.since is None or self.since >= row.since)
            if reached:
                return None
            report.resumed = True
            row.reached_since = False
            row.since = self.since
            report.pages, report.new, report.known = 0, 0, 0
            return row
        if row is not None and row.since is not None and self.since is not None and row.since <= self.since:
            return None  # it read to the end (or to this date) before
        first = self._first_url()
        row = start_backfill(self.session, self.spec.id, self.since, first, datetime.now(UTC))
        self.session.commit()
        return row

    def _first_url(self) -> str:
        if self.spec.kind != "feed":
            return self.spec.url
        robots = self.fetcher.get(robots_url(self.spec.url), expect="robots")
        found = robots_sitemaps(robots.body.decode("utf-8", "replace"), self.spec.url) if robots.ok else []
        if found:
            return found[0]
        parts = urlsplit(self.spec.url)
        guess = f"{parts.scheme}://{parts.netloc}/sitemap.xml"
        fetched = self.fetcher.get(guess, expect="sitemap")
        if fetched.ok and not parse_document(self.spec.model_copy(update={"kind": "sitemap"}), fetched.body,
                                             url=guess, content_type=fetched.content_type).error:
            return guess
        raise BackfillError(f"{self.spec.id} is a feed, and a feed alone cannot go back in time: the site "
                            "names no sitemap in robots.txt and has none at /sitemap.xml")

    # -- one page --------------------------------------------------------------------------------

    def _page(self, url: str, report: BackfillReport, row: Backfill) -> tuple[list[str], bool] | None:
        """Read one page: (older pages to read, whether it was entirely older than ``since``);
        None when the page failed (``report.error`` says why)."""
        fetched = self.fetcher.get(url, expect=self.read.kind)
        if problem := _problem(fetched):
            report.stopped, report.error = "error", f"{url}: {problem}"
            return None
        result = parse_document(self.read, fetched.body, url=fetched.final_url or url,
                                content_type=fetched.content_type)
        if result.error and not result.follow:
            report.stopped, report.error = "error", f"{url}: {result.error}"
            return None
        report.pages += 1
        row.pages += 1
        dated = [e.published_at for e in result.entries if e.published_at]
        entirely_older = bool(self.since and dated and all(d < self.since for d in dated))
        wanted = [e for e in result.entries if not (self.since and e.published_at and e.published_at < self.since)]
        new, known = self._store(wanted, fetched)
        report.new, report.known = report.new + new, report.known + known
        row.new, row.known = row.new + new, row.known + known
        if stored := [e.published_at for e in wanted if e.published_at]:
            oldest = min(stored)
            row.oldest_at = oldest if row.oldest_at is None else min(row.oldest_at, oldest)
        report.oldest_at = row.oldest_at
        return _older_pages(self.read, result, fetched), entirely_older

    def _store(self, entries: list[Entry], fetched: Fetched) -> tuple[int, int]:
        if not entries:
            return 0, 0
        items = [self._item(e, fetched) for e in entries[:MAX_ARTICLES_PER_PAGE * 5]]
        writes = [i for i in items if i is not None]
        unique = list({w.canonical_url: w for w in writes}.values())
        self.stories.prepare(unique)
        lock_writes(self.session)
        results = save_items(self.session, unique, (), stories=self.stories.rule)
        self.session.commit()
        new = sum(1 for r in results if r.status == "new")
        return new, len(results) - new

    def _item(self, entry: Entry, fetched: Fetched) -> ItemWrite | None:
        if not is_http_url(entry.url):
            return None
        now = datetime.now(UTC)
        text, title, published = entry.text, entry.title, entry.published_at
        canonical = canonical_url(entry.url)
        if self.spec.wants_articles(self.crawl) and not entry.full_text:
            article = self.fetcher.get(entry.url, expect="html")
            if article.ok:
                html = decode_body(article.body, content_type=article.content_type, override=self.spec.encoding)
                extracted = extract_article(html, url=article.final_url or entry.url,
                                            selector=self.spec.article_selector, timezone=self.spec.timezone)
                text, title = extracted.text or text, title or extracted.title
                published = published or extracted.published_at
        item = ItemWrite(source_id=self.spec.id, url=entry.url, canonical_url=canonical,
                         title=clean_text(title)[:MAX_TITLE], text=clean_text(text)[:MAX_TEXT],
                         content_hash="", guid=entry.guid, published_at=_plausible_date(published, now),
                         language=entry.language or self.spec.language, fetched_at=now,
                         raw_url=fetched.final_url or fetched.url, raw_status=fetched.status or 200,
                         entry_hash=entry.fingerprint)
        if not item.title and not item.text:
            item.title = item.url
        item.matches = find_matches(self.matcher, item.title, item.text, item.language, self.spec.topic)
        item.content_hash = content_hash(item.title, item.text, cleaned=True)
        return item


def _problem(fetched: Fetched) -> str | None:
    if fetched.blocked:
        return f"blocked by an anti-bot page ({fetched.blocked})"
    if fetched.error_class:
        return f"{fetched.error_class}: {fetched.message}"
    if fetched.status is None or fetched.status >= 400:
        return f"HTTP {fetched.status}"
    return None


def _older_pages(spec: SourceSpec, result: ParseResult, fetched: Fetched) -> list[str]:
    """Where the older items are: a sitemap index's children, the listing's or channel's next
    (older) page, a JSON API's next page."""
    found = _newest_first(fetched.body, [u for u in result.follow if is_http_url(u)]) \
        if spec.kind == "sitemap" else []
    if spec.kind in ("html", "telegram") and result.next_page:
        found.append(result.next_page)
    if spec.kind == "json" and result.entries:
        nxt = _json_next(fetched)
        if nxt:
            found.append(nxt)
    return found


def _newest_first(body: bytes, children: list[str]) -> list[str]:
    """A sitemap index's child sitemaps by their ``<lastmod>``, newest first (undated last, in
    document order): backfill goes back in time."""
    from crawler.dates import parse_date
    from crawler.listings import _child_text, _gunzip, _local, _xml_root

    data = _gunzip(body)
    root = _xml_root(data) if data is not None else None
    if root is None or not children:
        return children
    dated: dict[str, float] = {}
    for node in root:
        if _local(node.tag) == "sitemap":
            when = parse_date(_child_text(node, "lastmod"))
            if when is not None:
                dated[_child_text(node, "loc")] = when.timestamp()
    order = {url: index for index, url in enumerate(children)}
    return sorted(children, key=lambda u: (u not in dated, -dated.get(u, 0.0), order[u]))


_NEXT_KEYS = ("next", "next_page", "nextPage", "links.next", "_links.next.href", "paging.next")
_PAGE_KEYS = ("page", "p", "pageNumber", "page_number")


def _json_next(fetched: Fetched) -> str | None:
    """A next link in the document, else the URL with its page parameter plus one."""
    from crawler.listings import json_path

    url = fetched.final_url or fetched.url
    try:
        doc = json.loads(fetched.body)
    except ValueError:
        doc = None
    for key in _NEXT_KEYS:
        value = json_path(doc, key) if isinstance(doc, dict) else None
        if isinstance(value, str) and value.strip():
            from crawler.urls import absolute_url

            nxt = absolute_url(url, value.strip())
            if nxt and nxt != url:
                return nxt
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    for index, (key, value) in enumerate(query):
        if key in _PAGE_KEYS and value.isdigit():
            query[index] = (key, str(int(value) + 1))
            return urlunsplit(parts._replace(query=urlencode(query, safe=":,")))
    return None
