"""Tests for crawler.listings: HTML listings, sitemaps, Telegram previews and JSON APIs."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from crawler.listings import first_line, parse_json_api, parse_listing, parse_sitemap, parse_telegram
from crawler.sources import JsonFields, Selectors

FAULTS = Path(__file__).parent / "data" / "faults"
SITES = Path(__file__).parent / "data" / "sites"
MID_LISTING = """<ul class="announce announce_articles">
  <li class="announce__item">
    <span class="announce__date">04.02.2025</span> <span class="announce__time">14:30</span>
    <a class="announce__link" href="/ru/foreign_policy/news/1990001/">О встрече А.Ю.Руденко
      с Послом <b>Азербайджана</b></a>
  </li>
  <li class="announce__item"><a class="announce__link" href="javascript:void(0)">bad</a></li>
  <li class="announce__item"><span class="announce__date">junk</span>
    <a class="announce__link" href="/ru/foreign_policy/news/1990002/">Второй</a></li>
</ul><div class="pagination"><a class="next" href="?PAGEN_1=2">Далее</a></div>"""
MID_SELECTORS = Selectors(item="li.announce__item", link="a.announce__link::attr(href)",
                          title="a.announce__link",
                          date="span.announce__date::text, span.announce__time::text",
                          next="div.pagination a.next")


def test_listing_entries() -> None:
    result = parse_listing(MID_LISTING, url="https://mid.ru/ru/foreign_policy/news/",
                           selectors=MID_SELECTORS, timezone="Europe/Moscow", language="ru")
    first, second = result.entries
    assert first.url == "https://mid.ru/ru/foreign_policy/news/1990001/"
    assert first.title == "О встрече А.Ю.Руденко с Послом Азербайджана"
    assert first.published_at == datetime(2025, 2, 4, 11, 30, tzinfo=UTC)
    assert first.language == "ru"
    assert second.published_at is None
    assert result.next_page == "https://mid.ru/ru/foreign_policy/news/?PAGEN_1=2"
    assert result.warning and "skipped 1" in result.warning and result.error is None


CARDS = '<div class="card"><a href="/a/1">One</a></div>'


@pytest.mark.parametrize(("markup", "expected"), [
    ('<a class="next" rel="next" href="?page=2">Next</a>', "https://x.org/news?page=2"),
    ('<a rel="nofollow next" href="/news/2">2</a>', "https://x.org/news/2"),
    ('<a rel=" NoFollow\tNEXT " href="/news/2">2</a>', "https://x.org/news/2"),
    ('<a rel="prev" href="/news/0">0</a><a rel="next" href="/news/2">2</a>', "https://x.org/news/2"),
    ('<a rel="nextpage" href="/news/9">9</a><a class="next" href="/news/9">9</a>', None),
    ('<a rel="next">no href</a>', None),
    ('<a rel="next" href="/news">this page</a>', None),
])
def test_listing_without_next_selector_follows_rel_next(markup: str, expected: str | None) -> None:
    result = parse_listing(f"<html><body>{CARDS}{markup}</body></html>", url="https://x.org/news",
                           selectors=Selectors(item="div.card"))
    assert result.next_page == expected and result.error is None


def test_listing_link_rel_next_in_head_comes_first() -> None:
    html = ('<html><head><link rel="Next" href="/news?page=2"></head><body>'
            f'{CARDS}<a rel="next" href="/news?other=1">more</a></body></html>')
    result = parse_listing(html, url="https://x.org/news", selectors=Selectors(item="div.card"))
    assert result.next_page == "https://x.org/news?page=2"


def test_listing_next_selector_wins_over_rel_next() -> None:
    html = (f'<html><head><link rel="next" href="/rel"></head><body>{CARDS}'
            '<a rel="next" href="/rel-a">r</a><span class="more"><a href="/chosen">m</a></span>'
            "</body></html>")
    chosen = parse_listing(html, url="https://x.org/news",
                           selectors=Selectors(item="div.card", next="span.more a"))
    assert chosen.next_page == "https://x.org/chosen"
    nothing = parse_listing(html, url="https://x.org/news",
                            selectors=Selectors(item="div.card", next="nav.pager a"))
    assert nothing.next_page is None  # a configured selector that finds nothing: no next page


def test_listing_item_is_the_link_itself() -> None:
    html = ('<a class="card" href="/a"><h3>One</h3><time>13:05, 04 Февраля 2025</time></a>'
            '<a class="card" href="/a"><h3>Duplicate</h3></a>')
    selectors = Selectors(item="a.card", link="::attr(href)", title="h3::text", date="time::text")
    result = parse_listing(html, url="https://www.inform.kz/ru/lenta", selectors=selectors,
                           timezone="Asia/Almaty")
    [entry] = result.entries
    assert entry.url == "https://www.inform.kz/a" and entry.title == "One"
    assert entry.published_at == datetime(2025, 2, 4, 8, 5, tzinfo=UTC)


def test_listing_with_no_items_is_an_empty_error() -> None:
    result = parse_listing("<html><body>redesigned</body></html>", url="https://x.org/",
                           selectors=MID_SELECTORS)
    assert result.entries == [] and result.error and result.error.startswith("empty")


def test_listing_date_format() -> None:
    html = '<div class="i"><a href="/n/1">T</a><span>25 September 2025</span></div>'
    selectors = Selectors(item="div.i", date="span::text")
    [entry] = parse_listing(html, url="https://mfa.gov.az/en/news", selectors=selectors,
                            timezone="Asia/Baku", date_format="%d %B %Y").entries
    assert entry.published_at == datetime(2025, 9, 24, 20, 0, tzinfo=UTC)


def test_bad_selector_is_an_error_not_an_exception() -> None:
    result = parse_listing("<p/>", url="https://x.org/", selectors=Selectors(item="a[["))
    assert result.error and "selector" in result.error


SITEMAP = """<?xml version="1.0" encoding="UTF-8"?>
<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"
        xmlns:news="http://www.google.com/schemas/sitemap-news/0.9">
<url><loc>https://x.org/a</loc><lastmod>2025-02-01</lastmod>
 <news:news><news:publication><news:name>X</news:name><news:language>ru</news:language></news:publication>
 <news:publication_date>2025-02-04T14:30:00+03:00</news:publication_date>
 <news:title>Заголовок СВМДА</news:title></news:news></url>
<url><loc>/b</loc><lastmod>2025-02-03T10:00:00Z</lastmod></url>
<url><loc>javascript:x</loc></url>
</urlset>"""


@pytest.mark.parametrize("compress", [False, True])
def test_sitemap_urlset(compress: bool) -> None:
    body = SITEMAP.encode()
    result = parse_sitemap(gzip.compress(body) if compress else body, url="https://x.org/sitemap.xml")
    first, second = result.entries
    assert (first.url, first.title, first.language) == ("https://x.org/a", "Заголовок СВМДА", "ru")
    assert first.published_at == datetime(2025, 2, 4, 11, 30, tzinfo=UTC)
    assert second.url == "https://x.org/b"
    assert second.published_at == datetime(2025, 2, 3, 10, 0, tzinfo=UTC)


def test_sitemap_index() -> None:
    body = (b'<sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
            b"<sitemap><loc>/news-1.xml</loc></sitemap><sitemap><loc>https://x.org/news-2.xml</loc>"
            b"</sitemap></sitemapindex>")
    result = parse_sitemap(body, url="https://x.org/sitemap.xml")
    assert result.follow == ["https://x.org/news-1.xml", "https://x.org/news-2.xml"]
    assert result.entries == [] and result.error is None


@pytest.mark.parametrize("body", [b"", b"<html><body>hi</body></html>", b"\x1f\x8bnot gzip"])
def test_sitemap_errors(body: bytes) -> None:
    assert parse_sitemap(body, url="https://x.org/sitemap.xml").error


def test_sitemap_xxe(tmp_path: Path) -> None:
    sentinel = tmp_path / "sentinel.txt"
    sentinel.write_text("TOPSECRET-SITEMAP-MARKER")
    body = (FAULTS / "xxe_sitemap.xml").read_bytes().replace(b"SENTINEL_PATH", str(sentinel).encode())
    result = parse_sitemap(body, url="https://example.org/sitemap.xml")
    assert "TOPSECRET" not in repr(result)


def test_telegram_preview() -> None:
    html = (SITES / "mid-telegram-ru" / "channel.html").read_text(encoding="utf-8")
    result = parse_telegram(html, url="http://127.0.0.1:8000/s/MID_Russia")
    first, second = result.entries
    assert first.url == first.guid == "https://t.me/MID_Russia/51233"
    assert "Ранее" not in first.text  # a quoted (replied-to) post is not this post's text
    assert first.title.startswith("🇷🇺🇧🇷 Телефонный разговор")
    assert "\n\nОбсуждены" in first.text
    assert second.published_at == datetime(2025, 2, 4, 12, 40, tzinfo=UTC)
    assert "СВМДА" in second.text and len(second.title) <= 120
    assert result.next_page == "http://127.0.0.1:8000/s/MID_Russia?before=51230"


def test_telegram_page_without_posts_is_empty() -> None:
    assert parse_telegram("<html><body>Channel not found</body></html>",
                          url="https://t.me/s/none").error


def test_first_line() -> None:
    assert first_line("\n  Title line \nbody") == "Title line"
    long = first_line("word " * 60)
    assert len(long) <= 120 and long.endswith("…")


KZ_FIELDS = JsonFields(items="content", title="title", date="created_date", body="body", id="id",
                       link_template="https://www.gov.kz/memleket/entities/mfa/press/news/details/{id}?lang=ru")


def test_json_api() -> None:
    body = json.dumps({"content": [
        {"id": 1, "title": "СВМДА", "body": "<p>Текст</p>", "created_date": "2025-02-04T10:15:00.000Z"},
        {"title": "no id, no link"},
    ]}).encode()
    result = parse_json_api(body, url="https://www.gov.kz/api/news", fields=KZ_FIELDS)
    [entry] = result.entries
    assert entry.url == "https://www.gov.kz/memleket/entities/mfa/press/news/details/1?lang=ru"
    assert (entry.title, entry.text, entry.guid, entry.full_text) == ("СВМДА", "Текст", "1", True)
    assert entry.published_at == datetime(2025, 2, 4, 10, 15, tzinfo=UTC)
    assert result.warning and "skipped 1" in result.warning


def test_json_api_root_list_and_dotted_paths() -> None:
    body = json.dumps([{"data": {"url": "/n/7", "name": "T", "ts": 1738664100}}]).encode()
    fields = JsonFields(items="", link="data.url", title="data.name", date="data.ts", id="data.url")
    [entry] = parse_json_api(body, url="https://x.org/api", fields=fields).entries
    assert entry.url == "https://x.org/n/7" and entry.title == "T"
    assert entry.published_at == datetime(2025, 2, 4, 10, 15, tzinfo=UTC)
    assert entry.full_text is False


@pytest.mark.parametrize("body", [b"<html>blocked</html>", b"{not json", b'{"content": 5}', b"[]"])
def test_json_api_errors(body: bytes) -> None:
    assert parse_json_api(body, url="https://x.org/api", fields=KZ_FIELDS).error
