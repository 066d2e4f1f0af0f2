"""Tests for crawler.feeds: feed formats, hardening against hostile XML, and the feedparser corpus."""

from __future__ import annotations

import re
import time
from dataclasses import fields
from pathlib import Path

import pytest

from crawler.feeds import defang, parse_feed
from crawler.items import Entry, ParseResult

DATA = Path(__file__).parent / "data"
FAULTS = DATA / "faults"
CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "feedparser"
UNSAFE = re.compile(r"<script|\son\w+\s*=|javascript:", re.IGNORECASE)
HEADER = re.compile(rb"^Header:\s*([^:\r\n]+):\s*(.*?)\s*$", re.MULTILINE)
RSS = "application/rss+xml"


def strings_of(result: ParseResult) -> list[object]:
    """Every string-typed value the parser returned (entries and result fields)."""
    values: list[object] = [result.warning, result.error, result.next_page, *result.follow]
    for entry in result.entries:
        values += [getattr(entry, f.name) for f in fields(Entry)
                   if f.name not in ("published_at", "full_text")]
    return [v for v in values if v is not None]


def feed(items: str, *, head: str = "", ns: str = "") -> bytes:
    return (f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"{ns}><channel>'
            f"<title>T</title><link>https://example.org/</link>{head}{items}</channel></rss>"
            ).encode()


def test_rss_item_fields() -> None:
    body = feed("<item><title>A &amp; B</title><link>/news/1</link><guid>g-1</guid>"
                "<pubDate>Tue, 04 Feb 2025 14:30:00 +0300</pubDate>"
                "<description>&lt;p&gt;Hello &lt;b&gt;СВМДА&lt;/b&gt;&lt;/p&gt;</description></item>",
                head="<language>ru-RU</language><ttl>15</ttl>")
    result = parse_feed(body, url="https://example.org/rss.xml", content_type=RSS)
    assert result.error is None and result.warning is None
    assert result.ttl_seconds == 900
    [entry] = result.entries
    assert entry.url == "https://example.org/news/1"
    assert entry.title == "A & B"
    assert entry.text == "Hello СВМДА"
    assert entry.guid and entry.guid.endswith("g-1")
    assert entry.published_at is not None and entry.published_at.isoformat() == \
        "2025-02-04T11:30:00+00:00"
    assert entry.language == "ru"
    assert entry.full_text is False


def test_full_text_prefers_longest_content() -> None:
    body = feed("<item><title>t</title><link>https://x.org/1</link><description>short</description>"
                "<content:encoded><![CDATA[<p>Medium body</p>]]></content:encoded>"
                "<yandex:full-text>The longest full text of the article</yandex:full-text></item>",
                ns=' xmlns:yandex="http://news.yandex.ru"'
                   ' xmlns:content="http://purl.org/rss/1.0/modules/content/"')
    [entry] = parse_feed(body, url="https://x.org/rss", content_type=RSS).entries
    assert entry.text == "The longest full text of the article"
    assert entry.full_text is True


def test_atom_relative_links_and_updated_date() -> None:
    body = b"""<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom" xml:lang="en"><title>A</title><id>urn:a</id>
<updated>2025-02-04T10:15:00+03:00</updated>
<entry><title type="html">&lt;b&gt;CICA&lt;/b&gt; news</title><id>urn:e1</id>
<link rel="alternate" href="/news/1"/><updated>2025-02-04T10:15:00+03:00</updated>
<summary>Sum</summary><content type="html">&lt;p&gt;Body &lt;script&gt;x()&lt;/script&gt;&lt;/p&gt;</content></entry>
</feed>"""
    [entry] = parse_feed(body, url="https://example.org/atom.xml",
                         content_type="application/atom+xml").entries
    assert entry.url == "https://example.org/news/1"
    assert entry.title == "CICA news"
    assert entry.text == "Body" and entry.full_text
    assert entry.guid == "urn:e1" and entry.language == "en"
    assert entry.published_at is not None and entry.published_at.hour == 7


def test_rdf() -> None:
    body = b"""<?xml version="1.0"?><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"
xmlns="http://purl.org/rss/1.0/" xmlns:dc="http://purl.org/dc/elements/1.1/">
<channel rdf:about="https://x.org/"><title>R</title><link>https://x.org/</link></channel>
<item rdf:about="https://x.org/1"><title>One</title><link>https://x.org/1</link>
<dc:date>2025-02-04T10:15:00Z</dc:date></item></rdf:RDF>"""
    [entry] = parse_feed(body, url="https://x.org/rdf", content_type="application/rdf+xml").entries
    assert entry.url == "https://x.org/1" and entry.published_at is not None


def test_json_feed() -> None:
    body = (b'{"version": "https://jsonfeed.org/version/1.1", "title": "J", "items": ['
            b'{"id": "1", "url": "/p/1", "title": "CICA", "content_html": "<p>Hi<script>x</script></p>",'
            b' "date_published": "2025-02-04T10:15:00Z"},'
            b'{"id": "2", "url": "javascript:alert(1)", "content_text": "no link"}]}')
    result = parse_feed(body, url="https://x.org/feed.json", content_type="application/feed+json")
    [entry] = result.entries
    assert (entry.url, entry.text, entry.full_text) == ("https://x.org/p/1", "Hi", True)
    assert entry.published_at is not None and result.warning and "skipped 1" in result.warning


def test_timezone_applies_to_dates_without_offset() -> None:
    body = feed("<item><title>t</title><link>https://x.org/1</link>"
                "<pubDate>2025-02-04 14:30:00</pubDate></item>")
    [entry] = parse_feed(body, url="https://x.org/rss", content_type=RSS,
                         timezone="Europe/Moscow").entries
    assert entry.published_at is not None and entry.published_at.hour == 11


def test_entries_without_http_link_are_skipped_with_a_warning() -> None:
    body = feed("<item><title>a</title><link>javascript:alert(1)</link></item>"
                "<item><title>b</title><link>file:///etc/passwd</link></item>"
                "<item><title>c</title><link>https://x.org/c</link></item>")
    result = parse_feed(body, url="https://x.org/rss", content_type=RSS)
    assert [e.url for e in result.entries] == ["https://x.org/c"]
    assert result.warning and "skipped 2" in result.warning


def test_empty_wellformed_feed_is_not_an_error() -> None:
    result = parse_feed(feed(""), url="https://x.org/rss", content_type=RSS)
    assert result.entries == [] and result.error is None and result.warning is None


def test_malformed_feed_recovers_items_with_warning() -> None:
    result = parse_feed((FAULTS / "malformed_recoverable.rss").read_bytes(),
                        url="https://example.org/rss", content_type=RSS)
    assert len(result.entries) == 2 and result.error is None
    assert result.warning and "malformed" in result.warning
    assert result.entries[0].url == "https://example.org/news/1?a=1&b=2"


@pytest.mark.parametrize("body", [b"", b"   ", b"\x00\x01 garbage", b"not xml at all"])
def test_junk_is_an_error(body: bytes) -> None:
    result = parse_feed(body, url="https://x.org/rss", content_type=None)
    assert result.entries == [] and result.error


def test_html_at_feed_url_is_an_error() -> None:
    result = parse_feed((FAULTS / "html_at_feed_url.html").read_bytes(),
                        url="https://x.org/rss", content_type="text/html; charset=utf-8")
    assert result.error and "not a feed" in result.error and result.entries == []


def test_body_naming_a_local_file_is_not_opened() -> None:
    result = parse_feed(b"/etc/passwd", url="https://x.org/rss", content_type=None)
    assert result.entries == [] and "root:" not in str(strings_of(result))


@pytest.mark.parametrize("name", ["feed_cp1251_declared.rss", "feed_cp1251_undeclared.rss"])
@pytest.mark.parametrize("content_type", [None, RSS, "text/xml", "application/rss+xml; charset=utf-8"])
def test_windows_1251_feeds(name: str, content_type: str | None) -> None:
    result = parse_feed((FAULTS / name).read_bytes(), url="https://www.interfax.ru/rss.asp",
                        content_type=content_type)
    [entry] = result.entries
    assert entry.title == "Руденко обсудил с послом Азербайджана работу в СВМДА"
    assert entry.text == "Совещание по взаимодействию и мерам доверия в Азии"


def test_xxe_never_reads_local_files(tmp_path: Path) -> None:
    sentinel = tmp_path / "sentinel.txt"
    sentinel.write_text("TOPSECRET-XXE-MARKER-7f3a")
    body = (FAULTS / "xxe.rss").read_bytes().replace(b"SENTINEL_PATH", str(sentinel).encode())
    result = parse_feed(body, url="https://example.org/rss", content_type=RSS)
    assert len(result.entries) == 1
    assert not any("TOPSECRET" in str(v) for v in strings_of(result))


@pytest.mark.parametrize("name", ["billion_laughs.rss", "quadratic_blowup.rss"])
def test_entity_expansion_is_not_performed(name: str) -> None:
    body = (FAULTS / name).read_bytes()
    start = time.perf_counter()
    result = parse_feed(body, url="https://example.org/rss", content_type=RSS)
    assert time.perf_counter() - start < 1.0
    assert sum(len(str(v)) for v in strings_of(result)) < 2 * len(body)
    assert "lollol" not in str(strings_of(result)) and "AAAAAAAA" not in str(strings_of(result))


def test_doctype_hidden_behind_a_comment_is_removed() -> None:
    body = (b'<?xml version="1.0"?><!-- <rss> --><!DOCTYPE r [<!ENTITY a "' + b"B" * 5000 +
            b'">]><rss version="2.0"><channel><item><title>' + b"&a;" * 500 +
            b"</title><link>https://x.org/1</link></item></channel></rss>")
    assert b"<!ENTITY" not in defang(body)
    [entry] = parse_feed(body, url="https://x.org/rss", content_type=None).entries
    assert "BBBB" not in entry.title


def test_utf16_doctype_is_removed() -> None:
    text = ('<?xml version="1.0" encoding="utf-16"?><!DOCTYPE rss [<!ENTITY a "' + "C" * 5000 +
            '">]><rss version="2.0"><channel><item><title>' + "&a;" * 500 +
            "</title><link>https://x.org/1</link></item></channel></rss>")
    result = parse_feed(text.encode("utf-16"), url="https://x.org/rss", content_type=None)
    assert "CCCC" not in str(strings_of(result))


def test_defang_leaves_comments_and_bodies_alone() -> None:
    body = b'<!-- Expect: x == "<!DOCTYPE" --><rss><item><description><![CDATA[<!DOCTYPE]]></description></item></rss>'
    assert defang(body) == body


# --- feedparser's own test corpus (shared/corpus/feedparser), replayed -------------------------


def corpus_files() -> list[Path]:
    if not CORPUS.is_dir():
        return []
    return sorted(p for p in CORPUS.rglob("*") if p.suffix in (".xml", ".json"))


def corpus_headers(body: bytes) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in HEADER.findall(body[:4096])}


def with_links(body: bytes) -> bytes:
    """Give every item a link, so sanitisation is checked on entries (not skipped for no link)."""
    return re.sub(rb"(<(?:item|entry)\b[^>]*>)",
                  rb'\1<link rel="alternate" href="http://example.org/a"/>'
                  rb"<link>http://example.org/a</link>", body)


@pytest.mark.skipif(not CORPUS.is_dir(), reason=f"feedparser corpus not found at {CORPUS}")
def test_corpus_replay() -> None:
    """Every corpus file parses without raising; everything returned is str; sanitised text is safe."""
    files = corpus_files()
    assert len(files) > 2000
    unsafe, not_str, entries = [], [], 0
    for path in files:
        body = path.read_bytes()
        sanitize = "sanitize" in path.parts
        if sanitize:
            body = with_links(body)
        content_type = corpus_headers(body).get("content-type")
        url = f"http://127.0.0.1:8097/{path.relative_to(CORPUS).as_posix()}"
        result = parse_feed(body, url=url, content_type=content_type)
        entries += len(result.entries)
        for value in strings_of(result):
            if not isinstance(value, str):
                not_str.append((path.name, value))
            elif sanitize and UNSAFE.search(value):
                unsafe.append((path.name, value[:80]))
        for entry in result.entries:
            assert entry.url.startswith(("http://", "https://")), path
    assert not_str == []
    assert unsafe == []
    assert entries > 500
