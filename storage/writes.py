"""The write path: items, with their versions, matches, search rows, stories and alert events,
stored idempotently in the caller's transaction. ``save_items`` is the one function that writes
items (``save_item`` is ``save_items`` of one).

Existing items are looked up in one query; unchanged ones write nothing, changed ones (and an
item the batch names twice) are updated one by one. Runs of new items are inserted with Core
``executemany``: stories first (``storage.stories``: earlier items of the run count as
candidates of later ones), then items, versions, matches, search rows, signatures and bands,
then alert keys and outbox events. Indexing (``index_items``), signatures and bands
(``_store_signatures``) and alerts (``Alerts``) have one function each, for new and changed
items alike."""

from __future__ import annotations

import json
import uuid
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

from sqlalchemy import delete, insert, select, text
from sqlalchemy.orm import Session

from storage.changes import change_events, change_summary
from storage.keys import key_of
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
    MatchRow,
    SaveResult,
    best_confidence,
    find_item,
    find_link,
)
from storage.search import fts5_terms, search_pairs, search_terms
from storage.serialize import item_dict
from storage.stories import Choice, SameAs, Signed, StoryRule, choose_stories

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


def save_item(session: Session, write: ItemWrite, channels: Sequence[ChannelRule] = (),
              stories: StoryRule | None = None, now: datetime | None = None) -> SaveResult:
    """``save_items`` of one write."""
    return save_items(session, [write], channels, stories, now)[0]


def save_items(
    session: Session,
    writes: Sequence[ItemWrite],
    channels: Sequence[ChannelRule] = (),
    stories: StoryRule | None = None,
    now: datetime | None = None,
) -> list[SaveResult]:
    """Store ``writes`` in this transaction, with the results of storing them one after the other:
    nothing when an item's content is known, a new version when it changed, and alert events
    for organisations its story has not been alerted for yet.

    An item another source already carries gains this source (no version, no alert: the same
    article); a source that repeats what it said before changes nothing, even when another
    source has since given the item a different text. New items join a story by ``stories``
    (needs their signatures: ``ItemWrite.prepared``), else each gets its own."""
    return _Batch(session, list(writes), channels, stories, now).run()


@dataclass
class _Batch:
    session: Session
    writes: list[ItemWrite]
    channels: Sequence[ChannelRule]
    stories: StoryRule | None
    now: datetime | None
    results: list[SaveResult | None] = field(default_factory=list)
    pending: list[int] = field(default_factory=list)  # indexes of new items not yet inserted
    alerts: Alerts | None = None

    def run(self) -> list[SaveResult]:
        self.results = [None] * len(self.writes)
        self.alerts = Alerts(self.session, self.channels)
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
        self.alerts.flush()
        assert all(r is not None for r in self.results)
        return [r for r in self.results if r is not None]

    def _one_by_one(self, index: int) -> None:
        """A stored item (or one an earlier write of the batch stored): updated alone."""
        self._insert_pending()
        assert self.alerts is not None
        write = self.writes[index]
        result = _save_existing(self.session, write, self.alerts, self.stories, self.now or write.fetched_at)
        if result is None:  # not stored after all: new
            self.pending.append(index)
            self._insert_pending()
        else:
            self.results[index] = result

    def _insert_pending(self) -> None:
        if not self.pending:
            return
        assert self.alerts is not None
        indexes, self.pending = self.pending, []
        writes = [self.writes[i] for i in indexes]
        nows = [self.now or w.fetched_at for w in writes]
        signed = [_signed(w) for w in writes]
        choices = choose_stories(self.session, self.stories, signed, nows, [w.source_id for w in writes])
        story_ids = _create_stories(self.session, choices, nows)
        item_ids = _insert_items(self.session, writes, story_ids, nows)
        _insert_details(self.session, writes, item_ids, nows)
        index_items(self.session, [(i, _terms(w)) for w, i in zip(writes, item_ids, strict=True)], fresh=True)
        _store_signatures(self.session, [(i, s, now) for i, s, now in zip(item_ids, signed, nows, strict=True)
                                         if s is not None], fresh=True)
        # Stories created by this run have no alert keys stored yet.
        self.alerts.known(story for story, choice in zip(story_ids, choices, strict=True)
                          if not isinstance(choice, int))
        for index, write, item_id, story_id, now in zip(indexes, writes, item_ids, story_ids, nows,
                                                        strict=True):
            events = self.alerts.enqueue(partial(_transient_item, write, item_id, story_id, now), story_id,
                                         best_confidence(write.matches), write.published_at or now, now)
            self.results[index] = SaveResult(item_id, "new", 1, story_id,
                                             sorted({m.organisation for m in write.matches}), events)


def _save_existing(session: Session, write: ItemWrite, alerts: Alerts, stories: StoryRule | None,
                   now: datetime) -> SaveResult | None:
    """Store ``write`` over the item stored with its identity (None when there is none)."""
    item = find_item(session, write.source_id, write.canonical_url, write.guid)
    if item is None:
        return None
    link = find_link(item, write.source_id)
    if link is None or write.content_hash in (item.content_hash, link.content_hash):
        if link is None:
            item.links.append(ItemSource(source_id=write.source_id,
                                         guid_key=key_of(write.guid) if write.guid else None,
                                         content_hash=write.content_hash, entry_hash=write.entry_hash,
                                         first_seen_at=now))
        else:
            link.content_hash, link.entry_hash = write.content_hash, write.entry_hash or link.entry_hash
        return SaveResult(item.id, "unchanged", item.version, item.story_id,
                          sorted({m.organisation for m in item.matches}))
    link.content_hash, link.entry_hash = write.content_hash, write.entry_hash or link.entry_hash
    before = (item.version, item.title, item.text, {m.organisation for m in item.matches})
    item.title, item.text, item.language = write.title, write.text, write.language
    item.published_at = write.published_at or item.published_at
    item.sort_at = item.published_at or item.first_seen_at
    item.updated_at = now
    item.version += 1
    item.content_hash = write.content_hash
    item.matches = [Match(**m.columns()) for m in write.matches]
    session.add(ItemVersion(item=item, version=item.version, **version_values(write)))
    session.flush()
    index_items(session, [(item.id, _terms(write))], fresh=False)
    signed = _signed(write)
    if item.story_id is None:  # stored before stories were kept
        choice = choose_stories(session, stories, [signed], [now], [item.source_id], exclude=[item.id])[0]
        item.story_id = _create_stories(session, [choice], [now])[0]
        alerts.known([item.story_id] if choice is None else [])
    if signed is not None:
        _store_signatures(session, [(item.id, signed, now)], fresh=False)
    session.flush()
    confidence = {m.organisation: 1.0 for m in item.matches} | best_confidence(write.matches)
    events = alerts.enqueue(lambda: item, item.story_id, confidence, item.published_at or item.first_seen_at,
                            now)
    version, title, text_before, organisations = before  # an edit its source showed: ``edit`` events
    events += change_events(session, item, alerts.channels, "edit",
                            sorted(organisations | {m.organisation for m in item.matches}),
                            change_summary(version, title, text_before, item), now)
    return SaveResult(item.id, "updated", item.version, item.story_id,
                      sorted({m.organisation for m in item.matches}), events)


def version_values(write: ItemWrite) -> dict[str, object]:
    """The columns of an item version row that come from the write."""
    return {
        "fetched_at": write.fetched_at, "title": write.title, "text": write.text,
        "content_hash": write.content_hash, "published_at": write.published_at,
        "raw": zlib.compress(write.raw, 6) if write.raw else None, "raw_url": write.raw_url,
        "raw_status": write.raw_status,
        "raw_headers": json.dumps(write.raw_headers, ensure_ascii=False) if write.raw_headers else None,
    }


def _signed(write: ItemWrite) -> Signed | None:
    """The write's story signature (computed ahead by the crawler; None: no story lookup)."""
    return write.prepared.signed if write.prepared is not None else None


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
                    ItemSource.source_id == source, ItemSource.guid_key.in_(chunk))) if g is not None)
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
        found_id = by_url.get(url_key)
        if found_id is None and write.guid:
            found_id = by_guid.get((write.source_id, key_of(write.guid)))
        row = items.get(found_id) if found_id is not None else None
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


def _create_stories(session: Session, choices: Sequence[Choice], nows: Sequence[datetime]) -> list[int]:
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
                    nows: list[datetime]) -> None:
    """Versions, matches and source links of freshly inserted items."""
    _execute(session, insert(ItemVersion.__table__),
             [{"item_id": i, "version": 1, **version_values(w)} for w, i in zip(writes, item_ids, strict=True)])
    _execute(session, insert(Match.__table__),
             [{"item_id": i, **m.columns()} for w, i in zip(writes, item_ids, strict=True) for m in w.matches])
    _execute(session, insert(ItemSource.__table__), [{
        "item_id": i, "source_id": w.source_id, "guid_key": key_of(w.guid) if w.guid else None,
        "content_hash": w.content_hash, "entry_hash": w.entry_hash, "first_seen_at": now}
        for w, i, now in zip(writes, item_ids, nows, strict=True)])


def _store_signatures(session: Session, pairs: list[tuple[int, Signed, datetime]], *, fresh: bool) -> None:
    """The story signature and LSH bands of each item (``fresh``: just inserted, so it has none
    to replace)."""
    if not pairs:
        return
    if not fresh:
        ids = [i for i, _, _ in pairs]
        session.execute(delete(ItemSignature).where(ItemSignature.item_id.in_(ids)))
        session.execute(delete(StoryBand).where(StoryBand.item_id.in_(ids)))
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


def index_items(session: Session, rows: Sequence[tuple[int, str]], *, fresh: bool = False) -> None:
    """Full-text rows (item id, search terms); ``fresh``: the items have none yet."""
    if not rows:
        return
    if session.get_bind().dialect.name == "sqlite":
        params = [{"id": i, "t": fts5_terms(terms)} for i, terms in rows]
        if not fresh:
            session.execute(text("DELETE FROM items_fts WHERE rowid = :id"), [{"id": i} for i, _ in rows])
        session.execute(text("INSERT INTO items_fts(rowid, terms) VALUES (:id, :t)"), params)
    else:  # the pairs of a text search_pairs cannot vouch for come from the server's tsvector
        session.execute(text(
            "INSERT INTO items_search(item_id, terms, pairs) SELECT :id, v, "
            "coalesce(CAST(:p AS int4[]), search_pair_hashes(v)) FROM to_tsvector('simple', :t) v "
            "ON CONFLICT (item_id) DO UPDATE SET terms = excluded.terms, pairs = excluded.pairs"),
            [{"id": i, "t": terms, "p": search_pairs(terms)} for i, terms in rows])


def index_item(session: Session, item: Item, *, fresh: bool = False, terms: str | None = None) -> None:
    """``index_items`` of one stored item (``terms``: its search terms, when already known)."""
    index_items(session, [(item.id, terms if terms is not None else search_terms(item.title, item.text))],
                fresh=fresh)


class Alerts:
    """Alert keys and outbox events: one event per channel for the organisations of an item its
    story has not been alerted for on that channel yet. Keys and events are written by
    ``flush``; until then the keys added count as alerted."""

    def __init__(self, session: Session, channels: Sequence[ChannelRule]) -> None:
        self.session, self.channels = session, channels
        self.done: set[tuple[str, int, str]] = set()
        self.keys: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.story_ids: set[int] = set()  # stories whose stored keys are loaded (or known to be none)

    def known(self, story_ids: Iterable[int]) -> None:
        """Stories that have no stored keys (created by this transaction)."""
        self.story_ids.update(story_ids)

    def enqueue(self, item: Callable[[], Item], story_id: int, confidence: dict[str, float],
                published: datetime, now: datetime) -> list[str]:
        """The events for an item (``item()`` makes it for the payload) of ``story_id``:
        ``confidence`` (organisation → best confidence of this matching) gates each channel,
        ``published`` its age limit."""
        organisations = sorted(confidence)
        if not organisations or not self.channels:
            return []
        events = []
        made: Item | None = None
        for channel in self.channels:
            if now - published > channel.max_age or "match" not in channel.events:
                continue
            if channel.sources is not None or channel.query is not None:  # a narrower channel
                made = made or item()
                if not channel.admits(made.source_ids, made.title, made.text or ""):
                    continue
            done = self._done(story_id)
            fresh = [o for o in organisations if channel.wants(o, confidence[o])
                     and (channel.id, story_id, o) not in done]
            if fresh:
                done.update((channel.id, story_id, o) for o in fresh)
                made = made or item()
                events.append(self._event(made, story_id, channel.id, fresh, now))
        return events

    def _done(self, story_id: int) -> set[tuple[str, int, str]]:
        """Keys already alerted (stored, or added here); loaded once per story."""
        if story_id not in self.story_ids:
            self.story_ids.add(story_id)
            rows = self.session.execute(select(AlertKey.channel, AlertKey.story_id, AlertKey.organisation)
                                        .where(AlertKey.channel.in_([c.id for c in self.channels]),
                                               AlertKey.story_id == story_id))  # uq_alert_keys' prefix
            self.done.update((channel, story, org) for channel, story, org in rows)
        return self.done

    def _event(self, item: Item, story_id: int, channel: str, organisations: list[str], now: datetime) -> str:
        event_id = str(uuid.uuid4())
        self.keys.extend({"channel": channel, "story_id": story_id, "organisation": o}
                         for o in organisations)
        payload = {"event_id": event_id, "event": "match", "organisations": organisations,
                   "item": item_dict(item)}
        self.events.append({
            "event_id": event_id, "channel": channel, "item_id": item.id, "story_id": story_id,
            "organisations": json.dumps(organisations),
            "payload": json.dumps(payload, ensure_ascii=False), "created_at": now,
            "published_at": item.published_at, "first_seen_at": item.first_seen_at, "attempts": 0,
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
                canonical_url=write.canonical_url, title=write.title, text=write.text,
                published_at=write.published_at, first_seen_at=now, language=write.language,
                story_id=story_id, version=1, content_hash=write.content_hash,
                matches=[Match(**m.columns()) for m in write.matches],
                links=[ItemSource(source_id=write.source_id)])


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
    if alert and gained and item.story_id is not None:
        alerts = Alerts(session, channels)
        confidence = {m.organisation: 1.0 for m in item.matches} | best_confidence(fresh)
        events = alerts.enqueue(lambda: item, item.story_id, confidence,
                                item.published_at or item.first_seen_at,
                                now or datetime.now(item.first_seen_at.tzinfo))
        alerts.flush()
    return RematchResult(gained, lost, events)
