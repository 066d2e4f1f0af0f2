"""Aggregates for the web page and /metrics: mentions per day, counts per organisation and source."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy import ColumnElement, exists, func, select
from sqlalchemy.orm import Session

from storage.models import AlertEvent, FetchLog, Item, ItemSource, Match, PollCount, Source


def _day(session: Session) -> ColumnElement[Any]:
    if session.get_bind().dialect.name == "sqlite":
        return func.substr(Item.sort_at, 1, 10)
    return func.date(func.timezone("UTC", Item.sort_at))


def mentions_per_day(session: Session, since: datetime, until: datetime,
                     organisations: Sequence[str] = (), sources: Sequence[str] = ()
                     ) -> dict[str, dict[str, int]]:
    """{organisation: {"YYYY-MM-DD": items mentioning it that day}} between since and until."""
    day = _day(session).label("day")
    stmt = (select(Match.organisation, day, func.count(func.distinct(Item.id)))
            .join(Item, Item.id == Match.item_id)
            .where(Item.sort_at >= since, Item.sort_at <= until)
            .group_by(Match.organisation, day))
    if organisations:
        stmt = stmt.where(Match.organisation.in_(list(organisations)))
    if sources:
        stmt = stmt.where(Item.id.in_(select(ItemSource.item_id).where(ItemSource.source_id.in_(list(sources)))))
    out: dict[str, dict[str, int]] = {}
    for org, when, count in session.execute(stmt):
        key = when.isoformat() if isinstance(when, date) else str(when)[:10]
        out.setdefault(org, {})[key] = int(count)
    return out


def newest_matched_at(session: Session) -> datetime | None:
    """The sort time of the newest item with at least one match."""
    # EXISTS walks the newest-first index and stops at the first match; IN would collect
    # every matched item first.
    return session.scalar(select(Item.sort_at).where(exists().where(Match.item_id == Item.id))
                          .order_by(Item.sort_at.desc()).limit(1))


def known_organisations(session: Session) -> list[str]:
    return list(session.scalars(select(Match.organisation).distinct().order_by(Match.organisation)))


def known_sources(session: Session) -> list[str]:
    return list(session.scalars(select(Source.id).order_by(Source.id)))


def item_count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(Item)) or 0


def matches_per_organisation(session: Session) -> dict[str, int]:
    """Items matched per organisation."""
    rows = session.execute(select(Match.organisation, func.count(func.distinct(Match.item_id)))
                           .group_by(Match.organisation))
    return {org: int(n) for org, n in rows}


def alerts_per_organisation(session: Session) -> dict[tuple[str, str], int]:
    """{(organisation, "delivered"|"pending"): alert events}."""
    delivered = AlertEvent.delivered_at.is_not(None).label("delivered")
    rows = session.execute(select(AlertEvent.organisations, delivered, func.count())
                           .group_by(AlertEvent.organisations, delivered))
    out: Counter[tuple[str, str]] = Counter()
    for orgs, done, count in rows:
        try:
            names = json.loads(orgs) or []
        except ValueError:
            names = []
        for org in names:
            out[(str(org), "delivered" if done else "pending")] += int(count)
    return dict(out)


def polls_per_source(session: Session) -> dict[tuple[str, str, str], int]:
    """{(source, outcome, error class or ""): polls ever made}, from the rolled-up counters
    (one row per source, outcome and class; the fetch log itself is never counted)."""
    rows = session.execute(select(PollCount.source_id, PollCount.outcome, PollCount.error_class, PollCount.polls))
    return {(src, outcome, cls or ""): int(n) for src, outcome, cls, n in rows}


def recount_polls(session: Session) -> dict[tuple[str, str, str], int]:
    """The same as :func:`polls_per_source`, counted in the fetch log (a full scan: for
    checking the counters, not for serving)."""
    rows = session.execute(select(FetchLog.source_id, FetchLog.outcome, FetchLog.error_class, func.count())
                           .group_by(FetchLog.source_id, FetchLog.outcome, FetchLog.error_class))
    out: dict[tuple[str, str, str], int] = {}
    for src, outcome, cls, n in rows:
        out[(src, outcome, cls or "")] = out.get((src, outcome, cls or ""), 0) + int(n)
    return out


def latency_samples(session: Session, limit: int = 10_000) -> dict[str, list[float]]:
    """Detection-latency samples in seconds over the newest delivered alerts, per stage."""
    rows = session.execute(
        select(AlertEvent.published_at, AlertEvent.first_seen_at, AlertEvent.delivered_at)
        .where(AlertEvent.delivered_at.is_not(None)).order_by(AlertEvent.id.desc()).limit(limit)).all()
    return {
        "published_to_first_seen": [max(0.0, (f - p).total_seconds()) for p, f, d in rows if p and f],
        "first_seen_to_delivered": [max(0.0, (d - f).total_seconds()) for p, f, d in rows if f and d],
        "published_to_delivered": [max(0.0, (d - p).total_seconds()) for p, f, d in rows if p and d],
    }
