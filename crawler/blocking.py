"""Anti-bot and challenge pages (Cloudflare, F5 "bobcmn", StormWall, DDoS-Guard, mid.ru's WAF)."""

from __future__ import annotations

import re
from collections.abc import Mapping

# Kinds whose URLs should never answer with a web page for people.
_MACHINE_KINDS = frozenset({"feed", "json", "sitemap"})
_SNIFF_BYTES = 64 * 1024
# A challenge page is small; a real article page that mentions one of these words is not.
_SMALL_PAGE = 32 * 1024

# Markers that only challenge/interstitial pages carry, anywhere in the first 64 KiB.
_STRONG_MARKERS: tuple[tuple[str, str], ...] = (
    ("window._cf_chl_opt", "Cloudflare challenge"),
    ("data processing... please, wait.", "mid.ru WAF interstitial (Data processing... Please, wait.)"),
    ("window['bobcmn']", "F5 TSPD JavaScript challenge (window['bobcmn'])"),
    ('window["bobcmn"]', "F5 TSPD JavaScript challenge (window['bobcmn'])"),
)
# Markers trusted in a small page or in its <title> only: ordinary pages of protected sites
# carry some of them too (Cloudflare injects challenge-platform scripts, comment forms use
# CAPTCHAs, footers credit DDoS protection).
_WEAK_MARKERS: tuple[tuple[str, str], ...] = (
    ("just a moment...", "Cloudflare challenge (Just a moment...)"),
    ("attention required! | cloudflare", "Cloudflare block (Attention Required)"),
    ("cf_chl_", "Cloudflare challenge"),
    ("cf-chl-", "Cloudflare challenge"),
    ("/cdn-cgi/challenge-platform/", "Cloudflare challenge"),
    ("checking your browser", "JavaScript browser check"),
    ("please enable javascript and cookies", "JavaScript browser check"),
    ("enable javascript and cookies to continue", "JavaScript browser check"),
    ("please wait while we verify", "JavaScript browser check"),
    ("ddos-guard", "DDoS-Guard challenge"),
    ("/__ddg", "DDoS-Guard challenge"),
    ("stormwall", "StormWall challenge"),
    ("please, wait", "JavaScript interstitial (Please, wait)"),
    ("g-recaptcha", "CAPTCHA page"),
    ("h-captcha", "CAPTCHA page"),
    ("smartcaptcha", "CAPTCHA page"),
    ("access denied", "access denied page"),
)
_TITLE = re.compile(r"<title[^>]*>(.*?)</title", re.IGNORECASE | re.DOTALL)
_HTML = re.compile(r"^\s*(?:<!--.*?-->\s*)*<(?:!doctype\s+html|html|head|body|script|meta)\b",
                   re.IGNORECASE | re.DOTALL)
_TAGS = re.compile(r"<script\b.*?</script\s*>|<style\b.*?</style\s*>|<[^>]+>",
                   re.IGNORECASE | re.DOTALL)
_JS_REDIRECT = re.compile(r"location(?:\.href|\.replace|\.assign)?\s*[=(]|document\.cookie|"
                          r"http-equiv=[\"']?refresh", re.IGNORECASE)


def detect_block(status: int, headers: Mapping[str, str], body: bytes, *, expect: str) -> str | None:
    """A short reason when the response is an anti-bot or challenge page, else None.

    :param status: the HTTP status.
    :param headers: response headers (any case; values as text).
    :param body: the (decompressed) body.
    :param expect: what the URL should serve: "feed", "html", "json", "sitemap" or "telegram".

    Ordinary 404/500 responses, and ordinary HTML where a feed was expected, are not
    blocks (they are HTTP and parse errors).
    """
    lower = {str(k).lower(): str(v).lower() for k, v in headers.items()}
    text = body[:_SNIFF_BYTES].decode("utf-8", "replace").lower()
    is_html = "html" in lower.get("content-type", "") or bool(_HTML.match(text))
    server = lower.get("server", "")
    if lower.get("cf-mitigated") == "challenge":
        return "Cloudflare challenge (cf-mitigated)"
    if reason := _marker(text, len(body)):
        return reason
    if "cloudflare" in server and status in (403, 503) and is_html:
        return f"Cloudflare {status} page"
    if "ddos-guard" in server and status in (403, 503) and is_html:
        return f"DDoS-Guard {status} page"
    if "stormwall" in server and status in (403, 503) and is_html:
        return f"StormWall {status} page"
    if expect in _MACHINE_KINDS and is_html:
        if status in (401, 403, 429):
            return f"HTTP {status} with an HTML page where a {expect} was expected"
        if 200 <= status < 300 and _looks_like_challenge(text, len(body)):
            return f"JavaScript challenge page where a {expect} was expected"
    return None


def _marker(text: str, size: int) -> str | None:
    for needle, reason in _STRONG_MARKERS:
        if needle in text:
            return reason
    title = m.group(1).strip() if (m := _TITLE.search(text)) else ""
    small = size <= _SMALL_PAGE
    for needle, reason in _WEAK_MARKERS:
        if needle in title or (small and needle in text):
            return reason
    return None


def _looks_like_challenge(text: str, size: int) -> bool:
    """A small scripted page with next to no visible text that redirects or sets cookies."""
    if size > _SMALL_PAGE or "<script" not in text:
        return False
    visible = " ".join(_TAGS.sub(" ", text).split())
    return len(visible) < 200 and bool(_JS_REDIRECT.search(text))
