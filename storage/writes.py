"""The batch write path: the items of one response in a few statements, with the semantics of
saving them one by one with ``save_item`` (identity, versions, matches, stories, alerts).

Existing items are looked up in one query; unchanged ones write nothing, changed ones (and an
item the batch names twice) go through ``save_item``. Runs of new items are inserted with Core
``executemany``: stories first (the finder looks up a whole run, earlier items of the run count
as candidates of later ones), then items, versions, matches, search rows, signatures and bands,
then alert keys and outbox events."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, text
from sqlalchemy.orm import Session

from storage.models import (
    AlertEvent,
    AlertKey,
    Item,
    ItemSignature,
    ItemSource,
    ItemVersion,
    Match,
    Story,
    StoryBand,
)
from storage.repository import (
    ChannelRule,
    ItemWrite,
    Prepared,
    SameAs,
    SaveResult,
    Signed,
    StoryFinder,
    best_confidence,
    key_of,
    save_item,
    version_values,
)
from storage.search import search_terms
from storage.serialize import item_dict

LOOKUP_CHUNK = 400  # identity keys per lookup query (well under every backend's parameter limit)


@dataclass(frozen=True)
class Stored:
    """What the lookup needs to know of an existing item, and of its link to the write's source
    (None when that source has not carried it yet)."""

    id: int
    content_hash: str
    version: int
    story_id: int | None
    link: tuple[str | None, str | None] | None = None  # (content hash, entry hash) of this source

    def unchanged_for(self, write: ItemWrite) -> bool:
        """True when storing ``write`` writes nothing: its source carries the item and said
        exactly this before (content and feed entry)."""
        return (self.link is not None and self.link[0] == write.content_hash
                and (write.entry_hash is None or self.link[1] == write.entry_hash))


def prepare(writes: Sequence[ItemWrite], stories: StoryFinder) -> None:
    """Compute the search terms and story signatures of ``writes`` now (``ItemWrite.prepared``),
    so that storing them does only database work: crawl processes prepare outside the write
    transaction, which other processes may be waiting for."""
    for write, signed in zip(writes, stories.signatures(list(writes)), strict=True):
        write.prepared = Prepared(search_terms(write.title, write.text), signed)


def save_items(
    session: Session,
    writes: Sequence[ItemWrite],
    channels: Sequence[ChannelRule] = (),
    stories: StoryFinder | None = None,
    now: datetime | None = None,
) -> list[SaveResult]:
    """Store ``writes`` in this transaction; the results are those of calling ``save_item`` on
    each in order, with far fewer statements."""
    stories = stories or StoryFinder()
    batch = _Batch(session, list(writes), channels, stories, now)
    return batch.run()


@dataclass
class _Batch:
    session: Session
    writes: list[ItemWrite]
    channels: Sequence[ChannelRule]
    stories: StoryFinder
    now: datetime | None
    results: list[SaveResult | None] = field(default_factory=list)
    pending: list[int] = field(default_factory=list)  # indexes of new items not yet inserted

    def run(self) -> list[SaveResult]:
        self.results = [None] * len(self.writes)
        stored = _lookup(self.session, self.writes)
        # Before any write of the batch: an unchanged item's result is its state before it.
        organisations = _organisations(self.session, [
            row.id for row, w in zip(stored, self.writes, strict=True)
            if row is not None and row.unchanged_for(w)])
        claimed: set[tuple[str, str, str]] = set()
        touched: set[int] = set()
        for index, write in enumerate(self.writes):
            keys = _identity(write)
            row = stored[index]
            if keys & claimed or (row is not None and row.id in touched):
                self._one_by_one(index)  # named twice in the batch: see the earlier write
            elif row is None:
                self.pending.append(index)
            elif row.unchanged_for(write):
                self.results[index] = SaveResult(row.id, "unchanged", row.version, row.story_id,
                                                 organisations.get(row.id, []))
            else:
                self._one_by_one(index)
            claimed |= keys
            if row is not None:
                touched.add(row.id)
        self._insert_pending()
        assert all(r is not None for r in self.results)
        return [r for r in self.results if r is not None]

    def _one_by_one(self, index: int) -> None:
        self._insert_pending()
        self.results[index] = save_item(self.session, self.writes[index], self.channels,
                                        stories=self.stories, now=self.now)

    def _insert_pending(self) -> None:
        if not self.pending:
            return
        indexes, self.pending = self.pending, []
        writes = [self.writes[i] for i in indexes]
        nows = [self.now or w.fetched_at for w in writes]
        signed = _signatures(self.stories, writes)
        choices = self.stories.find_many(self.session, signed, nows, [w.source_id for w in writes])
        if choices is None:  # the finder cannot look up a batch
            for index in indexes:
                self.results[index] = save_item(self.session, self.writes[index], self.channels,
                                                stories=self.stories, now=self.now)
            return
        story_ids = _create_stories(self.session, choices, nows)
        item_ids = _insert_items(self.session, writes, story_ids, nows)
        _insert_details(self.session, writes, item_ids, signed, nows)
        # Stories created by this run have no alert keys stored yet.
        created = {story for story, choice in zip(story_ids, choices, strict=True) if not isinstance(choice, int)}
        alerts = _Alerts(self.session, self.channels, created)
        for index, write, item_id, story_id, now in zip(indexes, writes, item_ids, story_ids, nows,
                                                        strict=True):
            events = alerts.enqueue(write, item_id, story_id, now)
            self.results[index] = SaveResult(item_id, "new", 1, story_id,
                                             sorted({m.organisation for m in write.matches}), events)
        alerts.flush()


def _signatures(stories: StoryFinder, writes: list[ItemWrite]) -> list[Signed | None]:
    """The prepared signature of each write, the others computed here (together)."""
    todo = [w for w in writes if w.prepared is None]
    computed = iter(stories.signatures(todo) if todo else ())
    return [w.prepared.signed if w.prepared is not None else next(computed) for w in writes]


def _terms(write: ItemWrite) -> str:
    return write.prepared.terms if write.prepared is not None else search_terms(write.title, write.text)


def _identity(write: ItemWrite) -> set[tuple[str, str, str]]:
    keys = {("url", "", key_of(write.canonical_url))}
    if write.guid:
        keys.add(("guid", write.source_id, key_of(write.guid)))
    return keys


def _lookup(session: Session, writes: list[ItemWrite]) -> list[Stored | None]:
    """The stored item of each write: by canonical URL in any source, else by GUID in its
    source; with the item's link to the write's source.

    One indexed search per key kind and chunk (``url_key IN (…)``; ``source_id = ? AND guid_key
    IN (…)`` per source): SQLite answers row values or an OR of the two kinds by scanning."""
    url_keys = [key_of(w.canonical_url) for w in writes]
    guids: dict[str, list[str]] = {}
    for w in writes:
        if w.guid:
            guids.setdefault(w.source_id, []).append(key_of(w.guid))
    columns = (Item.id, Item.url_key, Item.content_hash, Item.version, Item.story_id)
    items: dict[int, Any] = {}
    for chunk in _chunks(sorted(set(url_keys))):
        items.update((row.id, row) for row in session.execute(select(*columns).where(Item.url_key.in_(chunk))))
    by_guid: dict[tuple[str, str], int] = {}
    for source, keys in guids.items():
        for chunk in _chunks(sorted(set(keys))):
            by_guid.update(((source, g), i) for i, g in session.execute(
                select(ItemSource.item_id, ItemSource.guid_key).where(
                    ItemSource.source_id == source, ItemSource.guid_key.in_(chunk))))
    missing = sorted(set(by_guid.values()) - set(items))
    for chunk in _chunks(missing):
        items.update((row.id, row) for row in session.execute(select(*columns).where(Item.id.in_(chunk))))
    by_url = {row.url_key: row.id for row in items.values()}
    links: dict[tuple[int, str], tuple[str | None, str | None]] = {}
    for chunk in _chunks(sorted(items)):
        for item_id, source, content, entry in session.execute(
                select(ItemSource.item_id, ItemSource.source_id, ItemSource.content_hash,
                       ItemSource.entry_hash).where(ItemSource.item_id.in_(chunk))):
            links[(item_id, source)] = (content, entry)
    found: list[Stored | None] = []
    for write, url_key in zip(writes, url_keys, strict=True):
        item_id = by_url.get(url_key)
        if item_id is None and write.guid:
            item_id = by_guid.get((write.source_id, key_of(write.guid)))
        row = items.get(item_id) if item_id is not None else None
        found.append(None if row is None else Stored(row.id, row.content_hash, row.version, row.story_id,
                                                     links.get((row.id, write.source_id))))
    return found


def _chunks(values: Sequence[Any]) -> list[Sequence[Any]]:
    return [values[start:start + LOOKUP_CHUNK] for start in range(0, len(values), LOOKUP_CHUNK)]


def _organisations(session: Session, item_ids: list[int]) -> dict[int, list[str]]:
    found: dict[int, set[str]] = {}
    for start in range(0, len(item_ids), LOOKUP_CHUNK):
        chunk = item_ids[start:start + LOOKUP_CHUNK]
        for item_id, organisation in session.execute(
                select(Match.item_id, Match.organisation).where(Match.item_id.in_(chunk))):
            found.setdefault(item_id, set()).add(organisation)
    return {item_id: sorted(orgs) for item_id, orgs in found.items()}


def _create_stories(session: Session, choices: Sequence[int | SameAs | None],
                    nows: Sequence[datetime]) -> list[int]:
    """The story id of each new item: found, shared with an earlier item of the run, or new."""
    fresh = [i for i, choice in enumerate(choices) if choice is None]
    created: dict[int, int] = {}
    if fresh:
        rows = session.execute(
            insert(Story.__table__).returning(Story.__table__.c.id, sort_by_parameter_order=True),
            [{"created_at": nows[i]} for i in fresh])
        created = dict(zip(fresh, rows.scalars(), strict=True))
    story_ids: list[int] = []
    for index, choice in enumerate(choices):
        if choice is None:
            story_ids.append(created[index])
        elif isinstance(choice, SameAs):
            story_ids.append(story_ids[choice.index])
        else:
            story_ids.append(choice)
    return story_ids


def _insert_items(session: Session, writes: list[ItemWrite], story_ids: list[int],
                  nows: list[datetime]) -> list[int]:
    rows = [{
        "source_id": w.source_id, "url": w.url, "canonical_url": w.canonical_url,
        "url_key": key_of(w.canonical_url), "guid": w.guid,
        "guid_key": key_of(w.guid) if w.guid else None, "title": w.title, "text": w.text,
        "language": w.language, "published_at": w.published_at, "first_seen_at": now,
        "updated_at": now, "sort_at": w.published_at or now, "version": 1,
        "content_hash": w.content_hash, "story_id": story_id,
    } for w, story_id, now in zip(writes, story_ids, nows, strict=True)]
    table = Item.__table__
    result = session.execute(insert(table).returning(table.c.id, sort_by_parameter_order=True), rows)
    return list(result.scalars())


def _insert_details(session: Session, writes: list[ItemWrite], item_ids: list[int],
                    signed: list[Signed | None], nows: list[datetime]) -> None:
    """Versions, matches, search rows, signatures and bands of freshly inserted items."""
    _execute(session, insert(ItemVersion.__table__),
             [{"item_id": i, "version": 1, **version_values(w)} for w, i in zip(writes, item_ids, strict=True)])
    _execute(session, insert(Match.__table__),
             [{"item_id": i, **m.columns()} for w, i in zip(writes, item_ids, strict=True) for m in w.matches])
    _execute(session, insert(ItemSource.__table__), [{
        "item_id": i, "source_id": w.source_id, "guid_key": key_of(w.guid) if w.guid else None,
        "content_hash": w.content_hash, "entry_hash": w.entry_hash, "first_seen_at": now}
        for w, i, now in zip(writes, item_ids, nows, strict=True)])
    _index_new(session, [(i, _terms(w)) for w, i in zip(writes, item_ids, strict=True)])
    pairs = [(i, s, now) for i, s, now in zip(item_ids, signed, nows, strict=True) if s is not None]
    _execute(session, insert(ItemSignature.__table__),
             [{"item_id": i, "signature": s[0]} for i, s, _ in pairs])
    _insert_bands(session, pairs)


def _insert_bands(session: Session, pairs: list[tuple[int, Signed, datetime]]) -> None:
    """25 rows per item: on SQLite straight to the driver, each item's ``seen_at`` converted once
    (Core would convert every row's parameters, a third of the statement's time)."""
    table = StoryBand.__table__
    connection = session.connection()
    if connection.dialect.name != "sqlite":
        _execute(session, insert(table), [{"band": b, "item_id": i, "seen_at": now} for i, s, now in pairs
                                          for b in s[1]])
        return
    to_db = table.c.seen_at.type._cached_bind_processor(connection.dialect)  # as Core converts it
    rows = [(b, i, seen_at) for i, s, now in pairs for seen_at in [to_db(now) if to_db else now] for b in s[1]]
    if rows:
        connection.exec_driver_sql("INSERT INTO story_bands (band, item_id, seen_at) VALUES (?, ?, ?)", rows)


def _execute(session: Session, statement: Any, rows: list[dict[str, Any]]) -> None:
    if rows:
        session.execute(statement, rows)


def _index_new(session: Session, rows: list[tuple[int, str]]) -> None:
    """Full-text rows of new items (as ``repository.index_item(fresh=True)``)."""
    params = [{"id": i, "t": terms} for i, terms in rows]
    if session.get_bind().dialect.name == "sqlite":
        _execute(session, text("INSERT INTO items_fts(rowid, terms) VALUES (:id, :t)"), params)
    else:
        _execute(session, text(
            "INSERT INTO items_search(item_id, terms) VALUES (:id, to_tsvector('simple', :t)) "
            "ON CONFLICT (item_id) DO UPDATE SET terms = excluded.terms"), params)


class _Alerts:
    """Alert keys and outbox events of new items (``repository._enqueue_alerts`` for a run)."""

    def __init__(self, session: Session, channels: Sequence[ChannelRule], new_stories: set[int]) -> None:
        self.session, self.channels = session, channels
        self.done: set[tuple[str, int, str]] | None = None
        self.keys: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.story_ids: set[int] = set(new_stories)  # stories whose stored keys are known (none)

    def enqueue(self, write: ItemWrite, item_id: int, story_id: int, now: datetime) -> list[str]:
        confidence = best_confidence(write.matches)
        organisations = sorted(confidence)
        if not organisations or not self.channels:
            return []
        published = write.published_at or now
        events = []
        for channel in self.channels:
            if now - published > channel.max_age or "match" not in channel.events \
                    or not channel.admits([write.source_id], write.title, write.text):
                continue
            done = self._done(story_id)
            fresh = [o for o in organisations if channel.wants(o, confidence[o])
                     and (channel.id, story_id, o) not in done]
            if fresh:
                done.update((channel.id, story_id, o) for o in fresh)
                events.append(self._event(write, item_id, story_id, channel.id, fresh, now))
        return events

    def _done(self, story_id: int) -> set[tuple[str, int, str]]:
        """Keys already alerted (stored, or added by this run); loaded once per story."""
        if self.done is None:
            self.done = set()
        if story_id not in self.story_ids:
            self.story_ids.add(story_id)
            rows = self.session.execute(select(AlertKey.channel, AlertKey.story_id, AlertKey.organisation)
                                        .where(AlertKey.channel.in_([c.id for c in self.channels]),
                                               AlertKey.story_id == story_id))  # uq_alert_keys' prefix
            self.done.update((channel, story, org) for channel, story, org in rows)
        return self.done

    def _event(self, write: ItemWrite, item_id: int, story_id: int, channel: str,
               organisations: list[str], now: datetime) -> str:
        event_id = str(uuid.uuid4())
        self.keys.extend({"channel": channel, "story_id": story_id, "organisation": o}
                         for o in organisations)
        item = _transient_item(write, item_id, story_id, now)
        payload = {"event_id": event_id, "event": "match", "organisations": organisations,
                   "item": item_dict(item)}
        self.events.append({
            "event_id": event_id, "channel": channel, "item_id": item_id, "story_id": story_id,
            "organisations": json.dumps(organisations),
            "payload": json.dumps(payload, ensure_ascii=False), "created_at": now,
            "published_at": write.published_at, "first_seen_at": now, "attempts": 0,
            "next_attempt_at": now,
        })
        return event_id

    def flush(self) -> None:
        _execute(self.session, insert(AlertKey.__table__), self.keys)
        _execute(self.session, insert(AlertEvent.__table__), self.events)
        self.keys, self.events = [], []


def _transient_item(write: ItemWrite, item_id: int, story_id: int, now: datetime) -> Item:
    """An Item object (never added to the session) for the event payload."""
    return Item(id=item_id, source_id=write.source_id, url=write.url,
                canonical_url=write.canonical_url, title=write.title,
                published_at=write.published_at, first_seen_at=now, language=write.language,
                story_id=story_id, version=1, content_hash=write.content_hash,
                matches=[Match(**m.columns()) for m in write.matches],
                links=[ItemSource(source_id=write.source_id)])
