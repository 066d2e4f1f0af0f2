"""Where a backfill stands (the ``backfills`` row of a source), and the source's lease while it
runs: a backfill holds the lease, so the daemon does not poll the source at the same time and
counts it against the host's quota (storage.leases)."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import or_, update
from sqlalchemy.orm import Session

from storage.models import Backfill, Source


def backfill_of(session: Session, source_id: str) -> Backfill | None:
    return session.get(Backfill, source_id)


def start_backfill(session: Session, source_id: str, since: datetime | None, first_url: str,
                   now: datetime) -> Backfill:
    """A fresh position (replacing an old one) that starts at ``first_url``. Does not commit."""
    row = session.get(Backfill, source_id)
    if row is None:
        row = Backfill(source_id=source_id)
        session.add(row)
    row.since, row.pending, row.seen = since, json_list([first_url]), "[]"
    row.pages = row.new = row.known = 0
    row.oldest_at, row.reached_since = None, False
    row.started_at = row.updated_at = now
    return row


def hold_source(session: Session, source_id: str, owner: str, now: datetime, seconds: float,
                replacing: str | None = None) -> bool:
    """Take (or extend) the source's lease for ``owner``; False when someone else holds it
    (other than ``replacing``, a holder known to be dead). Commits."""
    takeable = [Source.lease_owner.is_(None), Source.lease_owner == owner, Source.lease_expires_at < now]
    if replacing:
        takeable.append(Source.lease_owner == replacing)
    result = session.execute(
        update(Source).where(Source.id == source_id, or_(*takeable))
        .values(lease_owner=owner, lease_expires_at=now + timedelta(seconds=seconds))
        .execution_options(synchronize_session=False))
    session.commit()
    return bool(getattr(result, "rowcount", 0))


def lease_owner(session: Session, source_id: str) -> str | None:
    source = session.get(Source, source_id)
    return source.lease_owner if source is not None else None


def let_go(session: Session, source_id: str, owner: str) -> None:
    """Drop the lease ``owner`` holds on the source. Commits."""
    session.execute(update(Source).where(Source.id == source_id, Source.lease_owner == owner)
                    .values(lease_owner=None, lease_expires_at=None)
                    .execution_options(synchronize_session=False))
    session.commit()


def json_list(values: list[str]) -> str:
    import json

    return json.dumps(values, ensure_ascii=False)
