"""The fetch log at scale: rolled-up poll counters that equal a recount, day partitions on
PostgreSQL that roll over (created ahead, polls of a missing day kept and moved in, old days
dropped), batched pruning on SQLite, and migration 0004 converting an existing database."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from alembic import command
from sqlalchemy import func, select, text

from storage.db import _alembic_config, make_engine, make_session_factory, upgrade
from storage.leases import register_worker
from storage.maintenance import prune
from storage.models import FetchLog, PollCount, Worker
from storage.partitions import drop_partitions_before, ensure_partitions, is_partitioned, partition_days
from storage.queries import worker_status
from storage.repository import PollOutcome, SourceRow, record_poll, sync_sources
from storage.stats import polls_per_source, recount_polls

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
OUTCOMES = [("ok", None), ("not-modified", None), ("error", "timeout"), ("error", "http-5xx")]


def _sources(session, n: int = 3) -> list[str]:  # noqa: ANN001
    ids = [f"s{i}" for i in range(n)]
    sync_sources(session, [SourceRow(i, "feed", f"https://{i}.example/rss") for i in ids], NOW)
    session.flush()
    return ids


def test_poll_counters_equal_a_recount_of_the_fetch_log(session_factory):
    rng = random.Random(3)
    with session_factory() as s:
        sources = _sources(s)
        for worker in ("w1", "w2"):
            register_worker(s, worker, "host", 1, NOW)
    for n in range(300):
        when = NOW - timedelta(minutes=n)
        outcome, cls = rng.choice(OUTCOMES)
        with session_factory.begin() as s:
            record_poll(s, PollOutcome(rng.choice(sources), when, when, outcome, error_class=cls),
                        rng.choice(["w1", "w2", None]))
    with session_factory() as s:
        counters = polls_per_source(s)
        assert counters == recount_polls(s)
        assert sum(counters.values()) == 300
        assert len({key[1:] for key in counters}) == 4  # every outcome and class was drawn
        per_worker = dict(s.execute(select(FetchLog.worker_id, func.count()).group_by(FetchLog.worker_id)).all())
        assert {w["id"]: w["polls"] for w in worker_status(s, NOW)} == {"w1": per_worker["w1"],
                                                                      "w2": per_worker["w2"]}


def test_a_poll_that_rolls_back_counts_nothing(session_factory):
    with session_factory.begin() as s:
        sources = _sources(s, 1)
    with session_factory() as s:
        record_poll(s, PollOutcome(sources[0], NOW, NOW, "ok"))
        s.rollback()
    with session_factory() as s:
        assert polls_per_source(s) == {} == recount_polls(s)


def test_counters_outlive_the_pruned_fetch_log(session_factory):
    with session_factory.begin() as s:
        sources = _sources(s, 1)
        for days in (1, 40):
            when = NOW - timedelta(days=days)
            record_poll(s, PollOutcome(sources[0], when, when, "ok"))
    with session_factory() as s:
        pruned = prune(s, NOW, fetch_log_keep=timedelta(days=7), story_window=timedelta(days=3))
        assert pruned.fetch_log == 1
        assert polls_per_source(s) == {(sources[0], "ok", ""): 2}  # counters are totals, never pruned
        assert recount_polls(s) == {(sources[0], "ok", ""): 1}


def _log_days(session) -> list[str]:  # noqa: ANN001
    return sorted(d.date().isoformat() for d in session.scalars(select(FetchLog.started_at)))


def test_partitions_roll_over_by_day(pg_url):
    engine = make_engine(pg_url)
    sessions = make_session_factory(engine)
    try:
        with sessions() as s:
            assert is_partitioned(s.connection())
            sources = _sources(s, 1)
            s.commit()
            # polls of days without a partition wait in the default one
            for days in (0, 1, 9):
                when = NOW - timedelta(days=days)
                record_poll(s, PollOutcome(sources[0], when, when, "ok"))
            s.commit()
            assert s.scalar(text("SELECT count(*) FROM fetch_log_default")) == 3
            made = ensure_partitions(s.connection(), NOW)
            s.commit()
            assert [d.isoformat() for d in made] == ["2026-03-10", "2026-03-11", "2026-03-12", "2026-03-13"]
            # today's poll moved into its partition; the older days' stay in the default
            assert s.scalar(text("SELECT count(*) FROM fetch_log_p20260310")) == 1
            assert s.scalar(text("SELECT count(*) FROM fetch_log_default")) == 2
            assert ensure_partitions(s.connection(), NOW) == []  # idempotent
            # the next day is ready before it starts: its poll goes to its partition
            tomorrow = NOW + timedelta(days=1)
            record_poll(s, PollOutcome(sources[0], tomorrow, tomorrow, "not-modified"))
            s.commit()
            assert s.scalar(text("SELECT count(*) FROM fetch_log_p20260311")) == 1
            # a day later: the prune drops whole days past the keep, creates the days ahead
            later = NOW + timedelta(days=8)
            pruned = prune(s, later, fetch_log_keep=timedelta(days=7), story_window=timedelta(days=3))
            assert pruned.fetch_log_days == 1 and pruned.fetch_log == 2  # day 03-10; 2 polls in the default
            days = [d.isoformat() for d in partition_days(s.connection())]
            assert days[0] == "2026-03-11" and {"2026-03-18", "2026-03-21"} <= set(days)
            assert _log_days(s) == ["2026-03-11"]
            # ids go on from the old sequence; the counters kept every poll
            assert polls_per_source(s) == {(sources[0], "ok", ""): 3, (sources[0], "not-modified", ""): 1}
            dropped, rows = drop_partitions_before(s.connection(), later + timedelta(days=30))
            s.commit()
            assert rows == 0 and [d.isoformat() for d in dropped] == [d for d in days if d < "2026-04-17"]
            assert s.scalar(select(func.count()).select_from(FetchLog)) == 0
    finally:
        engine.dispose()


def test_sqlite_prunes_in_batches_that_hold_the_write_lock_briefly(sqlite_url):
    engine = make_engine(sqlite_url)
    sessions = make_session_factory(engine)
    try:
        with sessions.begin() as s:
            sources = _sources(s, 1)
        old = NOW - timedelta(days=30)
        with engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO fetch_log (source_id, started_at, finished_at, outcome, new, updated, unchanged, "
                "matched) VALUES (:s, :at, :at, 'ok', 0, 0, 0, 0)"),
                [{"s": sources[0], "at": (old + timedelta(seconds=i)).strftime("%Y-%m-%d %H:%M:%S.%f")}
                 for i in range(60_000)])
        with sessions.begin() as s:
            record_poll(s, PollOutcome(sources[0], NOW, NOW, "ok"))
        with sessions() as s:
            pruned = prune(s, NOW, fetch_log_keep=timedelta(days=7), story_window=timedelta(days=3))
        assert pruned.fetch_log == 60_000
        assert 0 < pruned.longest_lock < 0.1
        with sessions() as s:
            assert _log_days(s) == [NOW.date().isoformat()]
    finally:
        engine.dispose()


def _run(engine, verb: str, revision: str) -> None:  # noqa: ANN001
    with engine.begin() as connection:
        config = _alembic_config(engine)
        config.attributes["connection"] = connection
        getattr(command, verb)(config, revision)


def test_migration_0004_converts_an_existing_fetch_log(new_database):
    engine = make_engine(new_database())
    backend = engine.dialect.name
    try:
        upgrade(engine, "0003")
        polls = [("a", NOW - timedelta(days=d, minutes=m), outcome, cls, worker)
                 for d in (0, 2, 5) for m, (outcome, cls), worker in
                 zip(range(4), OUTCOMES, ["w1", "w1", None, "w2"], strict=True)]
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO sources (id, name, kind, url, host, enabled, interval_seconds, "
                              "failures, had_items, created_at) VALUES ('a', 'a', 'feed', 'https://a.example/', "
                              "'a.example', true, 600, 0, false, :now)"), {"now": NOW})
            conn.execute(text("INSERT INTO workers (id, host, pid, started_at, heartbeat_at) "
                              "VALUES ('w1', 'h', 1, :now, :now), ('w2', 'h', 2, :now, :now)"), {"now": NOW})
            conn.execute(text("INSERT INTO fetch_log (source_id, started_at, finished_at, outcome, error_class, "
                              "new, updated, unchanged, matched, worker_id) "
                              "VALUES (:s, :at, :at, :o, :c, 0, 0, 0, 0, :w)"),
                         [{"s": s, "at": at, "o": o, "c": c, "w": w} for s, at, o, c, w in polls])
        upgrade(engine)
        sessions = make_session_factory(engine)
        with sessions() as s:
            assert s.scalar(select(func.count()).select_from(FetchLog)) == 12
            assert polls_per_source(s) == recount_polls(s) == {("a", "ok", ""): 3, ("a", "not-modified", ""): 3,
                                                                ("a", "error", "timeout"): 3,
                                                                ("a", "error", "http-5xx"): 3}
            assert dict(s.execute(select(Worker.id, Worker.polls)).all()) == {"w1": 6, "w2": 3}
            if backend == "postgresql":
                assert is_partitioned(s.connection())
                days = {d.isoformat() for d in partition_days(s.connection())}
                assert {(NOW - timedelta(days=d)).date().isoformat() for d in (2, 5)} <= days
                assert s.scalar(text("SELECT count(*) FROM fetch_log_default")) == 0
            record_poll(s, PollOutcome("a", NOW, NOW, "ok"), "w2")  # the id sequence goes on
            s.commit()
            assert s.scalar(select(func.count(func.distinct(FetchLog.id)))) == 13
            assert s.get(PollCount, ("a", "ok", "")).polls == 4
        _run(engine, "downgrade", "0003")
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM fetch_log")).scalar() == 13
        upgrade(engine)
    finally:
        engine.dispose()
