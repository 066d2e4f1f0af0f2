"""The write path on SQLite and PostgreSQL: idempotent upserts, versions, identity, outbox."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from storage.models import AlertEvent, FetchLog, Item, ItemVersion, PollCount, Source, Worker
from storage.repository import (
    ChannelRule,
    ItemWrite,
    MatchRow,
    PollOutcome,
    SourceRow,
    key_of,
    record_poll,
    record_polls,
    sync_sources,
)
from storage.writes import save_item

NOW = datetime(2025, 2, 4, 12, 0, tzinfo=UTC)
CICA = MatchRow("CICA", "СВМДА", "СВМДА", "…в рамках СВМДА…", 40, 45)


def make_write(**overrides: object) -> ItemWrite:
    values: dict[str, object] = {
        "source_id": "mid-ru",
        "url": "https://mid.ru/ru/foreign_policy/news/1990001/?utm_source=tg",
        "canonical_url": "https://mid.ru/ru/foreign_policy/news/1990001/",
        "guid": "1990001",
        "title": "О встрече А.Ю.Руденко с Послом Азербайджана",
        "text": "Обсуждено взаимодействие в рамках СВМДА.",
        "content_hash": "sha256:aaa",
        "fetched_at": NOW,
        "published_at": NOW - timedelta(hours=2),
        "matches": [CICA],
        "raw": b"<rss>...</rss>",
    }
    values.update(overrides)
    return ItemWrite(**values)  # type: ignore[arg-type]


@pytest.fixture
def factory(session_factory):
    with session_factory.begin() as session:
        sync_sources(session, [SourceRow("mid-ru", "feed", "https://mid.ru/ru/rss.php"),
                               SourceRow("tass", "feed", "https://tass.ru/rss/v2.xml")], NOW)
    return session_factory


def count(session, model) -> int:
    return session.scalar(select(func.count()).select_from(model))


def test_same_content_twice_writes_nothing(factory):
    with factory.begin() as s:
        first = save_item(s, make_write(), [ChannelRule("hook")])
    with factory.begin() as s:
        again = save_item(s, make_write(), [ChannelRule("hook")])
    assert (first.status, again.status) == ("new", "unchanged")
    assert again.item_id == first.item_id and again.events == []
    with factory() as s:
        assert (count(s, Item), count(s, ItemVersion), count(s, AlertEvent)) == (1, 1, 1)


@pytest.mark.parametrize("change", [
    {"guid": "other-guid"},  # GUID changed, link kept
    # link changed, GUID kept
    {"canonical_url": "https://mid.ru/ru/news/moved/", "url": "https://mid.ru/ru/news/moved/"},
])
def test_guid_or_link_change_keeps_one_item(factory, change):
    with factory.begin() as s:
        save_item(s, make_write())
    with factory.begin() as s:
        result = save_item(s, make_write(**change))
    assert result.status == "unchanged"
    with factory() as s:
        assert count(s, Item) == 1


def test_edit_makes_a_new_version_and_keeps_the_old(factory):
    with factory.begin() as s:
        save_item(s, make_write())
    with factory.begin() as s:
        result = save_item(s, make_write(text="Исправленный текст о СВМДА.", content_hash="sha256:bbb"))
    assert (result.status, result.version) == ("updated", 2)
    with factory() as s:
        texts = s.scalars(select(ItemVersion.text).order_by(ItemVersion.version)).all()
    assert texts == ["Обсуждено взаимодействие в рамках СВМДА.", "Исправленный текст о СВМДА."]


def test_outbox_event_is_written_with_the_item(factory):
    with factory.begin() as s:
        result = save_item(s, make_write(), [ChannelRule("hook"), ChannelRule("sco-only", frozenset({"SCO"}))])
    assert len(result.events) == 1
    with factory() as s:
        event = s.scalar(select(AlertEvent))
    payload = json.loads(event.payload)
    assert payload["event_id"] == event.event_id == result.events[0]
    assert payload["event"] == "match" and payload["organisations"] == ["CICA"]
    assert payload["item"]["canonical_url"] == "https://mid.ru/ru/foreign_policy/news/1990001/"
    assert payload["item"]["matches"][0]["form"] == "СВМДА"


def test_a_rolled_back_transaction_leaves_no_outbox_row(factory):
    with pytest.raises(RuntimeError), factory.begin() as s:
        save_item(s, make_write(), [ChannelRule("hook")])
        raise RuntimeError("crash before commit")
    with factory() as s:
        assert (count(s, Item), count(s, AlertEvent)) == (0, 0)


def test_new_organisation_in_a_version_is_alerted_once(factory):
    channels = [ChannelRule("hook")]
    with factory.begin() as s:
        save_item(s, make_write(matches=[], text="Без упоминаний."), channels)
    with factory.begin() as s:
        added = save_item(s, make_write(content_hash="sha256:ccc"), channels)
    with factory.begin() as s:
        reworded = save_item(s, make_write(content_hash="sha256:ddd", text="Иначе о СВМДА."), channels)
    assert len(added.events) == 1 and reworded.events == []


def test_old_items_are_stored_but_not_alerted(factory):
    with factory.begin() as s:
        result = save_item(s, make_write(published_at=NOW - timedelta(days=30)), [ChannelRule("hook")])
    assert result.status == "new" and result.events == [] and result.organisations == ["CICA"]


def test_unique_constraint_enforces_identity(factory):
    with pytest.raises(IntegrityError), factory.begin() as s:
        for _ in range(2):
            s.add(Item(source_id="mid-ru", url="u", canonical_url="u", url_key=key_of("u"),
                       title="", text="", first_seen_at=NOW, updated_at=NOW, sort_at=NOW,
                       version=1, content_hash="x"))
            s.flush()


def test_record_poll_updates_state_and_log(factory):
    with factory.begin() as s:
        record_poll(s, PollOutcome("tass", NOW, NOW, "error", error_class="http-5xx", message="503"))
        record_poll(s, PollOutcome("tass", NOW, NOW, "error", error_class="timeout", message="slow"))
    with factory() as s:
        source = s.get(Source, "tass")
        assert (source.failures, source.last_error_class) == (2, "timeout")
        assert count(s, FetchLog) == 2
    with factory.begin() as s:
        record_poll(s, PollOutcome("tass", NOW, NOW, "ok", new=3, entries=3, etag='"v1"'))
    with factory() as s:
        source = s.get(Source, "tass")
        assert (source.failures, source.etag, source.had_items) == (0, '"v1"', True)
        assert source.last_new_item_at == NOW


def test_record_polls_writes_a_batch_as_its_polls_one_by_one(factory):
    """One call for a round's batch (a few statements, whatever its size): the same log rows,
    counters and source state as each poll recorded alone — repeats of a source included."""
    with factory.begin() as s:
        sync_sources(s, [SourceRow("mid-ru", "feed", "https://mid.ru/ru/rss.php"),
                         SourceRow("tass", "feed", "https://tass.ru/rss/v2.xml"),
                         SourceRow("kazinform", "feed", "https://kazinform.kz/rss")], NOW)
        s.add(Worker(id="w1", host="h", pid=1, started_at=NOW, heartbeat_at=NOW, polls=0))
        tass = s.get(Source, "tass")  # loaded in this session: it must show the new state
        assert tass.failures == 0
        record_polls(s, [
            PollOutcome("tass", NOW, NOW, "error", error_class="timeout", message="slow"),
            PollOutcome("tass", NOW, NOW, "error", error_class="timeout", message="slower"),
            PollOutcome("mid-ru", NOW, NOW, "ok", new=2, entries=5, etag='"e2"', body_hash="sha256:b",
                        next_poll_at=NOW + timedelta(minutes=10)),
            PollOutcome("kazinform", NOW, NOW, "not-modified", next_poll_at=NOW + timedelta(minutes=5)),
        ], "w1")
        assert (tass.failures, tass.last_error_message) == (2, "slower")
    with factory() as s:
        assert count(s, FetchLog) == 4
        assert s.get(Worker, "w1").polls == 4
        counts = {(c.source_id, c.outcome, c.error_class): c.polls for c in s.scalars(select(PollCount))}
        assert counts == {("tass", "error", "timeout"): 2, ("mid-ru", "ok", ""): 1,
                          ("kazinform", "not-modified", ""): 1}
        mid, kaz = s.get(Source, "mid-ru"), s.get(Source, "kazinform")
        assert (mid.etag, mid.body_hash, mid.had_items, mid.last_new_item_at) == ('"e2"', "sha256:b", True, NOW)
        assert mid.next_poll_at == NOW + timedelta(minutes=10) and mid.lease_owner is None
        assert (kaz.failures, kaz.last_success_at, kaz.next_poll_at) == (0, NOW, NOW + timedelta(minutes=5))
        assert kaz.last_new_item_at is None


def test_a_channel_alerts_only_matches_sure_enough(factory):
    weak = replace(CICA, confidence=0.6)  # e.g. an ambiguous acronym with only a foreign-affairs source
    channels = [ChannelRule("hook"), ChannelRule("all", min_confidence=0.5)]
    with factory.begin() as s:
        result = save_item(s, make_write(matches=[weak]), channels)
    assert len(result.events) == 1 and result.organisations == ["CICA"]  # stored; alerted to "all" only
    with factory() as s:
        assert [e.channel for e in s.scalars(select(AlertEvent))] == ["all"]
