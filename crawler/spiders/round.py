"""RoundSpider: one request chain per source of the job (document → pages → articles), the
outcome of each chain recorded by the round's ledger as soon as the chain is over."""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import scrapy
from scrapy import signals
from scrapy.http import Request, Response

from crawler.addresses import url_host
from crawler.articles import extract_article
from crawler.blocking import detect_block
from crawler.encoding import decode_body
from crawler.failures import BLOCKED, EXTRACT, INTERNAL, PARSE, SSRF
from crawler.items import Entry, ParseResult
from crawler.outcomes import classify_exception, failed_request, failure_exception, status_class
from crawler.pipelines import ItemBatch
from crawler.policy import Hints, max_age_seconds, retry_after_seconds
from crawler.polls import RoundContext, SourcePoll, body_hash
from crawler.rendering import parsing_spec, render_meta
from crawler.revisits import GONE_STATUSES, judge, page_fingerprint, removal_redirect, title_key
from crawler.spiders.direct import DirectRequests
from crawler.spiders.kinds import entry_fragment, is_empty_listing, parse_document
from crawler.text import clean_text
from crawler.urls import canonical_url, is_http_url
from storage.repository import ItemWrite, KnownEntry, known_entries
from storage.revisits import PageState, RevisitClaim, RevisitResult, claim_revisits

if TYPE_CHECKING:
    from scrapy.crawler import Crawler
    from twisted.python.failure import Failure

# Statuses the callbacks see themselves (304, and errors: to tell anti-bot pages from them).
HANDLED_STATUSES = [304, *range(400, 600)]
MAX_ENTRIES = 500  # per poll; a feed with more is cut (the newest come first in feeds)
MAX_ARTICLES = 100  # article pages fetched per poll; further entries keep their feed text
MAX_CHILD_SITEMAPS = 10
MAX_URL_LENGTH = 2000
MAX_RAW_HEADERS = 40
MAX_REVISITS = 200  # revisits per source and round; the rest wait for the next round
REVISIT_LEASE_SLACK = 60.0  # seconds a revisit's lease outlives the round's deadline


class RoundSpider(scrapy.Spider):
    """Polls every source of the round's job."""

    name = "newsmon-round"

    def __init__(self, context: RoundContext, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.context = context
        self.ledger = context.ledger

    @classmethod
    def from_crawler(cls, crawler: Crawler, *args: Any, **kwargs: Any) -> RoundSpider:
        kwargs.setdefault("context", RoundContext.of(crawler))
        spider = super().from_crawler(crawler, *args, **kwargs)
        for signal in (signals.item_scraped, signals.item_dropped):
            crawler.signals.connect(spider.item_finished, signal=signal)
        crawler.signals.connect(spider.item_failed, signal=signals.item_error)
        crawler.signals.connect(spider.round_closed, signal=signals.spider_closed)
        return spider

    # -- start -------------------------------------------------------------------------------

    async def start(self) -> AsyncIterator[Request]:
        """The polls' document requests, then the round's revisits, sent straight to the
        downloader (crawler.spiders.direct): the crawl is not idle while they run."""
        polls = self.ledger.open(self.context.job.sources)
        claims = self._claim_revisits(polls)
        # Every request of a poll is counted before any is sent: a poll is over when its
        # requests are, and a quick 304 must not end it before its revisits have begun.
        revisits = [self.revisit_request(poll, claim) for poll in polls
                    for claim in claims.get(poll.spec.id, ())]
        for poll in polls:
            yield self.document_request(poll)
        if revisits:
            await DirectRequests(self.crawler).run(revisits)

    def document_request(self, poll: SourcePoll) -> Request:
        spec = poll.spec
        headers = dict(spec.headers)
        conditional = not spec.renders  # a browser navigation cannot take a 304
        if conditional and poll.state.etag:
            headers["If-None-Match"] = poll.state.etag
        if conditional and poll.state.last_modified:
            headers["If-Modified-Since"] = poll.state.last_modified
        return self.request(poll, spec.url, self.parse_document, self.document_failed,
                            headers=headers, role="document")

    def request(self, poll: SourcePoll, url: str, callback: Any, errback: Any, *,
                headers: dict[str, str] | None = None, role: str, **cb_kwargs: Any) -> Request:
        self.ledger.request_added(poll)
        if role in ("document", "page"):
            poll.pages += 1
            poll.page_urls.add(canonical_url(url))
        obey = poll.spec.obey_robots if poll.spec.obey_robots is not None \
            else self.context.job.crawl.obey_robots
        meta = {"newsmon_source": poll.spec.id, "newsmon_role": role,
                "handle_httpstatus_list": HANDLED_STATUSES, "dont_obey_robotstxt": not obey,
                **render_meta(poll.spec, role)}
        return Request(url, callback=callback, errback=errback, meta=meta, dont_filter=True,
                       headers={**poll.spec.headers, **(headers or {})}, cb_kwargs=cb_kwargs)

    def poll_of(self, request_or_response: Request | Response) -> SourcePoll:
        return self.context.poll(request_or_response.meta["newsmon_source"])

    # -- the source's document -----------------------------------------------------------------

    def parse_document(self, response: Response) -> Iterator[Any]:
        poll = self.poll_of(response)
        try:
            yield from self._document(poll, response)
        except Exception as exc:  # a parser bug costs this source one error, nothing more
            self.ledger.fault(poll, INTERNAL, exc, response.url)
        finally:
            self.ledger.request_done(poll)

    def _document(self, poll: SourcePoll, response: Response) -> Iterator[Any]:
        poll.http_status = response.status
        if response.status == 304:
            poll.not_modified()
            return
        if not self._usable(poll, response):
            return
        digest = body_hash(response.body)
        poll.etag = _header(response, b"ETag")
        poll.last_modified = _header(response, b"Last-Modified")
        poll.body_hash = digest
        poll.hints = Hints(max_age=max_age_seconds(response.headers.get(b"Cache-Control")))
        if digest == poll.state.body_hash:
            poll.not_modified()  # the validators lied (or there were none): same bytes
            return
        result = parse_document(parsing_spec(poll.spec, response), response.body, url=response.url,
                                content_type=_header(response, b"Content-Type"))
        if result.ttl_seconds:
            poll.hints = Hints(max_age=poll.hints.max_age, ttl=result.ttl_seconds)
        yield from self._entries(poll, response, result, first_page=True)

    def _usable(self, poll: SourcePoll, response: Response) -> bool:
        """False (and the poll failed) for anti-bot pages and HTTP errors."""
        headers = {k.decode("latin-1"): v[0].decode("latin-1") for k, v in response.headers.items() if v}
        reason = detect_block(response.status, headers, response.body, expect=poll.spec.kind)
        if reason:
            poll.fail(BLOCKED, reason, response.status)
            return False
        if response.status >= 400:
            poll.fail(status_class(response.status), f"HTTP {response.status}", response.status)
            if response.status in (429, 503):
                poll.hints = Hints(retry_after=retry_after_seconds(
                    response.headers.get(b"Retry-After"), datetime.now(UTC)))
            return False
        return True

    def _entries(self, poll: SourcePoll, response: Response, result: ParseResult, *,
                 first_page: bool) -> Iterator[Any]:
        if result.warning:
            poll.warn(result.warning)
        if result.error and not is_empty_listing(result):
            if first_page:
                poll.fail(PARSE, result.error)
            else:
                poll.warn(f"{response.url}: {result.error}")
            return
        entries = result.entries[:max(0, MAX_ENTRIES - poll.entries)]
        poll.entries += len(entries)
        yield from self._follow(poll, result, response.url)
        yield from self._items(poll, response, entries)

    def _follow(self, poll: SourcePoll, result: ParseResult, page_url: str) -> Iterator[Request]:
        spec = poll.spec
        poll.page_urls.add(canonical_url(page_url))  # where a redirect led
        if result.follow and spec.kind == "sitemap" and poll.pages == 1:
            for url in result.follow[:MAX_CHILD_SITEMAPS]:
                if is_http_url(url) and len(url) <= MAX_URL_LENGTH:
                    yield self.request(poll, url, self.parse_page, self.page_failed, role="page")
        nxt = result.next_page
        if nxt and spec.kind in ("html", "telegram") and poll.pages < spec.max_pages \
                and is_http_url(nxt) and len(nxt) <= MAX_URL_LENGTH \
                and canonical_url(nxt) not in poll.page_urls:  # a page already read: a loop
            yield self.request(poll, nxt, self.parse_page, self.page_failed, role="page")

    def parse_page(self, response: Response) -> Iterator[Any]:
        """A further listing page or a child sitemap: its errors are warnings of the poll."""
        poll = self.poll_of(response)
        try:
            if response.status >= 400 or detect_block(response.status, {}, response.body,
                                                      expect=poll.spec.kind):
                poll.warn(f"{response.url}: HTTP {response.status}")
                return
            result = parse_document(parsing_spec(poll.spec, response), response.body,
                                    url=response.url, content_type=_header(response, b"Content-Type"))
            yield from self._entries(poll, response, result, first_page=False)
        except Exception as exc:  # a bug: the source's error (its items so far are kept)
            self.ledger.fault(poll, INTERNAL, exc, response.url)
        finally:
            self.ledger.request_done(poll)

    # -- entries, articles ---------------------------------------------------------------------

    def _items(self, poll: SourcePoll, response: Response, entries: list[Entry]) -> Iterator[Any]:
        """The entries' items. An entry whose article page is wanted is fetched unless its
        source already gave this very entry (same fingerprint: title, summary, dates, link,
        enclosure); one that another source carries is linked without fetching the page."""
        wants = poll.spec.wants_articles(self.context.job.crawl)
        needing = [e for e in entries if wants and not e.full_text]
        known = self._known(poll, needing) if needing else {}
        needs = {id(e) for e in needing}
        articles = 0
        batch = []
        for entry in entries:
            if id(entry) in needs and articles < MAX_ARTICLES and len(entry.url) <= MAX_URL_LENGTH:
                stored = known.get(canonical_url(entry.url))
                if stored is not None and stored.linked and stored.entry_hash == entry.fingerprint:
                    poll.unchanged += 1  # the source repeats what it said: no page fetch
                    continue
                if stored is None or stored.linked:
                    articles += 1
                    yield self.request(poll, entry.url, self.parse_article, self.article_failed,
                                       role="article", entry=entry)
                    continue
            batch.append(self.item(poll, entry, response, raw=entry_fragment(response.body, entry)))
        if batch:
            yield self.batch(poll, batch)

    def batch(self, poll: SourcePoll, items: list[ItemWrite],
              revisit: RevisitResult | None = None) -> ItemBatch:
        self.ledger.item_added(poll)
        return ItemBatch(poll.spec.id, items, revisit)

    def _known(self, poll: SourcePoll, entries: list[Entry]) -> dict[str, KnownEntry]:
        with self.context.sessions() as session:
            return known_entries(session, poll.spec.id, [canonical_url(e.url) for e in entries])

    def item(self, poll: SourcePoll, entry: Entry, response: Response, *, raw: bytes,
             canonical: str = "", text: str | None = None, title: str | None = None,
             published_at: datetime | None = None, complete: bool = True) -> ItemWrite:
        """:param complete: False when the article page failed: its fingerprint is not kept,
            so the next poll tries the page again."""
        return ItemWrite(
            source_id=poll.spec.id, url=entry.url, canonical_url=canonical,
            title=title if title is not None else entry.title,
            text=text if text is not None else entry.text, content_hash="", fetched_at=datetime.now(UTC),
            guid=entry.guid, published_at=published_at or entry.published_at,
            language=entry.language or poll.spec.language,
            raw=raw, raw_url=response.url, raw_headers=_raw_headers(response),
            raw_status=response.status, entry_hash=entry.fingerprint if complete else None)

    def parse_article(self, response: Response, entry: Entry) -> Iterator[Any]:
        poll = self.poll_of(response)
        try:
            yield self.batch(poll, [self._article_item(poll, entry, response)])
        finally:
            self.ledger.request_done(poll)

    def _article_item(self, poll: SourcePoll, entry: Entry, response: Response) -> ItemWrite:
        """The entry with its article page's text, or with its listing text when that fails."""
        if response.status != 200 or detect_block(response.status, {}, response.body, expect="html"):
            poll.warn(f"article {response.url}: HTTP {response.status}, kept the listing text")
            return self.item(poll, entry, response, raw=b"", complete=False)
        try:
            html = decode_body(response.body, content_type=_header(response, b"Content-Type"),
                               override=poll.spec.encoding)
            article = extract_article(html, url=response.url, selector=poll.spec.article_selector)
        except Exception as exc:  # extraction broke (a bug, a broken install): keep the listing text
            self.ledger.fault(poll, EXTRACT, exc, response.url)
            return self.item(poll, entry, response, raw=b"", complete=False)
        write = self.item(poll, entry, response, raw=response.body,
                          canonical=_article_identity(entry.url, response.url, article.canonical_url),
                          text=article.text or entry.text, title=entry.title or article.title,
                          published_at=entry.published_at or article.published_at)
        write.page = self._page_state(poll, response, article.title, article.text)
        return write

    def _page_state(self, poll: SourcePoll, response: Response, title: str, text: str) -> PageState | None:
        """The page's validators and its own title and text fingerprint, kept for the first
        revisit (a conditional request, judged against this page); None without revisits."""
        schedule = poll.spec.revisits(self.context.job.crawl)
        if not schedule:
            return None
        return PageState(etag=_header(response, b"ETag"), last_modified=_header(response, b"Last-Modified"),
                         page_title=title_key(clean_text(title)), page_hash=page_fingerprint(clean_text(text)),
                         first_after=min(schedule))

    # -- revisits --------------------------------------------------------------------------------

    @property
    def revisit_owner(self) -> str:
        """Who holds the round's revisit leases: the worker, or this crawl process."""
        job = self.context.job
        return job.worker_id or f"crawl-{socket.gethostname()}-{os.getpid()}"

    def _claim_revisits(self, polls: list[SourcePoll]) -> dict[str, list[RevisitClaim]]:
        """Lease the due revisits of the round's sources (crawler.revisits, storage.revisits):
        they are fetched in this round, as article requests of their source's poll."""
        crawl, job = self.context.job.crawl, self.context.job
        schedules = {p.spec.id: p.spec.revisits(crawl) for p in polls}
        if not any(schedules.values()):
            return {}
        now = datetime.now(UTC)
        with self.ledger.turn.held(), self.context.sessions.begin() as session:
            return {source_id: claim_revisits(session, source_id, schedule, now, self.revisit_owner,
                                              lease_seconds=job.deadline_seconds + REVISIT_LEASE_SLACK,
                                              limit=MAX_REVISITS)
                    for source_id, schedule in schedules.items() if schedule}

    def revisit_request(self, poll: SourcePoll, claim: RevisitClaim) -> Request:
        """A conditional request for a revisited article page."""
        headers = {}
        if claim.etag:
            headers["If-None-Match"] = claim.etag
        if claim.last_modified:
            headers["If-Modified-Since"] = claim.last_modified
        return self.request(poll, claim.url, self.parse_revisit, self.revisit_failed,
                            headers=headers, role="revisit", claim=claim)

    def parse_revisit(self, response: Response, claim: RevisitClaim) -> Iterator[Any]:
        poll = self.poll_of(response)
        try:
            yield from self._revisit_found(poll, *self._revisit(poll, response, claim))
        finally:
            self.ledger.request_done(poll)

    def _revisit_found(self, poll: SourcePoll, items: list[ItemWrite], result: RevisitResult) -> Iterator[Any]:
        """A revisit that found something to store goes through the item pipelines; a quiet
        one (a 304, a failure, an unchanged page) only moves its schedule on: it goes straight
        to the round's ledger, written with the round's next commit (``RoundLedger.quiet_revisit``)."""
        if not items and result.quiet:
            self.ledger.quiet_revisit(result)
        else:
            yield self.batch(poll, items, result)

    def _revisit(self, poll: SourcePoll, response: Response,
                 claim: RevisitClaim) -> tuple[list[ItemWrite], RevisitResult]:
        """What the revisited page says: not modified (a 304 costs nothing more), removed,
        failed, or a page judged against what was known (crawler.revisits.judge)."""
        result = RevisitResult(item_id=claim.item_id, owner=self.revisit_owner, kind="failed",
                               fetched_at=datetime.now(UTC),
                               schedule=poll.spec.revisits(self.context.job.crawl),
                               status=response.status, raw_url=response.url,
                               first_seen_at=claim.first_seen_at)
        if response.status == 304:
            result.kind = "not-modified"
            return [], result
        gone = response.status in GONE_STATUSES or (response.status == 200 and removal_redirect(
            claim.url, response.url, [poll.spec.url, *poll.page_urls]))
        if gone:
            result.kind, result.raw, result.raw_headers = "removed", response.body, _raw_headers(response)
            return [], result
        if response.status != 200 or detect_block(response.status, {}, response.body, expect="html"):
            poll.warn(f"revisit {response.url}: HTTP {response.status}")
            return [], result
        try:
            html = decode_body(response.body, content_type=_header(response, b"Content-Type"),
                               override=poll.spec.encoding)
            article = extract_article(html, url=response.url, selector=poll.spec.article_selector,
                                      metadata=False)  # title and text are all a revisit compares
        except Exception as exc:  # extraction broke (a bug, a broken install)
            self.ledger.fault(poll, EXTRACT, exc, response.url)
            return [], result
        verdict = judge(claim, clean_text(article.title), clean_text(article.text))
        result.kind, result.changed = "page", verdict.changed
        result.page_title, result.page_hash = verdict.page_title, verdict.page_hash
        result.etag = _header(response, b"ETag")
        result.last_modified = _header(response, b"Last-Modified")
        if not verdict.changed:
            return [], result
        result.raw, result.raw_headers = response.body, _raw_headers(response)  # a version's response
        return [ItemWrite(source_id=poll.spec.id, url=claim.url, canonical_url=claim.canonical_url,
                          title=verdict.title, text=verdict.text, content_hash="",
                          language=claim.language or poll.spec.language,
                          fetched_at=result.fetched_at, raw=response.body, raw_url=response.url,
                          raw_status=response.status)], result

    def revisit_failed(self, failure: Failure) -> Iterator[Any]:
        """A revisit that could not be fetched: the schedule moves on (an SSRF refusal is the
        source's error, as for any article)."""
        request = failed_request(failure)
        poll = self.poll_of(request)
        claim: RevisitClaim = request.cb_kwargs["claim"]
        try:
            error_class, message = classify_exception(failure_exception(failure))
            if error_class == SSRF:
                poll.fail(SSRF, message)
            else:
                poll.warn(f"revisit {request.url}: {error_class}: {message}")
            yield from self._revisit_found(poll, [], RevisitResult(
                item_id=claim.item_id, owner=self.revisit_owner, kind="failed",
                fetched_at=datetime.now(UTC), schedule=poll.spec.revisits(self.context.job.crawl),
                first_seen_at=claim.first_seen_at))
        finally:
            self.ledger.request_done(poll)

    # -- failures --------------------------------------------------------------------------------

    def document_failed(self, failure: Failure) -> None:
        poll = self.poll_of(failed_request(failure))
        try:
            error_class, message = classify_exception(failure_exception(failure))
            poll.fail(error_class, message)
        finally:
            self.ledger.request_done(poll)

    def page_failed(self, failure: Failure) -> None:
        request = failed_request(failure)
        poll = self.poll_of(request)
        try:
            error_class, message = classify_exception(failure_exception(failure))
            poll.warn(f"page {request.url}: {error_class}: {message}")
            if error_class == SSRF:
                poll.fail(SSRF, message)
        finally:
            self.ledger.request_done(poll)

    def article_failed(self, failure: Failure) -> Iterator[Any]:
        request = failed_request(failure)
        poll = self.poll_of(request)
        entry: Entry = request.cb_kwargs["entry"]
        try:
            error_class, message = classify_exception(failure_exception(failure))
            if error_class == SSRF:
                poll.fail(SSRF, message)  # a feed pointing at internal addresses: visible
            else:
                poll.warn(f"article {request.url}: {error_class}: {message}")
            yield self.batch(poll, [ItemWrite(
                source_id=poll.spec.id, url=entry.url, canonical_url="", title=entry.title,
                text=entry.text, content_hash="", fetched_at=datetime.now(UTC), guid=entry.guid,
                published_at=entry.published_at, language=entry.language or poll.spec.language,
                raw_status=200)])  # nothing fetched raw: raw_url becomes the entry's URL
        finally:
            self.ledger.request_done(poll)

    # -- signals --------------------------------------------------------------------------------

    def item_finished(self, item: Any, **_: Any) -> None:
        if isinstance(item, ItemBatch):
            self.ledger.item_done(self.context.poll(item.source_id))

    def item_failed(self, item: Any, response: Response | None, failure: Failure, **_: Any) -> None:
        """A pipeline raised on a batch (a bug, not a refused item): the source's error."""
        if isinstance(item, ItemBatch):
            poll = self.context.poll(item.source_id)
            self.ledger.fault(poll, INTERNAL, failure_exception(failure),
                              response.url if response else poll.spec.url)
            self.ledger.item_done(poll)

    def round_closed(self, reason: str) -> None:
        self.ledger.close(reason)


def _header(response: Response, name: bytes) -> str | None:
    value = response.headers.get(name)
    return value.decode("latin-1") if value else None


def _raw_headers(response: Response) -> dict[str, str]:
    out = {}
    for key, values in list(response.headers.items())[:MAX_RAW_HEADERS]:
        if values:
            out[key.decode("latin-1")] = values[0].decode("latin-1")[:1000]
    return out


def _site(host: str) -> str:
    return host.removeprefix("www.")


def _article_identity(entry_url: str, page_url: str, canonical: str | None) -> str:
    """The canonical URL of an article: its ``<link rel=canonical>`` when on the same site."""
    if canonical and is_http_url(canonical) and _site(url_host(canonical)) in (
            _site(url_host(entry_url)), _site(url_host(page_url))):
        return canonical_url(canonical)
    return canonical_url(entry_url)
