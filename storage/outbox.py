"""The alert outbox relay's storage side: claim due events under a lease, mark them
delivered, reschedule failures with exponential back-off, give up after a cap (keeping the row)."""

from __future__ import annotations

import json
import random
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import distinct, func, or_, select, update
from sqlalchemy.orm import Session

from storage.db import in_list
from storage.models import AlertEvent

# A failed attempt is retried after BASE * 2**(attempts-1) seconds (with jitter), at most the cap.
BACKOFF_BASE = 5.0


@dataclass(frozen=True)
class ClaimedEvent:
    """One outbox row, claimed by a worker for delivery."""

    id: int
    event_id: str
    channel: str
    payload: str
    organisations: list[str]
    attempts: int
    published_at: datetime | None = None
    first_seen_at: datetime | None = None

    @property
    def body(self) -> dict[str, Any]:
        """The JSON body fixed when the event was written (DESIGN.md's webhook body)."""
        value: dict[str, Any] = json.loads(self.payload)
        return value


@dataclass(frozen=True)
class RetryPolicy:
    """How failed deliveries are rescheduled."""

    max_attempts: int = 20
    cap_seconds: float = 3600.0
    base_seconds: float = BACKOFF_BASE
    rng: random.Random = field(default_factory=random.Random, compare=False)


def backoff_seconds(attempts: int, policy: RetryPolicy, retry_after: float | None = None) -> float:
    """Delay before attempt ``attempts + 1``: exponential with full jitter in its upper half,
    never below a server's Retry-After, never above the cap."""
    exponential: float = policy.base_seconds * 2 ** max(0, attempts - 1)
    delay = min(policy.cap_seconds, exponential)
    delay = delay / 2 + policy.rng.uniform(0, delay / 2)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return min(delay, policy.cap_seconds)


def _pending(now: datetime, max_attempts: int) -> list[Any]:
    return [
        AlertEvent.delivered_at.is_(None),
        AlertEvent.attempts < max_attempts,
        AlertEvent.next_attempt_at <= now,
        or_(AlertEvent.lease_expires_at.is_(None), AlertEvent.lease_expires_at < now),
    ]


def claim_events(
    session: Session,
    worker_id: str,
    now: datetime,
    *,
    channels: Collection[str],
    limit: int = 50,
    lease_seconds: float = 600.0,
    max_attempts: int = 20,
    retries_only: bool = False,
) -> list[ClaimedEvent]:
    """Lease up to ``limit`` due, undelivered events of these channels to ``worker_id``.

    One statement: ``UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED) RETURNING …``.
    PostgreSQL skips rows another worker is claiming; SQLite (no FOR UPDATE) serialises
    writers, so the lease condition re-checked inside the UPDATE is enough. Commits.

    :param retries_only: only events that failed before (digest channels retry this way).
    """
    if not channels:
        return []
    conditions = [*_pending(now, max_attempts), AlertEvent.channel.in_(list(channels))]
    if retries_only:
        conditions.append(AlertEvent.attempts > 0)
    due = (select(AlertEvent.id).where(*conditions)
           .order_by(AlertEvent.next_attempt_at, AlertEvent.id).limit(limit)
           .with_for_update(skip_locked=True)
           .cte("due").prefix_with("MATERIALIZED", dialect="postgresql"))
    stmt = (update(AlertEvent)
            .where(AlertEvent.id.in_(select(due.c.id)), *_pending(now, max_attempts))
            .values(lease_owner=worker_id, lease_expires_at=now + timedelta(seconds=lease_seconds))
            .returning(AlertEvent.id, AlertEvent.event_id, AlertEvent.channel, AlertEvent.payload,
                       AlertEvent.organisations, AlertEvent.attempts, AlertEvent.published_at,
                       AlertEvent.first_seen_at)
            .execution_options(synchronize_session=False))
    rows = session.execute(stmt).all()
    session.commit()
    claimed = [ClaimedEvent(id=r.id, event_id=r.event_id, channel=r.channel, payload=r.payload,
                            organisations=json.loads(r.organisations), attempts=r.attempts,
                            published_at=r.published_at, first_seen_at=r.first_seen_at)
               for r in rows]
    return sorted(claimed, key=lambda e: e.id)


def mark_delivered(session: Session, event: ClaimedEvent, now: datetime) -> bool:
    """Record a confirmed delivery (even if the lease ran out meanwhile: the receiver has it,
    so a second send would only be a duplicate). Commits; False if it was already delivered."""
    result = session.execute(
        update(AlertEvent)
        .where(AlertEvent.id == event.id, AlertEvent.delivered_at.is_(None))
        .values(delivered_at=now, attempts=AlertEvent.attempts + 1, last_error=None,
                lease_owner=None, lease_expires_at=None)
        .execution_options(synchronize_session=False))
    session.commit()
    return bool(getattr(result, "rowcount", 0))


Retry = Literal["retry", "gave-up", "lost-lease"]


def mark_failed(session: Session, event: ClaimedEvent, worker_id: str, now: datetime, error: str,
                policy: RetryPolicy, retry_after: float | None = None) -> tuple[Retry, datetime]:
    """Count a failed attempt and reschedule it with back-off; after ``max_attempts`` the row
    stays (undelivered, with its last error) and is no longer claimed. Commits."""
    attempts = event.attempts + 1
    when = now + timedelta(seconds=backoff_seconds(attempts, policy, retry_after))
    result = session.execute(
        update(AlertEvent)
        .where(AlertEvent.id == event.id, AlertEvent.delivered_at.is_(None),
               AlertEvent.lease_owner == worker_id)
        .values(attempts=attempts, next_attempt_at=when, last_error=error[:2000],
                lease_owner=None, lease_expires_at=None)
        .execution_options(synchronize_session=False))
    session.commit()
    if not getattr(result, "rowcount", 0):
        return "lost-lease", when
    return ("gave-up" if attempts >= policy.max_attempts else "retry"), when


def release_events(session: Session, worker_id: str, ids: Sequence[int] | None = None) -> int:
    """Give back leases without counting an attempt (shutdown, a channel that is down). Commits."""
    stmt = update(AlertEvent).where(AlertEvent.lease_owner == worker_id,
                                    AlertEvent.delivered_at.is_(None))
    if ids is not None:
        if not ids:
            return 0
        stmt = stmt.where(AlertEvent.id.in_(in_list(ids)))
    result = session.execute(stmt.values(lease_owner=None, lease_expires_at=None)
                             .execution_options(synchronize_session=False))
    session.commit()
    return int(getattr(result, "rowcount", 0) or 0)


def pending_channels(session: Session, max_attempts: int) -> dict[str, int]:
    """Undelivered, still-retried events per channel (to spot channels no longer configured)."""
    rows = session.execute(
        select(AlertEvent.channel, func.count(distinct(AlertEvent.id)))
        .where(AlertEvent.delivered_at.is_(None), AlertEvent.attempts < max_attempts)
        .group_by(AlertEvent.channel)).all()
    return {channel: count for channel, count in rows}
