"""What the write path (``storage.writes``) is given and gives back, the identity of stored
items; source definitions and polling state; the fetch log."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

from sqlalchemy import bindparam, insert, select, text, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.util import identity_key

from storage.db import in_list
from storage.keys import key_of
from storage.models import (
    FetchLog,
    Item,
    ItemSource,
    Source,
    Worker,
)
from storage.search import Query, parse_query, query_admits
from storage.stories import Signed

if TYPE_CHECKING:
    from storage.revisits import PageState

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
    """One fetched item, from the spider through the pipelines into storage: the spider fills in
    what the source gave, the pipelines normalise it and add ``canonical_url``, ``matches`` and
    ``content_hash`` (``crawler.pipelines``), storage writes it (``storage.writes``)."""

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
    # What the article page said (validators, own title, text fingerprint): its first revisit's
    # baseline (``storage.revisits.keep_page_states``); None when no page was read or no revisit is due.
    page: PageState | None = None


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
            _add_source(session, row, now)
            continue
        if source.url != row.url:
            source.etag = source.last_modified = source.body_hash = None
        _define(source, row)
    configured = {r.id for r in rows}
    for source_id, source in existing.items():
        if source_id not in configured:
            source.enabled = False


def _add_source(session: Session, row: SourceRow, now: datetime) -> None:
    source = Source(id=row.id, created_at=now, failures=0, had_items=False)
    _define(source, row)
    session.add(source)


def _define(source: Source, row: SourceRow) -> None:
    source.kind, source.url, source.name = row.kind, row.url, row.name
    source.host = (urlsplit(row.url).hostname or "").lower()
    source.language, source.enabled = row.language, row.enabled
    source.interval_seconds = row.interval_seconds


@dataclass(frozen=True)
class SourceState:
    """What the database remembers of a source between polls."""

    etag: str | None = None
    last_modified: str | None = None
    body_hash: str | None = None
    had_items: bool = False
    failures: int = 0


def source_states(session: Session, rows: Iterable[SourceRow], now: datetime) -> dict[str, SourceState]:
    """The stored polling state of each source (forgotten when its URL changed); a source without
    a row gets one, as ``sync_sources`` adds it (items need it)."""
    rows = list(rows)
    stored = {s.id: s for s in load_sources(session, [r.id for r in rows])}
    states = {}
    for row in rows:
        source = stored.get(row.id)
        if source is None:
            _add_source(session, row, now)
            states[row.id] = SourceState()
            continue
        same_url = source.url == row.url
        states[row.id] = SourceState(
            etag=source.etag if same_url else None,
            last_modified=source.last_modified if same_url else None,
            body_hash=source.body_hash if same_url else None,
            had_items=bool(source.had_items), failures=source.failures or 0)
    return states


def load_sources(session: Session, ids: Iterable[str]) -> list[Source]:
    """The stored sources among ``ids`` (a round's: ``in_list`` keeps the statement texts few)."""
    return list(session.scalars(select(Source).where(Source.id.in_(in_list(ids)))))


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
    """Write the fetch log row, its counters (``poll_counts``, ``workers.polls``) and the
    source's polling state for one poll."""
    record_polls(session, [outcome], worker_id)


def record_polls(session: Session, outcomes: Sequence[PollOutcome], worker_id: str | None = None) -> None:
    """``record_poll`` for many polls in a few statements (executemany: one round trip each
    on PostgreSQL, whatever the number of polls), not four per poll."""
    if not outcomes:
        return
    counts = Counter((o.source_id, o.outcome, o.error_class or "") for o in outcomes)
    session.execute(text(
        "INSERT INTO poll_counts (source_id, outcome, error_class, polls) VALUES (:s, :o, :c, :n) "
        "ON CONFLICT (source_id, outcome, error_class) DO UPDATE SET polls = poll_counts.polls + :n"),
        [{"s": s, "o": o, "c": c, "n": n} for (s, o, c), n in sorted(counts.items())])
    if worker_id is not None:
        session.execute(update(Worker).where(Worker.id == worker_id)
                        .values(polls=Worker.polls + len(outcomes))
                        .execution_options(synchronize_session=False))
    session.execute(insert(FetchLog), [{
        "source_id": o.source_id, "started_at": o.started_at, "finished_at": o.finished_at,
        "outcome": o.outcome, "error_class": o.error_class, "message": o.message,
        "http_status": o.http_status, "new": o.new, "updated": o.updated, "unchanged": o.unchanged,
        "matched": o.matched, "worker_id": worker_id} for o in outcomes])
    shapes: dict[tuple[str, ...], list[dict[str, object]]] = {}
    for outcome in outcomes:
        values = _poll_state(outcome)
        shapes.setdefault(tuple(values), []).append({"source_key": outcome.source_id, **values})
    table = Source.__table__
    for keys, rows in shapes.items():
        assigned: dict[str, object] = {key: bindparam(key) for key in keys}
        if "last_error_at" in keys:  # an error: one more failure in a row
            assigned["failures"] = table.c.failures + 1
        session.connection().execute(
            table.update().where(table.c.id == bindparam("source_key")).values(assigned), rows)
        for row in rows:  # a Source of this session shows the new state, as after an ORM update
            loaded = session.identity_map.get(identity_key(Source, row["source_key"]))
            if loaded is not None:
                session.expire(loaded, [*keys, "failures"])


def _poll_state(outcome: PollOutcome) -> dict[str, object]:
    """The source's columns that a poll sets (``failures`` of an error is raised by one)."""
    values: dict[str, object] = {"last_poll_at": outcome.finished_at,
                                 "lease_owner": None, "lease_expires_at": None}
    if outcome.next_poll_at is not None:
        values["next_poll_at"] = outcome.next_poll_at
    if outcome.outcome == "error":
        values.update(last_error_class=outcome.error_class, last_error_message=outcome.message,
                      last_error_at=outcome.finished_at)
    else:
        values.update(failures=0, last_success_at=outcome.finished_at)
        if outcome.outcome == "ok":
            values.update(etag=outcome.etag, last_modified=outcome.last_modified,
                          body_hash=outcome.body_hash)
        if outcome.entries:
            values["had_items"] = True
        if outcome.new:
            values["last_new_item_at"] = outcome.finished_at
    return values


def count_poll(session: Session, source_id: str, outcome: str, error_class: str | None,
               worker_id: str | None) -> None:
    """One more poll in the rolled-up counters (the fetch log's row is written beside it)."""
    session.execute(text(
        "INSERT INTO poll_counts (source_id, outcome, error_class, polls) VALUES (:s, :o, :c, 1) "
        "ON CONFLICT (source_id, outcome, error_class) DO UPDATE SET polls = poll_counts.polls + 1"),
        {"s": source_id, "o": outcome, "c": error_class or ""})
    if worker_id is not None:
        session.execute(update(Worker).where(Worker.id == worker_id).values(polls=Worker.polls + 1)
                        .execution_options(synchronize_session=False))
