"""The daemon's composition root: lock, database, worker identity, channels and APScheduler
jobs wired together, plus the signal-driven graceful stop."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from loguru import logger

from scheduler import jobs
from scheduler.jobs import RoundFn, Runtime, utc_now
from storage.leases import (
    DaemonLock,
    DaemonLockedError,
    reap_all_but,
    reap_workers,
    register_worker,
    sqlite_lock_path,
    stop_worker,
)
from storage.repository import SourceRow, sync_sources

if TYPE_CHECKING:
    from apscheduler.schedulers.background import BackgroundScheduler

    from scheduler.config import AppConfig
    from scheduler.context import AppContext
    from scheduler.notifiers import Channel
    from scheduler.runner import CrawlReport
    from scheduler.web.server import BackgroundServer

ROUND_GRACE = 8.0  # seconds an in-flight round may take to finish after SIGTERM
STOP_BUDGET = 9.5  # seconds from the signal to exit


def worker_identity() -> tuple[str, str, int]:
    """(worker id, host, pid): unique per process, readable in `newsmon status`."""
    host, pid = socket.gethostname(), os.getpid()
    return f"{host}:{pid}:{uuid.uuid4().hex[:6]}", host, pid


def source_rows(config: AppConfig) -> list[SourceRow]:
    return [SourceRow(id=s.id, kind=s.kind, url=s.url, name=s.name, language=s.language,
                      enabled=s.enabled, interval_seconds=s.poll_interval(config.crawl))
            for s in config.sources]


def build_channels(config: AppConfig) -> dict[str, Channel]:
    """One channel per ``[[alerts]]`` entry; a refused target is logged now and on each send."""
    from crawler.addresses import destination_problem
    from scheduler.notifiers import apprise_host, build_channel

    channels: dict[str, Channel] = {}
    for spec in config.alerts:
        channel = build_channel(spec, config.server.site_url)
        channels[channel.id] = channel
        if spec.allow_private or spec.kind == "log":
            continue
        if spec.kind == "webhook":
            from urllib.parse import urlsplit

            problem = destination_problem(urlsplit(spec.url).hostname, urlsplit(spec.url).port)
        else:
            host = apprise_host(spec.url)
            problem = destination_problem(host) if host else None
        if problem:
            logger.error("alert channel {}: {}", channel.id, problem)
    return channels


def round_in_subprocess(config: AppConfig, worker_id: str, log_level: str = "INFO",
                log_json: bool = False) -> RoundFn:
    """The real round: ``python -m crawler`` in a subprocess with a hard timeout; it logs
    warnings and errors (or everything at DEBUG) in the daemon's format."""
    level = log_level if log_level in ("TRACE", "DEBUG") else "WARNING"

    def run(ids: Sequence[str], on_event: jobs.EventSink) -> CrawlReport:
        from scheduler.runner import crawl_round

        return crawl_round(config, ids, worker_id=worker_id, timeout=config.daemon.round_timeout,
                           on_event=on_event, log_level=level, log_json=log_json, progress=False)

    return run


def child_pids() -> list[int]:
    """This process's children (the crawl subprocess), from /proc."""
    pids: list[int] = []
    for task in Path("/proc/self/task").glob("*"):
        try:
            pids += [int(p) for p in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
    return pids


def terminate_children(grace: float = 1.0) -> None:
    """SIGTERM the crawl subprocess (its whole process group: the runner starts it in a session
    of its own), SIGKILL after ``grace`` seconds. Its writes are per-item transactions, so
    nothing is half-written."""
    pids = child_pids()
    _signal_groups(pids, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and set(pids) & set(child_pids()):
        time.sleep(0.05)
    _signal_groups(sorted(set(pids) & set(child_pids())), signal.SIGKILL)


def _signal_groups(pids: Sequence[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if os.getpgid(pid) == pid:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)


class _SkippedRunFilter(logging.Filter):
    """A round longer than the tick makes APScheduler skip ticks: expected, not a warning."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "maximum number of running instances reached" not in record.getMessage()


def guarded(name: str, fn: Callable[[], object]) -> Callable[[], None]:
    """The job boundary: a failing job logs one line and runs again on its next trigger."""

    def job() -> None:
        try:
            fn()
        except Exception as exc:
            logger.opt(exception=exc).error("job {} failed: {}: {}", name, type(exc).__name__, exc)

    return job


class Daemon:
    """`newsmon run`: start, poll and dispatch until SIGTERM/SIGINT, then stop cleanly."""

    def __init__(self, app: AppContext, round_fn: RoundFn | None = None, *, serve: bool | None = None,
                 insecure: bool = False) -> None:
        """:param serve: also serve the web page and API (default: ``[server] enabled``)."""
        self.app = app
        self.round_fn = round_fn
        self.serve = app.config.server.enabled if serve is None else serve
        self.insecure = insecure
        self.web: BackgroundServer | None = None
        self.stop = threading.Event()
        self.signalled_at: float | None = None
        self.lock: DaemonLock | None = None
        self.scheduler: BackgroundScheduler | None = None
        self.rt: Runtime | None = None

    # --- start ---------------------------------------------------------------------------------

    def acquire_lock(self) -> None:
        """SQLite: one daemon per database file (flock); PostgreSQL: any number of workers."""
        path = sqlite_lock_path(self.app.config.storage.url)
        if path is not None:
            self.lock = DaemonLock(path)
            self.lock.acquire()  # raises DaemonLockedError

    def start_runtime(self) -> Runtime:
        config = self.app.config
        sessions = self.app.sessions  # migrations run here
        worker_id, host, pid = worker_identity()
        now = utc_now()
        with sessions() as session:
            sync_sources(session, source_rows(config), now)
            session.commit()
            dead = (reap_all_but(session, worker_id, now) if self.lock is not None
                    else reap_workers(session, now, stale_after=max(60.0, 6 * jobs.HEARTBEAT_SECONDS)))
            register_worker(session, worker_id, host, pid, now)
        if dead:
            logger.info("freed the leases of {} stopped worker(s): {}", len(dead), ", ".join(dead))
        channels = build_channels(config)
        rt = Runtime(config=config, sessions=sessions, worker_id=worker_id, channels=channels,
                     crawl_round=self.round_fn or round_in_subprocess(config, worker_id, self.app.log_level,
                                                             self.app.log_json),
                     host=host, pid=pid)
        jobs.warn_unknown_channels(rt)
        enabled = sum(1 for s in config.sources if s.enabled)
        logger.info("newsmon daemon {} started: {} sources ({} enabled), {}, database {}",
                    worker_id, len(config.sources), enabled, channels_summary(channels),
                    _safe_url(config.storage.url))
        return rt

    def bind_web(self) -> None:
        """Check and bind the web page's address before anything starts: a port in use or a
        public address without a token is one clear error (exit 2), never a crash loop."""
        from scheduler.context import fail
        from scheduler.errors import ServeError
        from scheduler.web.server import BackgroundServer, bind, check_access

        settings = self.app.config.server
        try:
            check_access(settings.host, settings.api_token, self.insecure)
            sock = bind(settings.host, settings.port)
        except ServeError as exc:
            fail(str(exc), 2)
        self.web = BackgroundServer(self.app.config, self.app.sessions, sock)

    def start_web(self) -> None:
        from scheduler.web.server import page_url

        if self.web is None:
            return
        if self.app.log_level not in ("DEBUG", "TRACE"):
            logging.getLogger("uvicorn").setLevel(logging.WARNING)  # its start-up lines: ours says it
        self.web.start()
        logger.info("web page: {}{}", page_url(self.web.sock, self.app.config.server.host),
                    " (token required)" if self.app.config.server.api_token else "")

    def build_scheduler(self, rt: Runtime) -> BackgroundScheduler:
        from apscheduler.executors.pool import ThreadPoolExecutor
        from apscheduler.schedulers.background import BackgroundScheduler
        from apscheduler.triggers.cron import CronTrigger

        logging.getLogger("apscheduler.scheduler").addFilter(_SkippedRunFilter())
        logging.getLogger("apscheduler").setLevel(logging.WARNING)
        daemon = rt.config.daemon
        scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(4 + 2 * len(rt.channels))},
            # Timing state lives in the database: a late tick simply runs once (no catch-up burst).
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None})
        now = datetime.now().astimezone()
        scheduler.add_job(guarded("poll", lambda: jobs.poll_due_sources(rt)), "interval",
                          seconds=daemon.tick, id="poll", next_run_time=now)
        for channel_id, channel in rt.channels.items():
            scheduler.add_job(guarded(f"dispatch:{channel_id}", partial(jobs.dispatch_channel, rt, channel_id)),
                              "interval", seconds=daemon.dispatch_interval, id=f"dispatch:{channel_id}",
                              next_run_time=now)
            if channel.spec.mode == "digest" and channel.spec.schedule:
                scheduler.add_job(guarded(f"digest:{channel_id}", partial(jobs.send_digest, rt, channel_id)),
                                  CronTrigger.from_crontab(channel.spec.schedule), id=f"digest:{channel_id}",
                                  misfire_grace_time=3600)
        scheduler.add_job(guarded("heartbeat", lambda: jobs.beat(rt)), "interval",
                          seconds=rt.heartbeat_seconds, id="heartbeat")
        scheduler.add_job(guarded("partitions", lambda: jobs.ensure_partitions(rt)), "interval", hours=1,
                          id="partitions", next_run_time=now)
        scheduler.add_job(guarded("prune", lambda: jobs.prune_history(rt)), "interval", hours=6, id="prune",
                          next_run_time=now + timedelta(minutes=5))
        rt.wake_dispatch = lambda: self.wake_dispatch(rt)
        return scheduler

    def wake_dispatch(self, rt: Runtime) -> None:
        """Right after a round, send what it wrote instead of waiting for the next interval."""
        if self.scheduler is None or rt.stopping.is_set():
            return
        now = datetime.now().astimezone()
        for channel_id, channel in rt.channels.items():
            if channel.spec.mode == "instant":
                try:
                    self.scheduler.modify_job(f"dispatch:{channel_id}", next_run_time=now)
                except Exception:  # noqa: S110 - the scheduler is stopping: nothing to wake
                    pass

    # --- run and stop ----------------------------------------------------------------------------

    def on_signal(self, signum: int, _frame: object) -> None:
        name = signal.Signals(signum).name
        if self.stop.is_set():
            logger.warning("{} again: abandoning in-flight work now", name)
            terminate_children(grace=0.2)
            return
        logger.info("{} received: stopping (in-flight work gets {:.0f}s)", name, ROUND_GRACE)
        self.signalled_at = time.monotonic()
        self.stop.set()

    def run(self) -> int:
        """Start, run until a signal, stop; returns the exit code."""
        from scheduler.context import fail

        try:
            self.acquire_lock()
        except DaemonLockedError as exc:
            fail(str(exc), 1)
        if self.serve:
            self.bind_web()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self.on_signal)
        self.rt = rt = self.start_runtime()
        self.start_web()
        self.scheduler = self.build_scheduler(rt)
        self.scheduler.start()
        while not self.stop.wait(0.5):
            pass
        return self.shutdown(rt)

    def shutdown(self, rt: Runtime) -> int:
        """Stop taking work, let a round finish within ROUND_GRACE (else terminate it), finish
        in-flight sends, give back every lease, mark the worker stopped, flush the logs."""
        started = self.signalled_at or time.monotonic()
        rt.stopping.set()
        assert self.scheduler is not None
        self.scheduler.pause()
        while rt.in_round.is_set() and time.monotonic() - started < ROUND_GRACE:
            time.sleep(0.05)
        if rt.in_round.is_set():
            logger.warning("the crawl round did not finish in {:.0f}s: terminating it", ROUND_GRACE)
            terminate_children()
        idle = rt.wait_idle(max(0.1, STOP_BUDGET - (time.monotonic() - started)))
        self.scheduler.shutdown(wait=False)
        if self.web is not None:
            self.web.stop()
        with rt.sessions() as session:
            stop_worker(session, rt.worker_id, utc_now())
        for channel in rt.channels.values():
            channel.close()
        if self.lock is not None:
            self.lock.release()
        logger.info("newsmon daemon {} stopped in {:.1f}s", rt.worker_id, time.monotonic() - started)
        logger.complete()
        if not idle:  # a send still waits on its timeout: its event stays pending and is resent
            os._exit(0)
        return 0


def channels_summary(channels: dict[str, Channel]) -> str:
    """``1 alert channel (log)``, ``2 alert channels (webhook, log)``."""
    kinds = ", ".join(dict.fromkeys(c.spec.kind for c in channels.values()))
    noun = "channel" if len(channels) == 1 else "channels"
    return f"{len(channels)} alert {noun}" + (f" ({kinds})" if kinds else "")


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
