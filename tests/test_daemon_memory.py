"""The daemon's memory stays flat (bench/README.md, "Daemon"): its statements keep a handful of
SQL texts whatever a round's size (every distinct text is a prepared statement in each pooled
connection's cache, and one text per ``IN`` list length made the memory creep), and the prune
job gives the heap pages its table scans freed back."""

from __future__ import annotations

import json
import platform
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import event, select
from sqlalchemy.orm import Session, sessionmaker

import scheduler.jobs as jobs
from scheduler.config import AppConfig
from scheduler.daemon import source_rows
from scheduler.jobs import Runtime, prune_history, settle_sources
from storage.db import in_list, make_engine, make_session_factory
from storage.models import AlertEvent, FetchLog, Source
from storage.outbox import claim_events, release_events
from storage.repository import PollOutcome, record_poll, sync_sources

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_in_list_pads_to_a_power_of_two_with_the_last_value() -> None:
    assert in_list([]) == []
    assert in_list(["a"]) == ["a"]
    assert in_list(["a", "b", "c"]) == ["a", "b", "c", "c"]
    assert in_list(iter(range(5))) == [0, 1, 2, 3, 4, 4, 4, 4]
    assert in_list(range(8)) == list(range(8))
    assert {len(in_list(range(n))) for n in range(1, 257)} == {1, 2, 4, 8, 16, 32, 64, 128, 256}


def test_settling_rounds_of_every_size_uses_few_statement_texts(sqlite_url: str) -> None:
    ids = [f"s{i:02d}" for i in range(40)]
    config = AppConfig.model_validate({
        "storage": {"url": sqlite_url},
        "sources": [{"id": s, "url": f"http://127.0.0.1:9/{s}", "interval": "60s"} for s in ids],
        "organisations": [{"id": "CICA", "aliases": ["CICA"]}]})
    engine = make_engine(sqlite_url)
    sessions = make_session_factory(engine)
    with sessions() as session:
        sync_sources(session, source_rows(config), NOW)
        session.commit()
    rt = Runtime(config=config, sessions=sessions, worker_id="w1", channels={},
                 crawl_round=lambda ids, sink: None, clock=lambda: NOW)
    texts: set[str] = set()
    event.listen(engine, "before_cursor_execute",
                 lambda _c, _cur, statement, *_a: texts.add(statement) if " IN (" in statement else None)
    for n in range(1, len(ids) + 1):
        settle_sources(rt, ids[:n], NOW, None)
    # two statements (read the round's sources, release them) × lengths 1, 2, 4, … 64
    assert len(texts) <= 2 * 7, len(texts)
    with sessions() as session:
        assert all(s.next_poll_at is not None and s.lease_owner is None
                   for s in session.scalars(select(Source)))
    engine.dispose()


def test_releasing_a_padded_list_counts_each_event_once(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as session:
        for _ in range(3):
            event_id = str(uuid.uuid4())
            session.add(AlertEvent(event_id=event_id, channel="hook", organisations='["CICA"]',
                                   payload=json.dumps({"event_id": event_id}), created_at=NOW,
                                   next_attempt_at=NOW))
        session.commit()
        claimed = claim_events(session, "w1", NOW, channels=["hook"])
        assert release_events(session, "w1", [e.id for e in claimed]) == 3
        assert len(claim_events(session, "w2", NOW, channels=["hook"])) == 3


def test_the_prune_job_prunes_then_returns_the_memory_it_took(db_url: str, monkeypatch) -> None:
    config = AppConfig.model_validate({"storage": {"url": db_url}, "sources": [
        {"id": "a", "url": "http://127.0.0.1:9/a"}], "organisations": [{"id": "CICA", "aliases": ["CICA"]}],
        "daemon": {"fetch_log_keep": "7d"}})
    engine = make_engine(db_url)
    rt = Runtime(config=config, sessions=make_session_factory(engine), worker_id="w1", channels={},
                 crawl_round=lambda ids, sink: None, clock=lambda: NOW)
    with rt.sessions.begin() as session:
        sync_sources(session, source_rows(config), NOW)
        session.flush()
        for age_days in (1, 30):
            when = NOW - timedelta(days=age_days)
            record_poll(session, PollOutcome("a", when, when, "ok"))
    statements: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda _c, _cur, statement, *_a: statements.append(statement))
    trims: list[bool] = []
    monkeypatch.setattr(jobs, "release_free_memory", lambda: trims.append(True) or True)
    prune_history(rt)
    with rt.sessions() as session:
        assert [r.started_at.day for r in session.scalars(select(FetchLog))] == [(NOW - timedelta(days=1)).day]
    assert trims == [True]
    assert ("PRAGMA shrink_memory" in statements) == (engine.dialect.name == "sqlite")
    monkeypatch.undo()
    assert jobs.release_free_memory() is (platform.libc_ver()[0] == "glibc")  # malloc_trim is glibc's
    engine.dispose()
