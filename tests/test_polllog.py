"""The poll summary: every outcome once; after a third failure of one class in a row, at most
one line an hour until the source recovers, and the recovery once — worked out from the fetch
log in the database (SQLite and PostgreSQL), so it holds across rounds, workers and restarts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from loguru import logger

from scheduler.polllog import PollLog, verdict
from storage.queries import PollRecord
from storage.repository import PollOutcome, SourceRow, record_poll, sync_sources

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def history(*polls: tuple[float, str | None]) -> list[PollRecord]:
    """(minutes after T0, error class or None for ok), oldest first → newest first."""
    return [PollRecord(T0 + timedelta(minutes=m), "error" if c else "ok", c) for m, c in polls][::-1]


def logged(polls: list[tuple[float, str | None]]) -> list[bool]:
    """Whether each poll of the sequence is logged, as the daemon sees it poll by poll."""
    return [verdict(history(*polls[:n + 1])).log for n in range(len(polls))]


def test_first_three_failures_logged_then_hourly_until_recovery() -> None:
    every_10m = [(m, "dns") for m in range(0, 200, 10)]  # 0, 10, … 190 minutes
    said = logged(every_10m)
    assert said[:3] == [True, True, True]
    # after the third (minute 20): minute 80 is the first an hour later, then 140
    assert [m for (m, _), s in zip(every_10m, said, strict=True) if s] == [0, 10, 20, 80, 140]
    assert "at most hourly" in verdict(history(*every_10m[:3])).note
    assert "failing since 2026-03-01 09:00, 9 polls" in verdict(history(*every_10m[:9])).note


def test_recovery_is_said_once_and_a_new_class_starts_a_new_count() -> None:
    polls = [(0, "dns"), (10, "dns"), (20, "dns"), (30, "dns"), (40, None), (50, None)]
    assert logged(polls) == [True, True, True, False, True, True]
    assert "recovered after 4 failed polls since 2026-03-01 09:00" in verdict(history(*polls[:5])).note
    assert verdict(history(*polls)).note == ""
    changed = [(0, "dns"), (10, "dns"), (20, "dns"), (30, "dns"), (40, "timeout"), (50, "timeout")]
    assert logged(changed) == [True, True, True, False, True, True]


def test_ok_polls_are_always_logged() -> None:
    assert logged([(m, None) for m in range(5)]) == [True] * 5


@pytest.fixture
def lines():
    captured: list[str] = []
    sink = logger.add(lambda m: captured.append(str(m).rstrip()), format="{level} {message}", level="INFO")
    yield captured
    logger.remove(sink)


def test_poll_log_reads_what_was_said_from_the_database(session_factory, lines) -> None:
    """Each call is a new round (a new PollLog: nothing carried in memory); only the fetch log
    tells that the fourth and fifth failures were already announced as quiet."""
    with session_factory() as session:
        sync_sources(session, [SourceRow(id="down", kind="feed", url="https://down.example/feed",
                                         name="", language=None, enabled=True, interval_seconds=60.0)], T0)
        session.commit()
    for n, outcome in enumerate(["error"] * 5 + ["ok"]):
        at = T0 + timedelta(minutes=n)
        with session_factory.begin() as session:
            record_poll(session, PollOutcome("down", at, at, outcome, error_class="connect" if outcome == "error"
                                             else None, message="refused" if outcome == "error" else None))
        PollLog(session_factory)({"kind": "source", "source_id": "down", "outcome": outcome,
                                  "error_class": "connect" if outcome == "error" else None, "message": "refused"})
    assert [line.split(" ")[0] for line in lines] == ["WARNING", "WARNING", "WARNING", "INFO"], lines
    assert lines[-1].startswith("INFO poll down ok") and "recovered after 5 failed polls" in lines[-1]



class NoDatabase:
    """A session factory that counts its uses and fails each (no database behind it)."""

    def __init__(self) -> None:
        self.uses = 0

    def __call__(self):
        self.uses += 1
        raise RuntimeError("no database")


def test_a_success_after_successes_is_logged_without_reading_the_fetch_log(lines) -> None:
    """The crawl says how many failures came before (the source's state when the round began):
    none → nothing to look up, one query a poll saved; otherwise the fetch log is read."""
    database = NoDatabase()
    log = PollLog(database)
    log({"kind": "source", "source_id": "tass", "outcome": "not-modified", "previous_failures": 0})
    log({"kind": "source", "source_id": "tass", "outcome": "ok", "new": 2, "previous_failures": 0})
    assert database.uses == 0
    assert [line.split(" ")[:3] for line in lines] == [["INFO", "poll", "tass"]] * 2
    log({"kind": "source", "source_id": "tass", "outcome": "ok", "previous_failures": 3})
    log({"kind": "source", "source_id": "tass", "outcome": "ok"})  # not said: looked up
    assert database.uses == 2 and len(lines) == 4  # the lookups failed: logged all the same
