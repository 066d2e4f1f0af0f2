"""Tests for crawler.blocking: challenge pages are `blocked`, ordinary errors are not."""

from __future__ import annotations

import pytest

from crawler.blocking import detect_block

HTML = {"Content-Type": "text/html; charset=utf-8"}
CF_CHALLENGE = (b"<!DOCTYPE html><html><head><title>Just a moment...</title></head><body>"
                b"<script>window._cf_chl_opt={cType:'managed'};</script></body></html>")
ARTICLE = (b"<html><head><title>News</title></head><body><article>" + b"<p>Real article text.</p>" * 3000 +
           b"<p>Protected by DDoS-Guard; comment form uses g-recaptcha.</p></article></body></html>")


@pytest.mark.parametrize(
    ("status", "headers", "body", "expect"),
    [
        (503, {"Server": "cloudflare", **HTML}, CF_CHALLENGE, "html"),
        (403, {"Server": "cloudflare", **HTML}, CF_CHALLENGE, "feed"),
        (200, {}, CF_CHALLENGE, "feed"),
        (403, {"Server": "cloudflare", **HTML},
         b"<html><head><title>Attention Required! | Cloudflare</title></head><body>blocked</body></html>", "html"),
        (403, {"server": "cloudflare", **HTML}, b"<html><body>Error 1020</body></html>", "html"),
        (403, {"cf-mitigated": "challenge", **HTML}, b"<html></html>", "json"),
        (200, HTML, b"<html><body>Data processing... Please, wait.</body></html>", "feed"),
        (200, {}, b"<html><head><script>window['bobcmn'] = 'x';</script></head><body></body></html>", "feed"),
        (403, {"Server": "StormWall", **HTML}, b"<html><body><h1>403 Forbidden</h1></body></html>", "feed"),
        (200, HTML, b"<html><head><title>StormWall</title></head><body>checking</body></html>", "html"),
        (403, {"Server": "ddos-guard", **HTML}, b"<html><body>DDoS-Guard</body></html>", "html"),
        (200, HTML, b"<html><head><title>DDoS-Guard</title></head><body></body></html>", "telegram"),
        (403, HTML, b"<html><body>Forbidden</body></html>", "feed"),
        (401, HTML, b"<html><body>Authorization Required</body></html>", "json"),
        (429, HTML, b"<html><body>Too many requests</body></html>", "sitemap"),
        (200, HTML, b"<html><head><script>document.cookie='t=1';location.reload();</script></head><body></body></html>",
         "feed"),
    ],
)
def test_blocked(status: int, headers: dict[str, str], body: bytes, expect: str) -> None:
    assert detect_block(status, headers, body, expect=expect)


@pytest.mark.parametrize(
    ("status", "headers", "body", "expect"),
    [
        (404, HTML, b"<html><body><h1>Not Found</h1></body></html>", "html"),
        (404, HTML, b"<html><body><h1>Not Found</h1></body></html>", "feed"),
        (500, HTML, b"<html><body><h1>Internal Server Error</h1></body></html>", "feed"),
        (502, {"Server": "cloudflare", **HTML}, b"<html><body>Bad gateway</body></html>", "html"),
        (200, {"Content-Type": "application/rss+xml"}, b"<rss version='2.0'><channel/></rss>", "feed"),
        (200, HTML, b"<html><body><h1>Home</h1><ul><li><a href='/1'>News one</a></li></ul>" + b"text " * 100 +
         b"</body></html>", "feed"),
        (200, HTML, ARTICLE, "html"),
        (403, {"Content-Type": "application/json"}, b'{"error": "forbidden"}', "json"),
        (403, HTML, b"<html><body>Forbidden</body></html>", "html"),
        (200, {"Server": "cloudflare", **HTML}, b"<html><body>normal page</body></html>", "html"),
    ],
)
def test_not_blocked(status: int, headers: dict[str, str], body: bytes, expect: str) -> None:
    assert detect_block(status, headers, body, expect=expect) is None
