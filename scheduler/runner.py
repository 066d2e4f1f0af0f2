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

from crawler.addresses import url_host
from crawler.failures import CRASH, OWN_FAULTS, TIMEOUT, ErrorClass
from crawler.job import ChannelSpec, CrawlJob, SourceEvent, parse_event
from crawler.policy import next_poll_at
from crawler.sources import SourceSpec
from scheduler.config import AppConfig
from scheduler.errors import UnknownSourceError

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# Beyond the job's own deadline: the crawler's watchdog grace plus process start-up.
KILL_GRACE = 10.0
TERM_GRACE = 2.0


@dataclass
class CrawlReport:
    """What one round came to: one SourceEvent per source (in completion order), and the
    round's own failure as data: ``failure`` is ``timeout`` when a crawl process was stopped at
    the deadline, ``crash`` when one died, None when every process ran to its end (or was
    stopped on purpose, SIGTERM); ``failure_message`` says it in words."""

    sources: list[SourceEvent] = field(default_factory=list)
    returncode: int | None = None
    timed_out: bool = False
    seconds: float = 0.0
    failure: ErrorClass | None = None
    failure_message: str | None = None

    @property
    def all_failed(self) -> bool:
        return bool(self.sources) and all(e.outcome == "error" for e in self.sources)

    @property
    def own_faults(self) -> list[SourceEvent]:
        """The sources that failed through newsmon's own fault (a bug, a broken install, the
        database), not the site's."""
        return [e for e in self.sources if e.error_class in OWN_FAULTS]

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
                                 max_age_seconds=a.max_age, min_confidence=a.min_confidence,
                                 events=a.events, sources=a.sources, query=a.query)
                     for a in config.alerts)
    return CrawlJob(database_url=config.storage.url, crawl=config.crawl, sources=tuple(sources),
                    organisations=config.organisations, channels=channels, worker_id=worker_id,
                    deadline_seconds=deadline or config.daemon.round_timeout,
                    log_level=log_level, log_json=log_json, progress=progress,
                    cache_dir=config.storage.cache_dir or None)


def crawl_round(
    config: AppConfig,
    source_ids: Sequence[str] | None,
    *,
    worker_id: str | None = None,
    timeout: float | None = None,
    on_event: Callable[[dict[str, Any]], None] | None = None,
    log_level: str = "WARNING",
    log_json: bool = False,
    progress: bool | None = None,
) -> CrawlReport:
    """Crawl ``source_ids`` (None: every enabled source) once, in one subprocess or, for a
    large round, several (``plan_shards``).

    :param timeout: the round's deadline in seconds (default ``[daemon] round_timeout``);
        the process is killed shortly after it, and the sources it had not finished get an
        error of class ``timeout``.
    :param on_event: called with every event (source and progress) as it arrives.
    :param progress: whether the crawl sends progress events (one per finished request;
        default: when there is ``on_event``).
    """
    sources = select_sources(config, source_ids)
    report = CrawlReport()
    if not sources:
        return report
    shards = plan_shards(sources, processes=crawl_processes(config.crawl.processes),
                         concurrency_per_host=config.crawl.concurrency_per_host)
    started = time.monotonic()
    runs: list[_Run] = []
    lines: queue.Queue[tuple[int, str | None]] = queue.Queue()
    for index, shard in enumerate(shards):
        job = build_job(config, shard.sources, worker_id=worker_id, deadline=timeout, log_level=log_level,
                        log_json=log_json,
                        progress=on_event is not None if progress is None else progress)
        job = job.model_copy(update={"host_concurrency": shard.host_concurrency})
        process = _spawn()
        runs.append(_Run(shard, process))
        _stream(process, job.model_dump_json(), index, lines)
    hard_deadline = started + job.deadline_seconds + KILL_GRACE
    report.timed_out = _collect(runs, lines, hard_deadline, report, on_event)
    for run in runs:
        run.returncode = run.process.wait()
    report.returncode = next((r.returncode for r in runs if r.returncode != 0), 0)
    report.seconds = time.monotonic() - started
    for run in runs:
        failed = process_failure(report.timed_out, run.returncode)
        if failed is not None and report.failure is None:
            report.failure, report.failure_message = failed
        _record_missing(config, run.shard.sources, report, worker_id, failed, run.returncode)
    return report


def process_failure(timed_out: bool, returncode: int | None) -> tuple[ErrorClass, str] | None:
    """How a crawl process of a round failed: stopped at the deadline (``timeout``: killed by
    the runner, or its own watchdog's exit 124), died (``crash``: any other non-zero status), or
    not at all (None: it ran to its end, or SIGTERM stopped it on purpose)."""
    if timed_out or returncode == 124:
        return TIMEOUT, "the crawl round was stopped at its deadline"
    if returncode in (0, -signal.SIGTERM):
        return None
    return CRASH, f"the crawl process exited with status {returncode}"


MAX_PROCESSES = 4
# Fewer: a second process costs more than it saves. Each costs ~1 s of CPU to start and ~100 MiB;
# the daemon's rounds (daemon.batch_size, 200 by default) are mostly unchanged feeds, and split
# in two they polled 15.9/s instead of 15.3/s with twice the crawl memory (bench/README.md).
MIN_SOURCES_PER_PROCESS = 120


def crawl_processes(configured: int) -> int:
    """Processes per round: as configured, or (0) one per CPU core, at most MAX_PROCESSES."""
    if configured > 0:
        return configured
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(MAX_PROCESSES, cores))


@dataclass
class Shard:
    """The sources one crawl process of a round polls, and its per-host request budgets for
    hosts whose sources are split over several processes."""

    sources: list[SourceSpec] = field(default_factory=list)
    host_concurrency: dict[str, int] = field(default_factory=dict)


def plan_shards(sources: Sequence[SourceSpec], processes: int, concurrency_per_host: int) -> list[Shard]:
    """Split a round's sources over up to ``processes`` crawl processes (CPU-bound parsing and
    matching run in parallel; SQLite writes are serialised by the crawl's write transactions).

    A host's sources stay in one process unless the host alone holds more than a process's fair
    share; then they are spread over several processes whose budgets for that host add up to
    ``concurrency_per_host``, so no host sees more requests in flight than with one process.
    The hosts of browser-rendered sources all go to one process, never split: each process
    with such a source starts a browser of its own.
    """
    count = min(processes, len(sources) // MIN_SOURCES_PER_PROCESS)
    if count <= 1:
        return [Shard(list(sources))]
    by_host: dict[str, list[SourceSpec]] = {}
    for spec in sources:
        by_host.setdefault(url_host(spec.url), []).append(spec)
    shards = [Shard() for _ in range(count)]
    for host in [host for host, specs in by_host.items() if any(spec.renders for spec in specs)]:
        shards[0].sources.extend(by_host.pop(host))
    fair = -(-len(sources) // count)
    for host, specs in sorted(by_host.items(), key=lambda kv: -len(kv[1])):
        parts = min(count, concurrency_per_host, -(-len(specs) // fair))
        chosen = sorted(shards, key=lambda shard: len(shard.sources))[:max(1, parts)]
        if parts <= 1:
            chosen[0].sources.extend(specs)
            continue
        for n, spec in enumerate(specs):
            chosen[n % parts].sources.append(spec)
        for n, shard in enumerate(chosen):
            shard.host_concurrency[host] = concurrency_per_host // parts + (
                1 if n < concurrency_per_host % parts else 0)
    order = {spec.id: n for n, spec in enumerate(sources)}
    for shard in shards:
        shard.sources.sort(key=lambda spec: order[spec.id])
    return [shard for shard in shards if shard.sources]


@dataclass
class _Run:
    shard: Shard
    process: subprocess.Popen[str]
    returncode: int | None = None
    progress: tuple[int, int] = (0, 0)


def _spawn() -> subprocess.Popen[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    return subprocess.Popen(
        [sys.executable, "-m", "crawler"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True, encoding="utf-8", env=env, start_new_session=True)


def _stream(process: subprocess.Popen[str], job_json: str, index: int,
            lines: queue.Queue[tuple[int, str | None]]) -> None:
    """Send the job, then read stdout lines on a thread into ``lines`` as (index, line); (index,
    None) marks the end."""
    assert process.stdin is not None and process.stdout is not None
    stdout: IO[str] = process.stdout

    def read() -> None:
        for line in stdout:
            lines.put((index, line))
        lines.put((index, None))

    threading.Thread(target=read, daemon=True, name=f"crawl-events-{index}").start()
    try:
        process.stdin.write(job_json)
        process.stdin.close()
    except BrokenPipeError:
        pass


def _collect(runs: list[_Run], lines: queue.Queue[tuple[int, str | None]], deadline: float,
             report: CrawlReport, on_event: Callable[[dict[str, Any]], None] | None) -> bool:
    """Read events until every stream ends; True when the processes had to be killed. Progress
    events of several processes are summed into one."""
    open_streams = len(runs)
    while open_streams:
        left = deadline - time.monotonic()
        if left <= 0:
            for run in runs:
                _kill(run.process)
            return True
        try:
            index, line = lines.get(timeout=min(left, 1.0))
        except queue.Empty:
            continue
        if line is None:
            open_streams -= 1
            continue
        event = parse_event(line)
        if event is None:
            continue
        if event.get("kind") == "source":
            report.sources.append(SourceEvent.model_validate(event))
        elif event.get("kind") == "progress" and len(runs) > 1:
            runs[index].progress = (int(event.get("done", 0)), int(event.get("total", 0)))
            event = {"kind": "progress", "done": sum(r.progress[0] for r in runs),
                     "total": sum(r.progress[1] for r in runs)}
        if on_event is not None:
            on_event(event)
    return False


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
                    worker_id: str | None, failed: tuple[ErrorClass, str] | None,
                    returncode: int | None) -> None:
    """Sources a crawl process did not report on get an error recorded: its ``failed`` class
    (``process_failure``)."""
    seen = {e.source_id for e in report.sources}
    missing = [s for s in sources if s.id not in seen]
    if not missing:
        return
    if failed is None:
        # Stopped on purpose (SIGTERM: the daemon or systemd stopping): not the sources' fault.
        # They keep their lease until the caller releases it, and stay due.
        logger.warning("crawl round ended (status {}) before polling {}", returncode,
                       ", ".join(s.id for s in missing))
        return
    error_class, message = failed
    try:
        _record_errors(config, missing, error_class, message, worker_id)
    except Exception:  # the job boundary: the report still tells the caller
        logger.exception("recording the unfinished sources of a crawl round failed")
    for spec in missing:
        report.sources.append(SourceEvent(source_id=spec.id, outcome="error",
                                          error_class=error_class, message=message))


def _record_errors(config: AppConfig, sources: Sequence[SourceSpec], error_class: ErrorClass,
                   message: str, worker_id: str | None) -> None:
    from storage.db import make_engine, make_session_factory
    from storage.repository import PollOutcome, load_sources, record_poll

    engine = make_engine(config.storage.url)
    try:
        now = datetime.now(UTC)
        with make_session_factory(engine).begin() as session:
            stored = {row.id: row for row in load_sources(session, [spec.id for spec in sources])}
            for spec in sources:
                row = stored.get(spec.id)
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
