"""Export and import: JSONL of items with every version (streamed, constant memory) and WARC
of the raw fetched responses."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from http import HTTPStatus
from typing import IO, Any

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, selectinload

from storage.errors import ImportLineError
from storage.models import Item, ItemSource, ItemVersion, Match, Source, Story
from storage.repository import index_item, key_of
from storage.serialize import item_dict, raw_body, version_dict

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
    out["versions"] = [version_dict(v) for v in item.versions]
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
    sources = record.get("sources") or [record["source"]]  # exports before `sources` had one
    if not isinstance(sources, list) or not all(isinstance(s, str) and s for s in sources):
        raise ImportLineError("sources: expected a list of source ids")
    record["_sources"] = list(dict.fromkeys([record["source"], *sources]))
    return record


class Importer:
    """Loads exported items into this database; ids and story ids are this database's own.

    Lines are validated in Python first; valid ones are written a chunk per transaction.
    Only when the database refuses a chunk is it replayed one savepoint per line, so one
    bad line never costs the others (savepoints are slow with FTS5, so they are the
    exception, not the rule)."""

    def __init__(self, session: Session, now: datetime) -> None:
        self.session, self.now = session, now
        self.stories: dict[int, int] = {}
        self.report = ImportReport()

    def feed(self, lines: Iterable[str], chunk: int = 500) -> ImportReport:
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
        try:
            for _, record in batch:
                self._record(record)
            self.session.commit()
            return
        except SQLAlchemyError:
            self.session.rollback()
            self.report = before
            self.stories.clear()
        for number, record in batch:
            try:
                with self.session.begin_nested():
                    self._record(record)
            except SQLAlchemyError as exc:
                self.report.errors.append((number, f"database refused the item: {exc.orig or exc}"))
        self.session.commit()

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
