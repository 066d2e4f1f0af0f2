"""The web page: server-rendered bookmarkable search, item view, escaping of hostile feed text, CSP."""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import quote

import pytest
from sqlalchemy.orm import Session, sessionmaker

from tests.test_api import SAMPLE, TestClient, client_for, load, record

XSS_TITLE = "<script>alert(1)</script> СВМДА заявление"
XSS_TEXT = 'Текст <img src=x onerror=alert(1)> и <a href="javascript:alert(1)">ссылка</a> о СВМДА.'
XSS_SNIPPET = "<script>alert(2)</script> о СВМДА <img src=x onerror=alert(3)>"
HOSTILE = [
    record(10, XSS_TITLE, XSS_TEXT, source="evil<b>src", orgs=("CICA",), day=5, versions=2,
           url="javascript:alert(document.cookie)", snippet=XSS_SNIPPET),
    record(11, '"><svg onload=alert(4)>', "<iframe src=javascript:alert(5)></iframe>", orgs=("SCO",), day=5,
           url="JaVaScRiPt:alert(6)", snippet='" onmouseover="alert(7)'),
]
RAW = ["<script>alert", "<img", "<svg onload", "<iframe", 'href="javascript:', "href='javascript:",
       'href="JaVaScRiPt:', 'onmouseover="alert', "<b>src"]


@pytest.fixture
def web(session_factory: sessionmaker[Session]) -> Iterator[TestClient]:
    load(session_factory, SAMPLE + HOSTILE)
    with client_for(session_factory) as client:
        yield client


def assert_safe(html: str) -> None:
    for raw in RAW:
        assert raw.lower() not in html.lower(), raw
    assert re.findall(r"<script[^>]*>", html) == ['<script src="/static/app.js" defer>']
    assert not re.search(r"\son\w+\s*=", re.sub(r"&[a-z]+;|&#\d+;", "", _tags_only(html)))


def _tags_only(html: str) -> str:
    """The markup itself (tag names and attributes), without text content."""
    return " ".join(re.findall(r"<[^>]*>", html))


def test_csp_and_nosniff_on_every_response(web: TestClient) -> None:
    for path in ["/", "/items/1", "/api/items", "/healthz", "/static/app.js", "/nowhere", "/docs"]:
        headers = web.get(path).headers
        csp = headers["content-security-policy"]
        assert "default-src 'self'" in csp and "script-src 'self'" in csp and "object-src 'none'" in csp
        assert "frame-ancestors 'none'" in csp and "base-uri 'none'" in csp and "unsafe-inline" not in csp
        assert headers["x-content-type-options"] == "nosniff"


def test_hostile_feed_text_is_escaped_on_the_page(web: TestClient) -> None:
    html = web.get("/").text
    assert_safe(html)
    assert "&lt;script&gt;alert(1)&lt;/script&gt; <mark>СВМДА</mark>" not in html  # titles are not highlighted
    assert "&lt;script&gt;alert(1)&lt;/script&gt; СВМДА заявление" in html
    assert "&lt;script&gt;alert(2)&lt;/script&gt; о <mark>СВМДА</mark> &lt;img src=x onerror=alert(3)&gt;" in html
    assert "evil&lt;b&gt;src" in html


def test_hostile_item_view_is_escaped_and_links_only_http(web: TestClient) -> None:
    items = web.get("/api/items?source=evil<b>src&source=mid-ru").json()["items"]
    assert len(items) == 3
    for item in items:
        page = web.get(f"/items/{item['id']}")
        assert page.status_code == 200
        assert_safe(page.text)
        hrefs = re.findall(r'href="([^"]*)"', page.text)
        assert all(h.startswith(("/", "https://", "http://")) for h in hrefs), hrefs
    hostile = web.get("/api/items?source=evil<b>src").json()["items"][0]
    html = web.get(f"/items/{hostile['id']}").text
    assert "javascript:alert(document.cookie)" in html  # shown as text, not as a link
    assert "&lt;img src=x onerror=alert(1)&gt;" in html


def test_search_query_is_escaped_when_echoed(web: TestClient) -> None:
    html = web.get("/?q=" + quote('"><script>alert(8)</script>') + "&org=" + quote('"><img src=x>')).text
    assert_safe(html)
    assert 'value="&quot;&gt;&lt;script&gt;alert(8)&lt;/script&gt;"' in html


def test_bookmarkable_search_renders_on_the_server(web: TestClient) -> None:
    html = web.get("/?q=" + quote("СВМДА") + "&org=CICA").text
    assert 'name="q" id="q" value="СВМДА"' in html
    assert '<option value="CICA" selected>' in html
    titles = re.findall(r'<a class="title" href="/items/\d+">([^<]*)</a>', html)
    assert titles == ["&lt;script&gt;alert(1)&lt;/script&gt; СВМДА заявление",
                      "Руденко и Мустафаев обсудили СВМДА", "СВМДА и ШОС: совместное заявление"]
    assert html.count("<mark>СВМДА</mark>") >= 3
    assert '<svg class="bars"' in html and "<rect" in html  # the mentions-per-day chart
    assert '<table class="health">' in html and "<td>tass</td>" in html


def test_default_page_lists_only_matching_items(web: TestClient) -> None:
    html = web.get("/").text
    assert "Football results" not in html and "Newest matches" in html
    assert "Football results" in web.get("/?all=1").text


def test_bad_page_parameters_answer_422_with_the_page(web: TestClient) -> None:
    response = web.get("/?since=someday&cursor=zz")
    assert response.status_code == 422
    assert "since: &#x27;someday&#x27; is not an ISO date" in response.text


def test_older_link_pages_with_the_same_search(web: TestClient) -> None:
    html = web.get("/?limit=1&org=CICA").text
    older = re.search(r'<a class="older" href="/\?([^"]*)"', html)
    assert older is not None
    query = older.group(1).replace("&amp;", "&")
    assert "org=CICA" in query and "cursor=" in query
    assert "Руденко" in web.get(f"/?{query}").text


def test_item_view_shows_versions_with_a_diff_and_story(web: TestClient) -> None:
    item = web.get("/api/items?q=Руденко").json()["items"][0]
    html = web.get(f"/items/{item['id']}").text
    assert html.count('<details class="version"') == 2
    assert "<del> (черновик 1)</del>" in html
    assert "СВМДА и ШОС: совместное заявление" in html  # the story sibling
    assert '<a href="https://example.org/news/1" rel="noopener noreferrer nofollow"' in html
