"""Plain text from HTML and text normalisation: the one place that decides what "text" means."""

from __future__ import annotations

import hashlib
import html
import re
import unicodedata

from lxml import etree
from lxml import html as lxml_html

# Elements whose content is never text a reader sees.
_DROP = ("script", "style", "noscript", "template", "head", "title", "iframe", "object",
         "embed", "svg", "math", "select", "button", "form", "canvas", "audio", "video")
# Elements that start a paragraph (blank line) or a line.
_PARAGRAPH = frozenset({
    "p", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre", "ul", "ol", "dl", "table",
    "section", "article", "aside", "header", "footer", "figure", "main", "nav", "address",
    "hr", "fieldset", "details", "body", "html",
})
_LINE = frozenset({"div", "li", "tr", "dt", "dd", "caption", "figcaption", "summary",
                   "center", "legend", "option"})
_CELL = frozenset({"td", "th"})

_LINE_MARK = "\n"
_PARAGRAPH_MARK = "\n\n"
# C0/C1 controls except tab, newline and carriage return; they break XML and databases.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
# Invisible characters that only get in the way of matching: soft hyphen, zero-width space,
# word joiner, BOM. (ZWNJ/ZWJ are kept: they carry meaning in some scripts.)
_INVISIBLE = re.compile("[\u00ad\u200b\u2060\ufeff]")
_UNWANTED = re.compile(f"{_CONTROL.pattern}|{_INVISIBLE.pattern}")
_XML_DECLARATION = re.compile(r"^\s*<\?xml[^>]*>", re.IGNORECASE)
# Whitespace other than a single space or a line break (what collapses to one space).
_SPACES = re.compile(r"[^\S\n]{2,}|[^\S\n ]")
_HTML_SPACE = re.compile(r"[ \t\n\r\f]+")  # HTML whitespace only: NBSP is text
_BLANK_LINES = re.compile(r"\n{3,}")
_TAG_LIKE = re.compile(r"<[A-Za-z!/?]")
_CRUDE_TAG = re.compile(r"<[^>]*>")
_CRUDE_DROP = re.compile(r"<(script|style)\b.*?(?:</\1\s*>|$)", re.IGNORECASE | re.DOTALL)


def clean_text(s: str) -> str:
    """Normalise plain text: NFC, no controls or soft hyphens, spaces collapsed per line.

    Lines are kept; runs of blank lines become one blank line (a paragraph break).
    """
    if not s:
        return ""
    s = _UNWANTED.sub("", s.replace("\r\n", "\n").replace("\r", "\n"))
    if not unicodedata.is_normalized("NFC", s):
        s = unicodedata.normalize("NFC", s)
    if not _single_spaced(s):
        s = _SPACES.sub(" ", s)  # the class excludes "\n": spaces collapse within lines
    if " \n" in s or "\n " in s:
        s = "\n".join(line.strip(" ") for line in s.split("\n"))
    if "\n\n\n" in s:
        s = _BLANK_LINES.sub("\n\n", s)
    return s.strip()


def _single_spaced(s: str) -> bool:
    """True when ``_SPACES`` has nothing to do: no double space, and no whitespace but " " and
    "\n" (every other whitespace character is unprintable to ``str.isprintable``). The check
    is C string scans; the regular expression costs ~20 µs per kilobyte of Cyrillic."""
    return "  " not in s and all(line.isprintable() for line in s.split("\n"))


def _html_spaced(text: str) -> str:
    """HTML whitespace runs in ``text`` as one space each."""
    if "  " in text or any(c in text for c in "\t\n\r\f"):
        return _HTML_SPACE.sub(" ", text)
    return text


def html_to_text(markup: str) -> str:
    """Plain text of an HTML document or fragment.

    Block elements become line or paragraph breaks, ``<br>`` a line break, table cells
    are separated by spaces; entities are decoded; scripts, styles and comments are
    dropped. The result is normalised by :func:`clean_text`.
    """
    if not markup or not markup.strip():
        return ""
    if not _TAG_LIKE.search(markup):
        return clean_text(html.unescape(markup))
    root = _parse_html(markup)
    text = clean_text("".join(_text_parts(root))) if root is not None else ""
    # libxml2 gives up on pathological input (nesting deeper than its limit): strip crudely.
    return text or _crude_text(markup)


def _crude_text(markup: str) -> str:
    markup = _CRUDE_DROP.sub(" ", markup)
    return clean_text(html.unescape(_CRUDE_TAG.sub(" ", markup)))


def _parse_html(markup: str) -> etree._Element | None:
    markup = _CONTROL.sub("", _XML_DECLARATION.sub("", markup, count=1))
    try:
        root = lxml_html.document_fromstring(markup)
    except (etree.ParserError, ValueError):
        return None
    etree.strip_elements(root, *_DROP, etree.Comment, etree.ProcessingInstruction,
                         with_tail=False)
    return root


def _text_parts(root: etree._Element) -> list[str]:
    """Text and break markers in document order (iterative: deep trees cannot overflow)."""
    parts: list[str] = []
    last_break = False  # adjacent breaks merge into the strongest one, they never add up
    pre = 0  # inside <pre>, line breaks in text are real; elsewhere they are spaces
    for event, el in etree.iterwalk(root, events=("start", "end")):
        tag = el.tag.lower() if isinstance(el.tag, str) else ""
        if tag == "pre":
            pre += 1 if event == "start" else -1
        mark = _break_for(tag) if tag != "br" or event == "end" else ""
        if mark:
            if last_break and tag != "br":
                parts[-1] = max(parts[-1], mark, key=len)
            else:
                parts.append(mark)
            last_break = True
        text = el.text if event == "start" else el.tail
        if text:
            parts.append(text if pre > 0 else _html_spaced(text))
            last_break = False
    return parts


def _break_for(tag: str) -> str:
    if tag == "br":
        return _LINE_MARK
    if tag in _PARAGRAPH:
        return _PARAGRAPH_MARK
    if tag in _LINE:
        return _LINE_MARK
    if tag in _CELL:
        return " "
    return ""


def fold_text(s: str, *, cleaned: bool = False) -> str:
    """A comparison form of text: compatibility-normalised, case-folded, one space between words.

    :param cleaned: ``s`` is already :func:`clean_text` output (which is idempotent): not again.
    """
    s = unicodedata.normalize("NFKC", s if cleaned else clean_text(s)).casefold().replace("ё", "е")
    return " ".join(s.split())


def content_hash(title: str, text: str, *, cleaned: bool = False) -> str:
    """``"sha256:<hex>"`` of the folded title and text; equal for re-fetched identical content.
    ``cleaned``: both are :func:`clean_text` output already (the same hash, computed faster)."""
    payload = fold_text(title, cleaned=cleaned) + "\n" + fold_text(text, cleaned=cleaned)
    return "sha256:" + hashlib.sha256(payload.encode("utf-8")).hexdigest()
