"""WARC export on SQLite and PostgreSQL: each stored version's raw response reads back with warcio."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from urllib.parse import unquote

import pytest
from warcio.archiveiterator import ArchiveIterator

from storage.repository import ItemWrite, SourceRow, sync_sources
from storage.transfer import export_warc
from storage.writes import save_item

NOW = datetime(2025, 2, 4, 12, 0, tzinfo=UTC)
PAGE_V1 = "<html><head><meta charset=windows-1251></head><body>Встреча в рамках СВМДА</body></html>"
PAGE_V2 = PAGE_V1.replace("СВМДА", "СВМДА и ШОС")
FEED = b'<?xml version="1.0"?><rss version="2.0"><channel><title>t</title></channel></rss>\r\n\x00\xff'


def write(n: int, raw: bytes, *, at: datetime = NOW, text: str = "", **overrides: object) -> ItemWrite:
    url = f"https://mid.ru/ru/news/{n}/"
    values: dict[str, object] = {
        "source_id": "mid-ru", "url": url + "?utm_source=tg", "canonical_url": url,
        "title": f"Новость {n}", "text": text or f"Текст {n}", "content_hash": f"sha256:{n}-{text}",
        "fetched_at": at, "raw": raw, "raw_url": url + "?utm_source=tg", "raw_status": 200,
        "raw_headers": {"Content-Type": "text/html; charset=windows-1251", "ETag": f'"v{n}"',
                        "Content-Length": "999", "Content-Encoding": "gzip"},
    }
    values.update(overrides)
    return ItemWrite(**values)  # type: ignore[arg-type]


@pytest.fixture
def factory(session_factory):
    with session_factory.begin() as session:
        sync_sources(session, [SourceRow("mid-ru", "feed", "https://mid.ru/ru/rss.php")], NOW)
        save_item(session, write(1, PAGE_V1.encode("cp1251")))
        save_item(session, write(1, PAGE_V2.encode("cp1251"), at=NOW + timedelta(hours=1), text="v2"))
        save_item(session, write(2, b""))  # nothing fetched raw: no record
        save_item(session, write(3, FEED, raw_status=404, raw_url=None,
                                 raw_headers={"Content-Type": "application/rss+xml",
                                              "X-Note": "Новости МИД"}))
    return session_factory


def records(factory, since_id: int = 0) -> tuple[int, list]:
    out = io.BytesIO()
    with factory() as session:
        written = export_warc(session, out, since_id=since_id)
    out.seek(0)
    found = []
    for record in ArchiveIterator(out, check_digests="raise"):  # block and payload digests hold
        if record.rec_type == "response":
            found.append((record.rec_headers, record.http_headers, record.content_stream().read()))
    return written, found


def test_one_response_record_per_raw_version(factory):
    written, found = records(factory)
    assert written == len(found) == 3
    uris = [h.get_header("WARC-Target-URI") for h, _, _ in found]
    # the URL fetched, else the item URL as published
    assert uris == ["https://mid.ru/ru/news/1/?utm_source=tg"] * 2 + ["https://mid.ru/ru/news/3/?utm_source=tg"]
    bodies = [body for _, _, body in found]
    assert bodies == [PAGE_V1.encode("cp1251"), PAGE_V2.encode("cp1251"), FEED]


def test_records_carry_status_headers_and_dates(factory):
    _, found = records(factory)
    (first, http1, _), (second, _, _), (_, http3, _) = found
    assert http1.get_statuscode() == "200" and http1.protocol == "HTTP/1.1"
    assert http1.get_header("Content-Type") == "text/html; charset=windows-1251"
    assert http1.get_header("ETag") == '"v1"'
    assert http1.get_header("Content-Encoding") is None  # the stored body is decoded
    assert http1.get_header("Content-Length") in (None, str(len(PAGE_V1.encode("cp1251"))))
    assert http3.statusline == "404 Not Found"
    assert http3.get_header("Content-Type") == "application/rss+xml"
    assert unquote(http3.get_header("X-Note")) == "Новости МИД"  # warcio percent-encodes non-ASCII
    assert first.get_header("WARC-Date") == "2025-02-04T12:00:00Z"
    assert second.get_header("WARC-Date") == "2025-02-04T13:00:00Z"
    assert first.get_header("WARC-Type") == "response"
    assert first.get_header("Content-Type") == "application/http; msgtype=response"
    assert first.get_header("WARC-Payload-Digest", "").startswith("sha1:")


def test_since_id_exports_later_items_only(factory):
    written, found = records(factory, since_id=2)
    assert written == 1 and found[0][2] == FEED


def test_empty_database_writes_an_empty_archive(session_factory):
    written, found = records(session_factory)
    assert written == 0 and found == []
