"""`newsmon run` as a real process against the fixture sites and a real webhook receiver:
alerts within the interval, exactly once; a failing receiver loses nothing; kill -9 and a
restart resend only with the same event_id; SIGTERM exits 0; one daemon per SQLite file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import formatdate
from pathlib import Path

import pytest
from sqlalchemy import func, select

from scheduler.config import AppConfig
from scheduler.daemon import build_channels, source_rows
from scheduler.jobs import EventSink, RoundFn, Runtime, dispatch_channel, poll_due_sources, send_digest
from scheduler.runner import CrawlReport
from storage.db import make_engine, make_session_factory
from storage.models import AlertEvent, Item, Source, Worker
from storage.repository import PollOutcome, record_poll, sync_sources
from tests.plugins.receivers import Receiver
from tests.plugins.sites import Site, rss

ROOT = Path(__file__).resolve().parents[1]


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    assert predicate(), f"timed out after {timeout:.0f}s waiting for {what}"


@dataclass
class Desk:
    """A temp config: feeds on the fixture server, a webhook to the receiver, SQLite."""

    tmp: Path
    site: Site
    receiver: Receiver
    feeds: dict[str, str] = field(default_factory=dict)  # source id -> path
    extra_sources: list[str] = field(default_factory=list)

    @property
    def db_url(self) -> str:
        return f"sqlite:///{self.tmp / 'newsmon.db'}"

    def feed(self, source_id: str) -> str:
        path = self.site.unique(f"/daemon-{source_id}")
        self.feeds[source_id] = path
        self.publish(source_id, [])
        return path

    def publish(self, source_id: str, titles: list[str]) -> None:
        """Replace the feed with these items (each a distinct story), newest first."""
        path = self.feeds[source_id]
        now = formatdate(time.time(), usegmt=True)
        items = [{"title": t, "link": self.site.url(f"{path}/{i}"), "guid": f"{path}/{i}",
                  "pubDate": now, "description": f"{t}. Report {uuid.uuid4().hex} about {t.lower()}."}
                 for i, t in enumerate(titles)]
        self.site.set(path, rss(items))

    def polls(self, source_id: str) -> int:
        return len(self.site.requests(self.feeds[source_id]))

    def write(self, interval: str = "2s") -> Path:
        sources = "".join(
            f'[[sources]]\nid = "{sid}"\nurl = "{self.site.url(path)}"\nkind = "feed"\n'
            f'allow_private = true\n\n' for sid, path in self.feeds.items())
        config = f"""
[storage]
url = "{self.db_url}"

[crawl]
interval = "{interval}"
timeout = "10s"
obey_robots = false
fetch_articles = false
jitter = 0.0
max_backoff = "4s"

[daemon]
tick = "0.5s"
dispatch_interval = "1s"
round_timeout = "30s"
retry_cap = "3s"

[server]
enabled = false  # the web page is tested in test_first_hour

{sources}{"".join(self.extra_sources)}
[[organisations]]
id = "CICA"
name = "Conference on Interaction and Confidence-Building Measures in Asia"
aliases = ["CICA", "СВМДА"]

[[alerts]]
kind = "webhook"
id = "hook"
url = "{self.receiver.url}/hook"
allow_private = true
timeout = "3s"
"""
        path = self.tmp / "newsmon.toml"
        path.write_text(config, encoding="utf-8")
        return path

    def start(self, name: str = "daemon") -> Daemon:
        log = self.tmp / f"{name}.log"
        handle = open(log, "ab")  # noqa: SIM115 - closed by Daemon.stop
        process = subprocess.Popen(
            [sys.executable, "-m", "scheduler", "--config", str(self.tmp / "newsmon.toml"), "run"],
            cwd=self.tmp, stdout=handle, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT)})
        return Daemon(process, log, handle)

    def count(self, stmt: object) -> int:
        engine = make_engine(self.db_url)
        try:
            with make_session_factory(engine)() as session:
                return int(session.scalar(stmt) or 0)  # type: ignore[call-overload]
        finally:
            engine.dispose()


@dataclass
class Daemon:
    process: subprocess.Popen[bytes]
    log: Path
    handle: object

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def terminate(self, timeout: float = 10.0) -> tuple[int, float]:
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            rc = self.process.wait(timeout=timeout)
        finally:
            self.kill()
        return rc, time.monotonic() - started

    def children(self) -> list[int]:
        pids: list[int] = []
        for task in Path(f"/proc/{self.process.pid}/task").glob("*"):
            try:
                pids += [int(p) for p in (task / "children").read_text().split()]
            except OSError:
                continue
        return pids

    def kill9(self) -> None:
        """kill -9 of the whole service (as systemd would): the daemon and its crawl round."""
        children = self.children()
        self.process.kill()
        for pid in children:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait(timeout=10)
        self.handle.close()  # type: ignore[attr-defined]

    def kill(self) -> None:
        if self.process.poll() is None:
            self.kill9()
        else:
            self.handle.close()  # type: ignore[attr-defined]


@pytest.fixture
def desk(tmp_path: Path, site: Site, receiver: Receiver) -> Iterator[Desk]:
    yield Desk(tmp_path, site, receiver)


def deliveries(receiver: Receiver) -> Counter[str]:
    return Counter(r.headers["webhook-id"] for r in receiver.ok("/hook"))


@pytest.mark.slow
def test_new_matching_items_alert_once_within_the_interval(desk: Desk) -> None:
    desk.feed("alpha")
    desk.publish("alpha", ["Weather report for Astana"])
    desk.write()
    daemon = desk.start()
    try:
        wait_until(lambda: desk.polls("alpha") >= 1, 20, "the first poll")
        published = time.monotonic()
        desk.publish("alpha", ["CICA ministers meet in Astana", "СВМДА: совещание в Баку",
                               "Weather report for Astana"])
        got = desk.receiver.wait_ok(2, "/hook", timeout=2 + 8)
        assert len(got) == 2, daemon.output()[-3000:]
        assert max(r.at for r in got) - published <= 2 + 8
        seen = desk.polls("alpha")
        wait_until(lambda: desk.polls("alpha") >= seen + 2, 15, "two more polls")
        bodies = [r.json for r in desk.receiver.ok("/hook")]
        assert len(bodies) == 2  # polling the same content again alerts nobody
        assert {b["event_id"] for b in bodies} == {r.headers["webhook-id"] for r in got}
        assert sorted(b["item"]["title"] for b in bodies) == ["CICA ministers meet in Astana",
                                                              "СВМДА: совещание в Баку"]
        assert all(b["event"] == "match" and b["organisations"] == ["CICA"] for b in bodies)
    finally:
        rc, took = daemon.terminate()
    assert rc == 0 and took < 10, daemon.output()[-3000:]
    log = daemon.output()
    assert "poll alpha ok" in log and "delivered" in log and "stopped" in log
    assert desk.count(select(func.count()).select_from(AlertEvent)
                      .where(AlertEvent.delivered_at.is_(None))) == 0
    assert desk.count(select(func.count()).select_from(Worker).where(Worker.stopped_at.is_(None))) == 0


@pytest.mark.slow
def test_failing_receiver_loses_nothing(desk: Desk) -> None:
    desk.feed("beta")
    desk.write()
    desk.receiver.fail(500, times=4)  # the first attempts fail, whenever they come
    daemon = desk.start()
    try:
        desk.publish("beta", [f"CICA summit statement number {i}" for i in range(3)])
        wait_until(lambda: len(deliveries(desk.receiver)) == 3, 30, "three events after recovery")
        failed = [r for r in desk.receiver.requests if r.status == 500]
        assert len(failed) == 4, "the receiver should have refused the first attempts"
        assert {r.headers["webhook-id"] for r in failed} <= set(deliveries(desk.receiver))
        assert all(n == 1 for n in deliveries(desk.receiver).values())
    finally:
        rc, _ = daemon.terminate()
    assert rc == 0


@pytest.mark.slow
def test_kill9_during_a_round_then_restart_delivers_everything(desk: Desk) -> None:
    desk.feed("gamma")
    slow = desk.site.unique("/slowkey")
    desk.extra_sources.append(
        f'[[sources]]\nid = "slow"\nurl = "{desk.site.url("/faults/slow")}?seconds=20&k={slow}"\n'
        f'allow_private = true\n\n')
    desk.write()
    titles = [f"CICA summit news item {i}" for i in range(4)]
    desk.publish("gamma", titles)
    daemon = desk.start()
    try:
        wait_until(lambda: desk.polls("gamma") >= 1 and desk.site.requests("/faults/slow"), 20,
                   "a round in flight")
    finally:
        daemon.kill9()  # also when the wait fails: no daemon left polling a deleted database
    before = deliveries(desk.receiver)
    second = desk.start("restarted")
    try:
        wait_until(lambda: len(deliveries(desk.receiver)) == 4, 30, "every event after the restart")
    finally:
        rc, took = second.terminate()
    assert rc == 0 and took < 10, second.output()[-3000:]
    after = deliveries(desk.receiver)
    assert len(after) == 4
    # a repeat is only ever the same event_id again, at most once per crash
    assert all(n - before.get(event_id, 0) <= 1 for event_id, n in after.items())
    assert desk.count(select(func.count()).select_from(Item)) == 4
    assert desk.count(select(func.count(func.distinct(Item.canonical_url)))) == 4


@pytest.mark.slow
def test_sigterm_during_a_slow_round_exits_0_within_10s(desk: Desk) -> None:
    desk.feed("delta")
    desk.extra_sources.append(
        f'[[sources]]\nid = "stuck"\nurl = "{desk.site.url("/faults/slow")}?seconds=25&k=stuck"\n'
        f'allow_private = true\n\n')
    desk.write()
    daemon = desk.start()
    try:
        wait_until(lambda: any("k=stuck" in r.path for r in desk.site.requests("/faults/slow")), 20,
                   "the slow source being fetched")
        # a second daemon on the same SQLite file refuses to start
        second = desk.start("second")
        rc2 = second.process.wait(timeout=30)
        second.kill()
        assert rc2 == 1
        assert "already uses this SQLite database" in second.output()
    finally:
        rc, took = daemon.terminate(timeout=12)
    assert rc == 0 and took < 10, daemon.output()[-3000:]


# --- the jobs, called directly (no APScheduler, no processes) -------------------------------------


def make_runtime(db_url: str, receiver: Receiver, crawl_round: RoundFn, now: list[datetime],
                 mode: str = "instant") -> Runtime:
    alert: dict[str, object] = {"kind": "webhook", "id": "hook", "url": f"{receiver.url}/hook",
                                "allow_private": True, "mode": mode}
    if mode == "digest":
        alert["schedule"] = "0 9 * * *"
    config = AppConfig.model_validate({
        "storage": {"url": db_url},
        "sources": [{"id": s, "url": f"http://127.0.0.1:9/{s}", "interval": "60s"} for s in ("a", "b")],
        "organisations": [{"id": "CICA", "aliases": ["CICA"]}],
        "alerts": [alert], "daemon": {"max_attempts": 5, "retry_cap": "30s"}})
    sessions = make_session_factory(make_engine(db_url))
    with sessions() as session:
        sync_sources(session, source_rows(config), now[0])
        session.commit()
    return Runtime(config=config, sessions=sessions, worker_id="w1", channels=build_channels(config),
                   crawl_round=crawl_round, clock=lambda: now[0])


def add_event(rt: Runtime, at: datetime) -> str:
    event_id = str(uuid.uuid4())
    with rt.sessions() as session:
        session.add(AlertEvent(event_id=event_id, channel="hook", organisations='["CICA"]',
                               payload=f'{{"event_id": "{event_id}", "event": "match"}}',
                               created_at=at, next_attempt_at=at))
        session.commit()
    return event_id


def test_poll_job_settles_every_claimed_source(sqlite_url: str, receiver: Receiver) -> None:
    now = [datetime(2026, 3, 1, 12, 0, tzinfo=UTC)]
    rounds: list[list[str]] = []

    def one_source_only(ids: Sequence[str], sink: EventSink) -> None:
        rounds.append(list(ids))
        with rt.sessions() as session:
            record_poll(session, PollOutcome("a", now[0], now[0], "ok",
                                             next_poll_at=now[0] + timedelta(seconds=60)), "w1")
            session.commit()
        sink({"kind": "source", "source_id": "a", "outcome": "ok", "new": 1})

    rt = make_runtime(sqlite_url, receiver, one_source_only, now)
    assert poll_due_sources(rt) == 2
    assert rounds == [["a", "b"]]
    assert poll_due_sources(rt) == 0  # nothing due: no hot loop for the unfinished source
    with rt.sessions() as session:
        b = session.get(Source, "b")
        assert b is not None and b.lease_owner is None and b.failures == 1
        assert b.last_error_class == "timeout" and b.next_poll_at is not None
        assert b.next_poll_at > now[0]


def test_a_round_whose_process_died_costs_its_unreported_sources_a_crash(sqlite_url: str,
                                                                          receiver: Receiver) -> None:
    # The round's report says how it failed (data, not words): a source it left unrecorded gets
    # that class, not the generic "timeout".
    now = [datetime(2026, 3, 1, 12, 0, tzinfo=UTC)]

    def died(ids: Sequence[str], sink: EventSink) -> CrawlReport:
        return CrawlReport(returncode=-11, failure="crash",
                           failure_message="the crawl process exited with status -11")

    rt = make_runtime(sqlite_url, receiver, died, now)
    assert poll_due_sources(rt) == 2
    with rt.sessions() as session:
        for source_id in ("a", "b"):
            source = session.get(Source, source_id)
            assert source is not None and source.lease_owner is None and source.failures == 1
            assert source.last_error_class == "crash"
            assert source.last_error_message == "the crawl process exited with status -11"


def test_a_crashing_round_costs_its_sources_an_error(sqlite_url: str, receiver: Receiver) -> None:
    now = [datetime(2026, 3, 1, 12, 0, tzinfo=UTC)]

    def crash(ids: Sequence[str], sink: EventSink) -> None:
        raise RuntimeError("crawler exploded")

    rt = make_runtime(sqlite_url, receiver, crash, now)
    woken: list[bool] = []
    rt.wake_dispatch = lambda: woken.append(True)
    assert poll_due_sources(rt) == 2
    assert woken == [True]
    with rt.sessions() as session:
        rows = session.scalars(select(Source)).all()
        assert {(s.id, s.last_error_class, s.lease_owner) for s in rows} == {("a", "crash", None),
                                                                           ("b", "crash", None)}


def test_dispatch_pauses_a_failing_channel_then_sends_everything(sqlite_url: str,
                                                                  receiver: Receiver) -> None:
    now = [datetime(2026, 3, 1, 12, 0, tzinfo=UTC)]
    rt = make_runtime(sqlite_url, receiver, lambda ids, sink: None, now)
    ids = [add_event(rt, now[0]) for _ in range(3)]
    receiver.fail(500, times=1)
    assert dispatch_channel(rt, "hook") == 0
    assert len(receiver.requests) == 1  # the others were not hammered
    assert dispatch_channel(rt, "hook") == 0 and len(receiver.requests) == 1  # paused
    now[0] += timedelta(seconds=31)
    assert dispatch_channel(rt, "hook") == 3
    assert sorted(deliveries(receiver)) == sorted(ids)
    assert [r.headers["webhook-id"] for r in receiver.requests].count(receiver.requests[0].headers["webhook-id"]) == 2


def test_digest_job_sends_one_message_and_retries_as_a_digest(sqlite_url: str,
                                                              receiver: Receiver) -> None:
    now = [datetime(2026, 3, 1, 12, 0, tzinfo=UTC)]
    rt = make_runtime(sqlite_url, receiver, lambda ids, sink: None, now, mode="digest")
    channel_id = "hook"
    for _ in range(2):
        add_event(rt, now[0])
    assert dispatch_channel(rt, channel_id) == 0  # a digest waits for its schedule
    receiver.fail(500, times=1)
    assert send_digest(rt, channel_id) == 0
    now[0] += timedelta(seconds=31)
    assert dispatch_channel(rt, channel_id) == 2  # the failed digest is retried as one
    digests = receiver.ok("/hook")
    assert len(digests) == 1 and len(digests[0].json["events"]) == 2


def test_a_round_the_daemon_stops_leaves_its_sources_due_without_an_error(sqlite_url: str,
                                                                          receiver: Receiver) -> None:
    now = [datetime(2026, 3, 1, 12, 0, tzinfo=UTC)]

    def stopped(ids: Sequence[str], sink: EventSink) -> None:
        rt.stopping.set()  # SIGTERM arrived while the round ran; the round ended without results

    rt = make_runtime(sqlite_url, receiver, stopped, now)
    poll_due_sources(rt)
    with rt.sessions() as session:
        rows = session.scalars(select(Source)).all()
        assert {(s.id, s.failures, s.last_error_class, s.lease_owner) for s in rows} == {
            ("a", 0, None, None), ("b", 0, None, None)}
        assert all(s.next_poll_at is None or s.next_poll_at <= now[0] for s in rows)
