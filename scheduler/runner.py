"""Runs one crawl round in a subprocess (``python -m crawler``): builds the job, streams its
events, enforces a hard timeout (killing the process group) and returns a report. This process
never imports Twisted or Scrapy."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from loguru import logger

from crawler.job import ChannelSpec, CrawlJob, SourceEvent, parse_event
from crawler.policy import next_poll_at
from crawler.sources import SourceSpec
from scheduler.config import AppConfig

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# Beyond the job's own deadline: the crawler's watchdog grace plus process start-up.
KILL_GRACE = 10.0
TERM_GRACE = 2.0


class UnknownSourceError(KeyError):
    """Raised by run_crawl_round for a source id that is not configured."""


@dataclass
class CrawlReport:
    """What one round came to: one SourceEvent per source (in completion order)."""

    sources: list[SourceEvent] = field(default_factory=list)
    returncode: int | None = None
    timed_out: bool = False
    seconds: float = 0.0

    @property
    def all_failed(self) -> bool:
        return bool(self.sources) and all(e.outcome == "error" for e in self.sources)

    def by_source(self) -> dict[str, SourceEvent]:
        return {e.source_id: e for e in self.sources}


def select_sources(config: AppConfig, source_ids: Sequence[str] | None) -> list[SourceSpec]:
    """The named sources (in the given order), or every enabled one; unknown ids raise."""
    if source_ids is None:
        return [s for s in config.sources if s.enabled]
    known = {s.id: s for s in config.sources}
    missing = [i for i in source_ids if i not in known]
    if missing:
        raise UnknownSourceError(", ".join(missing))
    return [known[i] for i in dict.fromkeys(source_ids)]


def build_job(config: AppConfig, sources: Sequence[SourceSpec], *, worker_id: str | None = None,
              deadline: float | None = None, log_level: str = "WARNING", log_json: bool = False,
              progress: bool = False) -> CrawlJob:
    channels = tuple(ChannelSpec(id=a.channel_id, organisations=a.organisations,
                                 max_age_seconds=a.max_age) for a in config.alerts)
    return CrawlJob(database_url=config.storage.url, crawl=config.crawl, sources=tuple(sources),
                    organisations=config.organisations, channels=channels, worker_id=worker_id,
                    deadline_seconds=deadline or config.daemon.round_timeout,
                    log_level=log_level, log_json=log_json, progress=progress)


def run_crawl_round(
    config: AppConfig,
    source_ids: Sequence[str] | None,
    *,
    worker_id: str | None = None,
    timeout: float | None = None,
    on_event: Callable[[dict[str, Any]], None] | None = None,
    log_level: str = "WARNING",
    log_json: bool = False,
) -> CrawlReport:
    """Crawl ``source_ids`` (None: every enabled source) once, in a subprocess.

    :param timeout: the round's deadline in seconds (default ``[daemon] round_timeout``);
        the process is killed shortly after it, and the sources it had not finished get an
        error of class ``timeout``.
    :param on_event: called with every event (source and progress) as it arrives.
    """
    sources = select_sources(config, source_ids)
    report = CrawlReport()
    if not sources:
        return report
    job = build_job(config, sources, worker_id=worker_id, deadline=timeout, log_level=log_level,
                    log_json=log_json, progress=on_event is not None)
    started = time.monotonic()
    process = _spawn()
    events = _stream(process, job.model_dump_json())
    hard_deadline = started + job.deadline_seconds + KILL_GRACE
    report.timed_out = _collect(process, events, hard_deadline, report, on_event)
    report.returncode = process.wait()
    report.seconds = time.monotonic() - started
    _record_missing(config, sources, report, worker_id)
    return report


def _spawn() -> subprocess.Popen[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    return subprocess.Popen(
        [sys.executable, "-m", "crawler"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True, encoding="utf-8", env=env, start_new_session=True)


def _stream(process: subprocess.Popen[str], job_json: str) -> queue.Queue[str | None]:
    """Send the job, then read stdout lines on a thread (None marks the end)."""
    lines: queue.Queue[str | None] = queue.Queue()
    assert process.stdin is not None and process.stdout is not None
    stdout: IO[str] = process.stdout

    def read() -> None:
        for line in stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True, name="crawl-events").start()
    try:
        process.stdin.write(job_json)
        process.stdin.close()
    except BrokenPipeError:
        pass
    return lines


def _collect(process: subprocess.Popen[str], lines: queue.Queue[str | None], deadline: float,
             report: CrawlReport, on_event: Callable[[dict[str, Any]], None] | None) -> bool:
    """Read events until the stream ends; True when the process had to be killed."""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            _kill(process)
            return True
        try:
            line = lines.get(timeout=min(left, 1.0))
        except queue.Empty:
            continue
        if line is None:
            return False
        event = parse_event(line)
        if event is None:
            continue
        if event.get("kind") == "source":
            report.sources.append(SourceEvent.model_validate(event))
        if on_event is not None:
            on_event(event)


def _kill(process: subprocess.Popen[str]) -> None:
    """SIGTERM to the round's process group, SIGKILL if it is still there shortly after."""
    logger.warning("crawl round {} overran its deadline: stopping it", process.pid)
    for sig, wait in ((signal.SIGTERM, TERM_GRACE), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _record_missing(config: AppConfig, sources: Sequence[SourceSpec], report: CrawlReport,
                    worker_id: str | None) -> None:
    """Sources the round did not report on get an error recorded (timeout when killed)."""
    seen = {e.source_id for e in report.sources}
    missing = [s for s in sources if s.id not in seen]
    if not missing:
        return
    timed_out = report.timed_out or report.returncode == 124
    if not timed_out and report.returncode in (0, -signal.SIGTERM):
        # Stopped on purpose (SIGTERM: the daemon or systemd stopping): not the sources' fault.
        # They keep their lease until the caller releases it, and stay due.
        logger.warning("crawl round ended (status {}) before polling {}", report.returncode,
                       ", ".join(s.id for s in missing))
        return
    error_class = "timeout" if timed_out else "crash"
    message = ("the crawl round was stopped at its deadline" if timed_out
               else f"the crawl process exited with status {report.returncode}")
    try:
        _record_errors(config, missing, error_class, message, worker_id)
    except Exception:  # the job boundary: the report still tells the caller
        logger.exception("recording the unfinished sources of a crawl round failed")
    for spec in missing:
        report.sources.append(SourceEvent(source_id=spec.id, outcome="error",
                                          error_class=error_class, message=message))


def _record_errors(config: AppConfig, sources: Sequence[SourceSpec], error_class: str,
                   message: str, worker_id: str | None) -> None:
    from storage.db import make_engine, make_session_factory
    from storage.models import Source
    from storage.repository import PollOutcome, record_poll

    engine = make_engine(config.storage.url)
    try:
        now = datetime.now(UTC)
        with make_session_factory(engine).begin() as session:
            for spec in sources:
                row = session.get(Source, spec.id)
                if row is None:
                    continue
                when = next_poll_at(now, interval=spec.poll_interval(config.crawl),
                                    failures=(row.failures or 0) + 1,
                                    max_backoff=config.crawl.max_backoff, jitter=config.crawl.jitter)
                record_poll(session, PollOutcome(
                    source_id=spec.id, started_at=now, finished_at=now, outcome="error",
                    error_class=error_class, message=message, next_poll_at=when), worker_id)
    finally:
        engine.dispose()
