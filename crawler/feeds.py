"""Feed bodies (RSS 0.9x/1.0/2.0, Atom, RDF, JSON Feed) to entries: the only module that imports feedparser."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import feedparser

from crawler.dates import datetime_from_struct, parse_date, parse_date_fast
from crawler.items import Entry, ParseResult
from crawler.text import clean_text, html_to_text
from crawler.urls import absolute_url, is_http_url

# One token of an XML prolog; a DOCTYPE is recognised by its start and measured separately.
_PROLOG_TOKEN = re.compile(
    rb"\s+|\xef\xbb\xbf|<\?.*?\?>|<!--.*?-->|(?P<doctype><!DOCTYPE\b)", re.S | re.I
)
# A DOCTYPE with an internal subset, aware of quoted strings and comments (which may hold "]>").
_DOCTYPE = re.compile(
    rb"<!DOCTYPE\b(?:[^\[>\"']|\"[^\"]*\"|'[^']*')*"
    rb"(?:\[(?:<!--.*?-->|[^\]\"']|\"[^\"]*\"|'[^']*')*\]\s*)?>",
    re.S | re.I,
)
_DOCTYPE_LOOSE = re.compile(rb"<!DOCTYPE\b[^\[>]*(?:\[.*?\]\s*)?>", re.S | re.I)
_FEEDPARSER_HEAD_END = re.compile(rb"<\w")
_ENTITY = re.compile(rb"<!ENTITY\b(?:[^>\"']|\"[^\"]*\"|'[^']*')*>?", re.I)
_HTML_START = re.compile(rb"^\s*(?:<!--.*?-->\s*)*<(?:!doctype\s+html|html|head|body)\b", re.I | re.S)
_UTF16_32_BOMS = (b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff")
_WIDE_STARTS = (b"\x00<\x00?", b"<\x00?\x00", b"\x00\x00\x00<", b"<\x00\x00\x00")
_DEFAULT_CONTENT_TYPE = "application/xml"
_JSON_FEED_VERSION = "https://jsonfeed.org/version/"
_FULL_TEXT_KEYS = ("full-text", "full_text", "fulltext")
_MAX_WARNING = 200


def parse_feed(
    body: bytes,
    *,
    url: str,
    content_type: str | None,
    timezone: str = "UTC",
    language: str | None = None,
) -> ParseResult:
    """Entries of a feed body.

    :param body: the response body as received (bytes, never decoded by the caller).
    :param url: the feed's URL; relative links resolve against it.
    :param content_type: the response's ``Content-Type`` header (charset matters).
    :param timezone: zone for dates given without an offset.
    :param language: the source's configured language; else the feed's own.

    A malformed feed whose entries can be recovered gives them plus ``warning``; a body
    that is not a feed gives ``error``; a well-formed feed with no items gives neither.
    """
    if not body or not body.strip():
        return ParseResult(error="empty body")
    if _looks_like_json(body, content_type):
        return _parse_json_feed(body, url=url, timezone=timezone, language=language)
    if _looks_like_html(body):
        return ParseResult(error="not a feed: an HTML page")
    parsed = feedparser.parse(
        io.BytesIO(defang(body)),  # BytesIO: feedparser never treats the body as a path or URL
        response_headers={
            "content-type": content_type or _DEFAULT_CONTENT_TYPE,
            "content-location": url,
        },
        # Every HTML value becomes plain text (html_to_text drops scripts, styles, attributes
        # and tags); nothing keeps feed HTML, so feedparser's sanitizer (~30 % of its time) and
        # its rewriting of relative URIs inside HTML (another ~15 %) are work thrown away. Entry
        # links are resolved either way. tests/test_corpus_replay.py checks the sanitizer
        # corpus stays inert.
        sanitize_html=False,
        resolve_relative_uris=False,
    )
    return _result(parsed, url=url, timezone=timezone, language=language)


def defang(data: bytes) -> bytes:
    """Drop ``<!DOCTYPE …[…]>`` from the prolog: feeds never need DTD entities (LIBRARIES.md §3.3).

    The prolog is scanned token by token (XML declaration, PIs, comments), so a DOCTYPE
    cannot hide behind a comment and text inside comments is left alone.
    """
    if data.startswith(_UTF16_32_BOMS) or data[:4] in _WIDE_STARTS:
        return _defang_wide(data)
    if b"<!" not in data:
        return data
    return _drop_head_entities(_drop_doctypes(data))


def _drop_doctypes(data: bytes) -> bytes:
    pos, cuts = 0, []
    while m := _PROLOG_TOKEN.match(data, pos):
        if m.group("doctype") is not None:
            end = _doctype_end(data, m.start())
            cuts.append((m.start(), end))
            pos = end
        else:
            pos = m.end()
    if not cuts:
        return data
    out, last = [], 0
    for start, end in cuts:
        out.append(data[last:start])
        last = end
    out.append(data[last:])
    return b"".join(out)


def _drop_head_entities(data: bytes) -> bytes:
    """Belt and braces: no ``<!ENTITY`` may remain where feedparser looks for them.

    feedparser's own DOCTYPE handling reads entity declarations from everything before the
    first ``<name`` and re-inserts "safe" ones, which its loose parser expands without limit.
    """
    m = _FEEDPARSER_HEAD_END.search(data)
    end = m.start() if m else len(data)
    if not _ENTITY.search(data, 0, end):
        return data
    return _ENTITY.sub(b"", data[:end]) + data[end:]


def _doctype_end(data: bytes, start: int) -> int:
    for pattern in (_DOCTYPE, _DOCTYPE_LOOSE):
        if m := pattern.match(data, start):
            return m.end()
    close = data.find(b">", start)
    return len(data) if close < 0 else close + 1


def _defang_wide(data: bytes) -> bytes:
    """Same for UTF-16/32 bodies: a DOCTYPE there is re-encoded, stripped, encoded back."""
    for codec in ("utf-32", "utf-16", "utf-16-be", "utf-16-le"):
        try:
            text = data.decode(codec)
        except UnicodeDecodeError:
            continue
        if "<!" not in text:
            return data
        stripped = defang(text.encode("utf-8"))
        if stripped == text.encode("utf-8"):
            return data
        return stripped.decode("utf-8").encode(codec)
    return data


def _result(parsed: Mapping[str, Any], *, url: str, timezone: str,
            language: str | None) -> ParseResult:
    feed = parsed.get("feed") or {}
    lang = language or _language(feed.get("language"))
    entries: list[Entry] = []
    skipped = 0
    for raw in parsed.get("entries") or []:
        entry = _entry(raw, url=url, timezone=timezone, language=lang)
        if entry is None:
            skipped += 1
        else:
            entries.append(entry)
    bozo = _bozo_reason(parsed)
    warnings = []
    if bozo:
        warnings.append(f"malformed feed, recovered what could be read: {bozo}")
    if skipped:
        warnings.append(f"skipped {skipped} entries without an http(s) link")
    result = ParseResult(entries=entries, ttl_seconds=_ttl_seconds(feed.get("ttl")))
    found = bool(entries) or skipped > 0
    if not found and not parsed.get("version") and not _has_feed_metadata(feed):
        result.error = f"not a feed: {bozo}" if bozo else "not a feed"
    elif warnings:
        result.warning = "; ".join(warnings)
    return result


def _entry(raw: Mapping[str, Any], *, url: str, timezone: str,
           language: str | None) -> Entry | None:
    link = _entry_link(raw, url)
    if link is None:
        return None
    text, full_text = _entry_text(raw)
    guid = raw.get("id")
    return Entry(
        url=link,
        title=_detail_text(raw.get("title"), raw.get("title_detail")),
        text=text,
        guid=str(guid) if guid else None,
        published_at=_entry_date(raw, timezone),
        language=language or _language((raw.get("title_detail") or {}).get("language")),
        full_text=full_text,
        updated=_updated(raw),
        enclosure=_enclosure(raw),
    )


def _updated(raw: Mapping[str, Any]) -> str | None:
    """The entry's own ``updated`` value (dict.get: feedparser's ``get`` falls back to
    ``published`` with a DeprecationWarning)."""
    value = dict.get(raw, "updated") if isinstance(raw, dict) else raw.get("updated")
    return str(value) if value else None


def _enclosure(raw: Mapping[str, Any]) -> str | None:
    for link in raw.get("enclosures") or []:
        if isinstance(link, Mapping) and isinstance(href := link.get("href"), str):
            return href
    return None


def _entry_link(raw: Mapping[str, Any], base: str) -> str | None:
    candidates = [raw.get("link")]
    candidates += [link.get("href") for link in raw.get("links") or []
                   if link.get("rel", "alternate") == "alternate"]
    if raw.get("guidislink") or str(raw.get("id", "")).startswith(("http://", "https://")):
        candidates.append(raw.get("id"))
    for candidate in candidates:
        if isinstance(candidate, str) and (resolved := absolute_url(base, candidate)):
            return resolved
    return None


def _entry_text(raw: Mapping[str, Any]) -> tuple[str, bool]:
    """The longest full content (content:encoded, Atom content, yandex:full-text), else the summary."""
    full = [_detail_text(c.get("value"), c) for c in raw.get("content") or []]
    full += [_detail_text(value, None) for key, value in raw.items()
             if isinstance(key, str) and key.endswith(_FULL_TEXT_KEYS)]
    full = [text for text in full if text]
    if full:
        return max(full, key=len), True
    return _detail_text(raw.get("summary"), raw.get("summary_detail")), False


def _detail_text(value: Any, detail: Mapping[str, Any] | None) -> str:
    """Plain text of a feedparser value whose ``type`` says whether it is HTML."""
    if not value:
        return ""
    value = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    kind = str((detail or {}).get("type") or "text/html")
    return html_to_text(value) if "html" in kind or "<" in value else clean_text(value)


def _entry_date(raw: Mapping[str, Any], timezone: str) -> datetime | None:
    for name in ("published", "updated", "created"):
        value = raw.get(name)
        if not value:
            continue
        # Our fast paths know the source's zone for dates without an offset; feedparser
        # assumes UTC. For anything else feedparser's parsers (many odd formats) go first.
        parsed = (parse_date_fast(value, timezone=timezone)
                  or datetime_from_struct(raw.get(f"{name}_parsed"))
                  or parse_date(value, timezone=timezone))
        if parsed is not None:
            return parsed
    return None


def _bozo_reason(parsed: Mapping[str, Any]) -> str | None:
    if not parsed.get("bozo"):
        return None
    exc = parsed.get("bozo_exception")
    reason = f"{type(exc).__name__}: {exc}" if exc is not None else "bozo"
    return reason[:_MAX_WARNING]


def _has_feed_metadata(feed: Mapping[str, Any]) -> bool:
    return bool(feed.get("title") or feed.get("link") or feed.get("subtitle"))


def _ttl_seconds(value: Any) -> float | None:
    try:
        minutes = float(str(value).strip())
    except (TypeError, ValueError):
        return None
    return minutes * 60 if 0 < minutes < 100_000 else None


def _language(value: Any) -> str | None:
    if not value or not isinstance(value, str):
        return None
    primary = value.strip().replace("_", "-").split("-")[0].lower()
    return primary if primary.isalpha() and 2 <= len(primary) <= 3 else None


def _looks_like_html(body: bytes) -> bool:
    return bool(_HTML_START.match(body[:2048]))


def _looks_like_json(body: bytes, content_type: str | None) -> bool:
    head = body.lstrip()[:1]
    return head == b"{" and (bool(content_type and "json" in content_type.lower())
                             or _JSON_FEED_VERSION.encode() in body[:4096])


def _parse_json_feed(body: bytes, *, url: str, timezone: str,
                     language: str | None) -> ParseResult:
    """JSON Feed 1.x (https://jsonfeed.org/version/1.1); feedparser 6.0 does not read it."""
    try:
        doc = json.loads(body.decode("utf-8-sig", "replace"))
    except ValueError as exc:
        return ParseResult(error=f"not a feed: invalid JSON ({exc})"[:_MAX_WARNING])
    if not isinstance(doc, dict) or not str(doc.get("version", "")).startswith(_JSON_FEED_VERSION):
        return ParseResult(error="not a feed: JSON without a JSON Feed version")
    base = absolute_url(url, doc.get("feed_url")) or url
    lang = language or _language(doc.get("language"))
    entries, skipped = [], 0
    for item in doc.get("items") or []:
        entry = _json_feed_entry(item, base, timezone, lang) if isinstance(item, dict) else None
        if entry is None:
            skipped += 1
        else:
            entries.append(entry)
    warning = f"skipped {skipped} entries without an http(s) link" if skipped else None
    return ParseResult(entries=entries, warning=warning)


def _json_feed_entry(item: Mapping[str, Any], base: str, timezone: str,
                     language: str | None) -> Entry | None:
    candidates = [item.get("url"), item.get("external_url")]
    if is_http_url(item.get("id")):  # an id is a link only when it is a whole URL
        candidates.append(item.get("id"))
    link = next((resolved for value in candidates
                 if isinstance(value, str) and (resolved := absolute_url(base, value))), None)
    if link is None:
        return None
    html = item.get("content_html")
    text_value = item.get("content_text")
    text = html_to_text(html) if isinstance(html, str) else clean_text(str(text_value or ""))
    if not text:
        text = clean_text(str(item.get("summary") or ""))
    date = item.get("date_published") or item.get("date_modified")
    guid = item.get("id")
    return Entry(
        url=link,
        title=html_to_text(str(item.get("title") or "")),
        text=text,
        guid=str(guid) if guid is not None else None,
        published_at=parse_date(date, timezone=timezone) if isinstance(date, str) else None,
        language=language or _language(item.get("language")),
        full_text=bool(html or text_value),
        updated=str(item["date_modified"]) if item.get("date_modified") else None,
    )
