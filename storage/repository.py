"""The write path: idempotent item upserts with versions, matches, stories and alert events
in one transaction; source polling state; the fetch log."""

from __future__ import annotations

import hashlib
import json
import uuid
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache
from typing import Literal
from urllib.parse import urlsplit

from sqlalchemy import delete, insert, select, text, update
from sqlalchemy.orm import Session

from storage.changes import change_events, change_summary
from storage.models import (
    AlertEvent,
    AlertKey,
    FetchLog,
    Item,
    ItemSignature,
    ItemSource,
    ItemVersion,
    Match,
    Source,
    Story,
    StoryBand,
)
from storage.search import Query, parse_query, query_admits, search_terms
from storage.serialize import item_dict


def key_of(value: str) -> str:
    """A fixed-size index key for a long string (URLs, GUIDs)."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()[:40]


# Alerts go out for matches at least this sure (crawler/evidence.py: 1.0 a name or safe
# acronym, 0.95–0.7 an ambiguous acronym with evidence, 0.6 only a foreign-affairs source).
DEFAULT_MIN_CONFIDENCE = 0.7


@dataclass(frozen=True)
class MatchRow:
    organisation: str
    alias: str
    form: str
    snippet: str
    start: int = 0
    end: int = 0
    in_title: bool = False
    confidence: float = 1.0  # not stored: it decides alerts when the match is made

    def columns(self) -> dict[str, object]:
        """The stored columns (a ``matches`` row without ``item_id``)."""
        values = dict(vars(self))
        del values["confidence"]
        return values


def best_confidence(rows: Iterable[MatchRow]) -> dict[str, float]:
    """Organisation → the highest confidence of its matches."""
    best: dict[str, float] = {}
    for row in rows:
        best[row.organisation] = max(best.get(row.organisation, 0.0), row.confidence)
    return best


@dataclass
class ItemWrite:
    """Everything the pipelines know about one fetched item."""

    source_id: str
    url: str
    canonical_url: str
    title: str
    text: str
    content_hash: str
    fetched_at: datetime
    guid: str | None = None
    language: str | None = None
    published_at: datetime | None = None
    matches: list[MatchRow] = field(default_factory=list)
    raw: bytes = b""
    raw_url: str | None = None
    raw_status: int | None = None
    raw_headers: dict[str, str] = field(default_factory=dict)
    # The fingerprint of the feed entry (title, summary, dates, link, enclosure) it came from.
    entry_hash: str | None = None
    # Derived values computed ahead, outside the write transaction (``storage.writes.prepare``).
    prepared: Prepared | None = None


@dataclass(frozen=True)
class Prepared:
    """What storing an item derives from its text alone: search terms and story signature."""

    terms: str
    signed: Signed | None


@cache
def _parsed_query(query: str) -> Query:
    return parse_query(query)


@dataclass(frozen=True)
class ChannelRule:
    """Which events an alert channel wants: its id, organisation filter and age limit, the
    events it takes (match, edit, removed) and its narrowing by source and by a search query."""

    id: str
    organisations: frozenset[str] | None = None
    max_age: timedelta = timedelta(days=2)
    min_confidence: float = DEFAULT_MIN_CONFIDENCE
    events: frozenset[str] = frozenset({"match"})
    sources: frozenset[str] | None = None
    query: str | None = None

    def wants(self, organisation: str, confidence: float = 1.0) -> bool:
        return (self.organisations is None or organisation in self.organisations) \
            and confidence >= self.min_confidence

    def admits(self, source_ids: Iterable[str], title: str, text: str) -> bool:
        """The channel's ``sources`` and ``query`` let this item through."""
        if self.sources is not None and not self.sources.intersection(source_ids):
            return False
        return self.query is None or query_admits(_parsed_query(self.query), title, text)


@dataclass
class SaveResult:
    item_id: int
    status: Literal["new", "updated", "unchanged"]
    version: int
    story_id: int | None
    organisations: list[str]
    events: list[str] = field(default_factory=list)


Signed = tuple[bytes, list[int]]


@dataclass(frozen=True)
class SameAs:
    """A story choice in a batch: the (new) story of the batch's item at ``index``."""

    index: int


class StoryFinder:
    """Assigns a story to an item; the default gives every item its own story."""

    def signature(self, item: ItemWrite) -> Signed | None:
        return None

    def signatures(self, items: Sequence[ItemWrite]) -> list[Signed | None]:
        return [self.signature(item) for item in items]

    def find(self, session: Session, signature: bytes, bands: list[int], now: datetime,
             exclude_item: int | None, source_id: str = "") -> int | None:
        return None

    def find_many(self, session: Session, signed: Sequence[Signed | None],
                  nows: Sequence[datetime], sources: Sequence[str] = ()) -> list[int | SameAs | None] | None:
        """Stories for the new items of one batch, as if they were saved one after the other:
        an existing story id, SameAs(an earlier item of the batch) or None (a new story).
        None when this finder cannot look up a batch (its items are then saved one by one)."""
        if all(s is None for s in signed):
            return [None] * len(signed)
        return None


def find_item(session: Session, source_id: str, canonical_url: str, guid: str | None) -> Item | None:
    """The stored item with this canonical URL (in any source), else with this GUID in this
    source (a GUID is unique within its source only)."""
    item = session.scalar(select(Item).where(Item.url_key == key_of(canonical_url)))
    if item is None and guid:
        item = session.scalar(select(Item).join(ItemSource, ItemSource.item_id == Item.id).where(
            ItemSource.source_id == source_id, ItemSource.guid_key == key_of(guid)))
    return item


@dataclass(frozen=True)
class KnownEntry:
    """What the database knows of an entry a source lists: is it stored, does this source
    already carry it, and the fingerprint of its entry when this source last gave it."""

    item_id: int
    linked: bool
    entry_hash: str | None


def known_entries(session: Session, source_id: str, canonical_urls: Iterable[str]) -> dict[str, KnownEntry]:
    """{canonical URL: KnownEntry} of the stored items among ``canonical_urls``."""
    urls = {key_of(url): url for url in canonical_urls}
    found: dict[str, KnownEntry] = {}
    keys = sorted(urls)
    for start in range(0, len(keys), 400):
        chunk = keys[start:start + 400]
        items = dict(session.execute(select(Item.id, Item.url_key).where(Item.url_key.in_(chunk))).all())
        links = dict(session.execute(select(ItemSource.item_id, ItemSource.entry_hash).where(
            ItemSource.source_id == source_id, ItemSource.item_id.in_(list(items)))).all()) if items else {}
        for item_id, url_key in items.items():
            found[urls[url_key]] = KnownEntry(item_id, item_id in links, links.get(item_id))
    return found


def find_link(item: Item, source_id: str) -> ItemSource | None:
    """The item's link to ``source_id`` (its links are loaded with it)."""
    return next((link for link in item.links if link.source_id == source_id), None)


def save_item(
    session: Session,
    write: ItemWrite,
    channels: Sequence[ChannelRule] = (),
    stories: StoryFinder | None = None,
    now: datetime | None = None,
) -> SaveResult:
    """Store ``write`` idempotently: nothing when its content is known, a new version when it
    changed, and alert events for organisations its story has not been alerted for yet.

    An item another source already carries gains this source (no version, no alert: the same
    article); a source that repeats what it said before changes nothing, even when another
    source has since given the item a different text."""
    now = now or write.fetched_at
    stories = stories or StoryFinder()
    item = find_item(session, write.source_id, write.canonical_url, write.guid)
    link = find_link(item, write.source_id) if item is not None else None
    if item is not None and (link is None or write.content_hash in (item.content_hash, link.content_hash)):
        if link is None:
            item.links.append(_link_row(write, now))
        else:
            link.content_hash, link.entry_hash = write.content_hash, write.entry_hash or link.entry_hash
        return SaveResult(item.id, "unchanged", item.version, item.story_id,
                          sorted({m.organisation for m in item.matches}))
    status: Literal["new", "updated"] = "new" if item is None else "updated"
    if item is None:
        item = Item(
            source_id=write.source_id, url=write.url, canonical_url=write.canonical_url,
            url_key=key_of(write.canonical_url), guid=write.guid,
            guid_key=key_of(write.guid) if write.guid else None, first_seen_at=now, version=0,
        )
        session.add(item)
    else:
        assert link is not None
        link.content_hash, link.entry_hash = write.content_hash, write.entry_hash or link.entry_hash
    before = (item.version, item.title, item.text, {m.organisation for m in item.matches}) \
        if status == "updated" else None
    item.title, item.text, item.language = write.title, write.text, write.language
    item.published_at = write.published_at or item.published_at
    item.sort_at = item.published_at or item.first_seen_at
    item.updated_at = now
    item.version += 1
    item.content_hash = write.content_hash
    item.matches = [Match(**m.columns()) for m in write.matches]
    session.add(_version_row(item, write))
    session.flush()
    if status == "new":
        item.links.append(_link_row(write, now))
    index_item(session, item, fresh=status == "new",
               terms=write.prepared.terms if write.prepared is not None else None)
    _assign_story(session, item, write, stories, now, fresh=status == "new")
    events = _enqueue_alerts(session, item, channels, now, best_confidence(write.matches))
    if before is not None:  # an edit its source showed: an ``edit`` event for channels taking them
        version, title, text, organisations = before
        events += change_events(session, item, channels, "edit",
                                sorted(organisations | {m.organisation for m in item.matches}),
                                change_summary(version, title, text, item), now)
    return SaveResult(item.id, status, item.version, item.story_id,
                      sorted({m.organisation for m in item.matches}), events)


def _link_row(write: ItemWrite, now: datetime) -> ItemSource:
    return ItemSource(source_id=write.source_id,
                      guid_key=key_of(write.guid) if write.guid else None,
                      content_hash=write.content_hash, entry_hash=write.entry_hash, first_seen_at=now)


def _version_row(item: Item, write: ItemWrite) -> ItemVersion:
    return ItemVersion(item=item, version=item.version, **version_values(write))


def version_values(write: ItemWrite) -> dict[str, object]:
    """The columns of an item version row that come from the write."""
    return {
        "fetched_at": write.fetched_at, "title": write.title, "text": write.text,
        "content_hash": write.content_hash, "published_at": write.published_at,
        "raw": zlib.compress(write.raw, 6) if write.raw else None, "raw_url": write.raw_url,
        "raw_status": write.raw_status,
        "raw_headers": json.dumps(write.raw_headers, ensure_ascii=False) if write.raw_headers else None,
    }


def index_item(session: Session, item: Item, *, fresh: bool = False, terms: str | None = None) -> None:
    """(Re)index the item's current title and text for full-text search (``terms``: their search
    terms, when already known)."""
    terms = terms if terms is not None else search_terms(item.title, item.text)
    if session.get_bind().dialect.name == "sqlite":
        if not fresh:
            session.execute(text("DELETE FROM items_fts WHERE rowid = :id"), {"id": item.id})
        session.execute(text("INSERT INTO items_fts(rowid, terms) VALUES (:id, :t)"),
                        {"id": item.id, "t": terms})
    else:
        session.execute(
            text("INSERT INTO items_search(item_id, terms) VALUES (:id, to_tsvector('simple', :t)) "
                 "ON CONFLICT (item_id) DO UPDATE SET terms = excluded.terms"),
            {"id": item.id, "t": terms},
        )


def _assign_story(session: Session, item: Item, write: ItemWrite, stories: StoryFinder,
                  now: datetime, *, fresh: bool = False) -> None:
    """Join the item to a story (a new one when none is found); store its signature and bands.
    ``fresh``: the item was just inserted, so it has no signature or bands to replace."""
    signed = write.prepared.signed if write.prepared is not None else stories.signature(write)
    if item.story_id is None and signed is not None:
        item.story_id = stories.find(session, signed[0], signed[1], now, exclude_item=item.id,
                                     source_id=item.source_id)
    if item.story_id is None:
        story = Story(created_at=now)
        session.add(story)
        session.flush()
        item.story_id = story.id
    if signed is not None:
        signature, bands = signed
        if fresh:
            session.execute(insert(ItemSignature), [{"item_id": item.id, "signature": signature}])
        else:
            session.merge(ItemSignature(item_id=item.id, signature=signature))
            session.execute(delete(StoryBand).where(StoryBand.item_id == item.id))
        if bands:
            session.execute(insert(StoryBand), [{"band": b, "item_id": item.id, "seen_at": now} for b in bands])
    session.flush()


def _enqueue_alerts(session: Session, item: Item, channels: Sequence[ChannelRule],
                    now: datetime, confidence: dict[str, float] | None = None) -> list[str]:
    """Alert events for the item's organisations; ``confidence`` (organisation → best
    confidence of this matching; stored matches count as 1.0) gates each channel."""
    organisations = sorted({m.organisation for m in item.matches})
    confidence = confidence or {}
    if not organisations or item.story_id is None:
        return []
    published = item.published_at or item.first_seen_at
    events = []
    for channel in channels:
        if now - published > channel.max_age or "match" not in channel.events \
                or not channel.admits(item.source_ids, item.title, item.text):
            continue
        wanted = [o for o in organisations if channel.wants(o, confidence.get(o, 1.0))]
        done = set(session.scalars(select(AlertKey.organisation).where(
            AlertKey.channel == channel.id, AlertKey.story_id == item.story_id,
            AlertKey.organisation.in_(wanted))))
        fresh = [o for o in wanted if o not in done]
        if fresh:
            events.append(_add_event(session, item, channel.id, fresh, now))
    return events


def _add_event(session: Session, item: Item, channel: str, organisations: list[str],
               now: datetime) -> str:
    event_id = str(uuid.uuid4())
    session.add_all(AlertKey(channel=channel, story_id=item.story_id, organisation=o)
                    for o in organisations)
    payload = {"event_id": event_id, "event": "match", "organisations": organisations,
               "item": item_dict(item)}
    session.add(AlertEvent(
        event_id=event_id, channel=channel, item_id=item.id, story_id=item.story_id,
        organisations=json.dumps(organisations), payload=json.dumps(payload, ensure_ascii=False),
        created_at=now, published_at=item.published_at, first_seen_at=item.first_seen_at,
        next_attempt_at=now,
    ))
    return event_id


# --- sources -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceRow:
    """A configured source as storage sees it."""

    id: str
    kind: str
    url: str
    name: str = ""
    language: str | None = None
    enabled: bool = True
    interval_seconds: float = 600.0


SYNC_LOCK = 0x6E65_7774


def sync_sources(session: Session, rows: Iterable[SourceRow], now: datetime) -> None:
    """Insert new sources, update changed definitions; keep polling state. Sources no longer
    configured are disabled (their items stay). Processes starting together sync one after the
    other, never inserting a source twice: on PostgreSQL a transaction-level advisory lock, on
    SQLite the database's write lock, taken before the read by a write that changes nothing."""
    rows = list(rows)
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SYNC_LOCK})
    else:
        session.execute(text("UPDATE sources SET id = id WHERE 0"))
    existing = {s.id: s for s in session.scalars(select(Source))}
    for row in rows:
        source = existing.get(row.id)
        if source is None:
            source = Source(id=row.id, created_at=now, failures=0, had_items=False)
            session.add(source)
        elif source.url != row.url:
            source.etag = source.last_modified = source.body_hash = None
        source.kind, source.url, source.name = row.kind, row.url, row.name
        source.host = (urlsplit(row.url).hostname or "").lower()
        source.language, source.enabled = row.language, row.enabled
        source.interval_seconds = row.interval_seconds
    configured = {r.id for r in rows}
    for source_id, source in existing.items():
        if source_id not in configured:
            source.enabled = False


@dataclass
class PollOutcome:
    """What one poll of one source came to."""

    source_id: str
    started_at: datetime
    finished_at: datetime
    outcome: Literal["ok", "not-modified", "error"]
    error_class: str | None = None
    message: str | None = None
    http_status: int | None = None
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    matched: int = 0
    entries: int = 0
    etag: str | None = None
    last_modified: str | None = None
    body_hash: str | None = None
    next_poll_at: datetime | None = None


def record_poll(session: Session, outcome: PollOutcome, worker_id: str | None = None) -> None:
    """Write the fetch log row and the source's polling state for one poll."""
    session.add(FetchLog(
        source_id=outcome.source_id, started_at=outcome.started_at,
        finished_at=outcome.finished_at, outcome=outcome.outcome,
        error_class=outcome.error_class, message=outcome.message,
        http_status=outcome.http_status, new=outcome.new, updated=outcome.updated,
        unchanged=outcome.unchanged, matched=outcome.matched, worker_id=worker_id,
    ))
    values: dict[str, object] = {"last_poll_at": outcome.finished_at,
                                 "lease_owner": None, "lease_expires_at": None}
    if outcome.next_poll_at is not None:
        values["next_poll_at"] = outcome.next_poll_at
    if outcome.outcome == "error":
        values.update(failures=Source.failures + 1, last_error_class=outcome.error_class,
                      last_error_message=outcome.message, last_error_at=outcome.finished_at)
    else:
        values.update(failures=0, last_success_at=outcome.finished_at)
        if outcome.outcome == "ok":
            values.update(etag=outcome.etag, last_modified=outcome.last_modified,
                          body_hash=outcome.body_hash)
        if outcome.entries:
            values["had_items"] = True
        if outcome.new:
            values["last_new_item_at"] = outcome.finished_at
    session.execute(update(Source).where(Source.id == outcome.source_id).values(**values))




@dataclass
class RematchResult:
    gained: list[str]
    lost: list[str]
    events: list[str]


def rematch_item(session: Session, item: Item, rows: Sequence[MatchRow],
                 only: frozenset[str] | None, channels: Sequence[ChannelRule] = (),
                 alert: bool = False, now: datetime | None = None) -> RematchResult:
    """Replace the item's matches (of the ``only`` organisations, or all) with ``rows``; alert
    the organisations gained only when ``alert`` is set."""
    def wanted(org: str) -> bool:
        return only is None or org in only

    before = {m.organisation for m in item.matches if wanted(m.organisation)}
    fresh = [r for r in rows if wanted(r.organisation)]
    after = {r.organisation for r in fresh}
    kept = [m for m in item.matches if not wanted(m.organisation)]
    gained, lost = sorted(after - before), sorted(before - after)
    if not gained and not lost and len(fresh) == len(item.matches) - len(kept):
        return RematchResult([], [], [])
    item.matches = kept + [Match(**r.columns()) for r in fresh]
    session.flush()
    events: list[str] = []
    if alert and gained:
        events = _enqueue_alerts(session, item, channels, now or datetime.now(item.first_seen_at.tzinfo),
                                 best_confidence(fresh))
    return RematchResult(gained, lost, events)
