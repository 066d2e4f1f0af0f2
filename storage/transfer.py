"""Export and import: JSONL of items with every version (streamed, constant memory) and WARC
of the raw fetched responses."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from http import HTTPStatus
from typing import IO, Any

from sqlalchemy import func, insert, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, selectinload

from storage.errors import ImportLineError
from storage.models import Item, ItemSource, ItemVersion, Match, Source, Story
from storage.repository import key_of
from storage.search import search_terms
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


def _time(value: Any, key: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        raise ImportLineError(f"{key}: {value!r} is not an ISO 8601 time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _versions(record: dict[str, Any]) -> list[dict[str, Any]]:
    versions = record.get("versions")
    if versions is None:
        versions = [{"version": record.get("version", 1), "title": record.get("title", ""),
                     "text": record.get("text", ""), "content_hash": record.get("content_hash"),
                     "fetched_at": record.get("first_seen_at")}]
    if not isinstance(versions, list) or not versions:
        raise ImportLineError("versions: expected a non-empty list")
    for v in versions:
        if not isinstance(v, dict) or not v.get("content_hash"):
            raise ImportLineError("versions: every version needs a content_hash")
    return sorted(versions, key=lambda v: int(v.get("version") or 0))


def _check(record: Any) -> dict[str, Any]:
    if not isinstance(record, dict):
        raise ImportLineError("expected a JSON object")
    for key in ("source", "url", "canonical_url"):
        if not isinstance(record.get(key), str) or not record[key]:
            raise ImportLineError(f"{key}: missing or not a string")
    if record.get("guid") is not None and not isinstance(record["guid"], str):
        raise ImportLineError("guid: expected a string")
    sources = record.get("sources") or [record["source"]]  # exports before `sources` had one
    if not isinstance(sources, list) or not all(isinstance(s, str) and s for s in sources):
        raise ImportLineError("sources: expected a list of source ids")
    record["_sources"] = list(dict.fromkeys([record["source"], *sources]))
    return record


class Importer:
    """Loads exported items into this database; ids and story ids are this database's own.

    Lines are validated in Python first; valid ones are written a chunk per transaction: the
    items the chunk names are looked up in a few queries, records of new items (the usual
    case when moving a database) are inserted together, one statement per table, and only
    records of stored items that change something go one by one (``_record``). Only when
    the database refuses a chunk is it replayed one savepoint per line, so one bad line never
    costs the others (savepoints are slow with FTS5, so they are the exception, not the
    rule)."""

    def __init__(self, session: Session, now: datetime) -> None:
        self.session, self.now = session, now
        self.stories: dict[int, int] = {}
        self.sources: set[str] = set()  # source ids known to exist
        self.report = ImportReport()

    def feed(self, lines: Iterable[str], chunk: int = 1000) -> ImportReport:
        """Import every line (numbered from 1), committing every ``chunk`` valid records."""
        batch: list[tuple[int, dict[str, Any]]] = []
        for number, line in enumerate(lines, 1):
            record = self.validate(number, line)
            if record is not None:
                batch.append((number, record))
            if len(batch) >= chunk:
                self._write(batch)
                batch = []
        self._write(batch)
        return self.report

    def line(self, number: int, line: str) -> None:
        """Import one line now (its own transaction)."""
        record = self.validate(number, line)
        if record is not None:
            self._write([(number, record)])

    def validate(self, number: int, line: str) -> dict[str, Any] | None:
        """The record on this line, or None (blank, or bad: the reason goes to the report)."""
        if not line.strip():
            return None
        try:
            record = _check(json.loads(line))
            record["_versions"] = _versions(record)
            record["_first_seen"] = _time(record.get("first_seen_at"), "first_seen_at")
            record["_published"] = _time(record.get("published_at"), "published_at")
            for v in record["_versions"]:
                v["_fetched"] = _time(v.get("fetched_at"), "fetched_at")
            record["_matches"] = _matches(record.get("matches"))
        except (ImportLineError, json.JSONDecodeError, ValueError, TypeError) as exc:
            self.report.errors.append((number, str(exc)))
            return None
        return record

    def _write(self, batch: list[tuple[int, dict[str, Any]]]) -> None:
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
        for number, record in batch:
            try:
                with self.session.begin_nested():
                    self._record(record)
            except SQLAlchemyError as exc:
                self.report.errors.append((number, f"database refused the item: {exc.orig or exc}"))
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
        for record in records:
            guid = record.get("guid")
            record["_url_key"] = key_of(record["canonical_url"])
            record["_guid_key"] = key_of(guid) if isinstance(guid, str) and guid else None
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
        search rows, one statement each."""
        if not records:
            return
        self.session.flush()
        story_ids = self._new_stories(records)
        items, versions = [], []
        for record, story_id in zip(records, story_ids, strict=True):
            first_seen = record["_first_seen"] or self.now
            published = record["_published"]
            kept, seen = [], set()
            for v in record["_versions"]:
                if v["content_hash"] not in seen:
                    seen.add(v["content_hash"])
                    kept.append(v)
            record["_kept"] = kept
            last = kept[-1]
            items.append({
                "source_id": record["source"], "url": record["url"],
                "canonical_url": record["canonical_url"], "url_key": record["_url_key"],
                "guid": record.get("guid"), "guid_key": record["_guid_key"], "language": record.get("language"),
                "published_at": published, "first_seen_at": first_seen,
                "updated_at": last["_fetched"] or self.now, "sort_at": published or first_seen,
                "version": len(kept), "content_hash": last["content_hash"],
                "title": last.get("title") or "", "text": last.get("text") or "", "story_id": story_id})
        item_ids = self._insert_ids(Item.__table__, items)
        links, matches, terms = [], [], []
        for record, item, item_id in zip(records, items, item_ids, strict=True):
            for number, v in enumerate(record["_kept"], 1):
                versions.append({"item_id": item_id, "version": number, "fetched_at": v["_fetched"] or self.now,
                                 "title": v.get("title") or "", "text": v.get("text") or "",
                                 "content_hash": v["content_hash"]})
            for source_id in record["_sources"]:
                links.append({"item_id": item_id, "source_id": source_id,
                              "guid_key": record["_guid_key"] if source_id == record["source"] else None,
                              "content_hash": record["_versions"][-1]["content_hash"],
                              "first_seen_at": item["first_seen_at"]})
            matches.extend({"item_id": item_id, **m} for m in record["_matches"])
            terms.append((item_id, search_terms(item["title"], item["text"])))
        self.session.execute(insert(ItemVersion.__table__), versions)
        self.session.execute(insert(ItemSource.__table__), links)
        if matches:
            self.session.execute(insert(Match.__table__), matches)
        index_items(self.session, terms, fresh=True)
        self.report.items_new += len(records)
        self.report.versions_new += len(versions)

    def _insert_ids(self, table: Any, rows: list[dict[str, Any]]) -> list[int]:
        """Insert ``rows``; their new ids, in order. PostgreSQL returns them from batched
        statements; SQLite would insert one row per statement to return them in order, so the
        rows go in one ``executemany`` and their ids are the last ones: a rowid table gives each
        new row max(id) + 1, and no other connection writes while this transaction does."""
        if self.session.get_bind().dialect.name != "sqlite":
            return list(self.session.execute(
                insert(table).returning(table.c.id, sort_by_parameter_order=True), rows).scalars())
        self.session.execute(insert(table), rows)
        last = self.session.scalar(select(func.max(table.c.id)))
        assert last is not None
        return list(range(last - len(rows) + 1, last + 1))

    def _new_stories(self, records: list[dict[str, Any]]) -> list[int]:
        """Each record's story: the one made for its exported story id earlier in this import,
        else a new one (shared by the records that name the same exported id)."""
        fresh: list[Any] = []  # exported ids (or a unique marker) needing a new story
        for record in records:
            exported = record.get("story_id")
            key = exported if isinstance(exported, int) else object()
            if not (isinstance(exported, int) and (exported in self.stories or exported in fresh)):
                fresh.append(key)
        made: dict[Any, int] = {}
        if fresh:
            ids = self._insert_ids(Story.__table__, [{"created_at": self.now} for _ in fresh])
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
        guid_key = key_of(record["guid"]) if isinstance(record.get("guid"), str) and record["guid"] else None
        item = self.session.scalar(select(Item).options(selectinload(Item.versions)).where(
            Item.url_key == key_of(record["canonical_url"])))
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
            if v["content_hash"] in known:
                continue
            item.version += 1
            fetched = v["_fetched"] or self.now
            self.session.add(ItemVersion(
                item=item, version=item.version, fetched_at=fetched, title=v.get("title") or "",
                text=v.get("text") or "", content_hash=v["content_hash"]))
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
        guid = record.get("guid")
        item = Item(
            source_id=record["source"], url=record["url"], canonical_url=record["canonical_url"],
            url_key=key_of(record["canonical_url"]), guid=guid,
            guid_key=key_of(guid) if guid else None, language=record.get("language"),
            published_at=published, first_seen_at=first_seen, updated_at=first_seen,
            sort_at=published or first_seen, version=0, content_hash="", title="", text="",
            story_id=self._story(record.get("story_id")))
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
                        ItemSource.source_id == source, ItemSource.guid_key.in_(keys))))
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


def _matches(value: Any) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ImportLineError("matches: expected a list")
    out = []
    for m in value:
        if not isinstance(m, dict) or not isinstance(m.get("organisation"), str):
            raise ImportLineError("matches: every match needs an organisation")
        out.append({"organisation": m["organisation"], "alias": str(m.get("alias", "")),
                    "form": str(m.get("form", "")), "snippet": str(m.get("snippet", "")),
                    "start": int(m.get("start", 0)), "end": int(m.get("end", 0))})
    return out
