"""Tests for crawler.urls: canonical identity of URLs and safe link resolution."""

from __future__ import annotations

import pytest

from crawler.urls import absolute_url, canonical_url, is_http_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("HTTP://Example.COM:80/a?b=2&a=1#frag", "http://example.com/a?a=1&b=2"),
        ("https://example.com:443/", "https://example.com/"),
        ("https://example.com:8443/x", "https://example.com:8443/x"),
        ("https://EXAMPLE.com", "https://example.com/"),
        ("https://x.org/a?utm_source=tg&utm_Medium=x&fbclid=1&gclid=2&yclid=3&id=5",
         "https://x.org/a?id=5"),
        ("https://x.org/a?_openstat=x&mc_cid=1&mc_eid=2&igshid=3", "https://x.org/a"),
        ("https://x.org/a/./b/../c", "https://x.org/a/c"),
        ("https://x.org/%7euser/a%2fb", "https://x.org/~user/a%2Fb"),
        ("https://s-cica.org/index.php?view=page&t=press_releases&id=1672",
         "https://s-cica.org/index.php?id=1672&t=press_releases&view=page"),
        ("https://пример.рф/новости", "https://xn--e1afmkfd.xn--p1ai/%D0%BD%D0%BE%D0%B2%D0%BE%D1%81%D1%82%D0%B8"),
    ],
)
def test_canonical_url(url: str, expected: str) -> None:
    assert canonical_url(url) == expected


def test_canonical_url_is_idempotent() -> None:
    url = "https://пример.рф/новости?b=1&a=Привет&utm_campaign=x"
    assert canonical_url(canonical_url(url)) == canonical_url(url)


def test_tracking_variants_collapse() -> None:
    assert canonical_url("https://tass.ru/politika/23012345?utm_source=yandex.ru#x") == \
        canonical_url("https://TASS.ru/politika/23012345")


@pytest.mark.parametrize(
    ("url", "ok"),
    [("https://a.b/", True), ("http://a.b", True), ("ftp://a.b/", False), ("file:///etc", False),
     ("javascript:alert(1)", False), ("/relative", False), ("", False), (None, False),
     ("http://", False)],
)
def test_is_http_url(url: str | None, ok: bool) -> None:
    assert is_http_url(url) is ok


@pytest.mark.parametrize(
    ("href", "expected"),
    [
        ("/ru/foreign_policy/news/1990001/", "https://mid.ru/ru/foreign_policy/news/1990001/"),
        ("1990002/", "https://mid.ru/ru/rss/1990002/"),
        ("//cdn.mid.ru/x", "https://cdn.mid.ru/x"),
        ("  https://mid.ru/a \n", "https://mid.ru/a"),
        ("javascript:alert(1)", None),
        (" java\nscript:alert(1)", None),
        ("mailto:x@mid.ru", None),
        ("file:///etc/passwd", None),
        ("data:text/html,x", None),
        ("", None),
        (None, None),
    ],
)
def test_absolute_url(href: str | None, expected: str | None) -> None:
    assert absolute_url("https://mid.ru/ru/rss/", href) == expected
