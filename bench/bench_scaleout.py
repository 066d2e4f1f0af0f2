"""Scale-out benchmark: polls per second with 1, 2 and 4 `newsmon run` workers on one PostgreSQL.

1,000 local feeds (100 loopback hosts × 10, a threaded server; 10 items each, and on one request
in ten a feed publishes a new item) at a 1 s interval, so every worker always has due sources.
Each worker is a real `newsmon run` process on a fresh database. After a warm-up (until every
feed has been polled once and its items stored, then a few seconds more) the polls in the fetch
log are counted over a fixed window, with PostgreSQL's writes over the same window from
pg_stat_database (xact_commit and tup_inserted/updated/deleted deltas).

Usage: NEWSMON_TEST_PG_URL=postgresql+psycopg://… .venv/bin/python bench/bench_scaleout.py
       [--quick] [--workers 1,2,4] [--feeds N] [--warmup S] [--window S]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, func, select, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from storage.db import make_engine, upgrade  # noqa: E402
from storage.models import FetchLog  # noqa: E402

FEEDS_PER_HOST = 10
ITEMS = 10
CHANGE = 0.1  # share of requests on which a feed publishes a new item


class Feeds:
    """Every feed's items; a request may add one (a feed that changes now and then)."""

    def __init__(self, seed: int = 7) -> None:
        self.items: dict[str, list[str]] = {}
        self.lock = threading.Lock()
        self.rand = random.Random(seed)

    def body(self, path: str) -> bytes | None:
        with self.lock:
            items = self.items.get(path)
            if items is None:
                return None
            if self.rand.random() < CHANGE or not items:
                n = len(items)
                items.insert(0, f"<item><title>Feed {path} item {n}</title><link>http://example.org{path}/{n}"
                                f"</link><guid>{path}/{n}</guid><pubDate>{formatdate(usegmt=True)}</pubDate>"
                                f"<description>Report {uuid.uuid4().hex} on regional security and "
                                f"cooperation, number {n}.</description></item>")
                del items[ITEMS:]
            parts = "".join(items)
        return (f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>{path}</title>'
                f"<link>http://example.org/</link>{parts}</channel></rss>").encode()


def handler(feeds: Feeds) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            body = feeds.body(self.path)
            if body is None:
                self.reply(404, b"")
                return
            etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
            if self.headers.get("If-None-Match") == etag:
                self.reply(304, b"", etag)
                return
            self.reply(200, body, etag)

        def reply(self, status: int, body: bytes, etag: str | None = None) -> None:
            self.send_response(status)
            if etag:
                self.send_header("ETag", etag)
            if status == 200:
                self.send_header("Content-Type", "application/rss+xml; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if status == 200:
                self.wfile.write(body)

    return Handler


class Server(ThreadingHTTPServer):
    daemon_threads = True


def serve(feeds: Feeds, n_feeds: int) -> tuple[list[Server], list[str]]:
    """One listener per loopback host (127.0.1.x), FEEDS_PER_HOST feeds each; returns the URLs."""
    servers: list[Server] = []
    urls: list[str] = []
    for h in range((n_feeds + FEEDS_PER_HOST - 1) // FEEDS_PER_HOST):
        server = Server((f"127.0.1.{h + 1}", 0), handler(feeds))
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
        servers.append(server)
        for f in range(FEEDS_PER_HOST):
            if len(urls) < n_feeds:
                path = f"/feed/{h}/{f}"
                feeds.items[path] = []
                urls.append(f"http://127.0.1.{h + 1}:{server.server_address[1]}{path}")
    return servers, urls


# --- database ---------------------------------------------------------------------------------------


def new_database(server_url: str) -> str:
    name = f"newsmon_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    return url


def drop_database(server_url: str, url: str) -> None:
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)'))
    admin.dispose()


@dataclass
class Snapshot:
    at: float
    polls: int
    commits: int
    tuples: int
    inserted: int


def snapshot(engine: Any) -> Snapshot:
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_stat_clear_snapshot()"))
        stats = conn.execute(text(
            "SELECT xact_commit, tup_inserted, tup_updated, tup_deleted FROM pg_stat_database "
            "WHERE datname = current_database()")).one()
        polls = conn.execute(select(func.count()).select_from(FetchLog)).scalar_one()
    return Snapshot(time.monotonic(), polls, stats[0], stats[1] + stats[2] + stats[3], stats[1])


def wait_first_round(engine: Any, n_feeds: int, timeout: float = 600.0) -> None:
    """The warm-up: every feed polled once (its items stored), so the window sees steady state."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            if conn.execute(select(func.count(func.distinct(FetchLog.source_id)))).scalar_one() >= n_feeds:
                return
        time.sleep(0.5)
    raise TimeoutError("the first round over every feed did not finish")


# --- workers ----------------------------------------------------------------------------------------


def write_config(tmp: Path, db_url: str, urls: list[str]) -> Path:
    sources = "".join(f'[[sources]]\nid = "f{i:04d}"\nurl = "{u}"\nkind = "feed"\nallow_private = true\n\n'
                      for i, u in enumerate(urls))
    config = f"""
[storage]
url = "{db_url}"

[crawl]
interval = "1s"
timeout = "10s"
obey_robots = false
fetch_articles = false
jitter = 0.0

[daemon]
tick = "0.5s"
round_timeout = "120s"
lease = "30s"

[server]
enabled = false

{sources}
[[organisations]]
id = "CICA"
name = "Conference on Interaction and Confidence-Building Measures in Asia"
aliases = ["CICA"]
"""
    path = tmp / "newsmon.toml"
    path.write_text(config, encoding="utf-8")
    return path


def start_workers(config: Path, n: int, tmp: Path) -> list[subprocess.Popen[bytes]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = []
    for i in range(n):
        log = open(tmp / f"worker{i}.log", "ab")  # noqa: SIM115 - the child keeps it
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "scheduler", "--config", str(config), "--log-level", "WARNING", "run"],
            cwd=tmp, stdout=log, stderr=subprocess.STDOUT, env=env))
    return procs


def stop_workers(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def measure(server_url: str, n_feeds: int, workers: int, warmup: float, window: float) -> dict[str, float]:
    feeds = Feeds()
    servers, urls = serve(feeds, n_feeds)
    db_url = new_database(server_url)
    engine = make_engine(db_url)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-scaleout-") as tmp:
            procs = start_workers(write_config(Path(tmp), db_url, urls), workers, Path(tmp))
            try:
                wait_first_round(engine, n_feeds)
                time.sleep(warmup)
                first = snapshot(engine)
                time.sleep(window)
                last = snapshot(engine)
            finally:
                stop_workers(procs)
    finally:
        engine.dispose()
        drop_database(server_url, db_url)
        for server in servers:
            server.shutdown()
            server.server_close()
    polls = last.polls - first.polls
    seconds = last.at - first.at
    return {"workers": workers, "polls": polls, "seconds": seconds, "polls_per_s": polls / seconds,
            "commits_per_poll": (last.commits - first.commits) / max(1, polls),
            "rows_per_poll": (last.tuples - first.tuples) / max(1, polls),
            "inserts_per_poll": (last.inserted - first.inserted) / max(1, polls)}


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # stop the workers on the way out
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 feeds, 3 s warm-up, 10 s window")
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--feeds", type=int, default=1000)
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds after the first round")
    parser.add_argument("--window", type=float, default=30.0)
    parser.add_argument("--pg-url", default=os.environ.get("NEWSMON_TEST_PG_URL"))
    args = parser.parse_args()
    if not args.pg_url:
        sys.exit("set NEWSMON_TEST_PG_URL (or --pg-url) to a PostgreSQL server")
    feeds, warmup, window = (200, 3.0, 10.0) if args.quick else (args.feeds, args.warmup, args.window)
    print(f"{feeds} feeds on {(feeds + FEEDS_PER_HOST - 1) // FEEDS_PER_HOST} hosts, interval 1 s, "
          f"warm-up first round + {warmup:.0f} s, window {window:.0f} s, {os.cpu_count()} CPUs")
    print("| workers | polls/s | per worker | scaling | commits/poll | rows written/poll | inserts/poll |")
    print("|---|---|---|---|---|---|---|")
    base = None
    for n in (int(w) for w in args.workers.split(",")):
        r = measure(args.pg_url, feeds, n, warmup, window)
        base = base or r["polls_per_s"] / n
        print(f"| {n} | {r['polls_per_s']:.1f} | {r['polls_per_s'] / n:.1f} | "
              f"{r['polls_per_s'] / base:.2f}× | {r['commits_per_poll']:.2f} | {r['rows_per_poll']:.2f} | "
              f"{r['inserts_per_poll']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
