"""Bytes of an HTML or JSON body to text: override, BOM, HTTP charset, meta, then detection."""

from __future__ import annotations

import codecs

from w3lib.encoding import (
    html_body_declared_encoding,
    http_content_type_encoding,
    read_bom,
    resolve_encoding,
    to_unicode,
)

# Detection looks at this much of the body; enough for chardet, cheap on big pages.
_DETECT_BYTES = 64 * 1024
_UTF8 = "utf-8"


def decode_body(body: bytes, *, content_type: str | None, override: str | None = None) -> str:
    """Text of an HTML/JSON body.

    Order: ``override`` (a source's configured encoding), byte-order mark, the HTTP
    header's charset, ``<meta charset>``/http-equiv (not for JSON), then detection.
    A declared charset that the bytes contradict is not trusted: "utf-8" on bytes that
    are not UTF-8, or a legacy single-byte charset on bytes that are valid multi-byte
    UTF-8, falls through to detection. Undecodable bytes become U+FFFD.
    """
    return to_unicode(body_without_bom(body), body_encoding(body, content_type=content_type,
                                                           override=override))


def body_encoding(body: bytes, *, content_type: str | None, override: str | None = None) -> str:
    """The Python codec name :func:`decode_body` uses for ``body``."""
    if override and (enc := _codec(override)):
        return enc
    bom_encoding, _ = read_bom(body)
    if bom_encoding:
        return bom_encoding
    declared = [http_content_type_encoding(content_type or "")]
    if not _is_json(content_type):
        declared.append(html_body_declared_encoding(body))
    for name in declared:
        enc = _codec(name) if name else None
        if enc and _plausible(body, enc):
            return enc
    return detect_encoding(body)


def body_without_bom(body: bytes) -> bytes:
    _, bom = read_bom(body)
    return body[len(bom):] if bom else body


def detect_encoding(body: bytes) -> str:
    """Best guess for undeclared bytes: ASCII/UTF-8 if valid, else chardet's answer."""
    sample = body[:_DETECT_BYTES]
    if _is_utf8(sample):
        return _UTF8
    import chardet  # only needed for legacy pages

    guess = chardet.detect(sample)
    name = guess.get("encoding")
    enc = _codec(name) if name else None
    return enc or "windows-1252"


def _plausible(body: bytes, enc: str) -> bool:
    sample = body[:_DETECT_BYTES]
    if enc == _UTF8:
        return _is_utf8(sample)
    if enc in ("utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be"):
        return True
    # A legacy charset on text that is valid UTF-8 with non-ASCII bytes: the declaration lies.
    return not (_has_non_ascii(sample) and _is_utf8(sample))


def _is_utf8(sample: bytes) -> bool:
    try:
        sample.decode(_UTF8)
    except UnicodeDecodeError as exc:
        # A multi-byte character cut at the end of the sample is fine.
        return exc.start >= len(sample) - 3 and exc.reason == "unexpected end of data"
    return True


def _has_non_ascii(sample: bytes) -> bool:
    return not sample.isascii()


def _codec(name: str) -> str | None:
    """Canonical Python codec name for a charset label (w3lib's browser-like aliases)."""
    resolved = resolve_encoding(name.strip().strip("\"'"))
    if not resolved:
        return None
    try:
        return codecs.lookup(resolved).name
    except LookupError:
        return None


def _is_json(content_type: str | None) -> bool:
    return content_type is not None and "json" in content_type.lower()
