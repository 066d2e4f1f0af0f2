"""Export and import: JSONL of items with every version (streamed, constant memory) and WARC
of the raw fetched responses."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from typing import IO, Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from storage.errors import ImportLineError
from storage.models import Item, ItemVersion, Match, Source, Story
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
    return record


class Importer:
    """Loads exported items into this database; ids and story ids are this database's own."""

    def __init__(self, session: Session, now: datetime) -> None:
        self.session, self.now = session, now
        self.stories: dict[int, int] = {}
        self.report = ImportReport()

    def line(self, number: int, line: str) -> None:
        if not line.strip():
            return
        try:
            record = _check(json.loads(line))
            with self.session.begin_nested():
                self._record(record)
        except (ImportLineError, json.JSONDecodeError, ValueError, TypeError) as exc:
            self.report.errors.append((number, str(exc)))

    def _source(self, source_id: str) -> None:
        if self.session.get(Source, source_id) is None:
            self.session.add(Source(id=source_id, kind="feed", url="", name=source_id,
                                    enabled=False, created_at=self.now, failures=0,
                                    had_items=True, interval_seconds=600.0))
            self.session.flush()

    def _record(self, record: dict[str, Any]) -> None:
        versions = _versions(record)
        self._source(record["source"])
        item = self.session.scalar(select(Item).options(selectinload(Item.versions)).where(
            Item.source_id == record["source"], Item.url_key == key_of(record["canonical_url"])))
        if item is None:
            item = self._new_item(record)
            self.report.items_new += 1
        known = {v.content_hash for v in item.versions}
        added = 0
        for v in versions:
            if v["content_hash"] in known:
                continue
            item.version += 1
            fetched = _time(v.get("fetched_at"), "fetched_at") or self.now
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
        item.matches = [Match(organisation=m["organisation"], alias=m.get("alias", ""),
                              form=m.get("form", ""), snippet=m.get("snippet", ""),
                              start=int(m.get("start", 0)), end=int(m.get("end", 0)))
                        for m in record.get("matches") or []]
        self.session.flush()
        index_item(self.session, item)

    def _new_item(self, record: dict[str, Any]) -> Item:
        first_seen = _time(record.get("first_seen_at"), "first_seen_at") or self.now
        published = _time(record.get("published_at"), "published_at")
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
