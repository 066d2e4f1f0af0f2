"""Revisits: the article pages of recent items fetched again on a schedule (``[crawl]
revisit``) to find silent edits and removals. The schedule lives in the ``revisits`` table, so
it survives restarts; a revisit is claimed with a lease (``FOR UPDATE SKIP LOCKED`` on
PostgreSQL), so each is done by one worker, and one whose worker died is due again when its
lease ends. What a revisit found is stored here: a new version, a removal, or only the page's
validators and the time of the next revisit."""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import Table, and_, bindparam, case, exists, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from storage.changes import change_events, change_summary
from storage.models import Item, ItemVersion, Match, Revisit
from storage.repository import (
    ChannelRule,
    MatchRow,
    SaveResult,
    best_confidence,
)
from storage.writes import Alerts, index_item

RevisitKind = Literal["not-modified", "page", "removed", "failed"]


def next_due(first_seen: datetime, schedule: Sequence[float], now: datetime) -> datetime | None:
    """The first revisit time of ``schedule`` (seconds after ``first_seen``) later than
    ``now``: slots missed while nothing ran are not made up one after the other."""
    for seconds in sorted(schedule):
        at = first_seen + timedelta(seconds=seconds)
        if at > now:
            return at
    return None


@dataclass(frozen=True)
class RevisitClaim:
    """A revisit leased to a worker, with what it needs to fetch and judge the page."""

    item_id: int
    source_id: str
    url: str
    canonical_url: str
    title: str
    text: str
    content_hash: str
    removed: bool
    version: int
    version_url: str | None  # where the current version's text was read (its response URL)
    etag: str | None
    last_modified: str | None
    page_title: str | None  # what the page said at the last revisit (None: not revisited yet)
    page_hash: str | None
    language: str | None = None
    first_seen_at: datetime | None = None  # the schedule's origin (its result then needs no item read)


@dataclass(frozen=True)
class PageState:
    """What an article page said when the crawl read it: its validators (ETag, Last-Modified),
    its own title (folded) and text fingerprint (``crawler.revisits``). Kept from the first
    fetch, they make the first revisit conditional and its baseline the page itself."""

    etag: str | None
    last_modified: str | None
    page_title: str
    page_hash: str
    first_after: float  # seconds after first seen: the first revisit slot


def keep_page_states(session: Session, states: Sequence[tuple[int, PageState]]) -> None:
    """Record ``(item_id, state)`` pairs on the items' revisit rows (one statement): a new row
    is due at the first slot after the item was first seen, as ``_seed`` would make it; an
    existing row keeps its schedule and lease and takes the page's validators and baseline."""
    if not states:
        return
    by_item = dict(states)
    items = session.execute(select(Item.id, Item.source_id, Item.first_seen_at)
                            .where(Item.id.in_(list(by_item)))).all()
    rows = [{"item_id": item_id, "source_id": source_id, "done": 0,
             "due_at": first_seen + timedelta(seconds=by_item[item_id].first_after),
             "etag": by_item[item_id].etag, "last_modified": by_item[item_id].last_modified,
             "page_title": by_item[item_id].page_title, "page_hash": by_item[item_id].page_hash}
            for item_id, source_id, first_seen in items]
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    stmt = postgresql.insert(Revisit) if dialect == "postgresql" else sqlite.insert(Revisit)
    session.execute(stmt.on_conflict_do_update(index_elements=["item_id"], set_={
        "etag": stmt.excluded.etag, "last_modified": stmt.excluded.last_modified,
        "page_title": stmt.excluded.page_title, "page_hash": stmt.excluded.page_hash}), rows)


SEED_GRACE = 86400.0  # seconds: an item whose slots all passed unseen still gets one revisit


def _seed(session: Session, source_id: str, schedule: Sequence[float], now: datetime) -> None:
    """Revisit rows for the source's recent items that have none yet (items stored since the
    last poll, or before revisits were turned on). An item whose slots all passed while its
    source was not polled (a stopped daemon, a long back-off) is revisited once, late."""
    first = min(schedule)
    since = now - timedelta(seconds=max(schedule) + max(SEED_GRACE, max(schedule)))
    candidates = session.execute(
        select(Item.id, Item.first_seen_at).where(
            Item.source_id == source_id, Item.first_seen_at > since,
            ~exists().where(Revisit.item_id == Item.id))).all()
    if not candidates:
        return
    rows = [{"item_id": item_id, "source_id": source_id, "done": 0,
             "due_at": seen + timedelta(seconds=first)} for item_id, seen in candidates]
    dialect = session.get_bind().dialect.name
    stmt = (postgresql.insert(Revisit) if dialect == "postgresql" else sqlite.insert(Revisit))
    session.execute(stmt.on_conflict_do_nothing(index_elements=["item_id"]), rows)


def claim_revisits(session: Session, source_id: str, schedule: Sequence[float], now: datetime,
                   owner: str, *, lease_seconds: float, limit: int) -> list[RevisitClaim]:
    """Lease up to ``limit`` due revisits of the source's items to ``owner`` (the most overdue
    first) and return them. Rows no other transaction holds (``SKIP LOCKED``) whose lease is
    free or has ended; the caller commits. Nothing when ``schedule`` is empty (revisits off)."""
    if not schedule or limit <= 0:
        return []
    _seed(session, source_id, schedule, now)
    free = or_(Revisit.lease_expires_at.is_(None), Revisit.lease_expires_at < now)
    picked = list(session.scalars(
        select(Revisit.item_id).where(Revisit.source_id == source_id, Revisit.due_at <= now, free)
        .order_by(Revisit.due_at).limit(limit).with_for_update(skip_locked=True)))
    if not picked:
        return []
    session.execute(update(Revisit).where(Revisit.item_id.in_(picked), free)
                    .values(lease_owner=owner, lease_expires_at=now + timedelta(seconds=lease_seconds))
                    .execution_options(synchronize_session=False))
    rows = session.execute(
        select(Item.id, Item.url, Item.canonical_url, Item.title, Item.text, Item.content_hash,
               Item.removed, Item.version, ItemVersion.raw_url, Revisit.etag,
               Revisit.last_modified, Revisit.page_title, Revisit.page_hash, Item.language,
               Item.first_seen_at)
        .join(Revisit, Revisit.item_id == Item.id)
        .outerjoin(ItemVersion, and_(ItemVersion.item_id == Item.id, ItemVersion.version == Item.version))
        .where(Item.id.in_(picked), Revisit.lease_owner == owner)).all()
    return [RevisitClaim(item_id=r[0], source_id=source_id, url=r[1], canonical_url=r[2], title=r[3],
                         text=r[4], content_hash=r[5], removed=bool(r[6]), version=r[7],
                         version_url=r[8], etag=r[9], last_modified=r[10], page_title=r[11],
                         page_hash=r[12], language=r[13], first_seen_at=r[14]) for r in rows]


def release_revisits(session: Session, owner: str, item_ids: Sequence[int]) -> None:
    """Give back leases of revisits that were not done (the round ended first)."""
    if item_ids:
        session.execute(update(Revisit).where(Revisit.item_id.in_(list(item_ids)),
                                              Revisit.lease_owner == owner)
                        .values(lease_owner=None, lease_expires_at=None)
                        .execution_options(synchronize_session=False))


@dataclass
class RevisitResult:
    """What one revisit found. ``kind``: ``not-modified`` (304, or the page says what it said),
    ``page`` (a page to compare: ``changed`` says whether its title or text differs),
    ``removed`` (404/410, or a redirect to the home page or a listing), ``failed`` (any other
    error: nothing is learnt, the schedule moves on)."""

    item_id: int
    owner: str
    kind: RevisitKind
    fetched_at: datetime
    schedule: tuple[float, ...]
    status: int | None = None
    changed: bool = False
    title: str = ""  # the item's title and text after this revisit, when changed
    text: str = ""
    content_hash: str = ""
    matches: list[MatchRow] = field(default_factory=list)
    page_title: str | None = None  # the page's own title and text fingerprint, for next time
    page_hash: str | None = None
    etag: str | None = None
    last_modified: str | None = None
    raw: bytes = b""
    raw_url: str | None = None
    raw_headers: dict[str, str] = field(default_factory=dict)
    first_seen_at: datetime | None = None  # from the claim: ``save_quiet_revisits`` needs it

    @property
    def quiet(self) -> bool:
        """True when the revisit found nothing to store (a 304, a failure, an unchanged page of
        an item not removed): only its bookkeeping is written (``save_quiet_revisits``)."""
        return self.first_seen_at is not None and (
            self.kind in ("not-modified", "failed") or (self.kind == "page" and not self.changed))


def save_revisit(session: Session, result: RevisitResult, channels: Sequence[ChannelRule] = ()
                 ) -> SaveResult:
    """Record a revisit: its schedule moves on, and a new version is stored when the page
    changed, was removed, or came back after a removal (with ``edit``/``removed`` events for
    the channels that take them, and ``match`` events for organisations the edit added).
    A revisit that finds nothing new (the common case) costs two short statements."""
    row = session.execute(select(Item.first_seen_at, Item.removed, Item.content_hash, Item.version,
                                 Item.story_id).where(Item.id == result.item_id)).one_or_none()
    if row is None:  # deleted meanwhile
        return SaveResult(result.item_id, "unchanged", 0, None, [])
    first_seen, removed, stored_hash, version, story_id = row
    _schedule_next(session, first_seen, result)
    if result.kind == "removed":
        wanted = not removed
    elif result.kind == "page":
        wanted = bool(removed) or (result.changed and result.content_hash != stored_hash)
    else:
        wanted = False
    if not wanted:
        return SaveResult(result.item_id, "unchanged", version, story_id, [])
    item = session.get(Item, result.item_id)
    assert item is not None
    return _new_version(session, item, result, channels, removed=result.kind == "removed")


def save_quiet_revisits(session: Session, results: Sequence[RevisitResult]) -> list[SaveResult]:
    """Record revisits that found nothing to store (``RevisitResult.quiet``): the schedule of
    each moves on, its lease is given back, an unchanged page's validators and baseline are
    kept; no item is read, and the rows are written by one ``executemany`` per kind."""
    plain = [_quiet_row(r) for r in results if r.kind != "page"]
    pages = [_quiet_row(r) | {"q_etag": r.etag, "q_last_modified": r.last_modified,
                               "q_page_title": r.page_title, "q_page_hash": r.page_hash}
             for r in results if r.kind == "page"]
    table: Table = Revisit.__table__
    if plain:
        session.execute(_QUIET_UPDATE, plain)
    if pages:
        session.execute(_QUIET_UPDATE.values(**{c: bindparam(f"q_{c}", type_=table.c[c].type) for c in (
            "etag", "last_modified", "page_title", "page_hash")}), pages)
    return [SaveResult(r.item_id, "unchanged", 0, None, []) for r in results]


def _quiet_row(result: RevisitResult) -> dict[str, object]:
    assert result.first_seen_at is not None
    return {"q_item_id": result.item_id, "q_owner": result.owner, "q_last_at": result.fetched_at,
            "q_status": result.status,
            "q_due_at": next_due(result.first_seen_at, result.schedule, result.fetched_at)}


def _quiet_update() -> Any:
    table: Table = Revisit.__table__  # Core: an executemany by item_id
    owner = bindparam("q_owner", type_=table.c.lease_owner.type)
    mine = table.c.lease_owner == owner
    return (update(table).where(table.c.item_id == bindparam("q_item_id", type_=table.c.item_id.type))
            .values(done=table.c.done + 1,
                    last_at=bindparam("q_last_at", type_=table.c.last_at.type),
                    last_status=bindparam("q_status", type_=table.c.last_status.type),
                    due_at=bindparam("q_due_at", type_=table.c.due_at.type),
                    lease_owner=case((mine, None), else_=table.c.lease_owner),
                    lease_expires_at=case((mine, None), else_=table.c.lease_expires_at)))


_QUIET_UPDATE = _quiet_update()


def _schedule_next(session: Session, first_seen: datetime, result: RevisitResult) -> None:
    """One more revisit done: the next slot, the lease given back (when still ours), what the
    page said (its validators, title and text fingerprint) for the next revisit."""
    now = result.fetched_at
    values: dict[str, object] = {
        "done": Revisit.done + 1, "last_at": now, "last_status": result.status,
        "due_at": next_due(first_seen, result.schedule, now),
        "lease_owner": case((Revisit.lease_owner == result.owner, None), else_=Revisit.lease_owner),
        "lease_expires_at": case((Revisit.lease_owner == result.owner, None),
                                 else_=Revisit.lease_expires_at)}
    if result.kind == "page":
        values.update(etag=result.etag, last_modified=result.last_modified,
                      page_title=result.page_title, page_hash=result.page_hash)
    elif result.kind == "removed":
        values.update(etag=None, last_modified=None)
    session.execute(update(Revisit).where(Revisit.item_id == result.item_id).values(**values)
                    .execution_options(synchronize_session=False))


def _new_version(session: Session, item: Item, result: RevisitResult,
                 channels: Sequence[ChannelRule], *, removed: bool) -> SaveResult:
    now = result.fetched_at
    old_title, old_text, old_version = item.title, item.text, item.version
    before = {m.organisation for m in item.matches}
    edited = not removed and result.content_hash != item.content_hash
    if edited:
        item.title, item.text, item.content_hash = result.title, result.text, result.content_hash
        item.matches = [Match(**m.columns()) for m in result.matches]
    item.removed = removed
    item.version += 1
    item.updated_at = now
    session.add(ItemVersion(
        item=item, version=item.version, fetched_at=now, title=item.title, text=item.text,
        content_hash=item.content_hash, published_at=item.published_at,
        raw=zlib.compress(result.raw, 6) if result.raw else None, raw_url=result.raw_url,
        raw_status=result.status, removed=removed,
        raw_headers=json.dumps(result.raw_headers, ensure_ascii=False) if result.raw_headers else None))
    session.flush()
    if edited:
        index_item(session, item)
    events = []
    if edited and item.story_id is not None:  # organisations the edit added: a match, as for a new item
        alerts = Alerts(session, channels)
        confidence = {m.organisation: 1.0 for m in item.matches} | best_confidence(result.matches)
        events += alerts.enqueue(lambda: item, item.story_id, confidence,
                                 item.published_at or item.first_seen_at, now)
        alerts.flush()
    changes = change_summary(old_version, old_title, old_text, item)
    after = {m.organisation for m in item.matches}
    events += change_events(session, item, channels, "removed" if removed else "edit",
                            sorted(before | after), changes, now)
    return SaveResult(item.id, "updated", item.version, item.story_id, sorted(after), events)


# --- figures for status and /metrics ---------------------------------------------------------


@dataclass(frozen=True)
class RevisitStats:
    """Per source: revisits done and due now, items edited and removed after first seen, items
    revisited, and the edit rate (edited / revisited items)."""

    done: int = 0
    due: int = 0
    revisited: int = 0
    edited: int = 0
    removed: int = 0

    @property
    def edit_rate(self) -> float | None:
        return self.edited / self.revisited if self.revisited else None


def revisit_stats(session: Session, now: datetime) -> dict[str, RevisitStats]:
    """RevisitStats of every source with revisits."""
    rows = session.execute(
        select(Revisit.source_id, func.coalesce(func.sum(Revisit.done), 0),
               func.count().filter(Revisit.due_at <= now),
               func.count().filter(Revisit.done > 0))
        .group_by(Revisit.source_id)).all()
    edits = dict(session.execute(
        select(Revisit.source_id, func.count(func.distinct(ItemVersion.item_id)))
        .join(ItemVersion, ItemVersion.item_id == Revisit.item_id)
        .where(ItemVersion.version > 1, ItemVersion.removed.is_(False), Revisit.done > 0)
        .group_by(Revisit.source_id)).all())
    removed = dict(session.execute(
        select(Revisit.source_id, func.count()).join(Item, Item.id == Revisit.item_id)
        .where(Item.removed.is_(True)).group_by(Revisit.source_id)).all())
    return {source: RevisitStats(done=int(done), due=int(due), revisited=int(revisited),
                                 edited=int(edits.get(source, 0)), removed=int(removed.get(source, 0)))
            for source, done, due, revisited in rows}
