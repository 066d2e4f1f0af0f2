"""The read path: history search, single items with versions, source status, latency."""

from __future__ import annotations

import statistics
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Any

from sqlalchemy import and_, exists, func, literal_column, or_, select, text
from sqlalchemy.orm import Session, selectinload

from storage.models import AlertEvent, FetchLog, Item, ItemSource, ItemVersion, Match, Source, Worker
from storage.repository import SourceRow
from storage.revisits import RevisitStats, revisit_stats
from storage.search import Query, fts5_excluded, fts5_match, parse_query, phrase_pairs, tsquery
from storage.serialize import iso, item_dict, version_dict

MAX_LIMIT = 1000


def parse_when(value: str, *, end_of_day: bool = False) -> datetime:
    """An ISO date or date-time as UTC; a bare date is its start (or its end, for "until").
    Raises ValueError with a reason users can act on."""
    value = value.strip()
    try:
        if len(value) == 10:
            moment = datetime.combine(date.fromisoformat(value), time.max if end_of_day else time.min)
        else:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{value!r} is not an ISO date or time (e.g. 2025-02-04 or "
                         "2025-02-04T09:30:00+03:00)") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@dataclass
class SearchFilter:
    """A history query; every part is optional."""

    query: str | None = None
    organisations: Sequence[str] = ()
    sources: Sequence[str] = ()
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 50
    before: tuple[datetime, int] | None = None  # cursor: (sort_at, id) of the last item seen
    matched_only: bool = False
    edited_since: datetime | None = None  # items with a new version (an edit, a removal) since


SELECTIVE = 5_000  # fewer matches than this: the filter drives the query
UBIQUITOUS = 50_000  # at least this many: test each candidate of the newest-first walk


def _count_upto(session: Session, sql: str, params: dict[str, Any]) -> int:
    """How many rows ``sql`` yields, counting no further than UBIQUITOUS."""
    return session.execute(text(f"SELECT count(*) FROM ({sql} LIMIT :upto)"),
                           {**params, "upto": UBIQUITOUS}).scalar() or 0


def _fts_rowids(expression: str, name: str) -> Any:
    return select(text("rowid")).select_from(text("items_fts")).where(text(f"items_fts MATCH :{name}")).params(
        **{name: expression})


def _walk_id(selective: bool) -> Any:
    """items.id, or ``+items.id`` (SQLite's way to keep a term from choosing the index), so a
    filter that matches many items is tested along the newest-first index walk instead."""
    return Item.id if selective else literal_column("+items.id")


def _fulltext(session: Session, query: str) -> list[Any]:
    """WHERE clauses for a full-text query."""
    parsed = parse_query(query)
    if parsed.empty:
        return []
    if session.get_bind().dialect.name != "sqlite":
        return [_pg_fulltext(parsed)]
    clauses: list[Any] = []
    positive, negative = fts5_match(parsed), fts5_excluded(parsed)
    if positive:
        found = _count_upto(session, "SELECT rowid FROM items_fts WHERE items_fts MATCH :m", {"m": positive})
        if found >= UBIQUITOUS:  # collecting every match would cost more than testing candidates
            clauses.append(text("EXISTS (SELECT 1 FROM items_fts WHERE items_fts MATCH :fts_pos "
                                "AND items_fts.rowid = items.id)").bindparams(fts_pos=positive))
        else:
            clauses.append(_walk_id(found < SELECTIVE).in_(_fts_rowids(positive, "fts_pos")))
    if negative:
        clauses.append(Item.id.not_in(_fts_rowids(negative, "fts_neg")))
    return clauses


def _pg_fulltext(parsed: Query) -> Any:
    """The full-text clause on PostgreSQL. A phrase first narrows to the rows whose index of
    adjacent word pairs (``items_search.pairs``, GIN) holds its pairs, so its positions are
    checked on those few rows only: the GIN index on the tsvector cannot check positions, and
    two common words share tens of thousands of items. Otherwise its planner chooses between
    collecting the matches (GIN) and testing items along the newest-first walk from its
    statistics (a run-time choice like SQLite's was measured slower: bench/README.md)."""
    narrowed = phrase_pairs(parsed)
    # Narrowed, the tsquery is checked by its function (ts_match_vq is what @@ calls) on the few
    # rows the pairs give: as an operator, the planner would also scan its GIN index (tens of
    # thousands of entries for two common words) to AND the two, which costs more than it saves.
    match = "ts_match_vq(terms, to_tsquery('simple', :tsq))" if narrowed else "terms @@ to_tsquery('simple', :tsq)"
    where, params = [match], dict[str, object](tsq=tsquery(parsed))
    for g, group in enumerate(narrowed):
        names = [f"pairs_{g}_{a}" for a in range(len(group))]
        where.append("(" + " OR ".join(f"pairs @> CAST(:{n} AS int4[])" for n in names) + ")")
        params.update(zip(names, group))  # noqa: B905
    return Item.id.in_(select(text("item_id")).select_from(text("items_search"))
                       .where(text(" AND ".join(where))).params(**params))


def _organisations(session: Session, organisations: Sequence[str]) -> Any:
    orgs = list(organisations)
    if session.get_bind().dialect.name != "sqlite":
        return Item.id.in_(select(Match.item_id).where(Match.organisation.in_(orgs)))
    placeholders = ", ".join(f":o{i}" for i in range(len(orgs)))
    found = _count_upto(session, f"SELECT 1 FROM matches WHERE organisation IN ({placeholders})",
                        {f"o{i}": o for i, o in enumerate(orgs)})
    if found >= UBIQUITOUS:
        return exists().where(Match.item_id == Item.id, Match.organisation.in_(orgs))
    return _walk_id(found < SELECTIVE).in_(select(Match.item_id).where(Match.organisation.in_(orgs)))


def _sources(session: Session, sources: Sequence[str]) -> Any:
    """Items carried by any of ``sources`` (not only first seen there)."""
    ids = list(sources)
    carried = select(ItemSource.item_id).where(ItemSource.source_id.in_(ids))
    if session.get_bind().dialect.name != "sqlite":
        return Item.id.in_(carried)
    placeholders = ", ".join(f":s{i}" for i in range(len(ids)))
    found = _count_upto(session, f"SELECT 1 FROM item_sources WHERE source_id IN ({placeholders})",
                        {f"s{i}": s for i, s in enumerate(ids)})
    if found >= UBIQUITOUS:
        return exists().where(ItemSource.item_id == Item.id, ItemSource.source_id.in_(ids))
    return _walk_id(found < SELECTIVE).in_(carried)


def search_items(session: Session, flt: SearchFilter) -> list[dict[str, Any]]:
    """Items matching ``flt``, newest first, as contract ITEM objects (at most
    :data:`MAX_LIMIT`: one page; :func:`iter_search` reads any number).

    On SQLite (which keeps no statistics), each filter first counts its matches cheaply: a
    selective filter drives the query from its few matches; a common one is tested along the
    walk of the newest-first index, which stops after ``limit`` hits."""
    _no_jit(session)
    clauses = _search_clauses(session, flt)
    return _search_page(session, clauses, flt.before, max(1, min(flt.limit, MAX_LIMIT)))


def iter_search(session: Session, flt: SearchFilter, *, page_size: int = MAX_LIMIT) -> Iterator[dict[str, Any]]:
    """Items matching ``flt``, newest first, up to ``flt.limit`` (no maximum), read a page of
    ``page_size`` at a time with the keyset cursor the API uses, in constant memory: each
    page's rows leave the session before the next is read (read-only use of ``session``)."""
    _no_jit(session)
    clauses = _search_clauses(session, flt)
    remaining, before = flt.limit, flt.before
    while remaining > 0:
        size = min(page_size, remaining)
        page = _search_page(session, clauses, before, size)
        session.expunge_all()
        for item in page:
            before = item.pop("_cursor")
            yield item
        if len(page) < size:
            return
        remaining -= size


def _no_jit(session: Session) -> None:
    """No JIT compilation and no parallel workers for this transaction's queries on PostgreSQL:
    a walk whose end the planner cannot foresee is costed high enough to be compiled, which
    takes 300–400 ms, far more than any search query runs; and a page of newest-first items
    needs no workers: each walks its own share of the index past the page (15× the items a
    single walk tests for a common phrase), and starting them costs more than most pages."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SET LOCAL jit = off"))
        session.execute(text("SET LOCAL max_parallel_workers_per_gather = 0"))


def _search_clauses(session: Session, flt: SearchFilter) -> list[Any]:
    """WHERE clauses of ``flt``, without its cursor."""
    clauses: list[Any] = []
    if flt.query:
        clauses.extend(_fulltext(session, flt.query))
    if flt.organisations:
        clauses.append(_organisations(session, flt.organisations))
    elif flt.matched_only:
        clauses.append(exists().where(Match.item_id == Item.id))
    if flt.sources:
        clauses.append(_sources(session, flt.sources))
    if flt.since is not None:
        clauses.append(Item.sort_at >= flt.since)
    if flt.until is not None:
        clauses.append(Item.sort_at <= flt.until)
    if flt.edited_since is not None:
        clauses.append(Item.id.in_(select(ItemVersion.item_id).where(
            ItemVersion.fetched_at >= flt.edited_since, ItemVersion.version > 1)))
    return clauses


def _search_page(session: Session, clauses: list[Any], before: tuple[datetime, int] | None,
                 limit: int) -> list[dict[str, Any]]:
    """One page of items newest first, after the keyset cursor ``before`` = (sort_at, id)."""
    if before is not None:
        clauses = [*clauses, _after(before)]
    stmt = (select(Item).options(selectinload(Item.matches)).where(*clauses)
            .order_by(Item.sort_at.desc(), Item.id.desc()).limit(limit))
    return [_with_cursor(item) for item in session.scalars(stmt).all()]


def _after(cursor: tuple[datetime, int]) -> Any:
    """Items after the keyset cursor (sort_at, id) in newest-first order. The bare
    ``sort_at <= at`` lets the planner walk the sort index from the cursor on (on the OR alone,
    PostgreSQL reads from the newest item)."""
    at, last_id = cursor
    return and_(Item.sort_at <= at, or_(Item.sort_at < at, and_(Item.sort_at == at, Item.id < last_id)))


def _with_cursor(item: Item) -> dict[str, Any]:
    out = item_dict(item)
    out["_cursor"] = (item.sort_at, item.id)
    return out


def strip_cursor(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for item in items:
        item.pop("_cursor", None)
    return items


def get_item(session: Session, item_id: int, *, versions: bool = False,
             story: bool = False) -> dict[str, Any] | None:
    """One ITEM by id, optionally with every version and its story's sibling items."""
    options = [selectinload(Item.matches)]
    if versions:
        options.append(selectinload(Item.versions))
    item = session.get(Item, item_id, options=options)
    if item is None:
        return None
    out = item_dict(item)
    out["text"] = item.text
    if versions:
        out["versions"] = [version_dict(v) for v in item.versions]
    if story and item.story_id is not None:
        out["story"] = story_items(session, item.story_id)
    return out


def story_items(session: Session, story_id: int) -> list[dict[str, Any]]:
    items = session.scalars(select(Item).options(selectinload(Item.matches))
                            .where(Item.story_id == story_id).order_by(Item.first_seen_at))
    return [item_dict(i) for i in items]


# --- status ---------------------------------------------------------------------------------


def _percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "max": None, "count": 0}
    values = sorted(values)
    if len(values) == 1:
        return {"p50": values[0], "p95": values[0], "max": values[0], "count": 1}
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50": round(cuts[49], 3), "p95": round(cuts[94], 3), "max": round(values[-1], 3),
            "count": len(values)}


def latency_stats(session: Session, limit: int = 1000) -> dict[str, Any]:
    """Detection latency over the newest delivered alerts: published → first seen → delivered."""
    rows = session.execute(
        select(AlertEvent.published_at, AlertEvent.first_seen_at, AlertEvent.delivered_at)
        .where(AlertEvent.delivered_at.is_not(None))
        .order_by(AlertEvent.id.desc()).limit(limit)).all()
    seen_to_sent = [(d - f).total_seconds() for p, f, d in rows if f and d]
    published_to_sent = [max(0.0, (d - p).total_seconds()) for p, f, d in rows if p and d]
    published_to_seen = [max(0.0, (f - p).total_seconds()) for p, f, d in rows if p and f]
    return {
        "published_to_first_seen": _percentiles(published_to_seen),
        "first_seen_to_delivered": _percentiles(seen_to_sent),
        "published_to_delivered": _percentiles(published_to_sent),
    }


def _usual_gap(seen: Sequence[datetime]) -> float | None:
    """Median gap in seconds between a source's recent new items, newest first (its usual cadence)."""
    gaps = [(a - b).total_seconds() for a, b in zip(seen, seen[1:], strict=False)]
    gaps = [g for g in gaps if g > 1]
    return statistics.median(gaps) if len(gaps) >= 3 else None


RECENT = 20  # new items per source that tell its cadence


def _recent_seen(session: Session) -> dict[str, list[datetime]]:
    """Per source, when its newest RECENT items were first seen, newest first: on PostgreSQL
    in one statement (a LATERAL index walk per source), on SQLite one small indexed query per
    source (in-process, so cheap), never a scan of every item."""
    out: dict[str, list[datetime]] = {}
    if session.get_bind().dialect.name == "postgresql":
        rows = session.execute(text(
            "SELECT s.id, x.first_seen_at FROM sources s CROSS JOIN LATERAL (SELECT first_seen_at "
            "FROM item_sources WHERE source_id = s.id ORDER BY first_seen_at DESC LIMIT :n) x "
            "ORDER BY s.id, x.first_seen_at DESC"), {"n": RECENT})
        for source_id, at in rows:
            out.setdefault(source_id, []).append(at.astimezone(UTC))
        return out
    # the driver's cursor: SQLAlchemy's own cost per statement (~1 ms) would be most of it
    cursor = session.connection().connection.driver_connection.cursor()  # type: ignore[union-attr]  # None only for a detached connection
    try:
        for source_id in session.scalars(select(Source.id)).all():
            cursor.execute("SELECT first_seen_at FROM item_sources WHERE source_id = ? "
                           "ORDER BY first_seen_at DESC LIMIT ?", (source_id, RECENT))
            out[source_id] = [datetime.fromisoformat(at).replace(tzinfo=UTC) for (at,) in cursor.fetchall()]
    finally:
        cursor.close()
    return out


def source_status(session: Session, now: datetime, silence_factor: float = 3.0,
                  configured: Sequence[SourceRow] = ()) -> list[dict[str, Any]]:
    """Per source: polling state, counts, the last error and whether it has gone silent.

    :param configured: the configuration's sources; those the database does not know yet (no
        worker has started with them) are listed too, never polled.
    """
    counts = dict(session.execute(select(ItemSource.source_id, func.count())
                                  .group_by(ItemSource.source_id)).all())
    revisits = revisit_stats(session, now)
    recent = _recent_seen(session)
    out = []
    for source in session.scalars(select(Source).order_by(Source.id)):
        gap = _usual_gap(recent.get(source.id, []))
        cadence = max(gap or 0.0, source.interval_seconds)
        silent = bool(
            source.enabled and source.last_new_item_at is not None and gap is not None
            and (now - source.last_new_item_at).total_seconds() > silence_factor * cadence)
        error = None
        if source.failures and source.last_error_class:
            error = {"class": source.last_error_class, "message": source.last_error_message,
                     "at": iso(source.last_error_at)}
        out.append({
            "id": source.id, "name": source.name, "kind": source.kind, "url": source.url,
            "enabled": source.enabled, "last_poll": iso(source.last_poll_at),
            "last_success": iso(source.last_success_at),
            "last_new_item": iso(source.last_new_item_at), "next_poll": iso(source.next_poll_at),
            "items": counts.get(source.id, 0), "failures": source.failures, "silent": silent,
            "last_error": error, "lease_owner": source.lease_owner,
            "revisits": revisit_dict(revisits.get(source.id, RevisitStats())),
        })
    known = {row["id"] for row in out}
    out += [{"id": row.id, "name": row.name or row.id, "kind": row.kind, "url": row.url, "enabled": row.enabled,
             "last_poll": None, "last_success": None, "last_new_item": None, "next_poll": None,
             "items": 0, "failures": 0, "silent": False, "last_error": None, "lease_owner": None,
             "revisits": revisit_dict(RevisitStats())}
            for row in configured if row.id not in known]
    return sorted(out, key=lambda row: row["id"])


def status_dict(session: Session, now: datetime | None = None,
                configured: Sequence[SourceRow] = ()) -> dict[str, Any]:
    """The object of `newsmon status --format json` and `/api/status`: ``configured`` are the
    configuration's sources (listed even before a worker has polled them)."""
    now = now or datetime.now(UTC)
    return {"sources": source_status(session, now, configured=configured), "workers": worker_status(session),
            "latency": latency_stats(session)}


def revisit_dict(found: RevisitStats) -> dict[str, Any]:
    """A source's revisit figures: revisits done and due now, items revisited, edited after
    first seen and removed, and the edit rate (edited / revisited items; None before any)."""
    rate = found.edit_rate
    return {"done": found.done, "due": found.due, "revisited": found.revisited,
            "edited": found.edited, "removed": found.removed,
            "edit_rate": round(rate, 4) if rate is not None else None}


def worker_status(session: Session, now: datetime | None = None) -> list[dict[str, Any]]:
    """Live workers: identity, heartbeat age, what each holds (source ids, alert events) and
    how many polls it has done (its counter, raised with each fetch-log row it writes)."""
    now = now or datetime.now(UTC)
    workers = session.scalars(select(Worker).where(Worker.stopped_at.is_(None))
                              .order_by(Worker.started_at)).all()
    ids = [w.id for w in workers]
    held: dict[str, list[str]] = {}
    for owner, source_id in session.execute(select(Source.lease_owner, Source.id)
                                            .where(Source.lease_owner.in_(ids)).order_by(Source.id)):
        held.setdefault(owner or "", []).append(source_id)  # never None: owner IN (ids)
    events = dict(session.execute(select(AlertEvent.lease_owner, func.count())
                                  .where(AlertEvent.lease_owner.in_(ids))
                                  .group_by(AlertEvent.lease_owner)).all())
    return [{"id": w.id, "host": w.host, "pid": w.pid, "started_at": iso(w.started_at),
             "heartbeat_at": iso(w.heartbeat_at),
             "heartbeat_age_seconds": round(max(0.0, (now - w.heartbeat_at).total_seconds()), 1),
             "sources_held": len(held.get(w.id, [])), "holds": held.get(w.id, []),
             "events_held": events.get(w.id, 0), "polls": w.polls or 0}
            for w in workers]


def outbox_backlog(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(AlertEvent)
                          .where(AlertEvent.delivered_at.is_(None))) or 0


@dataclass(frozen=True)
class PollRecord:
    """One poll of a source, as the fetch log keeps it."""

    started_at: datetime
    outcome: str
    error_class: str | None


def recent_polls(session: Session, source_id: str, limit: int) -> list[PollRecord]:
    """The source's last ``limit`` polls, newest first."""
    rows = session.execute(
        select(FetchLog.started_at, FetchLog.outcome, FetchLog.error_class)
        .where(FetchLog.source_id == source_id)
        .order_by(FetchLog.started_at.desc(), FetchLog.id.desc()).limit(limit))
    return [PollRecord(*row) for row in rows]
