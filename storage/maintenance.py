"""Housekeeping of tables that only serve bookkeeping: the fetch log, and the story index
(LSH bands and signatures) of items older than the clustering window. Items, versions,
matches and alerts are history and are never pruned.

PostgreSQL: the fetch log is partitioned by day (storage/partitions.py); whole days are
dropped, and the days ahead created. SQLite: rows are deleted in batches, each its own short
write transaction sized to hold the database's write lock for about BATCH_SECONDS (never more
than 0.1 s), so the crawl's writes go on between them."""

from __future__ import annotations

import time as clock
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import delete, select, text
from sqlalchemy.orm import Session

from storage.models import Item, ItemSignature, StoryBand
from storage.partitions import drop_partitions_before, ensure_partitions, is_partitioned

if TYPE_CHECKING:
    from sqlalchemy.engine import CursorResult, Result

BATCH_SECONDS = 0.025
FIRST_BATCH = 500
MAX_BATCH = 20_000


def _rowcount(result: Result[Any]) -> int:
    # Session.execute returns a CursorResult for DML but is typed Result: SQLAlchemy's documented cast
    return cast("CursorResult[Any]", result).rowcount


@dataclass(frozen=True)
class Pruned:
    fetch_log: int
    story_bands: int
    signatures: int
    fetch_log_days: int = 0  # PostgreSQL: day partitions dropped (their rows are not counted)
    longest_lock: float = 0.0  # SQLite: the longest write transaction of a batch, in seconds


def prune(session: Session, now: datetime, *, fetch_log_keep: timedelta,
          story_window: timedelta) -> Pruned:
    """Delete fetch-log rows older than ``fetch_log_keep`` and the story index of items first
    seen before two story windows ago (no new item can join their stories any more). Commits
    (on SQLite after each batch)."""
    log_cutoff, story_cutoff = now - fetch_log_keep, now - 2 * story_window
    connection = session.connection()
    if connection.dialect.name != "sqlite":
        days, log_rows = 0, 0
        if is_partitioned(connection):
            dropped, log_rows = drop_partitions_before(connection, log_cutoff)
            ensure_partitions(connection, now)
            days = len(dropped)
        else:
            log_rows = _rowcount(session.execute(text("DELETE FROM fetch_log WHERE started_at < :c"),
                                                 {"c": log_cutoff})) or 0
        bands = _rowcount(session.execute(delete(StoryBand).where(StoryBand.seen_at < story_cutoff))) or 0
        old_items = select(Item.id).where(Item.first_seen_at < story_cutoff)
        signatures = _rowcount(session.execute(delete(ItemSignature).where(ItemSignature.item_id.in_(old_items))))
        session.commit()
        return Pruned(log_rows, bands, signatures or 0, days)
    session.commit()
    longest = [0.0]
    log = _batches(session, "SELECT id FROM fetch_log WHERE started_at < :cutoff ORDER BY started_at LIMIT :n",
                   "DELETE FROM fetch_log WHERE id IN ({ids})", log_cutoff, longest)
    bands = _batches(session, "SELECT id FROM story_bands WHERE seen_at < :cutoff ORDER BY seen_at LIMIT :n",
                     "DELETE FROM story_bands WHERE id IN ({ids})", story_cutoff, longest)
    signatures = _batches(session, "SELECT s.item_id FROM item_signatures s JOIN items i ON i.id = s.item_id "
                          "WHERE i.first_seen_at < :cutoff LIMIT :n",
                          "DELETE FROM item_signatures WHERE item_id IN ({ids})", story_cutoff, longest)
    return Pruned(log, bands, signatures, longest_lock=longest[0])


def _batches(session: Session, pick: str, remove: str, cutoff: datetime, longest: list[float]) -> int:
    """Delete what ``pick`` selects, a batch at a time: the ids are read outside any write
    transaction (WAL readers take no lock), then deleted in a transaction of their own, whose
    size follows the time the last one took."""
    size, total = FIRST_BATCH, 0
    while True:
        ids = list(session.execute(text(pick), {"cutoff": cutoff, "n": size}).scalars())
        session.commit()
        if not ids:
            return total
        began = clock.perf_counter()
        session.execute(text(remove.format(ids=", ".join(str(int(i)) for i in ids))))
        session.commit()
        took = clock.perf_counter() - began
        longest[0] = max(longest[0], took)
        total += len(ids)
        if len(ids) < size:
            return total
        # toward BATCH_SECONDS, growing at most 2× a batch (one slow moment must not overshoot)
        size = max(100, min(MAX_BATCH, 2 * size, int(size * BATCH_SECONDS / max(took, 1e-4))))
