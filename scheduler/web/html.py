"""Small HTML helpers: escaping, safe links, highlighted snippets and word diffs."""

from __future__ import annotations

import difflib
import html
import re
from collections.abc import Iterable, Mapping, Sequence
from urllib.parse import urlencode, urlsplit

MAX_DIFF_TOKENS = 20_000


def e(value: object) -> str:
    """Escape anything for HTML text or a quoted attribute."""
    return html.escape("" if value is None else str(value), quote=True)


def safe_url(url: str | None) -> str | None:
    """The URL if it is an absolute http(s) URL, else None (no javascript:, data:, …)."""
    if not url:
        return None
    url = url.strip()
    if any(ord(c) < 0x20 for c in url):
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    return url if parts.scheme.lower() in ("http", "https") and parts.netloc else None


def link(url: str | None, label: str) -> str:
    """An external link if the URL is http(s); otherwise the escaped URL as plain text."""
    safe = safe_url(url)
    if safe is None:
        return f'<span class="url">{e(url or label)}</span>'
    return f'<a href="{e(safe)}" rel="noopener noreferrer nofollow" target="_blank">{e(label)}</a>'


def highlight(text: str, forms: Iterable[str]) -> str:
    """Escaped text with every occurrence of the given forms wrapped in <mark>."""
    words = sorted({f for f in forms if f and f.strip()}, key=len, reverse=True)
    if not words:
        return e(text)
    pattern = re.compile("|".join(re.escape(w) for w in words), re.IGNORECASE)
    out, pos = [], 0
    for found in pattern.finditer(text):
        out.append(e(text[pos:found.start()]))
        out.append(f"<mark>{e(found.group())}</mark>")
        pos = found.end()
    out.append(e(text[pos:]))
    return "".join(out)


def query_string(params: Mapping[str, str | Sequence[str]]) -> str:
    """A URL query from non-empty parameters (lists repeat the key)."""
    pairs: list[tuple[str, str]] = []
    for key, value in params.items():
        values = [value] if isinstance(value, str) else list(value)
        pairs.extend((key, v) for v in values if v)
    return urlencode(pairs)


def word_diff(old: str, new: str) -> str:
    """Escaped HTML of ``new`` with words removed since ``old`` in <del> and added in <ins>."""
    a, b = re.findall(r"\S+|\s+", old), re.findall(r"\S+|\s+", new)
    if len(a) + len(b) > MAX_DIFF_TOKENS:
        return _line_diff(old, new)
    out = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if op == "equal":
            out.append(e("".join(a[i1:i2])))
            continue
        if op in ("delete", "replace"):
            out.append(f"<del>{e(''.join(a[i1:i2]))}</del>")
        if op in ("insert", "replace"):
            out.append(f"<ins>{e(''.join(b[j1:j2]))}</ins>")
    return "".join(out)


def _line_diff(old: str, new: str) -> str:
    lines = difflib.unified_diff(old.splitlines(), new.splitlines(), lineterm="", n=1)
    rows = []
    for line in lines:
        css = "add" if line.startswith("+") else "del" if line.startswith("-") else "ctx"
        rows.append(f'<span class="{css}">{e(line)}</span>')
    return "\n".join(rows)
