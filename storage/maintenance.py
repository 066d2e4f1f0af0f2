"""Housekeeping of tables that only serve bookkeeping: the fetch log, and the story index
(LSH bands and signatures) of items older than the clustering window. Items, versions,
matches and alerts are history and are never pruned."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from storage.models import FetchLog, Item, ItemSignature, StoryBand


@dataclass(frozen=True)
class Pruned:
    fetch_log: int
    story_bands: int
    signatures: int


def prune(session: Session, now: datetime, *, fetch_log_keep: timedelta,
          story_window: timedelta) -> Pruned:
    """Delete fetch-log rows older than ``fetch_log_keep`` and the story index of items first
    seen before two story windows ago (no new item can join their stories any more)."""
    story_cutoff = now - 2 * story_window
    log = session.execute(delete(FetchLog).where(FetchLog.started_at < now - fetch_log_keep))
    bands = session.execute(delete(StoryBand).where(StoryBand.seen_at < story_cutoff))
    old_items = select(Item.id).where(Item.first_seen_at < story_cutoff)
    signatures = session.execute(delete(ItemSignature).where(ItemSignature.item_id.in_(old_items)))
    return Pruned(log.rowcount or 0, bands.rowcount or 0, signatures.rowcount or 0)
