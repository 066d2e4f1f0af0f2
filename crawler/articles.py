"""Article pages to text and metadata: trafilatura on HTML we fetched, or a configured selector."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from cssselect import SelectorError
from parsel import Selector

from crawler.dates import parse_date
from crawler.items import Article
from crawler.text import clean_text, html_to_text
from crawler.urls import absolute_url

# Where pages state their publication time, most specific first.
_DATE_SELECTORS = (
    'meta[property="article:published_time"]::attr(content)',
    'meta[itemprop="datePublished"]::attr(content)',
    '[itemprop="datePublished"]::attr(datetime)',
    '[itemprop="datePublished"]::attr(content)',
    'meta[name="pubdate"]::attr(content)',
    'meta[name="publish-date"]::attr(content)',
    'meta[property="og:published_time"]::attr(content)',
    'meta[name="dc.date"]::attr(content)',
    'meta[name="DC.date.issued"]::attr(content)',
)
_TITLE_SELECTORS = (
    'meta[property="og:title"]::attr(content)',
    "h1",
    "title",
)
_CANONICAL = "//link[contains(concat(' ', normalize-space(@rel), ' '), ' canonical ')]/@href"
_MAX_JSON_LD = 200_000


def extract_article(
    html: str, *, url: str, selector: str | None = None, timezone: str = "UTC", metadata: bool = True
) -> Article:
    """Text, title, canonical URL and publication time of an article page.

    :param html: the page, already decoded (see :func:`crawler.encoding.decode_body`).
    :param url: the page's URL, for relative links.
    :param selector: a CSS selector for the body (the source's ``article_selector``);
        without one, or when it matches nothing, trafilatura finds the main text.
    :param timezone: zone for a publication time given without an offset.
    :param metadata: False for text and title only (a revisit): no canonical URL or date.
    trafilatura only ever sees the HTML given here; it never fetches anything.
    """
    page = Selector(text=html or "<html></html>", base_url=url)
    text = _selected_text(page, selector) if selector else ""
    return Article(
        text=text or _main_text(html, url),
        title=_title(page),
        canonical_url=_canonical(page, url) if metadata else None,
        published_at=_published(page, timezone) if metadata else None,
    )


def _selected_text(page: Selector, selector: str) -> str:
    try:
        found = page.css(selector).getall()
    except (SelectorError, ValueError):  # a bad selector in the configuration: use trafilatura
        return ""
    return clean_text("\n\n".join(html_to_text(part) for part in found))


def _main_text(html: str, url: str) -> str:
    if not html or not html.strip():
        return ""
    import trafilatura  # 0.2 s to import: only when an article is extracted

    text = trafilatura.extract(html, url=url, include_comments=False, include_tables=True,
                               deduplicate=False, favor_recall=True)
    if not text:
        # Short pages fall under trafilatura's size thresholds; its baseline still helps.
        _, text, _ = trafilatura.baseline(html)
    return clean_text(text or "")


def _title(page: Selector) -> str:
    for css in _TITLE_SELECTORS:
        value = page.css(css).get()
        if value:
            title = html_to_text(value) if css in ("h1", "title") else clean_text(value)
            if title:
                return title
    return ""


def _canonical(page: Selector, url: str) -> str | None:
    for href in page.xpath(_CANONICAL).getall():
        if resolved := absolute_url(url, href):
            return resolved
    return None


def _published(page: Selector, timezone: str) -> datetime | None:
    for value in _date_candidates(page):
        if parsed := parse_date(value, timezone=timezone):
            return parsed
    return None


def _date_candidates(page: Selector) -> Iterator[str]:
    for css in _DATE_SELECTORS:
        yield from page.css(css).getall()
    for script in page.css('script[type="application/ld+json"]::text').getall():
        if len(script) <= _MAX_JSON_LD:
            yield from _json_ld_dates(script)


def _json_ld_dates(script: str) -> Iterator[str]:
    try:
        doc = json.loads(script)
    except ValueError:
        return
    stack: list[Any] = [doc]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(reversed(node))
        elif isinstance(node, dict):
            value = node.get("datePublished")
            if isinstance(value, str):
                yield value
            graph = node.get("@graph")
            if isinstance(graph, list):
                stack.extend(reversed(graph))
