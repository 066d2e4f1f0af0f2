"""`newsmon backfill`: a 12-page archive walked back to a date through the CLI, on SQLite and
PostgreSQL: items stored and matched, no alert, a failing page that stops the run and keeps
what was stored, a second run that continues where the first stopped; the older-page rules of
each source kind."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from crawler.backfill import _json_next, since_start
from crawler.fetching import Fetched
from scheduler.cli import cli
from scheduler.commands.crawling import dispatch_alerts
from scheduler.context import AppContext
from storage.db import make_engine, make_session_factory
from storage.models import AlertEvent, Backfill, Item, Match, Source
from tests.test_sources import MiniSite, mini  # noqa: F401 - the fixture

PAGES = 12
FAST = ["--delay", "100ms"]  # the default second between pages is tested once, below
PER_PAGE = 5
NEWEST = date(2025, 3, 31)


def day_of(n: int) -> date:
    return NEWEST - timedelta(days=n)


def archive_page(k: int) -> str:
    """Page k (1 = newest) of a ministry's archive: five items a day apart, newest first."""
    rows = []
    for j in range(PER_PAGE):
        n = (k - 1) * PER_PAGE + j
        title = (f"Conference on Interaction and Confidence Building Measures in Asia: meeting {n}"
                 if n % 3 == 0 else f"Ministry news item {n}")
        rows.append(f'<div class="news-item"><a class="title" href="/news/{n}">{title}</a>'
                    f'<span class="date">{day_of(n).strftime("%d.%m.%Y")}</span></div>')
    nxt = f'<a rel="next" href="/archive?page={k + 1}">Older</a>' if k < PAGES else ""
    return f"<html><body><div class='list'>{''.join(rows)}</div>{nxt}</body></html>"


@pytest.fixture
def archive(mini: MiniSite) -> MiniSite:  # noqa: F811
    for k in range(1, PAGES + 1):
        mini.set(f"/archive?page={k}", archive_page(k))
    return mini


def write_config(tmp_path: Path, db_url: str, base: str, hook: str) -> Path:
    config = tmp_path / "newsmon.toml"
    config.write_text(f"""
[storage]
url = "{db_url}"

[crawl]
fetch_articles = false

[[sources]]
id = "archive"
kind = "html"
url = "{base}/archive?page=1"
allow_private = true
timezone = "Asia/Baku"
max_pages = 1
[sources.selectors]
item = "div.news-item"
link = "a.title::attr(href)"
title = "a.title::text"
date = "span.date::text"

[[organisations]]
id = "CICA"
aliases = ["CICA", "Conference on Interaction and Confidence Building Measures in Asia"]

[[alerts]]
kind = "webhook"
url = "{hook}"
max_age = "3650d"
""", encoding="utf-8")
    return config


def test_backfill_to_a_date_resumes_after_a_failing_page_and_alerts_nobody(
        archive: MiniSite, tmp_path: Path, db_url: str, receiver) -> None:
    config = write_config(tmp_path, db_url, archive.base, receiver.url)
    runner = CliRunner()
    # The 4th page fails (a 503 the retries cannot get past): the run stops there, keeping pages 1-3.
    archive.set("/archive?page=4", "<html><body>overloaded</body></html>", status=503)
    first = runner.invoke(cli, ["--config", str(config), "backfill", "archive", "--since", "2025-02-15",
                                    *FAST],
                          catch_exceptions=False)
    assert first.exit_code == 1
    assert "archive: 3 pages, 15 new items, 0 known, oldest 2025-03-17" in first.stdout
    assert "/archive?page=4: HTTP 503" in first.stderr and "what was stored stays" in first.stderr
    engine = make_engine(db_url)
    sessions = make_session_factory(engine)
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(Item)) == 15
        row = session.get(Backfill, "archive")
        assert json.loads(row.pending) == [archive.base + "/archive?page=4"]

    archive.set("/archive?page=4", archive_page(4))
    second = runner.invoke(cli, ["--config", str(config), "backfill", "archive", "--since", "2025-02-15",
                                    *FAST],
                           catch_exceptions=False)
    assert second.exit_code == 0, second.output
    # 2025-02-15 is item 44 (page 9); page 10 is the first page entirely older: read, not stored.
    assert ("archive: 7 pages (continued), 30 new items, 0 known, oldest 2025-02-15; "
            "reached a page entirely older than 2025-02-15") in second.stdout
    page_requests = [p for p in archive.paths if p.startswith("/archive")]
    assert page_requests.count("/archive?page=1") == 1  # continued, not started again
    assert "/archive?page=11" not in page_requests
    with sessions() as session:
        items = session.scalars(select(Item).order_by(Item.published_at)).all()
        assert len(items) == 45
        assert items[0].published_at == datetime(2025, 2, 14, 20, 0, tzinfo=UTC)  # 15.02 in Baku
        assert items[0].url == archive.base + "/news/44"
        matched = session.scalar(select(func.count(func.distinct(Match.item_id))))
        assert matched == 15  # every third item names CICA
        assert all(i.story_id is not None and i.version == 1 for i in items)
        assert session.scalar(select(func.count()).select_from(AlertEvent)) == 0
        assert session.get(Source, "archive").lease_owner is None
    again = runner.invoke(cli, ["--config", str(config), "backfill", "archive", "--since", "2025-02-15",
                                    *FAST],
                          catch_exceptions=False)
    assert again.exit_code == 0 and "nothing to do" in again.stdout
    app = AppContext(str(config))
    dispatch_alerts(app)  # what the daemon would send now: nothing
    assert receiver.requests == []
    engine.dispose()


def test_backfill_stops_at_max_pages_and_a_later_run_goes_on(archive: MiniSite, tmp_path: Path,
                                                             sqlite_url: str, receiver) -> None:
    config = write_config(tmp_path, sqlite_url, archive.base, receiver.url)
    runner = CliRunner()
    first = runner.invoke(cli, ["--config", str(config), "backfill", "archive", "--max-pages", "2"],
                          catch_exceptions=False)
    assert first.exit_code == 0
    assert "archive: 2 pages, 10 new items, 0 known, oldest 2025-03-22; stopped after --max-pages" in first.stdout
    assert min(page_gaps(archive)) >= 0.8  # a second apart by default
    archive.paths.clear()
    archive.times.clear()
    rest = runner.invoke(cli, ["--config", str(config), "backfill", "archive", "--delay", "300ms"],
                         catch_exceptions=False)
    assert rest.exit_code == 0
    assert "archive: 10 pages (continued), 50 new items, 0 known, oldest 2025-01-31; no older page" in rest.stdout
    # --delay: 300 ms between two requests leaving the crawler, not the default second (their
    # arrival here varies by the tens of ms each request takes on its way)
    gaps = sorted(page_gaps(archive))
    assert gaps[0] >= 0.15 and 0.28 <= gaps[len(gaps) // 2] < 0.9, gaps


def test_the_backfill_delay_is_a_minimum() -> None:
    from crawler.fetching import FetchJob, fetch_settings
    from crawler.sources import CrawlSettings

    settings = fetch_settings(FetchJob(crawl=CrawlSettings(), requests=(), delay=2.0))
    # Scrapy would wait 0.5-1.5 times DOWNLOAD_DELAY; AutoThrottle never goes below it
    assert settings["DOWNLOAD_DELAY"] == 2.0 and settings["RANDOMIZE_DOWNLOAD_DELAY"] is False
    assert settings["CONCURRENT_REQUESTS_PER_DOMAIN"] == 1


def page_gaps(site: MiniSite) -> list[float]:
    """Seconds between consecutive requests for archive pages."""
    times = [t for p, t in zip(site.paths, site.times, strict=True) if p.startswith("/archive")]
    return [b - a for a, b in zip(times, times[1:], strict=False)]


def test_backfill_delay_must_be_a_duration(archive: MiniSite, tmp_path: Path, sqlite_url: str, receiver) -> None:
    config = write_config(tmp_path, sqlite_url, archive.base, receiver.url)
    bad = CliRunner().invoke(cli, ["--config", str(config), "backfill", "archive", "--delay", "soon"])
    assert bad.exit_code == 2 and "--delay" in bad.output and "not a duration" in bad.output
    assert archive.paths == []


def test_a_killed_backfill_continues_where_it_stopped(archive: MiniSite, tmp_path: Path, sqlite_url: str,
                                                      receiver) -> None:
    import os
    import signal
    import subprocess
    import sys
    import threading
    import time

    config = write_config(tmp_path, sqlite_url, archive.base, receiver.url)
    archive.held["/archive?page=6"] = release = threading.Event()
    command = [sys.executable, "-m", "scheduler", "--config", str(config), "backfill", "archive", *FAST]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while "/archive?page=6" not in archive.paths and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "/archive?page=6" in archive.paths
        os.killpg(process.pid, signal.SIGKILL)  # kill -9 while page 6 is being read
        process.wait(timeout=30)
    finally:
        release.set()
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    engine = make_engine(sqlite_url)
    with make_session_factory(engine)() as session:
        assert session.scalar(select(func.count()).select_from(Item)) == 25  # pages 1-5, each committed
    engine.dispose()
    done = CliRunner().invoke(cli, ["--config", str(config), "backfill", "archive", *FAST],
                              catch_exceptions=False)
    assert done.exit_code == 0, done.output
    assert "archive: 7 pages (continued), 35 new items, 0 known, oldest 2025-01-31; no older page" in done.stdout
    assert [p for p in archive.paths if p.startswith("/archive")].count("/archive?page=5") == 1


def test_a_feed_without_a_sitemap_cannot_go_back(mini: MiniSite, tmp_path: Path, sqlite_url: str) -> None:  # noqa: F811
    feed = mini.set("/rss.xml", "<?xml version='1.0'?><rss version='2.0'><channel><title>t</title>"
                    "<item><title>x</title><link>http://example.org/x</link></item></channel></rss>",
                    "application/rss+xml")
    config = tmp_path / "newsmon.toml"
    config.write_text(f'[storage]\nurl = "{sqlite_url}"\n[[sources]]\nid = "only-feed"\nurl = "{feed}"\n'
                      "allow_private = true\n", encoding="utf-8")
    done = CliRunner().invoke(cli, ["--config", str(config), "backfill", "only-feed"], catch_exceptions=False)
    assert done.exit_code == 1
    assert "a feed alone cannot go back in time" in done.stderr


def test_a_feed_goes_back_through_the_sites_sitemap(mini: MiniSite, tmp_path: Path, sqlite_url: str) -> None:  # noqa: F811
    feed = mini.set("/rss.xml", "<?xml version='1.0'?><rss version='2.0'><channel><title>t</title></channel></rss>",
                    "application/rss+xml")
    mini.set("/robots.txt", f"User-agent: *\nSitemap: {mini.base}/sitemap-index.xml\n", "text/plain")
    mini.set("/sitemap-index.xml", f'<?xml version="1.0"?><sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
             f"<sitemap><loc>{mini.base}/sitemap-1.xml</loc><lastmod>2025-01-31</lastmod></sitemap>"
             f"<sitemap><loc>{mini.base}/sitemap-2.xml</loc><lastmod>2025-02-28</lastmod></sitemap></sitemapindex>",
             "application/xml")
    for month, days in ((1, (30, 20, 10)), (2, (25, 15, 5))):
        urls = "".join(f"<url><loc>{mini.base}/news/{month}-{d}</loc><lastmod>2025-{month:02d}-{d:02d}</lastmod></url>"
                       for d in days)
        mini.set(f"/sitemap-{month}.xml", '<?xml version="1.0"?><urlset xmlns="http://www.sitemaps.org/schemas/'
                 f'sitemap/0.9">{urls}</urlset>', "application/xml")
    config = tmp_path / "newsmon.toml"
    config.write_text(f'[storage]\nurl = "{sqlite_url}"\n[crawl]\nfetch_articles = false\n'
                      f'[[sources]]\nid = "feed-site"\nurl = "{feed}"\nallow_private = true\n', encoding="utf-8")
    done = CliRunner().invoke(cli, ["--config", str(config), "backfill", "feed-site", "--since", "2025-01-18"],
                              catch_exceptions=False)
    assert done.exit_code == 0, done.output
    # the index, then February's sitemap (newest first), then January's, without 10 January
    assert mini.paths.index("/sitemap-2.xml") < mini.paths.index("/sitemap-1.xml")
    assert "feed-site: 3 pages, 5 new items, 0 known, oldest 2025-01-20; no older page" in done.stdout
    engine = make_engine(sqlite_url)
    with make_session_factory(engine)() as session:
        urls = sorted(i.url.rsplit("/", 1)[-1] for i in session.scalars(select(Item)))
        assert urls == ["1-20", "1-30", "2-15", "2-25", "2-5"]
    engine.dispose()


def test_since_is_the_start_of_the_day_in_the_source_timezone() -> None:
    assert since_start(date(2025, 2, 15), "Asia/Almaty") == datetime(2025, 2, 14, 19, 0, tzinfo=UTC)
    assert since_start(date(2025, 2, 15), "UTC") == datetime(2025, 2, 15, tzinfo=UTC)


def test_older_pages_of_a_channel_and_a_sitemap_index() -> None:
    import base64

    from crawler.backfill import _older_pages
    from crawler.catalogue import builtin_sources
    from crawler.sources import SourceSpec
    from crawler.spiders.kinds import parse_document

    channel = next(s for s in builtin_sources() if s.id == "mid-telegram-ru")
    body = (Path(__file__).parent / "data" / "sites" / "mid-telegram-ru" / "channel.html").read_bytes()
    fetched = Fetched(url=channel.url, final_url=channel.url, status=200, body_b64=base64.b64encode(body).decode())
    result = parse_document(channel, body, url=channel.url, content_type="text/html")
    older = _older_pages(channel, result, fetched)
    assert len(older) == 1 and older[0].startswith("https://t.me/s/MID_Russia?before=")
    index = (b'<?xml version="1.0"?><sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
             b"<sitemap><loc>https://mfa.example.kz/sitemap-pages.xml</loc></sitemap>"
             b"<sitemap><loc>https://mfa.example.kz/sitemap-2025-01.xml</loc><lastmod>2025-01-31</lastmod></sitemap>"
             b"<sitemap><loc>https://mfa.example.kz/sitemap-2025-02.xml</loc><lastmod>2025-02-28</lastmod></sitemap>"
             b"</sitemapindex>")
    spec = SourceSpec(id="s", kind="sitemap", url="https://mfa.example.kz/sitemap.xml")
    result = parse_document(spec, index, url=spec.url, content_type="application/xml")
    fetched = Fetched(url=spec.url, final_url=spec.url, status=200, body_b64=base64.b64encode(index).decode())
    assert _older_pages(spec, result, fetched) == ["https://mfa.example.kz/sitemap-2025-02.xml",
                                                   "https://mfa.example.kz/sitemap-2025-01.xml",
                                                   "https://mfa.example.kz/sitemap-pages.xml"]


@pytest.mark.parametrize(("url", "body", "expected"), [
    ("https://api.example.kz/news?page=2&size=20", b'{"content": []}', "https://api.example.kz/news?page=3&size=20"),
    ("https://api.example.kz/news", b'{"items": [], "links": {"next": "/news?cursor=abc"}}',
     "https://api.example.kz/news?cursor=abc"),
    ("https://api.example.kz/news", b'{"items": []}', None),
])
def test_json_next_page(url: str, body: bytes, expected: str | None) -> None:
    import base64

    fetched = Fetched(url=url, final_url=url, status=200, body_b64=base64.b64encode(body).decode())
    assert _json_next(fetched) == expected
