"""URL identity and safety: canonical form for deduplication, absolute http(s) links."""

from __future__ import annotations

import re
from urllib.parse import urljoin, urlsplit, urlunsplit

from w3lib.url import canonicalize_url, url_query_cleaner

HTTP_SCHEMES = frozenset({"http", "https"})
DEFAULT_PORTS = {"http": 80, "https": 443}
# Tracking parameters dropped from the query (exact names, compared case-insensitively).
TRACKING_PARAMETERS = frozenset({
    "fbclid", "gclid", "gclsrc", "dclid", "gbraid", "wbraid", "msclkid", "yclid", "ysclid",
    "_openstat", "mc_cid", "mc_eid", "igshid", "igsh", "_ga", "_gl", "_hsenc", "_hsmi",
    "mkt_tok", "oly_anon_id", "oly_enc_id", "vero_id", "wickedid", "twclid", "ttclid",
    "s_cid", "rb_clickid", "ref_src",
})
# Tracking parameters dropped by prefix.
TRACKING_PREFIXES = ("utm_", "pk_", "piwik_", "mtm_", "hsa_")
# Whitespace and controls that browsers strip from hrefs.
_HREF_JUNK = re.compile(r"[\x00-\x20\x7f]+")


def is_http_url(url: str | None) -> bool:
    """True for an absolute http(s) URL with a host."""
    if not url or not isinstance(url, str):
        return False
    try:
        parts = urlsplit(url.strip())
        return parts.scheme.lower() in HTTP_SCHEMES and bool(parts.hostname)
    except ValueError:
        return False


def absolute_url(base: str, href: str | None) -> str | None:
    """``href`` resolved against ``base``; None unless the result is an http(s) URL.

    ``javascript:``, ``mailto:``, ``data:``, ``file:`` and other schemes give None.
    """
    if not href or not isinstance(href, str):
        return None
    href = _HREF_JUNK.sub("", href) if not href.isprintable() or " " in href.strip() else href
    href = href.strip()
    if not href:
        return None
    try:
        joined = urljoin(base, href)
    except ValueError:
        return None
    return joined if is_http_url(joined) else None


def canonical_url(url: str) -> str:
    """The identity form of a URL for deduplication.

    Lower-cased scheme and host (IDN hosts in punycode), default port dropped, fragment
    dropped, dot segments resolved, tracking parameters (``utm_*``, ``fbclid``, ``gclid``,
    ``yclid``, …) dropped, remaining query parameters sorted, percent-encoding normalised.
    A string that is not an http(s) URL is returned stripped, unchanged otherwise.
    """
    url = url.strip()
    if not is_http_url(url):
        return url
    try:
        cleaned = url_query_cleaner(url, _tracking_names(url), remove=True, keep_fragments=False)
        canonical = canonicalize_url(cleaned, keep_fragments=False)
        return _without_default_port(_resolved_path(canonical))
    except ValueError:
        return url


def _tracking_names(url: str) -> list[str]:
    """The names in ``url``'s query that are tracking parameters (w3lib takes exact names)."""
    names = []
    for pair in urlsplit(url).query.split("&"):
        name = pair.split("=", 1)[0]
        low = name.lower()
        if low in TRACKING_PARAMETERS or low.startswith(TRACKING_PREFIXES):
            names.append(name)
    return names


def _resolved_path(url: str) -> str:
    parts = urlsplit(url)
    if "/." not in parts.path:
        return url
    path = urljoin("http://h" + "/", parts.path.lstrip("/"))[len("http://h"):]
    return urlunsplit(parts._replace(path=path))


def _without_default_port(url: str) -> str:
    parts = urlsplit(url)
    if parts.port is None or parts.port != DEFAULT_PORTS.get(parts.scheme):
        return url
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@{host}" if userinfo else host
    return urlunsplit(parts._replace(netloc=netloc))
