"""``render = "browser"`` sources: listing pages rendered by Debian's Chromium (scrapy-playwright),
with the page's own requests held to the SSRF rules, in real crawl rounds against the fixture
server; and ordinary rounds that never load Playwright."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from sqlalchemy import select

from crawler import rendering
from crawler.job import CrawlJob
from crawler.settings import round_settings
from scheduler.runner import PROJECT_ROOT, build_job, crawl_round
from storage.db import make_engine, make_session_factory
from storage.models import Item
from tests.plugins.sites import Site
from tests.test_crawl_end_to_end import make_config, sync

pytestmark = [pytest.mark.slow, pytest.mark.browser]

DATA = Path(__file__).resolve().parent / "data" / "render"
SELECTORS = {"item": "div.news-item", "link": "a::attr(href)", "title": "a::text",
             "summary": "p::text"}


@pytest.fixture
def chromium() -> None:
    """Skip without /usr/bin/chromium, except in CI, where the browser tests must run."""
    if rendering.browser_available():
        return
    if os.environ.get("CI"):
        pytest.fail(f"{rendering.CHROMIUM} is missing: CI must run the browser tests "
                    "(apt-get install -y chromium)")
    pytest.skip(f"{rendering.CHROMIUM} not installed")


class Sink:
    """A second HTTP server, on 127.0.0.2 (a refused loopback address): it logs every request,
    so a test can show that nothing reached it."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
                pass

            def do_GET(self) -> None:  # noqa: N802
                sink.paths.append(self.path)
                body = b"internal secret"
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Access-Control-Allow-Origin", "*")
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.2", 0), Handler)
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.2:{self.server.server_address[1]}"

    def url(self, path: str) -> str:
        return self.base + path


@pytest.fixture
def sink() -> Iterator[Sink]:
    server = Sink()
    thread = threading.Thread(target=server.server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()


def publish(site: Site, probes: tuple[str, ...] = (), extra_html: str = "") -> str:
    """The JavaScript listing (tests/data/render) under a fresh prefix; returns its URL.
    ``probes``: URLs its script tries to fetch before inserting the items."""
    prefix = site.unique("/render")
    listing = (DATA / "listing.html").read_text(encoding="utf-8")
    listing = listing.replace('data-probe=""', f'data-probe="{" ".join(probes)}"')
    listing = listing.replace("</h1>", f"</h1>{extra_html}")
    site.set(f"{prefix}/items.js", (DATA / "items.js").read_bytes(), "application/javascript")
    site.set(f"{prefix}/items.json", (DATA / "items.json").read_bytes(), "application/json")
    for n in (1, 2):
        site.set(f"{prefix}/articles/{n}.html", (DATA / "article.html").read_bytes(),
                 "text/html; charset=utf-8")
    return site.set(f"{prefix}/index.html", listing.encode("utf-8"), "text/html; charset=utf-8")


def source(source_id: str, url: str, **extra: Any) -> dict[str, Any]:
    return {"id": source_id, "kind": "html", "url": url, "allow_private": True,
            "selectors": SELECTORS, "render": "browser", **extra}


def stored(db_url: str, source_id: str) -> list[Item]:
    with make_session_factory(make_engine(db_url))() as session:
        items = list(session.scalars(select(Item).where(Item.source_id == source_id)))
        for item in items:
            _ = [m.organisation for m in item.matches]  # loaded while the session is open
        return items


def test_browser_source_stores_items_that_javascript_inserts(
        chromium: None, site: Site, sqlite_url: str) -> None:
    url = publish(site)
    plain = source("plain", url)
    del plain["render"]
    config = make_config(sqlite_url, [source("js", url), plain])
    sync(config)
    report = crawl_round(config, None, timeout=60).by_source()

    assert (report["js"].outcome, report["js"].error_class, report["js"].new) == ("ok", None, 2), \
        report["js"]
    items = stored(sqlite_url, "js")
    assert {i.url.rsplit("/", 2)[-2:][1] for i in items} == {"1.html", "2.html"}
    assert all("CICA" in {m.organisation for m in i.matches} for i in items), \
        [(i.title, [m.organisation for m in i.matches]) for i in items]
    assert any("confidence-building measures" in (i.text or "") for i in items)  # article pages
    prefix = urlsplit(url).path.rsplit("/", 1)[0]
    assert site.requests(f"{prefix}/items.js") and site.requests(f"{prefix}/items.json")

    # The same page without a browser: the items are not in its HTML.
    assert report["plain"].new == 0, report["plain"]
    assert report["plain"].outcome in ("ok", "error")
    assert report["plain"].error_class in (None, "empty")
    assert stored(sqlite_url, "plain") == []


def test_the_pages_own_requests_to_refused_hosts_never_leave_the_browser(
        chromium: None, site: Site, sink: Sink, sqlite_url: str) -> None:
    redirect = site.url("/faults/redirect?to=" + sink.url("/redirected"))
    probes = (sink.url("/fetched"), "http://10.0.0.1/fetched", "http://169.254.169.254/latest/",
              redirect, "file:///etc/passwd")
    url = publish(site, probes, extra_html=f'<img src="{sink.url("/pixel.png")}" alt="">')
    config = make_config(sqlite_url, [source("js", url, fetch_articles=False)])
    report = crawl_round(config, None, timeout=60).by_source()

    assert (report["js"].outcome, report["js"].new) == ("ok", 2), report["js"]
    assert site.requests("/faults/redirect"), "the script did not run its probes"
    assert sink.paths == []  # neither the fetch, the redirect hop nor the image got through


def test_a_browser_navigation_redirected_to_a_refused_host_is_ssrf(
        chromium: None, site: Site, sink: Sink, sqlite_url: str) -> None:
    url = site.url("/faults/redirect?to=" + sink.url("/listing"))
    config = make_config(sqlite_url, [source("js", url)])
    report = crawl_round(config, None, timeout=60).by_source()

    assert (report["js"].outcome, report["js"].error_class) == ("error", "ssrf"), report["js"]
    assert "127.0.0.2" in (report["js"].message or "")
    assert sink.paths == []


def plain_job(site: Site, sqlite_url: str) -> CrawlJob:
    config = make_config(sqlite_url, [
        {"id": "feed", "url": site.url("/feeds/x.xml"), "allow_private": True,
         "render": "browser"},  # ignored: a feed is not an HTML page
        {"id": "page", "kind": "html", "url": site.url("/x.html"), "selectors": SELECTORS}])
    return build_job(config, config.sources)


def test_a_round_without_browser_sources_does_not_load_playwright(
        site: Site, sqlite_url: str) -> None:
    settings = round_settings(plain_job(site, sqlite_url))
    assert "DOWNLOAD_HANDLERS" not in settings
    assert not [k for k in settings if k.startswith("PLAYWRIGHT_")]
    assert rendering.RENDER_MIDDLEWARE not in settings["DOWNLOADER_MIDDLEWARES"]

    browser = round_settings(build_job(make_config(sqlite_url, [source("js", site.url("/x"))]),
                                       make_config(sqlite_url, [source("js", site.url("/x"))]).sources))
    assert browser["DOWNLOADER_MIDDLEWARES"][rendering.RENDER_MIDDLEWARE] == 60
    if rendering.browser_available():
        assert browser["DOWNLOAD_HANDLERS"]["https"] == rendering.PLAYWRIGHT_HANDLER
        assert browser["PLAYWRIGHT_LAUNCH_OPTIONS"]["executable_path"] == rendering.CHROMIUM
        assert browser["PLAYWRIGHT_DEFAULT_NAVIGATION_TIMEOUT"] == 5000.0

    code = ("import sys\n"
            "from crawler.job import CrawlJob\n"
            "from crawler.settings import round_settings\n"
            "from crawler.spiders.round import RoundSpider\n"
            "round_settings(CrawlJob.model_validate_json(sys.stdin.read()))\n"
            "loaded = [m for m in sys.modules if m.split('.')[0] in ('playwright', 'scrapy_playwright')]\n"
            "assert not loaded, loaded\n")
    done = subprocess.run([sys.executable, "-c", code], input=plain_job(site, sqlite_url).model_dump_json(),
                          capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=60)
    assert done.returncode == 0, done.stderr


def test_without_chromium_only_the_browser_sources_fail_with_a_clear_message(
        site: Site, sqlite_url: str) -> None:
    feed = site.set(site.unique("/feeds") + ".xml", (
        b'<?xml version="1.0"?><rss version="2.0"><channel><title>F</title>'
        b"<link>http://example.org/</link><item><title>CICA met</title>"
        b"<link>http://example.org/1</link></item></channel></rss>"))
    config = make_config(sqlite_url, [source("js", publish(site)),
                                      {"id": "feed", "url": feed, "allow_private": True,
                                       "fetch_articles": False}])
    sync(config)
    job = build_job(config, config.sources, deadline=60)
    code = ("import sys\n"
            "import crawler.rendering\n"
            "crawler.rendering.browser_available = lambda path=None: False\n"
            "from crawler.__main__ import main\n"
            "sys.exit(main())\n")
    done = subprocess.run([sys.executable, "-c", code], input=job.model_dump_json(),
                          capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=90)
    assert done.returncode == 0, done.stderr
    events = {e["source_id"]: e for e in map(json.loads, done.stdout.splitlines())
              if e.get("kind") == "source"}
    assert events["feed"]["outcome"] == "ok"
    assert (events["js"]["outcome"], events["js"]["error_class"]) == ("error", "internal")
    assert rendering.CHROMIUM in events["js"]["message"], events["js"]


def test_a_browser_page_that_never_loads_is_a_timeout(
        chromium: None, site: Site, sqlite_url: str) -> None:
    config = make_config(sqlite_url, [source("js", site.url("/faults/slow?seconds=8"))],
                         timeout="2s")
    report = crawl_round(config, None, timeout=60).by_source()
    assert (report["js"].outcome, report["js"].error_class) == ("error", "timeout"), report["js"]


async def _ask(proxy: rendering.GuardProxy, head: str) -> bytes:
    """The proxy's whole answer (up to the end of a tunnel's 200 for CONNECT)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(head.encode())
    await writer.drain()
    if head.startswith("CONNECT"):
        answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        if answer.startswith(b"HTTP/1.1 200"):
            writer.close()
            await asyncio.sleep(0.1)  # the proxy sees the close and ends the tunnel
            return answer
        answer += await asyncio.wait_for(reader.read(), 10)
    else:
        answer = await asyncio.wait_for(reader.read(), 10)  # the proxy closes after one answer
    writer.close()
    return answer


def test_guard_proxy_checks_every_destination(site: Site, sink: Sink) -> None:
    site_host = "127.0.0.1"
    site_port = int(site.base.rsplit(":", 1)[1])
    path = site.unique("/proxied")
    site.set(path, b"hello", "text/plain")

    async def scenario() -> dict[str, bytes]:
        strict = rendering.GuardProxy(None, 5.0)
        private = rendering.GuardProxy(site_host, 5.0)
        await strict.start()
        await private.start()
        try:
            return {
                "tunnel-refused": await _ask(strict, f"CONNECT {sink.base[7:]} HTTP/1.1\r\n\r\n"),
                "name-refused": await _ask(strict, "CONNECT localhost:443 HTTP/1.1\r\n\r\n"),
                "metadata": await _ask(strict, "GET http://169.254.169.254/ HTTP/1.1\r\n"
                                               "Host: 169.254.169.254\r\n\r\n"),
                "other-private": await _ask(private, f"GET {sink.url('/x')} HTTP/1.1\r\n"
                                                     f"Host: {sink.base[7:]}\r\n\r\n"),
                "own-host": await _ask(private, f"GET {site.url(path)} HTTP/1.1\r\n"
                                                f"Host: {site_host}:{site_port}\r\n\r\n"),
                "tunnel-own-host": await _ask(private, f"CONNECT {site_host}:{site_port} HTTP/1.1\r\n\r\n"),
            }
        finally:
            strict.close()
            private.close()

    answers = asyncio.run(scenario())
    for key in ("tunnel-refused", "name-refused", "metadata", "other-private"):
        assert answers[key].startswith(b"HTTP/1.1 403"), (key, answers[key])
        assert rendering.REFUSED_HEADER.encode() in answers[key]
    assert answers["own-host"].startswith(b"HTTP/1.1 200")
    assert answers["own-host"].endswith(b"hello")
    assert answers["tunnel-own-host"].startswith(b"HTTP/1.1 200 Connection established")
    assert sink.paths == []
    assert site.requests(path)[-1].headers.get("Connection") == "close"


def test_only_listing_pages_of_html_kinds_are_rendered() -> None:
    from scrapy.http import HtmlResponse, Request

    from crawler.sources import SourceSpec

    html = SourceSpec(id="a", url="http://example.org/", kind="html", selectors=SELECTORS,
                      render="browser", encoding="windows-1251")
    feed = SourceSpec(id="b", url="http://example.org/feed", render="browser")
    assert rendering.render_meta(html, "document")["playwright"] is True
    assert rendering.render_meta(html, "page")["playwright"] is True
    assert rendering.render_meta(html, "article") == {}  # articles: the normal downloader
    assert rendering.render_meta(feed, "document") == {}
    assert rendering.render_meta(html.model_copy(update={"render": None}), "document") == {}

    page = HtmlResponse("http://example.org/", body=b"<html></html>",
                        request=Request("http://example.org/", meta={"playwright": True}))
    raw = HtmlResponse("http://example.org/", body=b"<html></html>",
                       request=Request("http://example.org/"))
    assert rendering.parsing_spec(html, page).encoding is None  # the browser's text is UTF-8
    assert rendering.parsing_spec(html, raw).encoding == "windows-1251"
