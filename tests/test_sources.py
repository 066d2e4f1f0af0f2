"""`newsmon sources add|test|import|export`: feed discovery, selector inference on the real
markup of every built-in listing source, dry runs that leave the database as it was, OPML in
and out, and comment-preserving writes of newsmon.toml."""

from __future__ import annotations

import hashlib
import json
import threading
import time
import tomllib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from crawler.catalogue import builtin_sources
from crawler.discovery import (
    common_feed_urls,
    feed_links,
    guess_timezone,
    infer_source,
    page_language,
    robots_sitemaps,
    source_id_for,
    telegram_channels,
)
from crawler.opml import import_subscriptions, read_opml, write_opml
from crawler.sources import SourceSpec
from crawler.spiders.kinds import parse_document
from scheduler.cli import cli
from scheduler.config import ConfigError, load_config
from scheduler.sourcefile import add_sources

SITES = Path(__file__).parent / "data" / "sites"
LISTING_SOURCES = [s for s in builtin_sources() if s.kind == "html"]


# --- a small site per test: only the routes a test publishes ---------------------------------


class MiniSite:
    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, str, bytes]] = {}
        self.paths: list[str] = []
        self.times: list[float] = []  # time.monotonic() of each request, beside paths
        self.held: dict[str, threading.Event] = {}  # paths that answer only once released
        site = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

            def do_GET(self) -> None:  # noqa: N802
                site.times.append(time.monotonic())
                site.paths.append(self.path)
                if self.path in site.held:
                    site.held[self.path].wait(60)
                status, content_type, body = site.routes.get(self.path, (404, "text/plain", b"not found"))
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"

    def set(self, path: str, body: bytes | str, content_type: str = "text/html; charset=utf-8",
            status: int = 200) -> str:
        self.routes[path] = (status, content_type, body.encode() if isinstance(body, str) else body)
        return self.base + path


@pytest.fixture
def mini() -> Iterator[MiniSite]:
    site = MiniSite()
    thread = threading.Thread(target=site.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield site
    site.server.shutdown()
    site.server.server_close()


def site_file(name: str, file: str, base: str, hosts: list[str]) -> bytes:
    body = (SITES / name / file).read_bytes()
    for host in hosts:
        body = body.replace(f"https://{host}".encode(), base.encode())
    return body


def rss(base: str, titles: list[tuple[str, str]], language: str = "en") -> str:
    items = "".join(f"<item><title>{t}</title><link>{base}/news/{i}</link><pubDate>{d}</pubDate></item>"
                    for i, (t, d) in enumerate(titles))
    return (f'<?xml version="1.0"?><rss version="2.0"><channel><title>Site news</title><link>{base}/</link>'
            f"<language>{language}</language>{items}</channel></rss>")


# --- discovery: pure parts ------------------------------------------------------------------------


PAGE = "https://www.mfa.gov.az/en/news"


@pytest.mark.parametrize(("link", "expected"), [
    ('<link rel="alternate" type="application/rss+xml" title="RSS" href="/en/rss.xml">',
     "https://www.mfa.gov.az/en/rss.xml"),
    ('<link rel="alternate" type="application/atom+xml" href="https://www.mfa.gov.az/atom">',
     "https://www.mfa.gov.az/atom"),
    ('<link rel="alternate" type="application/feed+json" href="feed.json">',
     "https://www.mfa.gov.az/en/feed.json"),
    ('<link rel="alternate" type="application/rss+xml; charset=UTF-8" href="/rss.php?lang=en">',
     "https://www.mfa.gov.az/rss.php?lang=en"),
])
def test_feed_links_of_each_kind(link: str, expected: str) -> None:
    html = f"<html><head>{link}<link rel=stylesheet href=/s.css></head><body>x</body></html>"
    assert feed_links(html, PAGE) == [expected]


def test_no_feed_links_on_a_page_without_them() -> None:
    assert feed_links("<html><head><link rel=stylesheet href=/s.css></head><body><a href=/a>a</a></body></html>",
                      PAGE) == []


def test_common_paths_robots_sitemaps_and_channels() -> None:
    assert common_feed_urls(PAGE) == [f"https://www.mfa.gov.az{p}" for p in
                                      ("/rss", "/feed", "/rss.xml", "/atom.xml", "/rss.php", "/feed/")]
    robots = "User-agent: *\nDisallow: /admin\nSitemap: https://www.mfa.gov.az/sitemap.xml\nsitemap: /news.xml\n"
    assert robots_sitemaps(robots, PAGE) == ["https://www.mfa.gov.az/sitemap.xml", "https://www.mfa.gov.az/news.xml"]
    html = ('<a href="https://t.me/MFA_Azerbaijan">tg</a> <a href="https://t.me/s/mfa_az_en/">s</a> '
            '<a href="https://t.me/share/url?url=x">share</a> <a href="https://t.me/MFA_Azerbaijan/123">post</a>')
    assert telegram_channels(html) == ["MFA_Azerbaijan", "mfa_az_en"]


def test_guessed_id_language_and_timezone() -> None:
    assert source_id_for("https://www.mfa.gov.az/en/news") == "mfa-gov-az-en-news"
    assert source_id_for("https://mfa.gov.az/en/", taken=["mfa-gov-az-en", "mfa-gov-az-en-2"]) == "mfa-gov-az-en-3"
    assert guess_timezone("https://www.inform.kz/ru/lenta") == "Asia/Almaty"
    assert guess_timezone("https://example.org/") == "UTC"
    assert page_language('<!DOCTYPE html><html lang="ru-RU"><head>') == "ru"


ATOM = """<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom" xml:lang="az">
<title>Xəbərlər</title><id>urn:x</id><updated>2025-02-05T10:00:00Z</updated>
<entry><title>AQEM toplantısı</title><id>urn:1</id><link href="{base}/az/news/1"/>
<updated>2025-02-05T10:00:00Z</updated></entry>
<entry><title>Hava</title><id>urn:2</id><link href="{base}/az/news/2"/><updated>2025-02-04T10:00:00Z</updated></entry>
</feed>"""
SITEMAP = """<?xml version="1.0" encoding="UTF-8"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">
<url><loc>{base}/az/news/1</loc><lastmod>2025-02-05</lastmod></url></urlset>"""


def test_discover_common_path_robots_sitemap_and_channel(mini: MiniSite) -> None:
    from crawler.discovery import discover
    from crawler.sources import CrawlSettings

    mini.set("/feed/", ATOM.format(base=mini.base), "application/atom+xml")
    mini.set("/robots.txt", f"User-agent: *\nDisallow: /private/\nSitemap: {mini.base}/news-sitemap.xml\n",
             "text/plain")
    mini.set("/news-sitemap.xml", SITEMAP.format(base=mini.base), "application/xml")
    page = mini.set("/az/", '<html lang="az"><body><p>Nazirlik</p>'
                    '<a href="https://t.me/MFA_Azerbaijan">Telegram</a></body></html>')
    found = discover(page, crawl=CrawlSettings(), taken=["127-0-0-1-feed"], allow_private=True)
    assert found.language == "az" and not found.blocked and not found.error
    assert [(c.spec.kind, c.how, c.spec.url) for c in found.candidates] == [
        ("feed", "common path", mini.base + "/feed/"),
        ("sitemap", "robots.txt sitemap", mini.base + "/news-sitemap.xml"),
        ("telegram", "t.me link", "https://t.me/s/MFA_Azerbaijan"),
    ]
    best = found.candidates[0]
    assert best.spec.id == "127-0-0-1-feed-2" and best.spec.allow_private
    assert [e.title for e in best.entries] == ["AQEM toplantısı", "Hava"]
    assert found.candidates[2].spec.id == "t-me-mfa-azerbaijan"
    each_once = [p for p in mini.paths if p in ("/rss", "/feed", "/rss.xml", "/atom.xml", "/rss.php", "/feed/")]
    assert sorted(each_once) == sorted(set(each_once)) and len(each_once) == 6


def test_discover_refuses_a_private_address_unless_typed(mini: MiniSite) -> None:
    from crawler.discovery import discover
    from crawler.sources import CrawlSettings

    page = mini.set("/x", "<html><body>x</body></html>")
    found = discover(page, crawl=CrawlSettings(), allow_private=False)
    assert found.error and "127.0.0.1" in found.error and not found.candidates
    assert "/x" not in mini.paths


# --- inference: the catalogue's listing sources ---------------------------------------------------


def entries_of(spec: SourceSpec, body: bytes) -> list[tuple[str, str, str | None]]:
    result = parse_document(spec, body, url=spec.url, content_type="text/html; charset=utf-8")
    assert not result.error, result.error
    return [(e.url, e.title, e.published_at.isoformat() if e.published_at else None) for e in result.entries]


@pytest.mark.parametrize("spec", LISTING_SOURCES, ids=lambda s: s.id)
def test_inferred_selectors_extract_what_the_catalogue_does(spec: SourceSpec) -> None:
    body = (SITES / spec.id / "listing.html").read_bytes()
    inferred = infer_source(body.decode("utf-8"), spec.url, base={"id": "inferred"})
    assert inferred is not None
    assert inferred.kind == "html" and inferred.date_format is None
    expected = entries_of(spec, body)
    assert len(expected) >= 2
    assert entries_of(inferred, body) == expected
    handwritten = parse_document(spec, body, url=spec.url, content_type="text/html").next_page
    assert parse_document(inferred, body, url=spec.url, content_type="text/html").next_page == handwritten


NOISY_LISTING = """<!DOCTYPE html><html lang="en"><head><title>Press</title></head><body>
<header><a href="/en/">Home</a> <a href="/en/news">News</a> <a href="/en/about">About the ministry</a></header>
<div class="layout"><main>
 <div class="news-list">
  <div class="row"><div class="col"><div class="news-box">
   <span class="tag"><a href="/en/tags/diplomacy">Diplomacy</a></span>
   <h4><a href="/en/news/1201-minister-meets-cica-secretary-general">Minister meets the CICA Secretary
    General in Astana</a></h4>
   <p class="lead">The sides discussed the agenda of the coming summit.</p>
   <div class="meta">03.02.2025 14:30</div></div></div></div>
  <div class="row"><div class="col"><div class="news-box">
   <span class="tag"><a href="/en/tags/economy">Economy</a></span>
   <h4><a href="/en/news/1200-trade-forum-opens">Trade forum opens with delegations from twelve countries</a></h4>
   <p class="lead">Business leaders gathered in the capital.</p>
   <div class="meta">02.02.2025 09:00</div></div></div></div>
  <div class="row"><div class="col"><div class="news-box">
   <span class="tag"><a href="/en/tags/culture">Culture</a></span>
   <h4><a href="/en/news/1199-embassy-hosts-exhibition">Embassy hosts an exhibition of national crafts</a></h4>
   <p class="lead">The exhibition runs until March.</p>
   <div class="meta">01.02.2025 18:15</div></div></div></div>
 </div>
 <nav class="pager"><a href="/en/news?p=1">1</a> <a class="pager-next" href="/en/news?p=2">Next</a></nav>
</main>
<aside><h3>Most read</h3><ul><li><a href="/en/news/900-old-story">An older story that many people read</a></li>
<li><a href="/en/news/901-another-old-story">Another older story that people read</a></li></ul></aside></div>
<footer><a href="/en/contacts">Contacts of the press service</a> <a href="/en/sitemap">Sitemap</a></footer>
</body></html>"""


def test_inference_picks_the_dated_list_among_menus_tags_and_sidebars() -> None:
    url = "https://mfa.example.uz/en/news"
    spec = infer_source(NOISY_LISTING, url, base={"id": "noisy"})
    assert spec is not None and spec.timezone == "Asia/Tashkent"
    got = entries_of(spec, NOISY_LISTING.encode())
    assert [(u.rsplit("/", 1)[-1], d) for u, _, d in got] == [
        ("1201-minister-meets-cica-secretary-general", "2025-02-03T09:30:00+00:00"),
        ("1200-trade-forum-opens", "2025-02-02T04:00:00+00:00"),
        ("1199-embassy-hosts-exhibition", "2025-02-01T13:15:00+00:00"),
    ]
    assert got[0][1] == "Minister meets the CICA Secretary General in Astana"
    assert parse_document(spec, NOISY_LISTING.encode(), url=url, content_type="text/html").next_page == \
        "https://mfa.example.uz/en/news?p=2"


def test_no_inference_on_a_page_without_a_list() -> None:
    html = "<html><body><h1>About</h1><p>Text with <a href='/a'>one link</a>.</p></body></html>"
    assert infer_source(html, "https://example.org/about", base={"id": "x"}) is None


# --- OPML ------------------------------------------------------------------------------------------


OPML_1 = """<?xml version="1.0" encoding="utf-8"?>
<opml version="1.0"><head><title>my reader</title></head><body>
 <outline text="Ministries">
  <outline text="MID Russia" title="MID Russia" type="rss" xmlUrl="https://mid.ru/ru/rss.php" htmlUrl="https://mid.ru/"/>
  <outline text="Caucasus">
    <outline text="Trend" type="rss" xmlUrl="https://en.trend.az/feeds/index.rss"/>
    <outline text="Trend" type="rss" xmlUrl="https://en.trend.az/feeds/politics.rss"/>
  </outline>
 </outline>
 <outline text="Агентство Кабар" type="rss" xmlUrl="https://kabar.kg/rss/"/>
 <outline text="a folder without feeds"/>
</body></opml>""".encode()


def test_opml_import_nested_unique_ids_and_duplicates_skipped() -> None:
    subs = read_opml(OPML_1)
    assert [s.url for s in subs] == ["https://mid.ru/ru/rss.php", "https://en.trend.az/feeds/index.rss",
                                     "https://en.trend.az/feeds/politics.rss", "https://kabar.kg/rss/"]
    existing = [SourceSpec(id="mid-ru", url="https://mid.ru/ru/rss.php"), SourceSpec(id="trend", url="https://x.org/")]
    result = import_subscriptions(subs, existing)
    assert [(s.id, s.kind, s.name) for s in result.sources] == [
        ("trend-2", "feed", "Trend"), ("trend-3", "feed", "Trend"), ("agentstvo-kabar", "feed", "Агентство Кабар")]
    assert result.skipped == ["https://mid.ru/ru/rss.php: already configured as 'mid-ru'"]


def test_opml_rejects_what_is_not_opml() -> None:
    from crawler.opml import OpmlError

    with pytest.raises(OpmlError):
        read_opml(b"<html><body>not a list</body></html>")


def test_opml_round_trip_through_the_cli(tmp_path: Path) -> None:
    config = tmp_path / "newsmon.toml"
    config.write_text('# my newsmon\n[storage]\nurl = "sqlite:///%s"  # the database\n\n'
                      '[[sources]]\nid = "mid-ru"  # the first source\nurl = "https://mid.ru/ru/rss.php"\n'
                      % (tmp_path / "db.sqlite"), encoding="utf-8")
    opml = tmp_path / "in.opml"
    opml.write_bytes(OPML_1)
    runner = CliRunner()
    done = runner.invoke(cli, ["--config", str(config), "sources", "import", str(opml)], catch_exceptions=False)
    assert done.exit_code == 0, done.output
    assert "skipped https://mid.ru/ru/rss.php: already configured as 'mid-ru'" in done.stderr
    text = config.read_text(encoding="utf-8")
    assert "# my newsmon" in text and "# the database" in text and "# the first source" in text
    ids = [s.id for s in load_config(str(config), environ={}).config.sources]
    assert ids == ["mid-ru", "trend", "trend-2", "agentstvo-kabar"]
    exported = runner.invoke(cli, ["--config", str(config), "sources", "export", "--format", "opml"])
    assert exported.exit_code == 0
    back = read_opml(exported.stdout.encode())
    assert [(s.url, s.title) for s in back] == [
        ("https://mid.ru/ru/rss.php", "mid-ru"), ("https://en.trend.az/feeds/index.rss", "Trend"),
        ("https://en.trend.az/feeds/politics.rss", "Trend"), ("https://kabar.kg/rss/", "Агентство Кабар")]
    again = runner.invoke(cli, ["--config", str(config), "sources", "import", str(opml)])
    assert again.exit_code == 0 and "Nothing to add" in again.stdout
    assert config.read_text(encoding="utf-8") == text
    toml = runner.invoke(cli, ["--config", str(config), "sources", "export", "--format", "toml"])
    assert [s["id"] for s in tomllib.loads(toml.stdout)["sources"]] == ids


def test_export_opml_has_only_feeds() -> None:
    specs = [s for s in builtin_sources() if s.id in ("mid-ru", "mfa-az", "mid-telegram-ru")]
    back = read_opml(write_opml(specs).encode())
    assert [s.url for s in back] == ["https://mid.ru/ru/rss.php"]


# --- newsmon.toml writes ----------------------------------------------------------------------------


def test_add_keeps_comments_and_never_writes_a_broken_file(tmp_path: Path) -> None:
    path = tmp_path / "newsmon.toml"
    original = '# top comment\n[crawl]\ninterval = "5m"  # often\n\n[[sources]]\nid = "a"\nurl = "https://a.example/rss"\n'
    path.write_text(original, encoding="utf-8")
    listing = next(s for s in builtin_sources() if s.id == "mfa-az")
    add_sources(path, [listing])
    text = path.read_text(encoding="utf-8")
    assert text.startswith(original)
    assert load_config(str(path), environ={}).config.source("mfa-az") == listing
    with pytest.raises(ConfigError, match="duplicate id 'mfa-az'"):
        add_sources(path, [listing])
    assert path.read_text(encoding="utf-8") == text
    assert [p.name for p in tmp_path.iterdir()] == ["newsmon.toml"]


def test_first_added_source_keeps_the_builtin_catalogue(tmp_path: Path) -> None:
    path = tmp_path / "newsmon.toml"
    path.write_text("[crawl]\nobey_robots = true\n", encoding="utf-8")
    new = SourceSpec(id="my-feed", url="https://example.org/rss")
    assert add_sources(path, [new], builtins=builtin_sources())
    ids = [s.id for s in load_config(str(path), environ={}).config.sources]
    assert ids == [s.id for s in builtin_sources()] + ["my-feed"]


# --- through the CLI against a local site ----------------------------------------------------------


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "newsmon.toml"
    path.write_text('# the analyst\'s settings\n[storage]\nurl = "sqlite:///%s"\n\n'
                    '[[sources]]\nid = "existing"  # keep me\nurl = "https://example.org/rss"\n'
                    % (tmp_path / "db.sqlite"), encoding="utf-8")
    return path


def invoke(config: Path, *args: str, input: str | None = None) -> Any:
    return CliRunner().invoke(cli, ["--config", str(config), *args], input=input, catch_exceptions=False)


def test_add_discovers_the_linked_feed_and_writes_it(mini: MiniSite, config_file: Path) -> None:
    feed = rss(mini.base, [("CICA ministers meet in Baku", "Tue, 04 Feb 2025 10:00:00 GMT"),
                           ("Weather report", "Mon, 03 Feb 2025 10:00:00 GMT")])
    mini.set("/az/news.rss", feed, "application/rss+xml")
    page = mini.set("/en/press", '<html lang="en"><head><title>Press &amp; news</title>'
                    '<link rel="alternate" type="application/rss+xml" '
                    'href="/az/news.rss"></head><body><p>Press</p></body></html>')
    before = config_file.read_text(encoding="utf-8")
    # asked for the time zone (a wrong one is asked again), then for confirmation
    done = invoke(config_file, "sources", "add", page, "--id", "press-feed", input="Mars/Base\nAsia/Baku\ny\n")
    assert done.exit_code == 0, done.output
    assert "'Mars/Base' is not a time zone" in done.output
    assert "link rel=alternate" in done.stdout and "CICA ministers meet in Baku" in done.stdout
    assert {"/rss", "/feed", "/rss.xml", "/atom.xml", "/rss.php", "/feed/", "/robots.txt"} <= set(mini.paths)
    text = config_file.read_text(encoding="utf-8")
    assert text.startswith(before) and "# keep me" in text
    spec = load_config(str(config_file), environ={}).config.source("press-feed")
    assert spec is not None
    assert (spec.kind, spec.url, spec.language, spec.allow_private) == ("feed", mini.base + "/az/news.rss", "en", True)
    assert (spec.name, spec.timezone) == ("Press & news", "Asia/Baku")


def test_add_infers_a_listing_and_previews_it(mini: MiniSite, config_file: Path) -> None:
    listing = next(s for s in builtin_sources() if s.id == "kazinform")
    body = site_file("kazinform", "listing.html", mini.base, ["www.inform.kz", "inform.kz"])
    page = mini.set("/ru/lenta", body)
    mini.set("/ru/genseki-svmda-vstretilsya-s-poslom-azerbaydzhana-3f9a1c2d",
             site_file("kazinform", "article.html", mini.base, ["www.inform.kz", "inform.kz"]))
    before = config_file.read_text(encoding="utf-8")
    done = invoke(config_file, "sources", "add", page, "--dry-run")
    assert done.exit_code == 0, done.output
    assert "inferred selectors" in done.stdout and "Генсек СВМДА встретился с послом Азербайджана" in done.stdout
    assert "CICA" in done.stdout
    assert config_file.read_text(encoding="utf-8") == before  # --dry-run writes nothing
    table = tomllib.loads(done.stdout[done.stdout.index("[[sources]]"):])["sources"][0]
    spec = SourceSpec.model_validate(table)
    assert spec.id == "127-0-0-1-ru-lenta" and spec.kind == "html" and spec.language == "ru"
    assert spec.allow_private
    handwritten = listing.model_copy(update={"url": page, "timezone": spec.timezone})
    assert entries_of(spec, body) == entries_of(handwritten, body)


def test_add_says_blocked(mini: MiniSite, config_file: Path) -> None:
    blocked = (SITES / "mfa-az" / "blocked.html").read_bytes()
    page = mini.set("/en/news", blocked, status=403)
    done = invoke(config_file, "sources", "add", page, "--yes")
    assert done.exit_code == 1
    assert "blocked" in done.stderr and 'render = "browser"' in done.stderr


# --- sources test: nothing stored ------------------------------------------------------------------


def db_fingerprint(url: str) -> str:
    """Every row of every table (PostgreSQL) or the file's bytes (SQLite)."""
    from sqlalchemy import MetaData, create_engine, select

    from storage.db import sqlite_file

    path = sqlite_file(url)
    if path is not None:
        return "".join(hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.parent.glob(path.name + "*")))
    engine = create_engine(url)
    meta = MetaData()
    meta.reflect(engine)
    digest = hashlib.sha256()
    with engine.connect() as conn:
        for table in meta.sorted_tables:
            for row in conn.execute(select(table).order_by(*table.primary_key.columns or table.columns)):
                digest.update(repr(tuple(row)).encode())
    engine.dispose()
    return digest.hexdigest()


def test_sources_test_stores_nothing_and_prints_json(mini: MiniSite, tmp_path: Path, db_url: str) -> None:
    from storage.db import make_engine

    feed = mini.set("/rss.xml", rss(mini.base, [("СВМДА: заседание в Астане", "Tue, 04 Feb 2025 10:00:00 GMT"),
                                                ("Погода", "Mon, 03 Feb 2025 10:00:00 GMT")], "ru"),
                    "application/rss+xml")
    config = tmp_path / "newsmon.toml"
    config.write_text(f'[storage]\nurl = "{db_url}"\n[crawl]\nfetch_articles = false\n'
                      f'[[sources]]\nid = "local"\nurl = "{feed}"\nallow_private = true\n', encoding="utf-8")
    crawled = invoke(config, "crawl")  # the database has rows of this very source
    assert crawled.exit_code == 0, crawled.output
    make_engine(db_url).dispose()
    before = db_fingerprint(db_url)
    mini.set("/rss.xml", rss(mini.base, [("СВМДА: новое заявление", "Wed, 05 Feb 2025 10:00:00 GMT")], "ru"),
             "application/rss+xml")
    done = invoke(config, "sources", "test", "local", "--format", "json")
    assert done.exit_code == 0, done.output
    report = json.loads(done.stdout)
    assert report["source"] == "local" and report["outcome"] == "ok"
    assert [(i["title"], i["organisations"], i["published_at"]) for i in report["items"]] == [
        ("СВМДА: новое заявление", ["CICA"], "2025-02-05T10:00:00+00:00")]
    assert set(report["items"][0]) == {"url", "title", "published_at", "text_length", "organisations", "matches"}
    assert report["items"][0]["matches"][0]["form"] == "СВМДА"
    assert db_fingerprint(db_url) == before


def test_sources_test_reports_the_outcome_class(mini: MiniSite, config_file: Path) -> None:
    listing = next(s for s in builtin_sources() if s.id == "mfa-az")
    page = mini.set("/en/news", b"<html><body><p>We moved things around.</p></body></html>")
    config_file.write_text(config_file.read_text() + '\n[[sources]]\nid = "moved"\nkind = "html"\n'
                           f'url = "{page}"\nallow_private = true\nfetch_articles = false\n'
                           f'[sources.selectors]\nitem = "{listing.selectors.item}"\n', encoding="utf-8")
    done = invoke(config_file, "sources", "test", "moved")
    assert done.exit_code == 1
    assert "moved: empty" in done.stdout and "nothing stored" in done.stdout
    unknown = invoke(config_file, "sources", "test", "nope")
    assert unknown.exit_code == 2 and "unknown source id 'nope'" in unknown.stderr
