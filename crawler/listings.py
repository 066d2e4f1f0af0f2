"""Entries from HTML listing pages, XML sitemaps, Telegram channel previews and JSON APIs."""

from __future__ import annotations

import gzip
import io
import json
import re
import zlib
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from cssselect import SelectorError
from lxml import etree
from parsel import Selector, SelectorList

from crawler.dates import DEFAULT_LANGUAGES, parse_date
from crawler.encoding import decode_body
from crawler.items import Entry, ParseResult
from crawler.sources import JsonFields, Selectors
from crawler.text import clean_text, html_to_text
from crawler.urls import absolute_url

MAX_SITEMAP_BYTES = 50 * 1024 * 1024  # the sitemap protocol's own limit, uncompressed
TITLE_LENGTH = 120
_TELEGRAM_POST = re.compile(r"^(?P<channel>[A-Za-z0-9_]{1,64})/(?P<id>\d{1,12})$")
_TELEGRAM_TEXT = (
    ".//div[contains(concat(' ', normalize-space(@class), ' '), ' tgme_widget_message_text ')]"
    "[not(ancestor::*[contains(concat(' ', normalize-space(@class), ' '),"
    " ' tgme_widget_message_reply ')])]"
)
_JSON_LIST_KEYS = ("content", "data", "items", "results", "news", "list")
_PSEUDO = re.compile(r"::(?:text|attr\([^)]*\))\s*$")
# rel is a space-separated, case-insensitive token list (rel="nofollow next", rel="Next");
# <link> (in the head) is tried before <a>.
_REL_TOKEN = ("contains(concat(' ', translate(normalize-space(@rel), 'ABCDEFGHIJKLMNOPQRSTUVWXYZ',"
              " 'abcdefghijklmnopqrstuvwxyz'), ' '), ' next ')")
_REL_NEXT = (f"//link[@href][{_REL_TOKEN}]", f"//a[@href][{_REL_TOKEN}]")


def parse_listing(
    html: str,
    *,
    url: str,
    selectors: Selectors,
    timezone: str = "UTC",
    date_format: str | None = None,
    language: str | None = None,
) -> ParseResult:
    """Entries of a listing page read with the source's CSS selectors (parsel/Scrapy syntax).

    A selector ending in ``::text`` or ``::attr(name)`` gives strings (joined with
    spaces); one that selects elements gives their plain text (for ``link``/``next``:
    their ``href``). Without a ``next`` selector, ``next_page`` is the page's
    ``<link rel="next">`` or ``<a rel="next">`` (rel tokens, any case). Items without an
    http(s) link are skipped; no item at all is an ``empty`` error, because a listing
    that yields nothing has changed or is blocked.
    """
    page = Selector(text=html or "<html></html>", base_url=url)
    entries: list[Entry] = []
    skipped = 0
    seen: set[str] = set()
    try:
        for item in page.css(selectors.item):
            entry = _listing_entry(item, url, selectors, timezone, date_format, language)
            if entry is None:
                skipped += 1
            elif entry.url not in seen:
                seen.add(entry.url)
                entries.append(entry)
        next_page = _next_page(page, url, selectors.next)
    except (SelectorError, ValueError) as exc:  # a bad selector in the configuration
        return ParseResult(error=f"bad selector: {exc}")
    result = ParseResult(entries=entries, next_page=next_page)
    if not entries:
        result.error = f"empty: no item with a link matches {selectors.item!r}"
    elif skipped:
        result.warning = f"skipped {skipped} items without an http(s) link"
    return result


def _listing_entry(item: Selector, base: str, selectors: Selectors, timezone: str,
                   date_format: str | None, language: str | None) -> Entry | None:
    link = absolute_url(base, _first_link(item.css(selectors.link)))
    if link is None:
        return None
    date_text = _joined(item, selectors.date)
    return Entry(
        url=link,
        title=_joined(item, selectors.title),
        text=_joined(item, selectors.summary),
        published_at=parse_date(date_text, timezone=timezone, date_format=date_format,
                                languages=_languages(language)) if date_text else None,
        language=language,
    )


def _languages(language: str | None) -> list[str] | None:
    """The source's language first, then the default set (listings mix languages)."""
    return list(dict.fromkeys([language, *DEFAULT_LANGUAGES])) if language else None


def _joined(item: Selector, css: str | None) -> str:
    """Clean text of what ``css`` selects in ``item``: strings joined, elements as text."""
    if not css:
        return ""
    found = item.css(css)
    if _PSEUDO.search(css):
        return clean_text(" ".join(s.strip() for s in found.getall() if s.strip()))
    return clean_text(" ".join(html_to_text(s) for s in found.getall()))


def _first_link(found: SelectorList[Selector]) -> str | None:
    for node in found:
        value: str = node.get()  # parsel's get() is typed Any: it is a str on an HTML page
        if isinstance(node.root, str):
            return value
        href = node.attrib.get("href")
        if href:
            return href
    return None


def _next_page(page: Selector, url: str, css: str | None) -> str | None:
    """The next page: what the ``next`` selector picks, else the page's rel="next" link."""
    found = page.css(css) if css else (page.xpath(_REL_NEXT[0]) or page.xpath(_REL_NEXT[1]))
    nxt = absolute_url(url, _first_link(found))
    return nxt if nxt and nxt != url else None


# --- sitemaps -------------------------------------------------------------------------


def parse_sitemap(body: bytes, *, url: str) -> ParseResult:
    """Entries of a (Google News) sitemap, or child sitemaps of a sitemap index in ``follow``.

    Parsed with lxml without entity resolution, DTD loading or network; gzip bodies are
    decompressed up to :data:`MAX_SITEMAP_BYTES`.
    """
    data = _gunzip(body)
    if data is None:
        return ParseResult(error="sitemap: bad or oversized gzip body")
    root = _xml_root(data)
    if root is None:
        return ParseResult(error="not a sitemap: not XML")
    kind = _local(root.tag)
    if kind == "sitemapindex":
        follow = _unique(absolute_url(url, _child_text(node, "loc"))
                         for node in root if _local(node.tag) == "sitemap")
        return ParseResult(follow=follow)
    if kind != "urlset":
        return ParseResult(error=f"not a sitemap: root element <{kind}>")
    entries, seen = [], set()
    for node in root:
        if _local(node.tag) != "url":
            continue
        entry = _sitemap_entry(node, url)
        if entry is not None and entry.url not in seen:
            seen.add(entry.url)
            entries.append(entry)
    return ParseResult(entries=entries)


def _sitemap_entry(node: etree._Element, base: str) -> Entry | None:
    link = absolute_url(base, _child_text(node, "loc"))
    if link is None:
        return None
    news = next((child for child in node if _local(child.tag) == "news"), None)
    title = _child_text(news, "title") if news is not None else ""
    date = (_child_text(news, "publication_date") if news is not None else "") or \
        _child_text(node, "lastmod")
    publication = next((c for c in news if _local(c.tag) == "publication"), None) \
        if news is not None else None
    language = _child_text(publication, "language") if publication is not None else ""
    return Entry(url=link, title=clean_text(title), published_at=parse_date(date) if date
                 else None, language=language.lower() or None)


def _gunzip(body: bytes) -> bytes | None:
    if not body.startswith(b"\x1f\x8b"):
        return body
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(body)) as stream:
            data = stream.read(MAX_SITEMAP_BYTES + 1)
    except (OSError, EOFError, zlib.error):
        return None
    return data if len(data) <= MAX_SITEMAP_BYTES else None


def _xml_root(data: bytes) -> etree._Element | None:
    parser = etree.XMLParser(resolve_entities=False, load_dtd=False, no_network=True,
                             huge_tree=False, recover=True, remove_comments=True,
                             remove_pis=True)
    try:
        root = etree.fromstring(data, parser=parser)
    except (etree.XMLSyntaxError, ValueError):
        return None
    return root if root is not None and isinstance(root.tag, str) else None


def _local(tag: Any) -> str:
    return etree.QName(tag).localname if isinstance(tag, str) else ""


def _child_text(node: etree._Element | None, name: str) -> str:
    if node is None:
        return ""
    for child in node:
        if _local(child.tag) == name:
            return "".join(child.itertext()).strip()
    return ""


def _unique(urls: Iterable[str | None]) -> list[str]:
    return list(dict.fromkeys(u for u in urls if u))


# --- Telegram channel previews ----------------------------------------------------------


def parse_telegram(html: str, *, url: str) -> ParseResult:
    """Posts of a public channel's web preview (``https://t.me/s/NAME``), oldest first.

    Each post is an entry with url ``https://t.me/NAME/ID`` (its permanent link, whatever
    host served the preview), guid the same, text the post, title its first line.
    ``next_page`` is the preview of older posts (``?before=ID``).
    """
    page = Selector(text=html or "<html></html>", base_url=url)
    entries = []
    for message in page.css("div.tgme_widget_message[data-post]"):
        entry = _telegram_entry(message)
        if entry is not None:
            entries.append(entry)
    result = ParseResult(entries=entries, next_page=_telegram_older(page, url))
    if not entries:
        result.error = "empty: no channel posts in the page"
    return result


def _telegram_entry(message: Selector) -> Entry | None:
    m = _TELEGRAM_POST.match(message.attrib.get("data-post", "").strip())
    if m is None or "service_message" in message.attrib.get("class", ""):
        return None
    link = f"https://t.me/{m['channel']}/{m['id']}"
    text_node = message.xpath(_TELEGRAM_TEXT)
    text = html_to_text(text_node[0].get()) if text_node else ""
    stamp = message.css(".tgme_widget_message_date time::attr(datetime)").get() or \
        message.css("time[datetime]::attr(datetime)").get()
    return Entry(url=link, guid=link, title=first_line(text), text=text,
                 published_at=parse_date(stamp) if stamp else None)


def _telegram_older(page: Selector, url: str) -> str | None:
    before = page.css("a.tme_messages_more[data-before]::attr(data-before)").get()
    if not before or not before.isdigit():
        return None
    return absolute_url(url, f"?before={before}")


def first_line(text: str, limit: int = TITLE_LENGTH) -> str:
    """The first non-empty line of ``text``, cut at a word to at most ``limit`` characters."""
    line = next((part.strip() for part in text.split("\n") if part.strip()), "")
    if len(line) <= limit:
        return line
    cut = line[: limit - 1]
    if " " in cut[limit // 2:]:
        cut = cut[: cut.rindex(" ")]
    return cut.rstrip(" ,;:-–—") + "…"


# --- JSON APIs --------------------------------------------------------------------------


def parse_json_api(
    body: bytes,
    *,
    url: str,
    fields: JsonFields,
    timezone: str = "UTC",
    date_format: str | None = None,
) -> ParseResult:
    """Entries of a JSON API response read with the source's dotted field paths.

    ``items=""`` means the document itself is the list (or, for an object, its
    ``content``/``data``/``items``/``results`` list). The link is ``fields.link``
    resolved against ``url`` or ``fields.link_template`` formatted with the item
    (``{id}``, ``{slug}``, ``{images[0][url]}``). A body is HTML, turned to text.
    """
    text = decode_body(body, content_type="application/json")
    try:
        doc = json.loads(text)
    except ValueError:
        kind = "an HTML page" if text.lstrip()[:1] == "<" else "invalid JSON"
        return ParseResult(error=f"not JSON: {kind}")
    items = _json_items(doc, fields.items)
    if items is None:
        return ParseResult(error=f"no list at {fields.items or '(root)'!r}")
    entries, skipped = [], 0
    for item in items:
        entry = _json_entry(item, url, fields, timezone, date_format) \
            if isinstance(item, Mapping) else None
        if entry is None:
            skipped += 1
        else:
            entries.append(entry)
    result = ParseResult(entries=entries)
    if not entries:
        result.error = f"empty: no item with a link at {fields.items or '(root)'!r}"
    elif skipped:
        result.warning = f"skipped {skipped} items without a usable link"
    return result


def _json_items(doc: Any, path: str) -> list[Any] | None:
    found = json_path(doc, path) if path else doc
    if isinstance(found, list):
        return found
    if not path and isinstance(found, Mapping):
        for key in _JSON_LIST_KEYS:
            if isinstance(items := found.get(key), list):
                return items
    return None


def json_path(doc: Any, path: str) -> Any:
    """The value at a dotted path (``a.b.0.c``) or None."""
    node = doc
    for key in path.split("."):
        if isinstance(node, Mapping):
            node = node.get(key)
        elif isinstance(node, list) and key.lstrip("-").isdigit() and -len(node) <= int(key) < len(node):
            node = node[int(key)]
        else:
            return None
    return node


def _json_entry(item: Mapping[str, Any], base: str, fields: JsonFields, timezone: str,
                date_format: str | None) -> Entry | None:
    link = _json_link(item, base, fields)
    if link is None:
        return None
    body = _json_str(json_path(item, fields.body)) if fields.body else ""
    text = html_to_text(body)
    guid = json_path(item, fields.id)
    return Entry(
        url=link,
        title=html_to_text(_json_str(json_path(item, fields.title))),
        text=text,
        guid=_json_str(guid) or None,
        published_at=_json_date(json_path(item, fields.date) if fields.date else None,
                                timezone, date_format),
        full_text=bool(text),
    )


def _json_link(item: Mapping[str, Any], base: str, fields: JsonFields) -> str | None:
    if fields.link:
        return absolute_url(base, _json_str(json_path(item, fields.link)))
    try:
        formatted = (fields.link_template or "").format_map(_Missing(item))
    except (KeyError, IndexError, AttributeError, ValueError, TypeError):
        return None
    return absolute_url(base, formatted)


class _Missing(dict[str, Any]):
    """format_map mapping that fails on a missing or empty field instead of printing "None"."""

    def __missing__(self, key: str) -> Any:
        raise KeyError(key)

    def __getitem__(self, key: str) -> Any:
        value = super().__getitem__(key)
        if value is None or value == "":
            raise KeyError(key)
        return value


def _json_str(value: Any) -> str:
    if value is None or isinstance(value, dict | list):
        return ""
    return str(value)


def _json_date(value: Any, timezone: str, date_format: str | None) -> datetime | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        value = str(int(value))
    return parse_date(str(value), timezone=timezone, date_format=date_format)
