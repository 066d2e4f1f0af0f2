"""The fast import path: lines prepared in a worker process give the same database as lines
prepared in-process; PostgreSQL's binary tsvectors equal ``to_tsvector``; a crash inside a
chunk leaves whole chunks only, and importing the file again completes it. Both backends."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from storage.db import make_engine, make_session_factory, upgrade
from storage.import_prep import copy_binary, tsvector_binary
from storage.repository import key_of
from storage.search import fts5_terms, search_terms
from storage.transfer import Importer
from tests.plugins.db import _drop_pg_database, _new_pg_database

ROOT = Path(__file__).resolve().parents[1]
REAL = [json.loads(line)["text"] for line in
        (ROOT / "tests/data/matching/real_sentences.jsonl").read_text(encoding="utf-8").splitlines()]
NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
# words PostgreSQL's parser reads differently from the stemmer (so the server parses them)
ODD = ["foo_bar", "naïve café", "Қазақстан", "亚信会议", "v1.2", "x" * 1500, " ".join(["повтор"] * 300)]


def record(n: int, **extra: Any) -> dict[str, Any]:
    body = f"{REAL[n % len(REAL)]} {ODD[n % len(ODD)] if n % 4 == 0 else ''} номер{n}"
    versions = [{"version": 1, "title": f"Заголовок {n}", "text": body, "content_hash": "sha256:" + key_of(body),
                 "fetched_at": f"2026-11-{1 + n % 28:02d}T10:00:00+00:00"}]
    if n % 3 == 0:
        edited = body + " дополнено"
        versions.append({"version": 2, "title": f"Заголовок {n}", "text": edited,
                         "content_hash": "sha256:" + key_of(edited), "fetched_at": "2026-11-30T10:00:00+00:00"})
    url = f"https://mfa{n % 3}.example/news/{n}"
    out = {"source": f"mfa{n % 3}", "url": url + "?utm_source=rss", "canonical_url": url, "guid": f"urn:{n}",
           "language": "ru", "first_seen_at": f"2026-11-{1 + n % 28:02d}T09:00:00+00:00",
           "published_at": None if n % 5 == 0 else "2026-10-01T00:00:00+00:00", "story_id": n // 4,
           "sources": [f"mfa{n % 3}"] + (["press"] if n % 4 == 1 else []), "versions": versions,
           "matches": [{"organisation": "CICA", "alias": "СВМДА", "form": "СВМДА", "snippet": "…",
                        "start": 0, "end": 5}] if n % 2 else []}
    out.update(extra)
    return out


def lines() -> list[str]:
    out = [json.dumps(record(n), ensure_ascii=False) for n in range(40)]
    out[7] = "{not json"  # a bad line costs only itself
    out[20] = json.dumps(record(3, url="https://mfa0.example/moved/3", canonical_url="https://mfa0.example/moved/3",
                                versions=[{"version": 3, "title": "T", "text": "третья правка",
                                           "content_hash": "sha256:third"}]), ensure_ascii=False)  # GUID of line 4
    old = record(30)
    for key in ("sources", "versions"):
        del old[key]
    old.update(title="Old", text="Old export text", content_hash="sha256:old")  # before `sources`
    out[30] = json.dumps(old, ensure_ascii=False)
    out.insert(12, "")
    return out


def dump(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row the import writes, in id order."""
    engine = make_engine(url)
    tables = {"sources": "id", "stories": "id", "items": "id", "item_versions": "id", "item_sources": "id",
              "matches": "id"}
    out = {}
    with engine.connect() as conn:
        for table, order in tables.items():
            out[table] = [tuple(r) for r in conn.execute(text(f"SELECT * FROM {table} ORDER BY {order}"))]
        if engine.dialect.name == "sqlite":
            query = "SELECT rowid, terms FROM items_fts ORDER BY rowid"
        else:
            query = "SELECT item_id, terms::text FROM items_search ORDER BY item_id"
        out["search"] = [tuple(r) for r in conn.execute(text(query))]
    engine.dispose()
    return out


def run_import(url: str, data: list[str], **feed: Any) -> tuple[Importer, Any]:
    engine = make_engine(url)
    with make_session_factory(engine)() as session:
        importer = Importer(session, NOW)
        report = importer.feed(data, **feed)
    engine.dispose()
    return importer, report


@pytest.fixture
def second_url(db_url: str, tmp_path: Path, pg_template: str | None) -> Any:
    """Another migrated database of the same backend as ``db_url``."""
    if db_url.startswith("sqlite"):
        url = f"sqlite:///{tmp_path / 'second.db'}"
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        yield url
        return
    assert pg_template is not None
    url = _new_pg_database(pg_template)
    yield url
    _drop_pg_database(url)


def test_lines_prepared_in_a_worker_process_give_the_same_database(db_url: str, second_url: str) -> None:
    data = lines()
    parallel, report = run_import(db_url, data, chunk=6, parallel=True)
    serial, again = run_import(second_url, data, chunk=6, parallel=False)
    assert report == again
    assert [n for n, _ in report.errors] == [8]  # "{not json"
    assert (report.items_new, report.versions_new, report.unchanged) == (38, 52, 0)
    assert parallel.replayed == serial.replayed == 0  # every chunk took the bulk path
    first, second = dump(db_url), dump(second_url)
    assert first == second
    assert len(first["items"]) == 38 and len(first["search"]) == 38
    # importing again (through the worker) changes nothing
    _, third = run_import(db_url, data, chunk=6, parallel=True)
    assert (third.items_new, third.versions_new, third.unchanged) == (0, 0, 39)
    assert dump(db_url) == first


class _Unread(io.BufferedReader):
    """A file whose lines cannot be read through it: only its name, offset and descriptor."""

    def _refuse(self, *args: Any) -> Any:
        raise AssertionError("the importing process read the file's lines")

    __iter__ = __next__ = read = readline = readlines = read1 = readinto = _refuse


def test_a_file_is_read_by_whoever_prepares_each_chunk(db_url: str, second_url: str, tmp_path: Path) -> None:
    """From a file, the importing process sends the worker spans of it, not its lines (nor does
    it read them itself): the database is the one the lines give, blank and bad lines numbered
    alike, a last line without its newline included."""
    data = lines()
    path = tmp_path / "export.jsonl"
    path.write_bytes(("\r\n".join(data[:10]) + "\n" + "\n".join(data[10:])).encode())  # no final newline
    with _Unread(io.FileIO(path, "rb")) as file:
        _, report = run_import(db_url, file, chunk=6, parallel=True)  # type: ignore[arg-type]
    _, expected = run_import(second_url, data, chunk=6, parallel=True)
    assert report == expected and [n for n, _ in report.errors] == [8]
    assert dump(db_url) == dump(second_url)
    with path.open("rb") as file:  # again, through the usual file object: nothing changes
        _, again = run_import(db_url, file, chunk=6)
    assert (again.items_new, again.versions_new, again.unchanged) == (0, 0, 39)


def test_bulk_search_rows_equal_those_of_the_write_path(db_url: str) -> None:
    """Each new item's full-text row is what ``repository.index_item`` would write: FTS5 terms
    on SQLite (folded as unicode61 folded them: ``fts5_terms``); on PostgreSQL the tsvector
    (a literal, or to_tsvector for odd words) equals to_tsvector('simple', search terms) of the
    item's title and text."""
    run_import(db_url, lines(), chunk=9)
    engine = make_engine(db_url)
    with engine.connect() as conn:
        items = conn.execute(text("SELECT id, title, text FROM items ORDER BY id")).all()
        for item_id, title, body in items:
            terms = search_terms(title, body)
            if engine.dialect.name == "sqlite":
                stored = conn.execute(text("SELECT terms FROM items_fts WHERE rowid = :i"), {"i": item_id}).scalar()
                assert stored == fts5_terms(terms)
            else:
                same = conn.execute(text("SELECT terms = to_tsvector('simple', :t) FROM items_search "
                                         "WHERE item_id = :i"), {"i": item_id, "t": terms}).scalar()
                assert same is True, (item_id, body[:80])
    engine.dispose()


def test_binary_tsvectors_equal_to_tsvector_on_real_texts(pg_url: str) -> None:
    texts = [*REAL, *ODD, "", "2026 g20 1st 10000000000000000000000 e5", "ёлка Ёж съезд", "а б а б а"]
    binary = [tsvector_binary(search_terms(t)) for t in texts]
    assert sum(b is None for b in binary) >= 5  # the odd words go to the server
    assert sum(b is not None for b in binary) >= 120
    rows = [(n, b) for n, b in enumerate(binary) if b is not None]
    engine = make_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TEMPORARY TABLE copied (id bigint, terms tsvector, source text)"))
        with conn.connection.driver_connection.cursor() as cursor, \
                cursor.copy("COPY copied (id, terms) FROM STDIN (FORMAT BINARY)") as copy:
            copy.write(copy_binary(rows))
        conn.execute(text("UPDATE copied SET source = :t WHERE id = :n"),
                     [{"n": n, "t": search_terms(texts[n])} for n, _ in rows])
        differ = conn.execute(text("SELECT id FROM copied WHERE terms IS DISTINCT FROM to_tsvector('simple', source)"
                                   " OR terms::text <> to_tsvector('simple', source)::text")).scalars().all()
        assert differ == []
        assert conn.execute(text("SELECT count(*) FROM copied")).scalar() == len(rows)
    engine.dispose()


CRASH = """
import os, sys
sys.path.insert(0, {root!r})
from datetime import datetime
from storage.db import make_engine, make_session_factory
from storage import transfer

calls = 0
search = transfer._Bulk.search

def crash(self, rows):
    global calls
    calls += 1
    if calls == 3:  # the third chunk: its items, versions, sources and matches are written
        os._exit(9)
    search(self, rows)

transfer._Bulk.search = crash
if __name__ == "__main__":
    engine = make_engine(sys.argv[1])
    with make_session_factory(engine)() as session, open(sys.argv[2], "rb") as lines:
        transfer.Importer(session, datetime.fromisoformat(sys.argv[3])).feed(lines, chunk=8, parallel=True)
"""


def test_a_crash_inside_a_chunk_leaves_whole_chunks_and_the_import_completes(db_url: str, tmp_path: Path) -> None:
    data = [json.dumps(record(n), ensure_ascii=False) for n in range(30)]
    path = tmp_path / "export.jsonl"
    path.write_text("\n".join(data) + "\n", encoding="utf-8")
    script = tmp_path / "crash.py"
    script.write_text(CRASH.format(root=str(ROOT)), encoding="utf-8")
    done = subprocess.run([sys.executable, str(script), db_url, str(path), NOW.isoformat()],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 9, done.stderr[-2000:]
    state = dump(db_url)
    assert len(state["items"]) == 16 and len(state["search"]) == 16  # two whole chunks of 8
    assert {r[1] for r in state["item_versions"]} == {r[0] for r in state["items"]}
    _, report = run_import(db_url, data, chunk=8)
    assert (report.items_new, report.unchanged, report.errors) == (14, 16, [])
    state = dump(db_url)
    assert len(state["items"]) == 30 and len(state["search"]) == 30


def test_sqlite_times_are_written_as_sqlalchemy_writes_them() -> None:
    from sqlalchemy.dialects import sqlite

    from storage.import_prep import sqlite_time
    from storage.models import Item

    convert = Item.__table__.c.first_seen_at.type._cached_bind_processor(sqlite.dialect())
    for value in (NOW, datetime(999, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
                  datetime.fromisoformat("2026-03-29T01:30:00.5+03:00")):
        assert sqlite_time(value) == convert(value)
