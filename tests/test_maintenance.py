"""Housekeeping deletes only bookkeeping rows past their time, on both backends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from storage.maintenance import prune
from storage.models import FetchLog, Item, ItemSignature, StoryBand
from storage.repository import ItemWrite, PollOutcome, Prepared, SourceRow, record_poll, sync_sources
from storage.writes import save_item

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def count(session, model) -> int:  # noqa: ANN001
    return session.scalar(select(func.count()).select_from(model))


def test_prune_keeps_history_and_drops_old_bookkeeping(session_factory):
    with session_factory.begin() as s:
        sync_sources(s, [SourceRow("src", "feed", "https://example.org/rss")], NOW)
        s.flush()
        for age_days in (1, 30):
            when = NOW - timedelta(days=age_days)
            record_poll(s, PollOutcome("src", when, when, "ok"))
            signed = Prepared("title text", (b"sig", [1]))  # one band, no story lookup
            save_item(s, ItemWrite("src", f"https://example.org/{age_days}", f"https://example.org/{age_days}",
                                   "title", "text", f"sha256:{age_days}", when, prepared=signed), now=when)
    with session_factory() as s:  # prune commits (on SQLite after each batch)
        pruned = prune(s, NOW, fetch_log_keep=timedelta(days=7), story_window=timedelta(days=3))
    assert (pruned.fetch_log, pruned.story_bands, pruned.signatures) == (1, 1, 1)
    with session_factory() as s:
        assert (count(s, FetchLog), count(s, StoryBand), count(s, ItemSignature)) == (1, 1, 1)
        assert count(s, Item) == 2  # items are history: never pruned
