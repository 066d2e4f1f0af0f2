"""Every built-in source parses its fixture site with its own configuration and finds the CICA item."""

from __future__ import annotations

import tomllib
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from crawler.articles import extract_article
from crawler.blocking import detect_block
from crawler.catalogue import builtin_sources, catalogue_text
from crawler.encoding import decode_body
from crawler.feeds import parse_feed
from crawler.items import ParseResult
from crawler.listings import parse_json_api, parse_listing, parse_sitemap, parse_telegram
from crawler.sources import SourceSpec

SITES = Path(__file__).parent / "data" / "sites"
SOURCES = {source.id: source for source in builtin_sources()}
CICA_WORDS = ("CICA", "СВМДА", "AQEM", "Совещани", "Conference on Interaction")


def manifest(source_id: str) -> dict[str, Any]:
    return tomllib.loads((SITES / source_id / "manifest.toml").read_text(encoding="utf-8"))


def files(source_id: str, role: str) -> list[dict[str, Any]]:
    return [f for f in manifest(source_id)["files"] if f["role"] == role]


def parse_document(source: SourceSpec, doc: dict[str, Any]) -> ParseResult:
    """What a spider does with the source's document: the parser its kind names."""
    body = (SITES / source.id / doc["file"]).read_bytes()
    content_type = doc["content_type"]
    if source.kind == "feed":
        return parse_feed(body, url=source.url, content_type=content_type,
                          timezone=source.timezone, language=source.language)
    if source.kind == "json":
        assert source.fields is not None
        return parse_json_api(body, url=source.url, fields=source.fields, timezone=source.timezone,
                              date_format=source.date_format)
    if source.kind == "sitemap":
        return parse_sitemap(body, url=source.url)
    html = decode_body(body, content_type=content_type, override=source.encoding)
    if source.kind == "telegram":
        return parse_telegram(html, url=source.url)
    assert source.selectors is not None
    return parse_listing(html, url=source.url, selectors=source.selectors, timezone=source.timezone,
                         date_format=source.date_format, language=source.language)


def test_catalogue_covers_the_researched_sources() -> None:
    assert {"mid-ru", "mid-ru-en", "mfa-az", "mfa-kz", "cica", "vestnik-kavkaza-ru",
            "vestnik-kavkaza-en", "trend", "apa", "report-az", "azertac", "kazinform", "tass",
            "ria", "interfax", "mid-telegram-ru", "mid-telegram-en"} <= set(SOURCES)
    assert len(SOURCES) == len(builtin_sources())  # ids are unique
    assert catalogue_text().startswith("#")


def test_every_source_has_a_fixture_site() -> None:
    assert sorted(p.name for p in SITES.iterdir() if p.is_dir()) == sorted(SOURCES)


@pytest.mark.parametrize("source_id", sorted(SOURCES))
def test_source_parses_its_fixture(source_id: str) -> None:
    source = SOURCES[source_id]
    site = manifest(source_id)
    doc = site["files"][0]
    assert doc["url"] == source.url
    result = parse_document(source, doc)
    expect = site["expect"]
    assert result.error is None and result.warning is None
    assert len(result.entries) == expect["entries"]
    [cica] = [e for e in result.entries if e.url == expect["cica_url"]]
    assert expect["cica_title_contains"] in cica.title
    assert any(word in cica.title + " " + cica.text for word in CICA_WORDS)
    published = expect.get("cica_published_at")
    if published is None:  # the source prints no date (SOURCES.md §1.4)
        assert cica.published_at is None
    else:
        assert cica.published_at == datetime.fromisoformat(published)
        assert cica.published_at.utcoffset() is not None and cica.published_at.utcoffset().total_seconds() == 0
    for entry in result.entries:
        assert entry.url.startswith("https://")
        assert isinstance(entry.title, str) and entry.title


@pytest.mark.parametrize("source_id", sorted(SOURCES))
def test_article_page_extracts(source_id: str) -> None:
    source = SOURCES[source_id]
    [page] = files(source_id, "article")
    html = decode_body((SITES / source_id / page["file"]).read_bytes(), content_type=page["content_type"],
                       override=source.encoding)
    article = extract_article(html, url=page["url"], selector=source.article_selector,
                              timezone=source.timezone)
    assert any(word in article.text for word in CICA_WORDS), article.text[:200]
    assert article.title
    assert "©" not in article.text or source.article_selector is None


BLOCKED = [(source_id, f) for source_id in sorted(SOURCES) for f in files(source_id, "blocked")]


@pytest.mark.parametrize(("source_id", "page"), BLOCKED, ids=[f"{s}-{p['file']}" for s, p in BLOCKED])
def test_anti_bot_page_is_detected(source_id: str, page: dict[str, Any]) -> None:
    body = (SITES / source_id / page["file"]).read_bytes()
    headers = {"Content-Type": page["content_type"], **page.get("headers", {})}
    reason = detect_block(page["status"], headers, body, expect=SOURCES[source_id].kind)
    assert reason, f"{source_id}: {page['file']} not detected"
    # The same page is no feed/listing either: parsing it must not look like "0 new items, fine".
    parsed = parse_document(SOURCES[source_id], page)
    assert parsed.error or not parsed.entries


def test_sources_named_with_anti_bot_pages_have_them() -> None:
    # SOURCES.md §0: mid.ru (interstitial, bobcmn), mfa.gov.az and report.az (Cloudflare),
    # TASS (StormWall), gov.kz (token-gated API).
    assert {s for s, _ in BLOCKED} >= {"mid-ru", "mid-ru-en", "mfa-az", "report-az", "tass", "mfa-kz"}
