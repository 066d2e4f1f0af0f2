"""RoundSpider callbacks at function level: responses built from fixture bytes, a real SQLite
database, no network."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from scrapy.http import HtmlResponse, Request, Response, TextResponse, XmlResponse

from crawler.items import Entry
from crawler.job import CrawlJob
from crawler.organisations import builtin_organisations
from crawler.pipelines import ItemBatch
from crawler.polls import RoundContext, RoundLedger, body_hash
from crawler.sources import SourceSpec
from crawler.spiders.kinds import entry_fragment
from crawler.spiders.round import RoundSpider, _article_identity
from storage.db import make_engine, make_session_factory
from storage.models import Source
from tests.plugins.sites import SITES, rss

FEED_URL = "http://news.example.org/rss.xml"


@pytest.fixture
def make_spider(sqlite_url: str) -> Iterator[Any]:
    engines = []

    def build(*specs: SourceSpec, **source_state: Any) -> RoundSpider:
        engine = make_engine(sqlite_url)
        engines.append(engine)
        sessions = make_session_factory(engine)
        job = CrawlJob(database_url=sqlite_url, sources=specs,
                       organisations=tuple(builtin_organisations()))
        ledger = RoundLedger(sessions, job.crawl, emit=lambda event: None)
        spider = RoundSpider(context=RoundContext(job=job, sessions=sessions, ledger=ledger))
        ledger.open(specs)
        if source_state:
            with sessions.begin() as session:
                for spec in specs:
                    row = session.get(Source, spec.id)
                    for key, value in source_state.items():
                        setattr(row, key, value)
            ledger.open(specs)
        return spider

    yield build
    for engine in engines:
        engine.dispose()


def respond(spider: RoundSpider, source_id: str, body: bytes, *, url: str | None = None,
            status: int = 200, cls: type[Response] = XmlResponse,
            headers: dict[str, str] | None = None) -> tuple[Response, Request]:
    poll = spider.context.poll(source_id)
    request = spider.document_request(poll)
    if url:
        request = request.replace(url=url)
    response = cls(url=url or request.url, body=body, status=status, request=request,
                   headers=headers or {"Content-Type": "application/rss+xml"})
    return response, request


def feed_spec(**kwargs: Any) -> SourceSpec:
    return SourceSpec(**{"id": "feed", "url": FEED_URL, "fetch_articles": False, **kwargs})


def test_feed_entries_become_items_with_their_own_raw_bytes(make_spider: Any) -> None:
    spider = make_spider(feed_spec())
    body = rss([{"title": "CICA meets", "link": "http://news.example.org/1", "guid": "g1",
                 "description": "The CICA council met."},
                {"title": "Other", "link": "http://news.example.org/2", "description": "x"}])
    response, _ = respond(spider, "feed", body)
    out = list(spider.parse_document(response))
    (batch,) = [o for o in out if isinstance(o, ItemBatch)]  # one feed, one batch
    items = batch.items
    assert [i.url for i in items] == ["http://news.example.org/1", "http://news.example.org/2"]
    assert items[0].raw.startswith(b"<item>") and b"CICA meets" in items[0].raw
    assert b"Other" not in items[0].raw
    poll = spider.context.poll("feed")
    assert poll.entries == 2 and poll.body_hash == body_hash(body) and poll.pending_items == 1


def test_conditional_request_headers_come_from_the_source_row(make_spider: Any) -> None:
    spider = make_spider(feed_spec(headers={"X-Key": "1"}), etag='"abc"', last_modified="Tue, 04 Feb 2025")
    request = spider.document_request(spider.context.poll("feed"))
    assert request.headers[b"If-None-Match"] == b'"abc"'
    assert request.headers[b"If-Modified-Since"] == b"Tue, 04 Feb 2025"
    assert request.headers[b"X-Key"] == b"1"


def test_304_is_not_modified_without_parsing(make_spider: Any) -> None:
    spider = make_spider(feed_spec())
    response, _ = respond(spider, "feed", b"", status=304)
    assert list(spider.parse_document(response)) == []
    assert spider.context.poll("feed").outcome == "not-modified"


def test_same_body_hash_is_not_modified(make_spider: Any) -> None:
    body = rss([{"title": "A", "link": "http://news.example.org/1"}])
    spider = make_spider(feed_spec(), body_hash=body_hash(body))
    response, _ = respond(spider, "feed", body)
    assert list(spider.parse_document(response)) == []
    assert spider.context.poll("feed").outcome == "not-modified"


def test_challenge_page_is_blocked_not_empty(make_spider: Any) -> None:
    spider = make_spider(feed_spec())
    blocked = (SITES / "mid-ru" / "blocked-interstitial.html").read_bytes()
    response, _ = respond(spider, "feed", blocked, cls=HtmlResponse,
                          headers={"Content-Type": "text/html"})
    assert list(spider.parse_document(response)) == []
    poll = spider.context.poll("feed")
    assert (poll.outcome, poll.error_class) == ("error", "blocked")


def test_503_records_retry_after_hint(make_spider: Any) -> None:
    spider = make_spider(feed_spec())
    response, _ = respond(spider, "feed", b"busy", status=503, cls=TextResponse,
                          headers={"Content-Type": "text/plain", "Retry-After": "3600"})
    list(spider.parse_document(response))
    poll = spider.context.poll("feed")
    assert (poll.error_class, poll.hints.retry_after) == ("http-5xx", 3600)


def test_listing_that_had_items_and_has_none_is_empty(make_spider: Any) -> None:
    spec = SourceSpec(id="list", kind="html", url="http://news.example.org/news",
                      selectors={"item": "div.card"}, fetch_articles=False)
    spider = make_spider(spec, had_items=True)
    response, _ = respond(spider, "list", b"<html><body><p>redesigned</p></body></html>",
                          cls=HtmlResponse, headers={"Content-Type": "text/html"})
    list(spider.parse_document(response))
    poll = spider.context.poll("list")
    poll.conclude()
    assert (poll.outcome, poll.error_class) == ("error", "empty")


def test_listing_entries_fetch_their_articles_and_follow_pages(make_spider: Any) -> None:
    spec = SourceSpec(id="list", kind="html", url="http://news.example.org/news", max_pages=2,
                      selectors={"item": "div.card", "next": "a.next::attr(href)"})
    spider = make_spider(spec)
    page = (b'<html><body><div class="card"><a href="/a/1">One</a></div>'
            b'<div class="card"><a href="/a/2">Two</a></div><a class="next" href="/news?p=2">n</a>'
            b"</body></html>")
    response, _ = respond(spider, "list", page, cls=HtmlResponse, headers={"Content-Type": "text/html"})
    out = list(spider.parse_document(response))
    requests = [o for o in out if isinstance(o, Request)]
    roles = sorted((r.meta["newsmon_role"], r.url) for r in requests)
    assert roles == [("article", "http://news.example.org/a/1"), ("article", "http://news.example.org/a/2"),
                     ("page", "http://news.example.org/news?p=2")]
    assert all(r.meta["newsmon_source"] == "list" and r.dont_filter for r in requests)


def test_article_page_text_and_same_site_canonical(make_spider: Any) -> None:
    spider = make_spider(feed_spec(fetch_articles=True))
    entry = Entry(url="http://news.example.org/a/1?utm_source=rss", title="CICA meets", text="short")
    poll = spider.context.poll("feed")
    request = spider.request(poll, entry.url, spider.parse_article, spider.article_failed,
                             role="article", entry=entry)
    html = (b'<html><head><link rel="canonical" href="https://www.news.example.org/articles/1">'
            b"</head><body><article><h1>CICA meets</h1>" + b"<p>The CICA council met in Astana and "
            b"discussed confidence-building measures across Asia.</p>" * 5 + b"</article></body></html>")
    response = HtmlResponse(url=entry.url, body=html, request=request,
                            headers={"Content-Type": "text/html; charset=utf-8"})
    (batch,) = list(spider.parse_article(response, entry=entry))
    (item,) = batch.items
    assert item.canonical_url == "https://www.news.example.org/articles/1"
    assert "confidence-building" in item.text and item.raw == html


def test_canonical_elsewhere_does_not_win() -> None:
    assert _article_identity("http://a.example/1", "http://a.example/1",
                             "http://evil.example/other") == "http://a.example/1"


def test_entry_fragment_falls_back_to_a_bounded_head() -> None:
    body = b"<rss>" + b"x" * 100_000
    assert len(entry_fragment(body, Entry(url="http://nowhere/1"))) <= 16 * 1024
