"""``python -m crawler``: one crawl round in a fresh process. Reads a CrawlJob (JSON) on stdin,
writes events (JSON lines) on stdout, logs on stderr; exit 0 when the round ran."""

from __future__ import annotations

import gc
import logging
import os
import sys
import threading
from collections.abc import Callable
from typing import Any, Protocol, TextIO

from loguru import logger
from pydantic import ValidationError

from crawler.job import CrawlJob
from crawler.logs import InterceptHandler, add_stderr_sink

EXIT_OK = 0
EXIT_BAD_JOB = 2
EXIT_WATCHDOG = 124
# Seconds past the job's deadline before the watchdog ends a round that failed to stop.
WATCHDOG_GRACE = 3.0
CRAWL_SQLITE_CACHE_MIB = 8


class _Clock(Protocol):
    """The one method of Twisted's reactor the ledger schedules with."""

    def callLater(self, delay: float, fn: Callable[[], object]) -> object: ...  # noqa: N802 - Twisted's name

def setup_logging(level: str, json_lines: bool) -> None:
    """The daemon's sink and format (crawler.logs), on the stderr it shares with the daemon;
    stdlib records below ``level`` are dropped before formatting."""
    add_stderr_sink(level, json_lines, diagnose=False)  # no local variables (feed content) in logs
    handler = InterceptHandler(level=logging.getLevelName(level.upper()),
                               tracebacks=level.upper() in ("DEBUG", "TRACE"))
    logging.basicConfig(handlers=[handler], level=logging.NOTSET, force=True)


def scrapy_log_level(level: str) -> None:
    """Scrapy's logging setup (run by AsyncCrawlerProcess) puts its logger at DEBUG, so every
    request's "Crawled (304) …" line was made into a record, formatted for the handlers and
    only then dropped by the handler's level. The logger takes the round's level instead:
    records below it are not made at all (the same lines reach the sink)."""
    logging.getLogger("scrapy").setLevel(logging.getLevelName(level.upper()))


def events_stream() -> TextIO:
    """A private copy of stdout for events; fd 1 itself then goes to stderr, so nothing a
    library prints can corrupt the event stream."""
    out = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    sys.stdout.flush()
    os.dup2(2, 1)
    return out


def start_watchdog(seconds: float) -> threading.Timer:
    """Ends the process if the round overruns its deadline (a hung parser, a stuck stop)."""
    def expire() -> None:
        logger.error("the round overran its deadline of {:.0f}s; exiting", seconds)
        os._exit(EXIT_WATCHDOG)

    timer = threading.Timer(seconds + WATCHDOG_GRACE, expire)
    timer.daemon = True
    timer.start()
    return timer


def read_job(text: str) -> CrawlJob:
    return CrawlJob.model_validate_json(text)


def crawl_round(job: CrawlJob, out: TextIO) -> None:
    """Crawl every source of ``job``; one event per source on ``out``."""
    from scrapy.crawler import AsyncCrawlerProcess

    from crawler.polls import ROUND_SETTING, RoundContext, RoundLedger, emit_line
    from crawler.settings import round_settings
    from crawler.spiders.round import RoundSpider
    from crawler.writeturn import WriteTurn
    from storage.db import make_engine, make_session_factory

    # Several crawl processes may share the database: each write transaction locks first.
    # SQLite's page cache: 8 MiB (64, then 16 before: the one structure still growing through a
    # round, and in WAL mode a connection's cache is dropped whenever another process has
    # committed; bench/README.md, 2026-12-05: 64 -> 16 saved 3-7 MiB a process, 16 -> 8 another
    # 9, no CPU difference measured).
    engine = make_engine(job.database_url, sqlite_cache_mib=CRAWL_SQLITE_CACHE_MIB, sqlite_immediate=True)
    sessions = make_session_factory(engine)

    def emit(event: Any) -> None:
        emit_line(event, out)

    def later(seconds: float, fn: Any) -> object:
        from twisted.internet import reactor  # installed by AsyncCrawlerProcess by now

        clock: _Clock = reactor  # zope's IReactorTime reads as if callLater took self first
        return clock.callLater(seconds, fn)

    ledger = RoundLedger(sessions, job.crawl, worker_id=job.worker_id, progress=job.progress,
                         emit=emit, schedule=later, turn=WriteTurn(job.database_url))
    context = RoundContext(job=job, sessions=sessions, ledger=ledger)
    process = AsyncCrawlerProcess({**round_settings(job), ROUND_SETTING: context})
    scrapy_log_level(job.log_level)  # after AsyncCrawlerProcess set Scrapy's loggers up
    process.crawl(RoundSpider)
    # The modules and objects made so far live as long as the process: keep them out of the
    # cyclic collector's full passes, which otherwise walk them all (~0.25 s each).
    gc.freeze()
    process.start(install_signal_handlers=True)
    engine.dispose()


def main() -> int:
    try:
        job = read_job(sys.stdin.read())
    except ValidationError as exc:
        print(f"crawler: the job on stdin is not a valid CrawlJob: {exc}", file=sys.stderr)
        return EXIT_BAD_JOB
    setup_logging(job.log_level, job.log_json)
    out = events_stream()
    if not job.sources:
        return EXIT_OK
    start_watchdog(job.deadline_seconds)
    crawl_round(job, out)
    out.flush()
    return EXIT_OK


if __name__ == "__main__":
    status = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Everything is committed and flushed: skip the interpreter's teardown (freeing every module
    # and object of Scrapy, Twisted and SQLAlchemy costs ~0.3 s per round).
    os._exit(status)
