"""Day partitions of the fetch log on PostgreSQL: created ahead by the daemon, dropped whole once
older than ``daemon.fetch_log_keep`` (a DROP TABLE instead of deleting millions of rows).

A partition ``fetch_log_pYYYYMMDD`` holds the polls started on that UTC day. The default
partition ``fetch_log_default`` catches a poll of a day that has none yet (a `newsmon crawl`
with no daemon running, a clock far ahead); creating that day's partition later moves them in.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import Connection, text

PREFIX = "fetch_log_p"
LOCK_KEY = 0x6E77_6670  # pg_advisory_xact_lock: one process creates or drops partitions at a time
AHEAD_DAYS = 3


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def partition_days(bind: Connection) -> list[date]:
    """The days that have a partition, oldest first."""
    names = bind.execute(text(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'fetch_log'::regclass")).scalars()
    return sorted(datetime.strptime(n[len(PREFIX):], "%Y%m%d").date() for n in names if n.startswith(PREFIX))


def create_day_partitions(bind: Connection, first: datetime, last: datetime) -> list[date]:
    """Partitions for every UTC day from ``first`` to ``last`` that has none; polls of those
    days waiting in the default partition move in. Returns the days created."""
    bind.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": LOCK_KEY})
    have = set(partition_days(bind))
    made = []
    day = first.astimezone(UTC).date()
    while day <= last.astimezone(UTC).date():
        if day not in have:
            _create(bind, day)
            made.append(day)
        day += timedelta(days=1)
    return made


def _create(bind: Connection, day: date) -> None:
    low, high = _day_start(day), _day_start(day + timedelta(days=1))
    name = f"{PREFIX}{day:%Y%m%d}"
    bounds = {"low": low, "high": high}
    waiting = bind.execute(text("SELECT count(*) FROM fetch_log_default WHERE started_at >= :low "
                                "AND started_at < :high"), bounds).scalar()
    if waiting:
        bind.execute(text("CREATE TEMP TABLE fetch_log_moving ON COMMIT DROP AS SELECT * FROM fetch_log_default "
                          "WHERE started_at >= :low AND started_at < :high"), bounds)
        bind.execute(text("DELETE FROM fetch_log_default WHERE started_at >= :low AND started_at < :high"), bounds)
    # bounds are literals in DDL: ISO strings of aware datetimes, made here, not user input
    bind.execute(text(f"CREATE TABLE {name} PARTITION OF fetch_log "
                      f"FOR VALUES FROM ('{low.isoformat()}') TO ('{high.isoformat()}')"))
    if waiting:
        bind.execute(text("INSERT INTO fetch_log SELECT * FROM fetch_log_moving"))
        bind.execute(text("DROP TABLE fetch_log_moving"))


def ensure_partitions(bind: Connection, now: datetime, ahead_days: int = AHEAD_DAYS) -> list[date]:
    """Today's partition and the next ``ahead_days`` days'."""
    return create_day_partitions(bind, now, now + timedelta(days=ahead_days))


def drop_partitions_before(bind: Connection, cutoff: datetime) -> tuple[list[date], int]:
    """Drop the partitions whose whole day is before ``cutoff`` and delete older polls from the
    default partition. Returns the days dropped and the rows deleted from the default."""
    bind.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": LOCK_KEY})
    dropped = []
    for day in partition_days(bind):
        if _day_start(day + timedelta(days=1)) <= cutoff:
            bind.execute(text(f"DROP TABLE {PREFIX}{day:%Y%m%d}"))
            dropped.append(day)
    rows = bind.execute(text("DELETE FROM fetch_log_default WHERE started_at < :cutoff"), {"cutoff": cutoff})
    return dropped, rows.rowcount or 0


def is_partitioned(bind: Connection) -> bool:
    return bind.dialect.name == "postgresql" and bool(bind.execute(text(
        "SELECT 1 FROM pg_partitioned_table WHERE partrelid = 'fetch_log'::regclass")).first())
