"""Who polls what: leases on due sources, worker registration and heartbeats, and the
single-daemon lock of an SQLite database."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any

from sqlalchemy import Select, func, or_, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from storage.errors import StorageError
from storage.models import AlertEvent, Revisit, Source, Worker


class DaemonLockedError(StorageError):
    """Raised when another daemon already runs on this SQLite database."""


def _due(now: datetime) -> list[Any]:
    return [
        Source.enabled.is_(True),
        or_(Source.next_poll_at.is_(None), Source.next_poll_at <= now),
        or_(Source.lease_expires_at.is_(None), Source.lease_expires_at < now),
    ]


# Claims take this transaction-level advisory lock on PostgreSQL: per-host quotas are counted
# and spent in one serialised step (a claim is one short statement, so this costs little).
CLAIM_LOCK = 0x6E65_7773


def claim_due_sources(session: Session, worker_id: str, now: datetime, *, limit: int = 200,
                      lease_seconds: float = 600.0, per_host: int | None = None) -> list[str]:
    """Lease up to ``limit`` due sources (never polled first, then the most overdue) to
    ``worker_id`` and return their ids. ``FOR UPDATE SKIP LOCKED`` on PostgreSQL; on SQLite the
    single UPDATE is atomic. Commits.

    :param per_host: politeness across workers (``crawl.concurrency_per_host``): a host whose
        sources other workers hold ``per_host`` or more leases on is skipped, and one with
        ``k`` such leases gives at most ``per_host - k`` sources; a host nobody else holds is
        all ours (the round's crawler caps its own requests per host). So no more than
        ``per_host`` requests run against one host in total.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": CLAIM_LOCK})
    pick = _due_ids(worker_id, now, limit) if per_host is None else _polite_ids(worker_id, now, limit,
                                                                                 per_host)
    due = (select(Source.id).where(Source.id.in_(pick)).with_for_update(skip_locked=True)
           .cte("due").prefix_with("MATERIALIZED", dialect="postgresql"))
    stmt = (update(Source).where(Source.id.in_(select(due.c.id)), *_due(now))
            .values(lease_owner=worker_id, lease_expires_at=now + timedelta(seconds=lease_seconds))
            .returning(Source.id, Source.next_poll_at)
            .execution_options(synchronize_session=False))
    rows = session.execute(stmt).all()
    session.commit()
    return [r.id for r in sorted(rows, key=lambda r: (r.next_poll_at is not None, r.next_poll_at, r.id))]


def _due_ids(worker_id: str, now: datetime, limit: int) -> Select[str]:
    return (select(Source.id).where(*_due(now))
            .order_by(Source.next_poll_at.asc().nulls_first(), Source.id).limit(limit))


def _polite_ids(worker_id: str, now: datetime, limit: int, per_host: int) -> Select[str]:
    """Due sources within each host's remaining quota (see claim_due_sources)."""
    others = (select(Source.host, func.count().label("n"))
              .where(Source.lease_owner.is_not(None), Source.lease_owner != worker_id,
                     Source.lease_expires_at >= now)
              .group_by(Source.host).cte("held_by_others"))
    held = func.coalesce(others.c.n, 0)
    rank = func.row_number().over(partition_by=Source.host,
                                  order_by=(Source.next_poll_at.asc().nulls_first(), Source.id))
    ranked = (select(Source.id, Source.next_poll_at, held.label("held"), rank.label("rank"))
              .select_from(Source).outerjoin(others, others.c.host == Source.host)
              .where(*_due(now), held < per_host).subquery("ranked"))
    return (select(ranked.c.id)
            .where(or_(ranked.c.held == 0, ranked.c.rank <= per_host - ranked.c.held))
            .order_by(ranked.c.next_poll_at.asc().nulls_first(), ranked.c.id).limit(limit))


def renew_leases(session: Session, worker_id: str, now: datetime, lease_seconds: float) -> int:
    """Extend every lease this worker holds (sources and alert events): a live worker keeps
    what it is working on, a dead one loses it ``lease_seconds`` after its last heartbeat.
    Returns how many leases were renewed. Commits."""
    until = now + timedelta(seconds=lease_seconds)
    renewed = 0
    for model in (Source, AlertEvent):
        # Rows locked right now are skipped, not waited for: on PostgreSQL they are this
        # worker's crawl recording its polls (which ends the lease anyway), and waiting on
        # them while that transaction waits on a row this one locked was a deadlock.
        mine = (select(model.id).where(model.lease_owner == worker_id).order_by(model.id)
                .with_for_update(skip_locked=True))
        result = session.execute(update(model).where(model.id.in_(mine), model.lease_owner == worker_id)
                                 .values(lease_expires_at=until)
                                 .execution_options(synchronize_session=False))
        renewed += int(getattr(result, "rowcount", 0) or 0)
    session.commit()
    return renewed


def release_sources(session: Session, worker_id: str, ids: Sequence[str] | None = None) -> list[str]:
    """Drop this worker's leases (all, or on ``ids``); returns the sources released. Commits."""
    stmt = update(Source).where(Source.lease_owner == worker_id)
    if ids is not None:
        if not ids:
            return []
        stmt = stmt.where(Source.id.in_(list(ids)))
    rows = session.execute(stmt.values(lease_owner=None, lease_expires_at=None)
                           .returning(Source.id).execution_options(synchronize_session=False)).all()
    session.commit()
    return [r.id for r in rows]


def postpone_sources(session: Session, ids: Sequence[str], now: datetime) -> None:
    """Push sources whose poll never finished (a killed round) out by their interval, so a
    source that hangs a round cannot make every tick hang. Does not commit."""
    for source in session.scalars(select(Source).where(Source.id.in_(list(ids)))):
        source.next_poll_at = now + timedelta(seconds=source.interval_seconds)


# --- workers ---------------------------------------------------------------------------------


def register_worker(session: Session, worker_id: str, host: str, pid: int, now: datetime) -> None:
    """Announce a running daemon. Commits."""
    session.merge(Worker(id=worker_id, host=host, pid=pid, started_at=now, heartbeat_at=now,
                         stopped_at=None))
    session.commit()


def heartbeat(session: Session, worker_id: str, now: datetime) -> bool:
    """Refresh this worker's heartbeat; False if it was reaped as dead meanwhile. Commits."""
    result = session.execute(update(Worker).where(Worker.id == worker_id, Worker.stopped_at.is_(None))
                             .values(heartbeat_at=now).execution_options(synchronize_session=False))
    session.commit()
    return bool(getattr(result, "rowcount", 0))


def _free_leases_of(session: Session, worker_ids: Sequence[str]) -> None:
    if not worker_ids:
        return
    session.execute(update(Source).where(Source.lease_owner.in_(list(worker_ids)))
                    .values(lease_owner=None, lease_expires_at=None)
                    .execution_options(synchronize_session=False))
    session.execute(update(AlertEvent).where(AlertEvent.lease_owner.in_(list(worker_ids)))
                    .values(lease_owner=None, lease_expires_at=None)
                    .execution_options(synchronize_session=False))
    # revisits a killed round had claimed: due again now, not when their lease ends
    session.execute(update(Revisit).where(Revisit.lease_owner.in_(list(worker_ids)))
                    .values(lease_owner=None, lease_expires_at=None)
                    .execution_options(synchronize_session=False))


def stop_worker(session: Session, worker_id: str, now: datetime) -> None:
    """Mark this worker stopped and give back everything it holds. Commits."""
    _free_leases_of(session, [worker_id])
    session.execute(update(Worker).where(Worker.id == worker_id).values(stopped_at=now)
                    .execution_options(synchronize_session=False))
    session.commit()


def reap_workers(session: Session, now: datetime, stale_after: float,
                 keep: str | None = None) -> list[str]:
    """Workers silent for ``stale_after`` seconds are dead (kill -9, lost host): mark them
    stopped and free their leases at once instead of waiting for the leases to expire. Commits.

    :param keep: this worker's own id, never reaped.
    """
    return _reap(session, now, now - timedelta(seconds=stale_after), keep)


def reap_all_but(session: Session, worker_id: str, now: datetime) -> list[str]:
    """SQLite, with the daemon lock held: every other worker is dead, whatever its heartbeat."""
    return _reap(session, now, None, worker_id)


def _reap(session: Session, now: datetime, cutoff: datetime | None, keep: str | None) -> list[str]:
    query = select(Worker.id).where(Worker.stopped_at.is_(None))
    if cutoff is not None:
        query = query.where(Worker.heartbeat_at < cutoff)
    dead = [w for w in session.scalars(query) if w != keep]
    _free_leases_of(session, dead)
    if dead:
        session.execute(update(Worker).where(Worker.id.in_(dead)).values(stopped_at=now)
                        .execution_options(synchronize_session=False))
    session.commit()
    return dead


# --- the SQLite single-daemon lock -------------------------------------------------------------


@dataclass
class DaemonLock:
    """An exclusive ``flock`` on ``<database>.daemon.lock``; the kernel drops it when the
    process dies, kill -9 included, so there is never a stale lock to clean up."""

    path: Path
    handle: IO[str] | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held for the process life
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise DaemonLockedError(
                f"another `newsmon run` (pid {holder}) already uses this SQLite database "
                f"(lock {self.path}); SQLite allows one daemon per database - stop it first, "
                f"or use PostgreSQL to run several workers") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self.handle = handle

    def release(self) -> None:
        if self.handle is not None:
            fcntl.flock(self.handle.fileno(), fcntl.LOCK_UN)
            self.handle.close()
            self.handle = None


def sqlite_lock_path(url: str) -> Path | None:
    """The lock file of an SQLite database URL; None for PostgreSQL and in-memory databases."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    path = Path(database).expanduser().resolve()
    return path.with_name(path.name + ".daemon.lock")
