"""Source leases, worker registration and reaping, and the SQLite single-daemon lock."""

from __future__ import annotations

import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.orm import Session, sessionmaker

from storage.db import make_engine, make_session_factory
from storage.leases import (
    DaemonLock,
    DaemonLockedError,
    claim_due_sources,
    heartbeat,
    postpone_sources,
    reap_all_but,
    reap_workers,
    register_worker,
    release_sources,
    renew_leases,
    sqlite_lock_path,
    stop_worker,
)
from storage.models import Source, Worker
from storage.repository import PollOutcome, SourceRow, record_poll, sync_sources

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def add_sources(sessions: sessionmaker[Session], n: int, interval: float = 60.0) -> list[str]:
    ids = [f"s{i:03d}" for i in range(n)]
    with sessions() as session:
        sync_sources(session, [SourceRow(id=i, kind="feed", url=f"http://e.org/{i}",
                                         interval_seconds=interval) for i in ids], NOW)
        session.commit()
    return ids


def set_next(sessions: sessionmaker[Session], source_id: str, when: datetime | None,
             enabled: bool = True) -> None:
    with sessions() as session:
        session.execute(update(Source).where(Source.id == source_id)
                        .values(next_poll_at=when, enabled=enabled))
        session.commit()


def test_claims_due_sources_never_polled_first(session_factory: sessionmaker[Session]) -> None:
    ids = add_sources(session_factory, 5)
    set_next(session_factory, ids[0], NOW - timedelta(minutes=1))
    set_next(session_factory, ids[1], NOW + timedelta(minutes=1))  # not due
    set_next(session_factory, ids[2], NOW - timedelta(minutes=5))
    set_next(session_factory, ids[3], None, enabled=False)  # disabled
    with session_factory() as session:
        claimed = claim_due_sources(session, "w1", NOW, limit=10)
        assert claimed == [ids[4], ids[2], ids[0]]
        assert claim_due_sources(session, "w2", NOW, limit=10) == []
        held = session.scalars(select(Source.lease_owner).where(Source.id.in_(claimed))).all()
        assert set(held) == {"w1"}


def test_lease_expires_and_poll_releases(session_factory: sessionmaker[Session]) -> None:
    (sid,) = add_sources(session_factory, 1)
    with session_factory() as session:
        assert claim_due_sources(session, "w1", NOW, lease_seconds=30) == [sid]
        assert claim_due_sources(session, "w2", NOW + timedelta(seconds=20)) == []
        assert claim_due_sources(session, "w2", NOW + timedelta(seconds=31)) == [sid]
        record_poll(session, PollOutcome(sid, NOW, NOW, "ok", next_poll_at=NOW + timedelta(minutes=1)))
        session.commit()
        assert claim_due_sources(session, "w3", NOW + timedelta(seconds=32)) == []
        assert claim_due_sources(session, "w3", NOW + timedelta(seconds=61)) == [sid]


def test_release_and_postpone(session_factory: sessionmaker[Session]) -> None:
    ids = add_sources(session_factory, 3, interval=120)
    with session_factory() as session:
        assert claim_due_sources(session, "w1", NOW) == ids
        assert release_sources(session, "w1", ids[:1]) == ids[:1]
        postpone_sources(session, ids[1:2], NOW)
        session.commit()
        assert sorted(release_sources(session, "w1")) == ids[1:]
        assert claim_due_sources(session, "w2", NOW) == [ids[0], ids[2]]
        assert claim_due_sources(session, "w2", NOW + timedelta(seconds=121)) == [ids[1]]


def test_concurrent_claimers_never_share_a_source(db_url: str) -> None:
    add_sources(make_session_factory(make_engine(db_url)), 90)
    got: dict[str, list[str]] = {"a": [], "b": [], "c": []}
    start = threading.Barrier(len(got))

    def worker(name: str) -> None:
        engine = make_engine(db_url)
        sessions = make_session_factory(engine)
        start.wait()
        while True:
            with sessions() as session:
                batch = claim_due_sources(session, name, NOW, limit=4)
            if not batch:
                break
            got[name] += batch
        engine.dispose()

    threads = [threading.Thread(target=worker, args=(n,)) for n in got]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    everything = [s for batch in got.values() for s in batch]
    assert len(everything) == len(set(everything)) == 90


def test_renewal_skips_a_source_whose_poll_is_being_recorded(pg_url: str) -> None:
    """The heartbeat's renewal and the crawl's poll recording run on two connections of one
    worker. The renewal used to wait on the rows the recording had locked while the recording
    waited on rows the renewal had locked: PostgreSQL's deadlock detector killed one of them
    (seen in the 100k-source rehearsal). It now skips the rows being recorded."""
    sessions = make_session_factory(make_engine(pg_url))
    ids = add_sources(sessions, 3)
    with sessions() as session:
        assert sorted(claim_due_sources(session, "w1", NOW)) == ids
    with sessions() as recording, sessions() as beating:
        record_poll(recording, PollOutcome(source_id=ids[1], started_at=NOW, finished_at=NOW,
                                           outcome="not-modified"), "w1")  # holds ids[1]'s row lock
        beating.execute(text("SET lock_timeout = '3s'"))
        assert renew_leases(beating, "w1", NOW + timedelta(seconds=60), 600) == 2
        recording.commit()
    with sessions() as session:
        leases = dict(session.execute(select(Source.id, Source.lease_expires_at)).all())
    assert leases == {ids[0]: NOW + timedelta(seconds=660), ids[1]: None,
                      ids[2]: NOW + timedelta(seconds=660)}


def test_workers_register_beat_stop_and_are_reaped(session_factory: sessionmaker[Session]) -> None:
    ids = add_sources(session_factory, 2)
    with session_factory() as session:
        register_worker(session, "w1", "host", 1, NOW)
        register_worker(session, "w2", "host", 2, NOW)
        assert claim_due_sources(session, "w1", NOW, limit=1) == ids[:1]
        assert claim_due_sources(session, "w2", NOW, limit=1) == ids[1:]
        later = NOW + timedelta(seconds=60)
        assert heartbeat(session, "w2", later)
        assert reap_workers(session, later, stale_after=30, keep="w2") == ["w1"]
        assert not heartbeat(session, "w1", later)  # a reaped worker learns it
        assert claim_due_sources(session, "w2", later) == ids[:1]
        stop_worker(session, "w2", later)
        assert session.scalar(select(Source.lease_owner).where(Source.id == ids[1])) is None
        stopped = dict(session.execute(select(Worker.id, Worker.stopped_at)).all())
        assert all(stopped.values())


def test_reap_all_but_self(session_factory: sessionmaker[Session]) -> None:
    add_sources(session_factory, 1)
    with session_factory() as session:
        register_worker(session, "old", "host", 1, NOW)
        claim_due_sources(session, "old", NOW)
        register_worker(session, "me", "host", 2, NOW)
        assert reap_all_but(session, "me", NOW) == ["old"]
        assert claim_due_sources(session, "me", NOW) == ["s000"]


def test_sqlite_lock_refuses_a_second_daemon(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'data' / 'newsmon.db'}"
    path = sqlite_lock_path(url)
    assert path is not None and path.name == "newsmon.db.daemon.lock"
    assert sqlite_lock_path("postgresql+psycopg://u@h/db") is None
    assert sqlite_lock_path("sqlite:///:memory:") is None
    lock = DaemonLock(path)
    lock.acquire()
    try:
        with pytest.raises(DaemonLockedError, match="already uses this SQLite database"):
            DaemonLock(path).acquire()
        # another process too (flock is per open file description)
        probe = subprocess.run(
            [sys.executable, "-c", "import sys; from storage.leases import DaemonLock, DaemonLockedError\n"
             "from pathlib import Path\ntry:\n DaemonLock(Path(sys.argv[1])).acquire()\n"
             "except DaemonLockedError as e:\n print(e); sys.exit(3)", str(path)],
            capture_output=True, text=True, timeout=30)
        assert probe.returncode == 3 and "pid" in probe.stdout
    finally:
        lock.release()
    again = DaemonLock(path)
    again.acquire()
    again.release()
