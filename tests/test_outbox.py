"""The outbox relay's storage side on SQLite and PostgreSQL: claim, deliver, retry, give up."""

from __future__ import annotations

import json
import random
import threading
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from storage.db import make_engine, make_session_factory
from storage.models import AlertEvent
from storage.outbox import (
    RetryPolicy,
    backoff_seconds,
    claim_events,
    mark_delivered,
    mark_failed,
    pending_channels,
    release_events,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def add_events(sessions: sessionmaker[Session], n: int, channel: str = "hook",
               at: datetime = NOW) -> list[str]:
    ids = [str(uuid.uuid4()) for _ in range(n)]
    with sessions() as session:
        for event_id in ids:
            body = {"event_id": event_id, "event": "match", "organisations": ["CICA"], "item": {}}
            session.add(AlertEvent(event_id=event_id, channel=channel, organisations='["CICA"]',
                                   payload=json.dumps(body), created_at=at, next_attempt_at=at,
                                   published_at=at - timedelta(minutes=5), first_seen_at=at))
        session.commit()
    return ids


def row(sessions: sessionmaker[Session], event_id: str) -> AlertEvent:
    with sessions() as session:
        found = session.scalar(select(AlertEvent).where(AlertEvent.event_id == event_id))
        assert found is not None
        return found


def test_claim_then_deliver(session_factory: sessionmaker[Session]) -> None:
    ids = add_events(session_factory, 3)
    with session_factory() as session:
        claimed = claim_events(session, "w1", NOW, channels=["hook"], limit=2)
        assert [e.event_id for e in claimed] == ids[:2]
        assert claimed[0].body["event_id"] == ids[0] and claimed[0].organisations == ["CICA"]
        # leased: a second claim only gets what is left
        again = claim_events(session, "w2", NOW, channels=["hook"], limit=10)
        assert [e.event_id for e in again] == ids[2:]
        assert mark_delivered(session, claimed[0], NOW + timedelta(seconds=1))
        assert not mark_delivered(session, claimed[0], NOW + timedelta(seconds=2))
    delivered = row(session_factory, ids[0])
    assert delivered.delivered_at == NOW + timedelta(seconds=1)
    assert delivered.attempts == 1 and delivered.lease_owner is None


def test_expired_lease_is_claimed_again(session_factory: sessionmaker[Session]) -> None:
    add_events(session_factory, 1)
    with session_factory() as session:
        assert claim_events(session, "w1", NOW, channels=["hook"], lease_seconds=30)
        assert not claim_events(session, "w2", NOW + timedelta(seconds=29), channels=["hook"])
        assert claim_events(session, "w2", NOW + timedelta(seconds=31), channels=["hook"])


def test_only_configured_channels_are_claimed(session_factory: sessionmaker[Session]) -> None:
    add_events(session_factory, 2, channel="gone")
    add_events(session_factory, 1, channel="hook")
    with session_factory() as session:
        assert [e.channel for e in claim_events(session, "w", NOW, channels=["hook"])] == ["hook"]
        assert not claim_events(session, "w", NOW, channels=[])
        assert pending_channels(session, 20) == {"gone": 2, "hook": 1}


def test_failure_backs_off_then_gives_up_keeping_the_row(session_factory: sessionmaker[Session]) -> None:
    (event_id,) = add_events(session_factory, 1)
    policy = RetryPolicy(max_attempts=3, cap_seconds=60, base_seconds=4, rng=random.Random(1))
    now = NOW
    outcomes = []
    with session_factory() as session:
        for _ in range(3):
            (event,) = claim_events(session, "w", now, channels=["hook"], max_attempts=3)
            outcome, when = mark_failed(session, event, "w", now, "http 500", policy)
            outcomes.append(outcome)
            assert when > now
            assert not claim_events(session, "w", now, channels=["hook"], max_attempts=3)
            now = when
        assert outcomes == ["retry", "retry", "gave-up"]
        assert not claim_events(session, "w", now + timedelta(days=1), channels=["hook"], max_attempts=3)
    kept = row(session_factory, event_id)
    assert kept.delivered_at is None and kept.attempts == 3 and kept.last_error == "http 500"


def test_backoff_grows_with_jitter_and_cap() -> None:
    policy = RetryPolicy(cap_seconds=100, base_seconds=4, rng=random.Random(7))
    for attempts, full in [(1, 4), (2, 8), (3, 16), (6, 100), (30, 100)]:
        delay = backoff_seconds(attempts, policy)
        assert full / 2 <= delay <= full
    assert backoff_seconds(1, policy, retry_after=50) == 50
    assert backoff_seconds(1, policy, retry_after=5000) == 100


def test_failure_after_losing_the_lease_changes_nothing(session_factory: sessionmaker[Session]) -> None:
    (event_id,) = add_events(session_factory, 1)
    with session_factory() as session:
        (event,) = claim_events(session, "w1", NOW, channels=["hook"], lease_seconds=10)
        later = NOW + timedelta(seconds=20)
        (taken,) = claim_events(session, "w2", later, channels=["hook"])
        outcome, _ = mark_failed(session, event, "w1", later, "timeout", RetryPolicy())
        assert outcome == "lost-lease"
    assert row(session_factory, event_id).lease_owner == "w2"


def test_release_gives_back_without_an_attempt(session_factory: sessionmaker[Session]) -> None:
    add_events(session_factory, 2)
    with session_factory() as session:
        claimed = claim_events(session, "w1", NOW, channels=["hook"])
        assert release_events(session, "w1", [claimed[0].id]) == 1
        again = claim_events(session, "w2", NOW, channels=["hook"])
        assert [e.id for e in again] == [claimed[0].id] and again[0].attempts == 0
        assert release_events(session, "w1") == 1


def test_digest_retries_only_claims_failed_events(session_factory: sessionmaker[Session]) -> None:
    add_events(session_factory, 2, channel="digest")
    with session_factory() as session:
        assert not claim_events(session, "w", NOW, channels=["digest"], retries_only=True)
        first = claim_events(session, "w", NOW, channels=["digest"], limit=1)
        _, when = mark_failed(session, first[0], "w", NOW, "down", RetryPolicy())
        retry = claim_events(session, "w", when, channels=["digest"], retries_only=True)
        assert [e.id for e in retry] == [first[0].id]


def test_concurrent_claimers_never_share_an_event(db_url: str) -> None:
    """Two workers with their own engines (two connections on PostgreSQL) claim in a loop."""
    add_events(make_session_factory(make_engine(db_url)), 120)
    got: dict[str, list[str]] = {"a": [], "b": []}
    start = threading.Barrier(2)

    def worker(name: str) -> None:
        engine = make_engine(db_url)
        sessions = make_session_factory(engine)
        start.wait()
        while True:
            with sessions() as session:
                batch = claim_events(session, name, NOW, channels=["hook"], limit=7)
            if not batch:
                break
            got[name] += [e.event_id for e in batch]
        engine.dispose()

    threads = [threading.Thread(target=worker, args=(n,)) for n in got]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not set(got["a"]) & set(got["b"])
    assert len(got["a"]) + len(got["b"]) == 120


def test_postgres_skip_locked_skips_rows_in_an_open_claim(db_url: str) -> None:
    """While one transaction holds rows FOR UPDATE, another claimer skips them instead of
    waiting (PostgreSQL); SQLite serialises the two claims instead."""
    if not db_url.startswith("postgresql"):
        pytest.skip("FOR UPDATE SKIP LOCKED is PostgreSQL's")
    sessions = make_session_factory(make_engine(db_url))
    add_events(sessions, 2)
    holder = sessions()
    locked = holder.scalars(select(AlertEvent.id).order_by(AlertEvent.id).limit(1)
                            .with_for_update()).all()
    try:
        with sessions() as other:
            claimed = claim_events(other, "w2", NOW, channels=["hook"])
        assert [e.id for e in claimed] and locked[0] not in [e.id for e in claimed]
    finally:
        holder.rollback()
        holder.close()
