"""Export and import: JSONL of items with every version (streamed, constant memory) and WARC
of the raw fetched responses."""

from __future__ import annotations

import itertools
import json
import mmap
import multiprocessing
import os
import stat
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from datetime import datetime
from http import HTTPStatus
from typing import IO, Any

from sqlalchemy import insert, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, selectinload

from storage.import_prep import Prepared, Span, copy_binary_search, prepare, prepare_span
from storage.models import Item, ItemSource, ItemVersion, Match, Source, Story
from storage.serialize import item_dict, raw_body, version_dict
from storage.writes import index_item, index_items

BATCH = 500


def iter_items(session: Session, since_id: int = 0, batch: int = BATCH) -> Iterator[Item]:
    """Every item with id > ``since_id`` in id order, loaded a batch at a time."""
    cursor = since_id
    while True:
        items = session.scalars(
            select(Item).options(selectinload(Item.matches), selectinload(Item.versions))
            .where(Item.id > cursor).order_by(Item.id).limit(batch)).all()
        if not items:
            return
        yield from items
        cursor = items[-1].id
        session.expunge_all()


def export_record(item: Item) -> dict[str, Any]:
    out = item_dict(item)
    out["text"] = item.text
    out["guid"] = item.guid
    out["removed"] = bool(item.removed)  # the page is gone (its last text is kept)
    out["versions"] = [version_dict(v) | {"removed": bool(v.removed)} for v in item.versions]
    return out


def export_jsonl(session: Session, out: IO[str], since_id: int = 0) -> int:
    """Write one JSON object per item; returns how many."""
    count = 0
    for item in iter_items(session, since_id):
        out.write(json.dumps(export_record(item), ensure_ascii=False) + "\n")
        count += 1
    return count


def export_warc(session: Session, out: IO[bytes], since_id: int = 0) -> int:
    """Write each stored version's raw response as a WARC ``response`` record."""
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    writer = WARCWriter(out, gzip=True)
    count = 0
    for item in iter_items(session, since_id):
        for version in item.versions:
            if not version.raw:
                continue
            headers = json.loads(version.raw_headers) if version.raw_headers else {}
            headers = [(k, v) for k, v in headers.items()
                       if k.lower() not in ("content-length", "transfer-encoding",
                                            "content-encoding")]
            http_headers = StatusAndHeaders(_status_line(version.raw_status or 200), headers,
                                            protocol="HTTP/1.1")
            body = raw_body(version)
            record = writer.create_warc_record(
                version.raw_url or item.url, "response", payload=_BytesReader(body),
                length=len(body), http_headers=http_headers,
                warc_headers_dict={
                    "WARC-Date": version.fetched_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "X-Newsmon-Item": str(item.id), "X-Newsmon-Version": str(version.version),
                })
            writer.write_record(record)
            count += 1
    return count


def _status_line(status: int) -> str:
    """``"404 Not Found"``: the code with its standard reason phrase (none for unknown codes)."""
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)


class _BytesReader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def read(self, size: int = -1) -> bytes:
        end = len(self.data) if size is None or size < 0 else self.pos + size
        chunk = self.data[self.pos:end]
        self.pos += len(chunk)
        return chunk

# --- import ----------------------------------------------------------------------------------


@dataclass
class ImportReport:
    items_new: int = 0
    versions_new: int = 0
    unchanged: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)


CHUNK = 4000  # records per transaction (fewer, larger FTS5 segments and commits)
AHEAD = 2  # chunks prepared ahead by the worker process while one is written


class Importer:
    """Loads exported items into this database; ids and story ids are this database's own.

    Lines are checked and prepared by ``storage.import_prep.prepare`` (JSON, times, keys,
    search terms): for an input of more than one chunk in a worker process, a chunk or two
    ahead of the one being written, so both cores work. Valid records are written a chunk per
    transaction: the items the chunk names are looked up in a few queries, records of new items
    (the usual case when moving a database) are inserted together with the driver's bulk path
    (``_Bulk``: ``executemany`` on SQLite, ``COPY`` on PostgreSQL), and only records of stored
    items that change something go one by one (``_record``). Only when the database refuses
    a chunk is it replayed one savepoint per line, so one bad line never costs the others
    (savepoints are slow with FTS5, so they are the exception, not the rule). A chunk is
    written whole or not at all: a crash leaves the chunks before it, and importing the file
    again completes it."""

    def __init__(self, session: Session, now: datetime) -> None:
        self.session, self.now = session, now
        self.stories: dict[int, int] = {}
        self.sources: set[str] = set()  # source ids known to exist
        self.report = ImportReport()
        self.replayed = 0  # chunks the database refused whole, replayed line by line
        self._bulk: _Bulk | None = None

    def feed(self, lines: Iterable[str | bytes], chunk: int = CHUNK, parallel: bool | None = None) -> ImportReport:
        """Import every line (numbered from 1; UTF-8 bytes or text), committing every ``chunk`` records.
        ``parallel``: prepare lines in a worker process (default: when there is more than one
        chunk); the database contents are the same either way. From a regular file opened in
        binary, this process only finds where each chunk's lines begin and end: whoever
        prepares a chunk reads its lines from the file itself (``import_prep.prepare_span``), so
        the texts are not sent to the worker and back."""
        spans = _file_spans(lines, chunk)
        chunks: Iterator[Chunk] = ((prepare_span, s) for s in spans) if spans is not None else \
            ((prepare, part) for part in _line_chunks(lines, chunk))
        head = list(itertools.islice(chunks, 2))
        if parallel is None:
            parallel = len(head) > 1
        if parallel:
            self._feed_parallel(itertools.chain(head, chunks))
        else:
            for how, part in itertools.chain(head, chunks):
                self._write(how(part, self._backend(), self.now))
        self.report.errors.sort()
        return self.report

    def _feed_parallel(self, chunks: Iterator[Chunk]) -> None:
        job = (self._backend(), self.now)
        # spawn: the worker inherits no database connection (a forked copy could close it)
        with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_watch_parent, initargs=(os.getpid(),)) as pool:
            first = next(chunks, None)
            pending = deque((task, _submit(pool, task, job)) for task in itertools.islice(chunks, AHEAD))
            if first is not None:
                self._write(first[0](first[1], *job))  # here, while the worker starts
            for task in chunks:
                pending.append((task, _submit(pool, task, job)))
                self._write(_prepared(*pending.popleft(), job))
            while pending:
                self._write(_prepared(*pending.popleft(), job))

    def line(self, number: int, line: str | bytes) -> None:
        """Import one line now (its own transaction)."""
        self._write(prepare([(number, line)], self._backend(), self.now))

    def _backend(self) -> str:
        return self.session.get_bind().dialect.name

    def _write(self, prepared: list[Prepared]) -> None:
        batch: list[tuple[int, dict[str, Any]]] = []
        for number, record, reason in prepared:
            if record is None:
                self.report.errors.append((number, reason or "bad line"))
            else:
                batch.append((number, record))
        if not batch:
            return
        before = replace(self.report, errors=list(self.report.errors))
        stories, sources = dict(self.stories), set(self.sources)
        try:
            self._chunk(batch)
            self.session.commit()
            self.session.expunge_all()
            return
        except SQLAlchemyError:
            self.session.rollback()
            self.report, self.stories, self.sources = before, stories, sources
        self.replayed += 1
        for number, record in batch:
            try:
                with self.session.begin_nested():
                    self._record(record)
            except SQLAlchemyError as exc:
                self.report.errors.append((number, f"database refused the item: {getattr(exc, 'orig', None) or exc}"))
        self.session.commit()
        self.session.expunge_all()
        self.sources.clear()  # those of refused lines were rolled back: look them up again

    def _chunk(self, batch: list[tuple[int, dict[str, Any]]]) -> None:
        """One chunk: the items it names looked up in a few queries; records of new items
        inserted together (one statement per table); records of stored items that change
        nothing skipped; the others (and a record naming an item an earlier record of the
        chunk wrote) one by one, as ``_record``."""
        records = [record for _, record in batch]
        self._sources([s for record in records for s in record["_sources"]])
        stored = _Stored.load(self.session, records)
        pending: list[dict[str, Any]] = []
        claimed: set[tuple[str, str, str]] = set()
        touched: set[int] = set()
        for record in records:
            keys = {("url", "", record["_url_key"])}
            if record["_guid_key"] is not None:
                keys.add(("guid", record["source"], record["_guid_key"]))
            item_id = stored.item_of(record)
            if keys & claimed or (item_id is not None and item_id in touched):
                self._insert(pending)  # an earlier record of the chunk wrote this item
                pending = []
                self._record(record)
            elif item_id is None:
                pending.append(record)
            elif stored.unchanged(item_id, record):
                self.report.unchanged += 1
            else:
                self._insert(pending)
                pending = []
                self._record(record)
            claimed |= keys
            if item_id is not None:
                touched.add(item_id)
        self._insert(pending)

    def _sources(self, source_ids: list[str]) -> None:
        """Sources the records name that this database lacks, created disabled."""
        wanted = set(source_ids) - self.sources
        if not wanted:
            return
        table = Source.__table__
        self.session.flush()
        have = set(self.session.scalars(select(table.c.id).where(table.c.id.in_(sorted(wanted)))))
        missing = sorted(wanted - have)
        if missing:
            self.session.execute(insert(table), [{
                "id": s, "kind": "feed", "url": "", "name": s, "enabled": False, "created_at": self.now,
                "failures": 0, "had_items": True, "interval_seconds": 600.0} for s in missing])
        self.sources |= wanted

    def _insert(self, records: list[dict[str, Any]]) -> None:
        """Records of items not stored yet: stories, items, versions, sources, matches and
        search rows, one bulk write each, with ids taken ahead."""
        if not records:
            return
        self.session.flush()
        bulk = self._bulk = self._bulk or _Bulk(self.session)
        bulk.begin()
        story_ids = self._new_stories(records, bulk)
        item_ids = bulk.ids("items", len(records))
        items, versions, links, matches, search = [], [], [], [], []
        for record, story_id, item_id in zip(records, story_ids, item_ids, strict=True):
            published, first_seen, updated, sort_at = record["_at"]
            kept = record["_kept"]
            last = kept[-1]
            items.append((
                item_id, record["source"], record["url"], record["canonical_url"], record["_url_key"],
                record.get("guid"), record["_guid_key"], record.get("language"), published, first_seen, updated,
                sort_at, len(kept), last["content_hash"], last.get("title") or "", last.get("text") or "",
                story_id, bool(last.get("removed"))))
            for number, v in enumerate(kept, 1):
                versions.append((item_id, number, v["_at"], v.get("title") or "", v.get("text") or "",
                                 v["content_hash"], bool(v.get("removed"))))
            content_hash = record["_versions"][-1]["content_hash"]
            for source_id in record["_sources"]:
                links.append((item_id, source_id, record["_guid_key"] if source_id == record["source"] else None,
                              content_hash, first_seen))
            for m in record["_matches"]:
                matches.append((item_id, m["organisation"], m["alias"], m["form"], m["snippet"], m["start"],
                                m["end"], False))
            search.append((item_id, record["_terms"], record["_tsv"], record["_pairs"]))
        bulk.rows("items", _ITEM_COLUMNS, items)
        bulk.rows("item_versions", _VERSION_COLUMNS, versions)
        bulk.rows("item_sources", _LINK_COLUMNS, links)
        bulk.rows("matches", _MATCH_COLUMNS, matches)
        bulk.search(search)
        self.report.items_new += len(records)
        self.report.versions_new += len(versions)

    def _new_stories(self, records: list[dict[str, Any]], bulk: _Bulk) -> list[int]:
        """Each record's story: the one made for its exported story id earlier in this import,
        else a new one (shared by the records that name the same exported id)."""
        fresh: list[Any] = []  # exported ids (or a unique marker) needing a new story
        named: set[int] = set()  # the exported ids among them
        for record in records:
            exported = record.get("story_id")
            if not isinstance(exported, int):
                fresh.append(object())
            elif exported not in self.stories and exported not in named:
                fresh.append(exported)
                named.add(exported)
        made: dict[Any, int] = {}
        if fresh:
            ids = bulk.ids("stories", len(fresh))
            created = bulk.time(self.now)
            bulk.rows("stories", ("id", "created_at"), [(i, created) for i in ids])
            made = dict(zip(fresh, ids, strict=True))
        out, markers = [], iter(k for k in fresh if not isinstance(k, int))
        for record in records:
            exported = record.get("story_id")
            if isinstance(exported, int):
                if exported not in self.stories:
                    self.stories[exported] = made[exported]
                out.append(self.stories[exported])
            else:
                out.append(made[next(markers)])
        return out

    def _source(self, source_id: str) -> None:
        if self.session.get(Source, source_id) is None:
            self.session.add(Source(id=source_id, kind="feed", url="", name=source_id,
                                    enabled=False, created_at=self.now, failures=0,
                                    had_items=True, interval_seconds=600.0))
            self.session.flush()

    def _record(self, record: dict[str, Any]) -> None:
        """One record, under the identity rules: the item with its canonical URL (in any
        source), else with its GUID in its source; new versions for content not yet stored."""
        for source_id in record["_sources"]:
            self._source(source_id)
        guid_key = record["_guid_key"]
        item = self.session.scalar(select(Item).options(selectinload(Item.versions)).where(
            Item.url_key == record["_url_key"]))
        if item is None and guid_key is not None:
            item = self.session.scalar(
                select(Item).options(selectinload(Item.versions))
                .join(ItemSource, ItemSource.item_id == Item.id)
                .where(ItemSource.source_id == record["source"], ItemSource.guid_key == guid_key))
        fresh = item is None
        if item is None:
            item = self._new_item(record)
            self.report.items_new += 1
        self._link(item, record, guid_key)
        known = {v.content_hash for v in item.versions}
        added = 0
        for v in record["_versions"]:
            removed = bool(v.get("removed"))  # a new item also takes its removals and returns
            if v["content_hash"] in known and (not fresh or removed == bool(item.removed)):
                continue
            item.version += 1
            item.removed = removed
            fetched = v["_fetched"] or self.now
            self.session.add(ItemVersion(
                item=item, version=item.version, fetched_at=fetched, title=v.get("title") or "",
                text=v.get("text") or "", content_hash=v["content_hash"], removed=removed))
            item.title, item.text = v.get("title") or "", v.get("text") or ""
            item.content_hash, item.updated_at = v["content_hash"], fetched
            known.add(v["content_hash"])
            added += 1
        if not added:
            self.report.unchanged += 1
            return
        self.report.versions_new += added
        item.matches = [Match(**m) for m in record["_matches"]]
        self.session.flush()
        index_item(self.session, item, fresh=fresh)

    def _link(self, item: Item, record: dict[str, Any], guid_key: str | None) -> None:
        """The record's sources become the item's (the GUID belongs to its first source,
        unless that source already gave it to another item)."""
        linked = {link.source_id for link in item.links}
        for source_id in record["_sources"]:
            if source_id in linked:
                continue
            key = guid_key if source_id == record["source"] else None
            if key is not None and self.session.scalar(select(ItemSource.id).where(
                    ItemSource.source_id == source_id, ItemSource.guid_key == key)) is not None:
                key = None
            item.links.append(ItemSource(source_id=source_id, guid_key=key, first_seen_at=item.first_seen_at,
                                         content_hash=record["_versions"][-1]["content_hash"]))
            linked.add(source_id)

    def _new_item(self, record: dict[str, Any]) -> Item:
        first_seen = record["_first_seen"] or self.now
        published = record["_published"]
        item = Item(
            source_id=record["source"], url=record["url"], canonical_url=record["canonical_url"],
            url_key=record["_url_key"], guid=record.get("guid"), guid_key=record["_guid_key"],
            language=record.get("language"), published_at=published, first_seen_at=first_seen,
            updated_at=first_seen, sort_at=published or first_seen, version=0, content_hash="", title="",
            text="", story_id=self._story(record.get("story_id")))
        self.session.add(item)
        return item

    def _story(self, exported: Any) -> int:
        if isinstance(exported, int) and exported in self.stories:
            return self.stories[exported]
        story = Story(created_at=self.now)
        self.session.add(story)
        self.session.flush()
        if isinstance(exported, int):
            self.stories[exported] = story.id
        return story.id


Lines = list[tuple[int, str | bytes]]
Chunk = tuple[Callable[..., list[Prepared]], Any]  # how to prepare it (prepare or prepare_span), and what


def _watch_parent(parent: int) -> None:
    """In the worker: exit as soon as the importing process is gone (killed mid-import)."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _submit(pool: ProcessPoolExecutor, task: Chunk, job: tuple[str, datetime]) -> Future[list[Prepared]] | None:
    try:
        return pool.submit(task[0], task[1], *job)
    except BrokenProcessPool:
        return None


def _prepared(task: Chunk, future: Future[list[Prepared]] | None, job: tuple[str, datetime]) -> list[Prepared]:
    """The worker's result, or the chunk prepared here when the worker could not run (a
    script that starts the import without an ``if __name__ == "__main__"`` guard)."""
    if future is not None:
        try:
            return future.result()
        except BrokenProcessPool:
            pass
    return task[0](task[1], *job)


def _file_spans(lines: Iterable[str | bytes], size: int) -> Iterator[Span] | None:
    """The chunks of ``size`` lines of ``lines`` as spans of its file, when ``lines`` is a
    regular file opened in binary (from where it is now); else None (stdin, a pipe, text, a list)."""
    name, mode = getattr(lines, "name", None), getattr(lines, "mode", "")
    fileno = getattr(lines, "fileno", None)
    if not isinstance(name, str | os.PathLike) or "b" not in str(mode) or fileno is None:
        return None
    try:
        name = os.fspath(name)
        opened, named = os.fstat(fileno()), os.stat(name)
        start = lines.tell()  # type: ignore[attr-defined]  # a file object with a name and a fileno
    except (OSError, ValueError, AttributeError):
        return None
    if not stat.S_ISREG(opened.st_mode) or (opened.st_dev, opened.st_ino) != (named.st_dev, named.st_ino):
        return None
    return _spans(os.path.abspath(name), fileno(), start, size)


def _spans(path: str, fileno: int, start: int, size: int) -> Iterator[Span]:
    """(path, number of the first line, start, end) of each ``size`` lines from ``start``,
    lines ending as a binary file's iteration ends them (after b"\\n", or at the end)."""
    end_of_file = os.fstat(fileno).st_size
    if start >= end_of_file:
        return
    with mmap.mmap(fileno, 0, access=mmap.ACCESS_READ) as view:
        number, at = 1, start
        while at < end_of_file:
            end, count = at, 0
            while count < size and end < end_of_file:
                newline = view.find(b"\n", end)
                end = end_of_file if newline < 0 else newline + 1
                count += 1
            yield path, number, at, end
            number, at = number + count, end


def _line_chunks(lines: Iterable[str | bytes], size: int) -> Iterator[Lines]:
    numbered = enumerate(lines, 1)
    while part := list(itertools.islice(numbered, size)):
        yield part


_ITEM_COLUMNS = ("id", "source_id", "url", "canonical_url", "url_key", "guid", "guid_key", "language",
                 "published_at", "first_seen_at", "updated_at", "sort_at", "version", "content_hash", "title",
                 "text", "story_id", "removed")
_VERSION_COLUMNS = ("item_id", "version", "fetched_at", "title", "text", "content_hash", "removed")
_LINK_COLUMNS = ("item_id", "source_id", "guid_key", "content_hash", "first_seen_at")
_MATCH_COLUMNS = ("item_id", "organisation", "alias", "form", "snippet", "start", "end", "in_title")


class _Bulk:
    """Rows written straight through the driver inside the session's transaction: plain
    ``executemany`` on SQLite (values converted once, as SQLAlchemy's types would), ``COPY`` on
    PostgreSQL. New ids are taken ahead: on SQLite the ones after max(id), as a rowid table
    would give them (no other connection writes while this transaction does); on PostgreSQL
    from the table's sequence."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.dialect = session.get_bind().dialect
        self.sqlite = self.dialect.name == "sqlite"
        to_db = Item.__table__.c.first_seen_at.type._cached_bind_processor(self.dialect)
        self._to_db = to_db if self.sqlite else None

    def begin(self) -> None:
        self.connection = self.session.connection()
        driver = self.connection.connection.driver_connection
        assert driver is not None, "a checked-out connection has its DBAPI connection"
        self.driver = driver

    def time(self, value: datetime) -> Any:
        """A time as the driver takes it."""
        return self._to_db(value) if self._to_db is not None else value

    def ids(self, table: str, count: int) -> list[int]:
        if self.sqlite:
            last = self.connection.exec_driver_sql(f"SELECT max(id) FROM {table}").scalar() or 0
            return list(range(last + 1, last + count + 1))
        return sorted(self.connection.exec_driver_sql(
            f"SELECT nextval(pg_get_serial_sequence('{table}', 'id')) FROM generate_series(1, %(n)s)",
            {"n": count}).scalars())

    def rows(self, table: str, columns: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
        if not rows:
            return
        names = ", ".join(f'"{c}"' for c in columns)
        if self.sqlite:
            marks = ", ".join("?" * len(columns))
            self.driver.cursor().executemany(f"INSERT INTO {table} ({names}) VALUES ({marks})", rows)
            return
        with self.driver.cursor() as cursor, cursor.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)

    def search(self, rows: list[tuple[int, str, bytes | None, bytes | None]]) -> None:
        """Full-text rows of new items (as ``repository.index_item(fresh=True)``): FTS5 rows on
        SQLite; on PostgreSQL the tsvector and word pairs in binary where ``import_prep`` could
        make them, else ``to_tsvector`` on the server."""
        if self.sqlite:
            self.driver.cursor().executemany("INSERT INTO items_fts(rowid, terms) VALUES (?, ?)",
                                             [(i, terms) for i, terms, *_ in rows])
            return
        binary = [(i, tsv, pairs) for i, _, tsv, pairs in rows if tsv is not None and pairs is not None]
        if binary:
            with self.driver.cursor() as cursor, cursor.copy(
                    "COPY items_search (item_id, terms, pairs) FROM STDIN (FORMAT BINARY)") as copy:
                copy.write(copy_binary_search(binary))
        parsed = [(i, terms) for i, terms, tsv, pairs in rows if tsv is None or pairs is None]
        if parsed:
            index_items(self.session, parsed, fresh=True)

LOOKUP = 400  # keys per lookup query


@dataclass
class _Stored:
    """The stored items a chunk names: by canonical URL (any source), else by GUID in the
    record's first source; with their version content hashes and linked sources."""

    by_url: dict[str, int]
    by_guid: dict[tuple[str, str], int]
    hashes: dict[int, set[str]]
    linked: dict[int, set[str]]

    @classmethod
    def load(cls, session: Session, records: list[dict[str, Any]]) -> _Stored:
        by_url: dict[str, int] = {}
        for keys in _chunks(sorted({r["_url_key"] for r in records})):
            by_url.update((k, i) for i, k in session.execute(
                select(Item.id, Item.url_key).where(Item.url_key.in_(keys))))
        guids: dict[str, set[str]] = {}
        for r in records:
            if r["_guid_key"] is not None and r["_url_key"] not in by_url:
                guids.setdefault(r["source"], set()).add(r["_guid_key"])
        by_guid: dict[tuple[str, str], int] = {}
        for source, wanted in guids.items():
            for keys in _chunks(sorted(wanted)):
                by_guid.update(((source, g), i) for i, g in session.execute(
                    select(ItemSource.item_id, ItemSource.guid_key).where(
                        ItemSource.source_id == source, ItemSource.guid_key.in_(keys))) if g is not None)
        found = sorted(set(by_url.values()) | set(by_guid.values()))
        hashes: dict[int, set[str]] = {i: set() for i in found}
        linked: dict[int, set[str]] = {i: set() for i in found}
        for ids in _chunks(found):
            for i, h in session.execute(select(ItemVersion.item_id, ItemVersion.content_hash)
                                        .where(ItemVersion.item_id.in_(ids))):
                hashes[i].add(h)
            for i, s in session.execute(select(ItemSource.item_id, ItemSource.source_id)
                                        .where(ItemSource.item_id.in_(ids))):
                linked[i].add(s)
        return cls(by_url, by_guid, hashes, linked)

    def item_of(self, record: dict[str, Any]) -> int | None:
        item_id = self.by_url.get(record["_url_key"])
        if item_id is None and record["_guid_key"] is not None:
            item_id = self.by_guid.get((record["source"], record["_guid_key"]))
        return item_id

    def unchanged(self, item_id: int, record: dict[str, Any]) -> bool:
        """True when importing ``record`` into the stored item writes nothing: every version's
        content is stored and every source already carries it."""
        return (all(v["content_hash"] in self.hashes[item_id] for v in record["_versions"])
                and set(record["_sources"]) <= self.linked[item_id])


def _chunks(values: list[Any]) -> list[list[Any]]:
    return [values[start:start + LOOKUP] for start in range(0, len(values), LOOKUP)]

