"""Several `newsmon run` workers on one PostgreSQL database: each due source polled by one
worker per interval, items stored once, alerts sent once, a kill -9 loses nothing; and the
per-host politeness of source claims across workers, on both backends."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from storage.db import make_engine, make_session_factory
from storage.leases import claim_due_sources, release_sources
from storage.models import AlertEvent, FetchLog, Item, Source, Worker
from storage.repository import SourceRow, sync_sources
from tests.plugins.receivers import Receiver
from tests.plugins.sites import Handler, Route, Site, SiteServer, rss

ROOT = Path(__file__).resolve().parents[1]
HOSTS = 5  # loopback addresses serving the fixture site: 127.0.0.2 … 127.0.0.6
SOURCES = 40
LEASE = 6.0
PER_HOST = 2
DELIVERED = re.compile(r"alert (\S+) → hook delivered")


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    assert predicate(), f"timed out after {timeout:.0f}s waiting for {what}"


# --- fixtures --------------------------------------------------------------------------------------


@pytest.fixture
def hosts(site: Site) -> Iterator[list[str]]:
    """Extra listeners for the fixture site on other loopback addresses: one host each, so
    per-host politeness leaves the workers something to share."""
    servers: list[SiteServer] = []
    for n in range(2, 2 + HOSTS):
        server = SiteServer((f"127.0.0.{n}", 0), Handler)
        server.site = site
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
    yield [f"http://127.0.0.{2 + i}:{s.server_address[1]}" for i, s in enumerate(servers)]
    for server in servers:
        server.shutdown()
        server.server_close()


# --- the cluster -----------------------------------------------------------------------------------


@dataclass
class Proc:
    process: subprocess.Popen[bytes]
    log: Path
    handle: Any

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def delivered(self) -> list[str]:
        return DELIVERED.findall(self.output())

    def kill9(self) -> None:
        """kill -9 of the worker and its crawl round's process group."""
        children: list[int] = []
        for task in Path(f"/proc/{self.process.pid}/task").glob("*"):
            try:
                children += [int(p) for p in (task / "children").read_text().split()]
            except OSError:
                continue
        self.process.kill()
        for pid in children:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait(timeout=10)

    def stop(self) -> int | None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=12)
            except subprocess.TimeoutExpired:
                self.kill9()
                return None
        self.handle.close()
        return self.process.returncode


@dataclass
class Cluster:
    """40 feeds over HOSTS loopback hosts (8 per host, 2 s or 3 s intervals), a webhook to the
    receiver, PostgreSQL, and the `newsmon run` workers started on it."""

    tmp: Path
    site: Site
    hosts: list[str]
    receiver: Receiver
    db_url: str
    feeds: dict[str, str] = field(default_factory=dict)  # source id -> path
    items: dict[str, list[dict[str, str]]] = field(default_factory=dict)  # path -> items
    matching: int = 0
    workers: list[Proc] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.engine = make_engine(self.db_url)
        self.sessions = make_session_factory(self.engine)
        per_host = SOURCES // len(self.hosts)
        for i in range(SOURCES):
            path = self.site.unique(f"/scaleout-s{i:02d}")
            self.feeds[f"s{i:02d}"] = path
            self.items[path] = []
            self.site.handle(path, self._serve)
        self.base = {sid: self.hosts[i // per_host] for i, sid in enumerate(self.feeds)}

    def interval(self, source_id: str) -> float:
        return 2.0 if int(source_id[1:]) % 2 == 0 else 3.0

    def _serve(self, request: Handler) -> None:
        """The feed as published now, after a short think time (rounds last a while)."""
        time.sleep(0.15)
        path = request.path.split("?")[0]
        body = rss(list(self.items.get(path, [])))
        etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
        if request.headers.get("If-None-Match") == etag:
            request.send_bytes(b"", None, status=304, headers={"ETag": etag})
            return
        request.serve_route(Route(body, "application/rss+xml", headers={"ETag": etag}, validators=False))

    def publish(self, source_id: str, match: bool) -> None:
        path = self.feeds[source_id]
        n = len(self.items[path])
        words = " ".join(uuid.uuid4().hex[:7] for _ in range(40))  # its own story
        title = f"{'CICA ministers' if match else 'Weather'} {source_id} update {n}"
        self.items[path] = [{"title": title, "link": self.site.url(f"{path}/{n}"), "guid": f"{path}/{n}",
                             "pubDate": formatdate(time.time(), usegmt=True),
                             "description": f"{title}. {words}"}, *self.items[path]][:30]
        self.matching += match

    def wave(self, n: int) -> None:
        """A new item on every source; every third one matches."""
        for i, source_id in enumerate(self.feeds):
            self.publish(source_id, match=(i + n) % 3 == 0)

    @property
    def published(self) -> int:
        return sum(len(v) for v in self.items.values())

    def write(self) -> Path:
        sources = "".join(
            f'[[sources]]\nid = "{sid}"\nurl = "{self.base[sid]}{path}"\nkind = "feed"\n'
            f'interval = "{self.interval(sid):.0f}s"\nallow_private = true\n\n'
            for sid, path in self.feeds.items())
        config = f"""
[storage]
url = "{self.db_url}"

[crawl]
timeout = "5s"
obey_robots = false
fetch_articles = false
jitter = 0.0
max_backoff = "4s"
concurrency_per_host = {PER_HOST}

[daemon]
tick = "0.5s"
dispatch_interval = "1s"
round_timeout = "20s"
retry_cap = "3s"
lease = "{LEASE:.0f}s"
batch_size = 10

[server]
enabled = false  # several workers on one host: none serves

{sources}
[[organisations]]
id = "CICA"
name = "Conference on Interaction and Confidence-Building Measures in Asia"
aliases = ["CICA"]

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

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "scheduler", "--config", str(self.tmp / "newsmon.toml"), *args]

    def start(self, n: int) -> None:
        for i in range(n):
            log = self.tmp / f"worker{i}.log"
            handle = open(log, "ab")  # noqa: SIM115 - closed by Proc.stop
            process = subprocess.Popen(self.command("run"), cwd=self.tmp, stdout=handle,
                                       stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(ROOT)})
            self.workers.append(Proc(process, log, handle))

    def stop(self) -> list[int | None]:
        codes = [w.stop() for w in self.workers]
        self.engine.dispose()
        return codes

    def scalar(self, stmt: Any) -> Any:
        with self.sessions() as session:
            return session.scalar(stmt)

    def rows(self, stmt: Any) -> list[Any]:
        with self.sessions() as session:
            return list(session.execute(stmt).all())

    def live_ids(self) -> dict[int, str]:
        """pid -> worker id of the registered, not stopped workers."""
        return {r.pid: r.id for r in self.rows(select(Worker.pid, Worker.id).where(Worker.stopped_at.is_(None)))}

    def deliveries(self) -> Counter[str]:
        return Counter(r.headers["webhook-id"] for r in self.receiver.ok("/hook"))

    def settled(self) -> bool:
        """Every published item stored, every alert event delivered."""
        events = self.scalar(select(func.count()).select_from(AlertEvent)) or 0
        undelivered = self.scalar(select(func.count()).select_from(AlertEvent)
                                  .where(AlertEvent.delivered_at.is_(None)))
        return (self.scalar(select(func.count()).select_from(Item)) == self.published
                and events == self.matching and undelivered == 0 and len(self.deliveries()) == events)

    def request_times(self) -> dict[str, list[float]]:
        return {sid: sorted(r.at for r in self.site.requests(path)) for sid, path in self.feeds.items()}

    def diagnostics(self) -> str:
        return "\n".join(f"--- worker {i}\n{w.output()[-2500:]}" for i, w in enumerate(self.workers))


@pytest.fixture
def cluster(tmp_path: Path, site: Site, hosts: list[str], receiver: Receiver,
            pg_url: str) -> Iterator[Cluster]:
    c = Cluster(tmp_path, site, hosts, receiver, pg_url)
    yield c
    c.stop()


# --- the end-to-end test ---------------------------------------------------------------------------


def assert_polled_once_per_interval(cluster: Cluster) -> None:
    """From the server's request log: two requests for one feed are at least its interval apart."""
    for source_id, times in cluster.request_times().items():
        gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
        assert gaps, f"{source_id} was polled at most once"
        assert min(gaps) >= cluster.interval(source_id) - 0.3, (source_id, [round(g, 2) for g in gaps])


def assert_status_lists(cluster: Cluster, pids: set[int]) -> None:
    out = subprocess.run(cluster.command("status", "--format", "json"), capture_output=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    workers = json.loads(out.stdout)["workers"]
    assert {w["pid"] for w in workers} == pids
    assert all(w["heartbeat_age_seconds"] < 10 and w["polls"] > 0 for w in workers), workers
    assert all(w["sources_held"] == len(w["holds"]) for w in workers)


def kill_a_busy_worker(cluster: Cluster) -> tuple[str, dict[str, datetime]]:
    """kill -9 a worker while it holds source leases; returns its id and those leases' expiry."""
    live = cluster.live_ids()
    busy: list[str] = []

    def holding() -> bool:
        busy[:] = [r.lease_owner for r in cluster.rows(
            select(Source.lease_owner).where(Source.lease_owner.is_not(None))
            .group_by(Source.lease_owner).having(func.count() >= 2))]
        return bool(busy)

    wait_until(holding, 20, "a worker holding at least two source leases")
    victim = busy[0]
    worker = next(w for w in cluster.workers if live.get(w.process.pid) == victim)
    worker.kill9()
    held = {r.id: r.lease_expires_at for r in cluster.rows(
        select(Source.id, Source.lease_expires_at).where(Source.lease_owner == victim))}
    assert held, "the killed worker held no source lease at the kill: retry"
    return victim, held


@pytest.mark.slow
def test_workers_share_sources_and_alerts_and_survive_kill9(cluster: Cluster) -> None:
    # three workers: sharing among more than two, and two survivors to take a killed one's sources
    n_workers = 3
    for source_id in cluster.feeds:
        cluster.publish(source_id, match=False)
    cluster.write()
    started = time.monotonic()
    cluster.start(n_workers)
    pids = {w.process.pid for w in cluster.workers}
    wait_until(lambda: set(cluster.live_ids()) == pids, 30, "every worker registered")
    for wave in range(3):  # items published during the run
        wait_until(lambda w=wave: time.monotonic() - started >= 4 + 6 * w, 30, f"wave {wave}")
        cluster.wave(wave)
    wait_until(cluster.settled, 40, "every item stored and every alert delivered")
    wait_until(lambda: time.monotonic() - started >= 25, 30, "25 s of polling")
    assert cluster.settled(), cluster.diagnostics()

    # every worker polled; items stored once; alerts sent once, each by one worker only
    pollers = {r.worker_id for r in cluster.rows(select(FetchLog.worker_id).distinct())}
    assert pollers == set(cluster.live_ids().values()), cluster.diagnostics()
    assert cluster.scalar(select(func.count(func.distinct(Item.canonical_url)))) == cluster.published
    deliveries = cluster.deliveries()
    assert len(deliveries) == cluster.matching and set(deliveries.values()) == {1}
    senders = Counter(e for w in cluster.workers for e in set(w.delivered()))
    assert set(senders) == set(deliveries) and set(senders.values()) == {1}
    assert_status_lists(cluster, pids)
    assert_polled_once_per_interval(cluster)

    # kill -9 one worker mid-round: its sources go to the others once its leases run out
    victim, held = kill_a_busy_worker(cluster)
    killed = datetime.now(UTC)
    cluster.wave(3)

    def repolled() -> bool:
        rows = cluster.rows(select(FetchLog.source_id, func.min(FetchLog.started_at))
                            .where(FetchLog.source_id.in_(list(held)), FetchLog.worker_id != victim,
                                   FetchLog.started_at >= killed).group_by(FetchLog.source_id))
        return len(rows) == len(held)

    wait_until(repolled, LEASE + 25, "the killed worker's sources polled by the others")
    firsts = dict(cluster.rows(select(FetchLog.source_id, func.min(FetchLog.started_at))
                               .where(FetchLog.source_id.in_(list(held)), FetchLog.worker_id != victim,
                                      FetchLog.started_at >= killed).group_by(FetchLog.source_id)))
    assert all(firsts[s] >= held[s] - timedelta(seconds=0.2) for s in held), (held, firsts)
    wait_until(cluster.settled, 40, "everything stored and delivered after the kill")
    after = cluster.deliveries()
    assert len(after) == cluster.matching and max(after.values()) <= 2  # a repeat only once, same id
    assert cluster.scalar(select(func.count()).select_from(Item)) == cluster.published
    assert_polled_once_per_interval(cluster)
    codes = [w.stop() for w in cluster.workers if w.process.poll() is None]
    assert codes and all(c == 0 for c in codes), cluster.diagnostics()


# --- per-host politeness at the claim level (both backends) --------------------------------------

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def add_hosted(sessions: sessionmaker[Session], per_host: dict[str, int]) -> None:
    rows = [SourceRow(id=f"{host}-{i}", kind="feed", url=f"https://{host}:8443/feed/{i}")
            for host, n in per_host.items() for i in range(n)]
    with sessions() as session:
        sync_sources(session, rows, NOW)
        session.commit()


def hosts_of(sessions: sessionmaker[Session], ids: list[str]) -> Counter[str]:
    with sessions() as session:
        return Counter(session.scalars(select(Source.host).where(Source.id.in_(ids))))


def test_sync_fills_the_host(session_factory: sessionmaker[Session]) -> None:
    add_hosted(session_factory, {"News.Example.ORG": 1})
    with session_factory() as session:
        assert session.scalar(select(Source.host)) == "news.example.org"


def test_claims_respect_per_host_limits_across_workers(session_factory: sessionmaker[Session]) -> None:
    add_hosted(session_factory, {"a.org": 6, "b.org": 1, "c.org": 3})
    with session_factory() as session:
        first = claim_due_sources(session, "w1", NOW, limit=7, per_host=2)
        assert hosts_of(session_factory, first) == Counter({"a.org": 6, "b.org": 1})
        # a.org and b.org are w1's; c.org nobody's: all of it
        second = claim_due_sources(session, "w2", NOW, per_host=2)
        assert hosts_of(session_factory, second) == Counter({"c.org": 3})
        assert claim_due_sources(session, "w3", NOW, per_host=2) == []
        # w1 finishes all but one a.org source: one more a.org request may start elsewhere
        release_sources(session, "w1", first[1:])
        third = claim_due_sources(session, "w3", NOW, per_host=2)
        assert hosts_of(session_factory, third) == Counter({"a.org": 1, "b.org": 1})
        # an expired lease (a dead worker) no longer counts
        session.execute(update(Source).where(Source.lease_owner == "w2")
                        .values(lease_expires_at=NOW - timedelta(seconds=1)))
        session.commit()
        assert hosts_of(session_factory, claim_due_sources(session, "w4", NOW, per_host=2)) \
            == Counter({"c.org": 3})


def test_without_a_limit_hosts_do_not_matter(session_factory: sessionmaker[Session]) -> None:
    add_hosted(session_factory, {"a.org": 4})
    with session_factory() as session:
        assert len(claim_due_sources(session, "w1", NOW, limit=2)) == 2
        assert len(claim_due_sources(session, "w2", NOW)) == 2


def test_concurrent_polite_claimers_stay_within_the_limit(db_url: str) -> None:
    engine = make_engine(db_url)
    add_hosted(make_session_factory(engine), {f"h{i}.org": 5 for i in range(8)})
    got: dict[str, list[str]] = {"a": [], "b": [], "c": [], "d": []}
    start = threading.Barrier(len(got))

    def worker(name: str) -> None:
        sessions = make_session_factory(make_engine(db_url))
        start.wait()
        with sessions() as session:
            got[name] = claim_due_sources(session, name, NOW, limit=5, per_host=2)

    threads = [threading.Thread(target=worker, args=(n,)) for n in got]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    claimed = [s for ids in got.values() for s in ids]
    assert len(claimed) == len(set(claimed)) > 0
    # per host: one worker holds it all, or at most 2 sources are leased in total
    with make_session_factory(engine)() as session:
        owners: dict[str, set[str]] = {}
        counts: Counter[str] = Counter()
        for host, owner in session.execute(select(Source.host, Source.lease_owner)
                                           .where(Source.lease_owner.is_not(None))):
            owners.setdefault(host, set()).add(owner)
            counts[host] += 1
    for host, who in owners.items():
        assert len(who) == 1 or counts[host] <= 2, (host, who, counts[host])
    engine.dispose()
