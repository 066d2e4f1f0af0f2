"""The bookkeeping of one crawl round: per source, its stored polling state, what its poll has
found so far, when its request chain is over, and recording that (fetch log, next poll, event)."""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, TextIO

from loguru import logger
from sqlalchemy.orm import Session, sessionmaker

from crawler.failures import EMPTY, STORAGE, TIMEOUT, ErrorClass, fault_message, one_line
from crawler.job import CrawlJob, ProgressEvent, SourceEvent
from crawler.policy import Hints, next_poll_at
from crawler.sources import CrawlSettings, SourceSpec
from crawler.writeturn import WriteTurn
from storage.repository import PollOutcome, SourceRow, SourceState, record_polls, source_states
from storage.revisits import RevisitResult, save_quiet_revisits

if TYPE_CHECKING:
    from crawler.matching import OrgMatcher

LISTING_KINDS = frozenset({"html", "json", "telegram"})
RECORD_BATCH = 50  # finished polls recorded per commit, at most
RECORD_DELAY = 1.0  # seconds a finished poll may wait for others to share its commit
Outcome = Literal["ok", "not-modified", "error"]


def body_hash(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


@dataclass
class SourcePoll:
    """One source's poll in progress."""

    spec: SourceSpec
    state: SourceState
    started_at: datetime
    pending_requests: int = 0
    pending_items: int = 0
    requests: int = 0
    pages: int = 0
    page_urls: set[str] = field(default_factory=set)  # canonical URLs of pages requested or read
    outcome: Outcome = "ok"
    error_class: ErrorClass | None = None
    message: str | None = None
    http_status: int | None = None
    warnings: list[str] = field(default_factory=list)
    hints: Hints = Hints()
    etag: str | None = None
    last_modified: str | None = None
    body_hash: str | None = None
    entries: int = 0
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    matched: int = 0
    events: int = 0
    seen: set[str] = field(default_factory=set)
    done: bool = False

    @property
    def idle(self) -> bool:
        return self.pending_requests <= 0 and self.pending_items <= 0

    def fail(self, error_class: ErrorClass, message: str, status: int | None = None) -> None:
        """Mark the poll failed; the first error of a poll is the one recorded."""
        if self.outcome != "error":
            self.outcome, self.error_class, self.message = "error", error_class, one_line(message)[:500]
            self.http_status = status if status is not None else self.http_status

    def not_modified(self) -> None:
        if self.outcome == "ok":
            self.outcome = "not-modified"

    def warn(self, message: str) -> None:
        if message and len(self.warnings) < 5:
            self.warnings.append(one_line(message)[:300])

    def conclude(self) -> None:
        """Final checks before recording: a listing that used to have items and has none now
        means its selectors drifted (class ``empty``)."""
        if (self.outcome == "ok" and self.entries == 0 and self.state.had_items
                and self.spec.kind in LISTING_KINDS):
            self.fail(EMPTY, "the listing yielded no items (it had items before)")

    def poll_outcome(self, finished_at: datetime, crawl: CrawlSettings) -> PollOutcome:
        failures = self.state.failures + 1 if self.outcome == "error" else 0
        message = self.message
        if self.outcome != "error" and self.warnings:
            message = "; ".join(self.warnings)[:500]
        return PollOutcome(
            source_id=self.spec.id, started_at=self.started_at, finished_at=finished_at,
            outcome=self.outcome, error_class=self.error_class, message=message,
            http_status=self.http_status, new=self.new, updated=self.updated,
            unchanged=self.unchanged, matched=self.matched, entries=self.entries,
            etag=self.etag, last_modified=self.last_modified, body_hash=self.body_hash,
            next_poll_at=next_poll_at(finished_at, interval=self.spec.poll_interval(crawl),
                                      failures=failures, hints=self.hints,
                                      max_backoff=crawl.max_backoff, jitter=crawl.jitter))

    def event(self) -> SourceEvent:
        message = self.message if self.outcome == "error" else ("; ".join(self.warnings) or None)
        return SourceEvent(source_id=self.spec.id, outcome=self.outcome,
                           error_class=self.error_class, message=message, new=self.new,
                           updated=self.updated, unchanged=self.unchanged, matched=self.matched,
                           events=self.events, previous_failures=self.state.failures)


def emit_line(event: SourceEvent | ProgressEvent, out: TextIO | None = None) -> None:
    """Write one event as a JSON line on stdout (the runner reads them)."""
    out = out or sys.stdout
    out.write(json.dumps(event.model_dump(), ensure_ascii=False) + "\n")
    out.flush()


@dataclass
class Fault:
    """One cause of newsmon's own failures in a round: the pages and sources it cost."""

    error_class: ErrorClass
    message: str
    pages: int = 0
    sources: list[str] = field(default_factory=list)


class RoundLedger:
    """All polls of a round; records each one as soon as its request chain is over."""

    def __init__(self, sessions: sessionmaker[Session], crawl: CrawlSettings,
                 worker_id: str | None = None, progress: bool = False,
                 emit: Callable[[Any], None] = emit_line,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 schedule: Callable[[float, Callable[[], None]], object] | None = None,
                 turn: WriteTurn | None = None) -> None:
        """:param schedule: ``schedule(seconds, fn)`` runs fn later on the crawl's loop; with it,
            finished polls are recorded in small batches (one commit, i.e. one fsync, for up
            to RECORD_BATCH polls), without it each poll is recorded at once."""
        self.sessions, self.crawl, self.worker_id = sessions, crawl, worker_id
        self.progress, self.emit, self.clock = progress, emit, clock
        self.schedule = schedule
        self.turn = turn or WriteTurn()  # shared with the storage pipeline (crawler.writeturn)
        self.finished: list[SourcePoll] = []
        # Quiet revisits (304s, failures, unchanged pages: ``RevisitResult.quiet``) skip the item
        # pipelines: the spider hands them here, and they are written with the next commit of
        # the round (a group's, or the recording of polls), at the latest with their own poll.
        self.quiet: list[RevisitResult] = []
        self.committing: list[RevisitResult] = []  # written by ``record_into``, not yet committed
        self.polls: dict[str, SourcePoll] = {}
        self.done_requests = 0
        self.total_requests = 0
        self.faults: dict[tuple[str, str], Fault] = {}
        # Called after every request or batch of the round is done (the storage pipeline's
        # ``settled``: a group waiting for company is stored once nothing else can come).
        self.on_done: Callable[[], None] | None = None

    def open(self, specs: Iterable[SourceSpec]) -> list[SourcePoll]:
        specs = list(specs)
        now = self.clock()
        with self.sessions.begin() as session:
            states = source_states(session, [SourceRow(s.id, s.kind, s.url, s.name, s.language, s.enabled)
                                             for s in specs], now)
        for spec in specs:
            self.polls[spec.id] = SourcePoll(spec, states[spec.id], now)
        return list(self.polls.values())

    def fault(self, poll: SourcePoll, error_class: ErrorClass, exc: BaseException, url: str) -> None:
        """An exception of ours while handling ``url`` (a bug, a broken install): the poll's
        error of ``error_class`` (``internal``, ``extract``), its traceback at debug level, and
        its cause counted, to be logged once for the round (``log_faults``)."""
        message = fault_message(exc)
        poll.fail(error_class, message)
        logger.opt(exception=exc).debug("{} failure on {} of {}", error_class, url, poll.spec.id)
        fault = self.faults.setdefault((error_class, message), Fault(error_class, message))
        fault.pages += 1
        if poll.spec.id not in fault.sources:
            fault.sources.append(poll.spec.id)

    def log_faults(self) -> None:
        """Each distinct cause of the round's own failures, once, with what it cost."""
        for fault in self.faults.values():
            shown = ", ".join(fault.sources[:5]) + (" …" if len(fault.sources) > 5 else "")
            logger.error("{} failure: {} ({} page{} of {} source{}: {})", fault.error_class,
                         fault.message, fault.pages, "" if fault.pages == 1 else "s",
                         len(fault.sources), "" if len(fault.sources) == 1 else "s", shown)
        self.faults.clear()

    def request_added(self, poll: SourcePoll) -> None:
        poll.pending_requests += 1
        poll.requests += 1
        self.total_requests += 1

    def request_done(self, poll: SourcePoll) -> None:
        poll.pending_requests -= 1
        self.done_requests += 1
        if self.progress:
            self.emit(ProgressEvent(done=self.done_requests, total=self.total_requests))
        self.maybe_finish(poll)
        if self.on_done is not None:
            self.on_done()

    def item_added(self, poll: SourcePoll) -> None:
        poll.pending_items += 1

    def item_done(self, poll: SourcePoll) -> None:
        poll.pending_items -= 1
        self.maybe_finish(poll)
        if self.on_done is not None:
            self.on_done()

    def quiet_revisit(self, result: RevisitResult) -> None:
        """A revisit that found nothing to store: its bookkeeping (next due time, attempts,
        lease, an unchanged page's baseline) waits for the next commit of the round."""
        self.quiet.append(result)

    def _save_quiet(self, session: Session) -> list[RevisitResult]:
        quiet, self.quiet = self.quiet, []
        try:
            save_quiet_revisits(session, quiet)
        except Exception:
            self.quiet[:0] = quiet
            raise
        return quiet

    def nothing_to_come(self, waiting: int) -> bool:
        """True when no batch but the ``waiting`` ones can still reach the item pipelines: every
        poll has begun (its document request is counted when the spider's ``start`` hands it
        out), no request of the round is scheduled, downloading or in its callback (counted
        from the moment it is built until its callback or errback is over), and the round's
        batches not yet through the pipelines are only those ``waiting``."""
        batches = 0
        for poll in self.polls.values():
            if poll.done:
                continue
            if poll.requests == 0 or poll.pending_requests > 0:
                return False
            batches += poll.pending_items
        return batches <= waiting

    def maybe_finish(self, poll: SourcePoll) -> None:
        if poll.idle and not poll.done:
            self.finish(poll)

    def finish(self, poll: SourcePoll) -> None:
        """Queue the poll for recording (fetch log, polling state, next poll) and its event."""
        poll.done = True
        poll.conclude()
        self.finished.append(poll)
        if self.schedule is None or len(self.finished) >= RECORD_BATCH:
            self.flush()
        elif len(self.finished) == 1:
            self.schedule(RECORD_DELAY, self.flush)

    def record_into(self, session: Session) -> list[SourcePoll]:
        """Record the queued polls in the caller's transaction (the item writes' commit, one
        fsync for both), and the quiet revisits waiting; then ``recorded`` after it commits, or
        ``requeue`` if it fails."""
        quiet = self._save_quiet(session)
        polls, self.finished = self.finished, []
        try:
            self.record(session, polls)
        except Exception:
            self.finished[:0] = polls
            self.quiet[:0] = quiet
            raise
        self.committing = quiet
        return polls

    def record(self, session: Session, polls: list[SourcePoll]) -> None:
        now = self.clock()
        record_polls(session, [poll.poll_outcome(now, self.crawl) for poll in polls], self.worker_id)

    def recorded(self, polls: list[SourcePoll]) -> None:
        self.committing = []
        for poll in polls:
            self.emit(poll.event())

    def requeue(self, polls: list[SourcePoll]) -> None:
        """Polls whose recording was rolled back (and any still queued): record them on their
        own, now, with the quiet revisits that were in that transaction."""
        self.finished[:0] = polls
        self.quiet[:0], self.committing = self.committing, []
        self.flush()

    def flush(self) -> None:
        """Record every queued poll and quiet revisit in one transaction, then emit the polls'
        events."""
        polls, self.finished = self.finished, []
        if not polls and not self.quiet:
            return
        try:
            with self.turn.held(), self.sessions.begin() as session:
                self._save_quiet(session)
                self.record(session, polls)
        except Exception as exc:  # the job boundary of these sources: log, report, go on
            # (quiet revisits not recorded are due again once their leases run out)
            logger.exception("recording the polls of {} failed", ", ".join(p.spec.id for p in polls))
            self.quiet = []
            for poll in polls:
                poll.fail(STORAGE, f"recording the poll failed: {exc}"[:300])
        for poll in polls:
            self.emit(poll.event())

    def close(self, reason: str) -> None:
        """At the end of the crawl: every poll still open ran out of time."""
        for poll in self.polls.values():
            if not poll.done:
                poll.fail(TIMEOUT, f"the round ended before the poll did ({reason})")
                poll.done = True
                self.finished.append(poll)
        self.flush()
        self.log_faults()


ROUND_SETTING = "NEWSMON_ROUND"  # the Scrapy setting that hands the round's context to its components


@dataclass
class RoundContext:
    """What every component of a round shares: the job, the database and the ledger. The
    crawl hands it to the spider, pipelines and extensions as the setting ROUND_SETTING
    (``RoundContext.of(crawler)``)."""

    job: CrawlJob
    sessions: sessionmaker[Session]
    ledger: RoundLedger
    _matcher: OrgMatcher | None = None

    def __deepcopy__(self, memo: dict[int, Any]) -> RoundContext:
        return self  # Scrapy deep-copies its settings for each crawler: every copy shares the round

    @staticmethod
    def of(crawler: Any) -> RoundContext:
        """The round's context, from the settings of ``crawler`` (a Scrapy Crawler)."""
        context = crawler.settings.get(ROUND_SETTING)
        if not isinstance(context, RoundContext):
            raise TypeError(f"the crawl's {ROUND_SETTING} setting is not a RoundContext: {context!r}")
        return context

    @property
    def matcher(self) -> OrgMatcher:
        """The organisation matcher, built once per round."""
        if self._matcher is None:
            from crawler.matching import OrgMatcher, release_morphology
            from crawler.morphology import MorphologyCache

            # The alias words' analyses from the cache directory when an earlier round wrote
            # them: pymorphy3 (~19 MiB, ~8 of which stay after release) is then never loaded.
            morphology = MorphologyCache(self.job.cache_dir)
            self._matcher = OrgMatcher(list(self.job.organisations), analyse=morphology.analyse)
            morphology.save()
            release_morphology()
        return self._matcher

    def topic(self, source_id: str) -> str | None:
        """The ``topic`` of a source of this round."""
        for spec in self.job.sources:
            if spec.id == source_id:
                return spec.topic
        return None

    def poll(self, source_id: str) -> SourcePoll:
        return self.ledger.polls[source_id]
