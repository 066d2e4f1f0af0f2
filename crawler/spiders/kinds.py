"""Per source kind: how a fetched body becomes entries (thin adapters over the pure parsers),
and the bytes of a document kept as an entry's raw snapshot."""

from __future__ import annotations

import re

from crawler.encoding import decode_body
from crawler.feeds import parse_feed
from crawler.items import Entry, ParseResult
from crawler.listings import parse_json_api, parse_listing, parse_sitemap, parse_telegram
from crawler.sources import SourceSpec

# An entry's own bytes in its feed are kept with it, at most this many.
MAX_FRAGMENT = 64 * 1024
# Without a locatable entry, the head of its document is kept, at most this many.
MAX_DOCUMENT_HEAD = 16 * 1024
_ENTRY_OPEN = re.compile(rb"<(?:\w+:)?(?:item|entry)[\s>]")
_ENTRY_CLOSE = re.compile(rb"</(?:\w+:)?(?:item|entry)\s*>")


def parse_document(spec: SourceSpec, body: bytes, *, url: str, content_type: str | None) -> ParseResult:
    """Entries of a source's document (a feed, listing page, sitemap, channel page or JSON)."""
    if spec.kind == "feed":
        if spec.encoding:
            content_type = f"{(content_type or 'application/xml').split(';')[0]}; charset={spec.encoding}"
        return parse_feed(body, url=url, content_type=content_type, timezone=spec.timezone,
                          language=spec.language)
    if spec.kind == "sitemap":
        return _with_language(parse_sitemap(body, url=url), spec.language)
    if spec.kind == "json":
        assert spec.fields is not None
        return _with_language(parse_json_api(body, url=url, fields=spec.fields,
                                             timezone=spec.timezone, date_format=spec.date_format),
                              spec.language)
    html = decode_body(body, content_type=content_type, override=spec.encoding)
    if spec.kind == "telegram":
        return _with_language(parse_telegram(html, url=url), spec.language)
    assert spec.selectors is not None
    return parse_listing(html, url=url, selectors=spec.selectors, timezone=spec.timezone,
                         date_format=spec.date_format, language=spec.language)


def _with_language(result: ParseResult, language: str | None) -> ParseResult:
    if language:
        for entry in result.entries:
            entry.language = entry.language or language
    return result


def is_empty_listing(result: ParseResult) -> bool:
    """The parser found no items in a listing (a routine outcome, judged by the poll)."""
    return not result.entries and result.error is not None and result.error.startswith("empty")


def entry_fragment(body: bytes, entry: Entry) -> bytes:
    """The bytes of ``entry``'s own ``<item>``/``<entry>`` in a feed, else the document's head."""
    for needle in (entry.guid, entry.url):
        if not needle:
            continue
        at = body.find(needle.encode("utf-8", "replace").replace(b"&", b"&amp;"))
        if at < 0:
            at = body.find(needle.encode("utf-8", "replace"))
        if at < 0:
            continue
        start = _last_open(body, at)
        close = _ENTRY_CLOSE.search(body, at)
        if start is not None and close is not None and close.end() - start <= MAX_FRAGMENT:
            return body[start:close.end()]
    return body[:MAX_DOCUMENT_HEAD]


def _last_open(body: bytes, before: int) -> int | None:
    """Start of the last entry tag before ``before`` (within MAX_FRAGMENT). A nearby window is
    tried first: a tag cannot contain "<", so its last match is the whole window's."""
    for size in (4096, MAX_FRAGMENT):
        last = None
        for m in _ENTRY_OPEN.finditer(body, max(0, before - size), before):
            last = m.start()
        if last is not None or size >= before:
            return last
    return None
