"""The daemon's jobs, plain functions APScheduler calls (and tests call directly): poll due
sources, dispatch pending alerts, send digests, heartbeat. Each is one catch-all boundary."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any

from loguru import logger
from sqlalchemy import Engine

from crawler.failures import TIMEOUT, ErrorClass, fault_message, round_failure_class
from crawler.policy import next_poll_at
from scheduler.polllog import PollLog
from storage.db import in_list
from storage.leases import (
    claim_due_sources,
    heartbeat,
    reap_workers,
    register_worker,
    release_sources,
    renew_leases,
)
from storage.outbox import (
    ClaimedEvent,
    RetryPolicy,
    claim_events,
    mark_delivered,
    mark_failed,
    pending_channels,
    release_events,
)
from storage.repository import PollOutcome, load_sources, record_poll

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from scheduler.config import AppConfig
    from scheduler.notifiers import Channel, Delivery
    from scheduler.runner import CrawlReport

EventSink = Callable[[dict[str, Any]], None]
RoundFn = Callable[[Sequence[str], EventSink], "CrawlReport | None"]
"""Runs one crawl round over these source ids, calling the sink once per finished source; its
report (if any) says how the round itself failed."""

DISPATCH_BATCH = 50
DIGEST_BATCH = 1000
HEARTBEAT_SECONDS = 10.0


def utc_now() -> datetime:
    return datetime.now(UTC)


def heartbeat_interval(config: AppConfig) -> float:
    """Beat (and renew leases) at least three times per lease."""
    return min(HEARTBEAT_SECONDS, config.daemon.lease / 3)


@dataclass
class Runtime:
    """What every job needs; built once by the daemon (the composition root)."""

    config: AppConfig
    sessions: sessionmaker[Session]
    worker_id: str
    channels: dict[str, Channel]
    crawl_round: RoundFn
    clock: Callable[[], datetime] = utc_now
    stopping: threading.Event = field(default_factory=threading.Event)
    wake_dispatch: Callable[[], None] = lambda: None
    host: str = "localhost"
    pid: int = 0
    in_round: threading.Event = field(default_factory=threading.Event)
    paused_until: dict[str, datetime] = field(default_factory=dict)
    poll_log: EventSink | None = None  # logs each poll's outcome (default: PollLog on this database)
    _active: int = 0
    _idle: threading.Condition = field(default_factory=threading.Condition)

    def log_poll(self, event: Any) -> None:
        assert self.poll_log is not None
        self.poll_log(event)

    def __post_init__(self) -> None:
        if self.poll_log is None:
            self.poll_log = PollLog(self.sessions)

    @property
    def retry(self) -> RetryPolicy:
        daemon = self.config.daemon
        return RetryPolicy(max_attempts=daemon.max_attempts, cap_seconds=daemon.retry_cap)

    @property
    def source_lease(self) -> float:
        """A source lease is renewed by every heartbeat while the round runs (so nobody takes a
        source mid-poll) and runs out ``daemon.lease`` seconds after a worker dies."""
        return self.config.daemon.lease

    @property
    def heartbeat_seconds(self) -> float:
        return heartbeat_interval(self.config)

    @contextmanager
    def job(self) -> Iterator[None]:
        with self._idle:
            self._active += 1
        try:
            yield
        finally:
            with self._idle:
                self._active -= 1
                self._idle.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no job runs; False if some still run after ``timeout`` seconds."""
        with self._idle:
            return self._idle.wait_for(lambda: self._active == 0, timeout)


# --- polling ------------------------------------------------------------------------------------


def poll_due_sources(rt: Runtime) -> int:
    """Claim due sources in batches and run one crawl round per batch until none is due or
    the daemon stops; returns how many sources were polled."""
    polled = 0
    with rt.job():
        while not rt.stopping.is_set():
            with rt.sessions() as session:
                ids = claim_due_sources(session, rt.worker_id, rt.clock(),
                                        limit=rt.config.daemon.batch_size, lease_seconds=rt.source_lease,
                                        per_host=rt.config.crawl.concurrency_per_host)
            if not ids:
                break
            round_job(rt, ids)
            polled += len(ids)
    return polled


def round_job(rt: Runtime, ids: Sequence[str]) -> None:
    """One crawl round; whatever happens, every claimed source ends with a recorded outcome,
    a next poll time and no lease of ours."""
    started = rt.clock()
    failure: Exception | None = None
    report: CrawlReport | None = None
    rt.in_round.set()
    try:
        report = rt.crawl_round(ids, rt.log_poll)
    except Exception as exc:  # the job boundary: one source set failed, the daemon goes on
        failure = exc
        logger.opt(exception=exc).error("crawl round of {} sources failed: {}", len(ids),
                                        fault_message(exc))
    finally:
        rt.in_round.clear()
        try:
            settle_sources(rt, ids, started, failure, report)
        finally:
            rt.wake_dispatch()


def unfinished_failure(failure: BaseException | None, report: CrawlReport | None) -> tuple[ErrorClass, str]:
    """The error of a source a round left unrecorded: the round's exception (by its type:
    ``crash``, or ``timeout`` for a TimeoutError), else the failure its report gives as data,
    else ``timeout`` (the round ended before the source was polled)."""
    if failure is not None:
        return round_failure_class(failure), fault_message(failure)
    if report is not None and report.failure is not None:
        return report.failure, report.failure_message or report.failure
    return TIMEOUT, "the crawl round ended before this source was polled"


def settle_sources(rt: Runtime, ids: Sequence[str], started: datetime, failure: BaseException | None,
                   report: CrawlReport | None = None) -> None:
    """Sources the round did not finish (killed, timed out, crashed) get an error
    (``unfinished_failure``) and back-off — unless the daemon is stopping and ended the round
    itself: those stay due and are polled after the next start; sources it left without a
    future poll time get one (never a hot loop)."""
    now = rt.clock()
    crawl = rt.config.crawl
    error_class, message = unfinished_failure(failure, report)
    events: list[dict[str, Any]] = []
    with rt.sessions() as session:
        for source in load_sources(session, ids):
            if source.lease_owner == rt.worker_id and rt.stopping.is_set():
                continue  # the daemon stopped the round: no fault of the source, it stays due
            if source.lease_owner == rt.worker_id:
                when = next_poll_at(now, interval=source.interval_seconds, failures=source.failures + 1,
                                    max_backoff=crawl.max_backoff, jitter=crawl.jitter)
                record_poll(session, PollOutcome(source.id, started, now, "error", error_class=error_class,
                                                 message=message, next_poll_at=when), rt.worker_id)
                events.append({"source_id": source.id, "outcome": "error", "error_class": error_class,
                               "message": message})
            elif source.next_poll_at is None or source.next_poll_at <= now:
                source.next_poll_at = next_poll_at(now, interval=source.interval_seconds,
                                                   jitter=crawl.jitter)
        session.commit()
        release_sources(session, rt.worker_id, in_list(ids))
    for event in events:
        rt.log_poll(event)


# --- alerts ---------------------------------------------------------------------------------------


def _deliver(channel: Channel, send: Callable[[], Delivery]) -> Delivery:
    from scheduler.notifiers import Delivery

    try:
        return send()
    except Exception as exc:  # a channel bug costs this attempt, never the dispatcher
        logger.opt(exception=exc).error("alert channel {} raised", channel.id)
        return Delivery(False, f"{type(exc).__name__}: {exc}")


def _latency(event: ClaimedEvent, now: datetime) -> str:
    if event.published_at is None:
        return ""
    return f" {max(0.0, (now - event.published_at).total_seconds()):.1f}s after publication"


def _record(rt: Runtime, session: Session, channel: Channel, event: ClaimedEvent,
            result: Delivery) -> bool:
    now = rt.clock()
    log = logger.bind(event_id=event.event_id, channel=channel.id)
    if result.ok:
        mark_delivered(session, event, now)
        # the log channel's own line is the delivery
        log.log("DEBUG" if channel.spec.kind == "log" else "INFO", "alert {} → {} delivered (attempt {}){}",
                event.event_id, channel.id, event.attempts + 1, _latency(event, now))
        return True
    error = result.error or "failed"
    outcome, when = mark_failed(session, event, rt.worker_id, now, error, rt.retry, result.retry_after)
    rt.paused_until[channel.id] = when
    if outcome == "gave-up":
        log.error("alert {} → {} failed: {}; gave up after {} attempts (kept undelivered)",
                  event.event_id, channel.id, error, event.attempts + 1)
    else:
        log.warning("alert {} → {} failed: {}; retry in {:.0f}s", event.event_id, channel.id,
                    error, (when - now).total_seconds())
    return False


def dispatch_channel(rt: Runtime, channel_id: str) -> int:
    """Send this channel's due events, one at a time, oldest first. The first failure pauses
    the channel until that event's retry time, so a channel that is down is probed, not
    hammered, and never holds up the others. Returns how many were delivered."""
    channel = rt.channels[channel_id]
    now = rt.clock()
    if rt.stopping.is_set() or rt.paused_until.get(channel_id, now) > now:
        return 0
    digest = channel.spec.mode == "digest"
    with rt.job(), rt.sessions() as session:
        events = claim_events(session, rt.worker_id, now, channels=[channel_id],
                              limit=DIGEST_BATCH if digest else DISPATCH_BATCH,
                              lease_seconds=rt.config.daemon.lease,
                              max_attempts=rt.config.daemon.max_attempts, retries_only=digest)
        if digest:
            return _send_digest(rt, session, channel, events)
        sent = 0
        for index, event in enumerate(events):
            if rt.stopping.is_set() or not _record(rt, session, channel, event,
                                                   _deliver(channel, partial(channel.send, event))):
                release_events(session, rt.worker_id, [e.id for e in events[index + 1:]])
                break
            sent += 1
        return sent


def _send_digest(rt: Runtime, session: Session, channel: Channel, events: list[ClaimedEvent]) -> int:
    if not events:
        return 0
    result = _deliver(channel, lambda: channel.send_digest(events))
    now = rt.clock()
    for event in events:
        if result.ok:
            mark_delivered(session, event, now)
            continue
        _, when = mark_failed(session, event, rt.worker_id, now, result.error or "failed", rt.retry,
                              result.retry_after)
        rt.paused_until[channel.id] = when
    if result.ok:
        logger.bind(channel=channel.id).info("digest → {} delivered: {} stories", channel.id, len(events))
        return len(events)
    logger.bind(channel=channel.id).warning("digest → {} failed: {}; {} stories kept for a retry",
                                            channel.id, result.error, len(events))
    return 0


def send_digest(rt: Runtime, channel_id: str) -> int:
    """The cron job of a digest channel: one message listing every story since the last one."""
    channel = rt.channels[channel_id]
    if rt.stopping.is_set():
        return 0
    with rt.job(), rt.sessions() as session:
        events = claim_events(session, rt.worker_id, rt.clock(), channels=[channel_id],
                              limit=DIGEST_BATCH, lease_seconds=rt.config.daemon.lease,
                              max_attempts=rt.config.daemon.max_attempts)
        return _send_digest(rt, session, channel, events)


def dispatch_all(rt: Runtime) -> int:
    """Every instant channel until nothing is due (``newsmon crawl`` after its round)."""
    total = 0
    for channel_id, channel in rt.channels.items():
        if channel.spec.mode == "instant":
            while (sent := dispatch_channel(rt, channel_id)) > 0:
                total += sent
    return total


def warn_unknown_channels(rt: Runtime) -> list[str]:
    """Pending events of channels no longer configured stay in the outbox; say so once."""
    with rt.sessions() as session:
        pending = pending_channels(session, rt.config.daemon.max_attempts)
    unknown = sorted(c for c in pending if c not in rt.channels)
    for channel_id in unknown:
        logger.warning("{} undelivered alerts belong to channel {!r}, which is no longer configured; "
                       "they stay in the outbox until it is configured again", pending[channel_id], channel_id)
    return unknown


# --- workers --------------------------------------------------------------------------------------


def beat(rt: Runtime) -> list[str]:
    """Refresh this worker's heartbeat (re-registering if it was given up for dead), renew the
    leases it holds, and reap workers that have been silent for a while, freeing their leases."""
    now = rt.clock()
    with rt.sessions() as session:
        if not heartbeat(session, rt.worker_id, now):
            logger.warning("worker {} had been reaped as dead; registering again", rt.worker_id)
            register_worker(session, rt.worker_id, rt.host, rt.pid, now)
        renew_leases(session, rt.worker_id, now, rt.source_lease)
        dead = reap_workers(session, now, stale_after=max(60.0, 6 * HEARTBEAT_SECONDS), keep=rt.worker_id)
    for worker in dead:
        logger.warning("worker {} stopped sending heartbeats: its leases are free again", worker)
    return dead


def ensure_partitions(rt: Runtime) -> None:
    """PostgreSQL: the fetch log's day partitions of today and the days ahead (hourly; the
    prune also does it). A poll of a day without one lands in the default partition, from
    which the partition's creation moves it."""
    from storage.partitions import ensure_partitions as ensure
    from storage.partitions import is_partitioned

    with rt.sessions() as session:
        connection = session.connection()
        if is_partitioned(connection):
            made = ensure(connection, rt.clock())
            session.commit()
            if made:
                logger.info("fetch log partitions created for {}", ", ".join(d.isoformat() for d in made))


def prune_history(rt: Runtime) -> None:
    """Drop fetch-log rows past `daemon.fetch_log_keep` and the story index past its window,
    then give back the memory its table scans took (see release_free_memory)."""
    from crawler.stories import WINDOW
    from storage.maintenance import prune

    with rt.sessions() as session:
        engine = session.get_bind()
    assert isinstance(engine, Engine)  # the sessions are bound to the daemon's engine
    with engine.connect() as connection:
        with rt.sessions(bind=connection) as session:
            pruned = prune(session, rt.clock(), story_window=WINDOW,
                           fetch_log_keep=timedelta(seconds=rt.config.daemon.fetch_log_keep))
        if connection.dialect.name == "sqlite":
            connection.exec_driver_sql("PRAGMA shrink_memory")  # this connection's page cache
    release_free_memory()
    if pruned.fetch_log or pruned.fetch_log_days or pruned.story_bands or pruned.signatures:
        logger.info("pruned {} fetch-log rows, {} fetch-log day partitions, {} story bands, {} signatures",
                    pruned.fetch_log, pruned.fetch_log_days, pruned.story_bands, pruned.signatures)


def release_free_memory() -> bool:
    """Return freed heap pages to the system (glibc's ``malloc_trim``; False elsewhere). The
    prune's deletes scan whole tables through a connection's 2 MiB page cache; freed (by
    ``PRAGMA shrink_memory``, or later by SQLite itself), those pages stay in the middle of glibc's
    heaps: 1.5–1.8 MiB more RSS for good from the first prune on (bench/README.md, "Daemon").
    Called after each prune (6-hourly)."""
    import ctypes

    try:
        trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return False
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    trim(0)
    return True
