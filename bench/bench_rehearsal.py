"""A 100,000-source rehearsal: 3 `newsmon run` workers on one PostgreSQL poll 100,000 feeds on
loopback hosts at a 10-minute interval; most answers are 304, 1 % of requests publish a new item.

The sources are stored beforehand as after a first poll (ETag known, next poll spread evenly over
the first interval), so the run is the steady state. Over the run the bench reports, per worker:
polls/s, CPU (its own and its crawl subprocesses', from /proc), peak RSS (the same processes);
PostgreSQL commits/s and rows written/s (pg_stat_database); and the lateness of polls after
their due time (due = the stored next poll for the first poll of a source, the previous poll's
end + interval after; a source still waiting at the end counts with its wait so far).

    NEWSMON_TEST_PG_URL=postgresql+psycopg://… .venv/bin/python bench/bench_rehearsal.py
        [--sources 100000] [--hosts 500] [--workers 3] [--duration 600] [--interval 600]
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import text  # noqa: E402

from bench.bench_scaleout import Server, drop_database, new_database, start_workers, stop_workers  # noqa: E402
from storage.db import make_engine  # noqa: E402

NEW = 0.01  # share of requests that find a new item


class Feeds:
    def __init__(self) -> None:
        self.version: dict[str, int] = {}
        self.lock = threading.Lock()
        self.rand = random.Random(11)
        self.requests = self.changed = 0

    def answer(self, path: str, etag: str | None) -> tuple[int, bytes, str]:
        with self.lock:
            if path not in self.version:
                return 404, b"", ""
            self.requests += 1
            if self.rand.random() < NEW:
                self.version[path] += 1
                self.changed += 1
            version = self.version[path]
        tag = f'"v{version}"'
        if etag == tag:
            return 304, b"", tag
        items = "".join(
            f"<item><title>{path} report {v}</title><link>http://example.org{path}/{v}</link>"
            f"<guid>{path}/{v}</guid><pubDate>{formatdate(usegmt=True)}</pubDate>"
            f"<description>Report {v} of {path} on regional security and cooperation.</description></item>"
            for v in range(version, max(-1, version - 3), -1))
        return 200, (f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>{path}</title>'
                     f"<link>http://example.org/</link>{items}</channel></rss>").encode(), tag


def handler(feeds: Feeds) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            status, body, tag = feeds.answer(self.path, self.headers.get("If-None-Match"))
            self.send_response(status)
            if tag:
                self.send_header("ETag", tag)
            if status == 200:
                self.send_header("Content-Type", "application/rss+xml; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if status == 200:
                self.wfile.write(body)

    return Handler


def host_address(h: int) -> str:
    return f"127.0.{2 + h // 250}.{1 + h % 250}"


def serve(feeds: Feeds, sources: int, hosts: int) -> tuple[list[Server], list[tuple[str, str]]]:
    servers, urls = [], []
    for h in range(hosts):
        server = Server((host_address(h), 0), handler(feeds))
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.5}, daemon=True).start()
        servers.append(server)
    for n in range(sources):
        h = n % hosts
        path = f"/f/{n}"
        feeds.version[path] = 0
        urls.append((f"r{n:06d}", f"http://{host_address(h)}:{servers[h].server_address[1]}{path}"))
    return servers, urls


def write_config(tmp: Path, db_url: str, urls: list[tuple[str, str]], interval: float) -> Path:
    sources = "".join(f'[[sources]]\nid = "{sid}"\nurl = "{url}"\nallow_private = true\n\n' for sid, url in urls)
    path = tmp / "newsmon.toml"
    path.write_text(f"""
[storage]
url = "{db_url}"

[crawl]
interval = "{int(interval)}s"
timeout = "20s"
obey_robots = false
fetch_articles = false
jitter = 0.0

[daemon]
tick = "1s"
lease = "120s"

{sources}
[[organisations]]
id = "CICA"
name = "Conference on Interaction and Confidence-Building Measures in Asia"
aliases = ["CICA"]
""", encoding="utf-8")
    return path


def seed(engine, urls: list[tuple[str, str]], start: datetime, interval: float) -> dict[str, datetime]:  # noqa: ANN001
    """The sources as after a first poll: ETag of version 0, next polls spread over one interval."""
    rand = random.Random(3)
    due = {sid: start + timedelta(seconds=rand.uniform(0, interval)) for sid, _ in urls}
    raw = engine.raw_connection()
    try:
        cursor = raw.driver_connection.cursor()
        columns = ("id, name, kind, url, host, enabled, interval_seconds, etag, had_items, next_poll_at, "
                   "last_poll_at, last_success_at, failures, created_at")
        with cursor.copy(f"COPY sources ({columns}) FROM STDIN") as copy:
            for sid, url in urls:
                host = url.split("//")[1].split(":")[0]
                copy.write_row((sid, "", "feed", url, host, True, interval, '"v0"', True, due[sid],
                                start - timedelta(seconds=interval), start - timedelta(seconds=interval), 0,
                                start - timedelta(days=1)))
        raw.commit()
    finally:
        raw.close()
    return due


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and of its children that ended (waited for)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and its live children, in MB."""
    total = 0
    pids = [pid]
    try:
        pids += [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def live_children_cpu(pid: int) -> float:
    try:
        children = [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return 0.0
    return sum(cpu_seconds(c) for c in children)


def pg_stats(engine) -> tuple[int, int]:  # noqa: ANN001
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_stat_clear_snapshot()"))
        row = conn.execute(text("SELECT xact_commit, tup_inserted + tup_updated + tup_deleted FROM pg_stat_database "
                                "WHERE datname = current_database()")).one()
    return int(row[0]), int(row[1])


def lateness(engine, due: dict[str, datetime], since: datetime, until: datetime,  # noqa: ANN001
             interval: float) -> tuple[list[float], int]:
    """Seconds each poll started after its due time; plus sources due before ``until`` and
    not polled by then (their wait so far is counted as well)."""
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT source_id, started_at, finished_at FROM fetch_log "
                                 "WHERE started_at >= :a ORDER BY source_id, started_at"), {"a": since}).all()
    late, last_end = [], {}
    for source, started, finished in rows:
        if started > until:
            continue
        expected = last_end[source] + timedelta(seconds=interval) if source in last_end else due[source]
        late.append(max(0.0, (started - expected).total_seconds()))
        last_end[source] = finished
    waiting = 0
    for source, at in due.items():
        expected = last_end[source] + timedelta(seconds=interval) if source in last_end else at
        if expected < until:
            late.append((until - expected).total_seconds())
            waiting += 1
    return late, waiting


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", type=int, default=100_000)
    parser.add_argument("--hosts", type=int, default=500)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--duration", type=float, default=600.0)
    parser.add_argument("--interval", type=float, default=600.0)
    parser.add_argument("--startup", type=float, default=120.0, help="seconds allowed for the workers to start")
    parser.add_argument("--pg-url", default=os.environ.get("NEWSMON_TEST_PG_URL"))
    args = parser.parse_args()
    if not args.pg_url:
        sys.exit("set NEWSMON_TEST_PG_URL (or --pg-url) to a PostgreSQL server")
    feeds = Feeds()
    servers, urls = serve(feeds, args.sources, args.hosts)
    db_url = new_database(args.pg_url)
    engine = make_engine(db_url)
    print(f"{args.sources:,} sources on {args.hosts} loopback hosts, interval {args.interval:.0f} s, "
          f"{args.workers} workers, {args.duration:.0f} s; {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}",
          flush=True)
    try:
        start = datetime.now(UTC) + timedelta(seconds=args.startup)
        due = seed(engine, urls, start, args.interval)
        with tempfile.TemporaryDirectory(prefix="bench-rehearsal-") as tmp:
            config = write_config(Path(tmp), db_url, urls, args.interval)
            procs = start_workers(config, args.workers, Path(tmp))
            try:
                time.sleep(max(0.0, (start - datetime.now(UTC)).total_seconds()))
                began = time.monotonic()
                cpu0 = [cpu_seconds(p.pid) + live_children_cpu(p.pid) for p in procs]
                pg0 = pg_stats(engine)
                peak = [0.0] * len(procs)
                while time.monotonic() - began < args.duration:
                    time.sleep(2.0)
                    peak = [max(m, tree_rss_mb(p.pid)) for m, p in zip(peak, procs, strict=True)]
                seconds = time.monotonic() - began
                cpu1 = [cpu_seconds(p.pid) + live_children_cpu(p.pid) for p in procs]
                pg1 = pg_stats(engine)
                until = datetime.now(UTC)
                with engine.connect() as conn:
                    polls = dict(conn.execute(text(
                        "SELECT worker_id, count(*) FROM fetch_log WHERE started_at >= :a AND started_at <= :b "
                        "GROUP BY worker_id"), {"a": start, "b": until}).all())
                    workers = dict(conn.execute(text("SELECT pid, id FROM workers")).all())
            finally:
                stop_workers(procs)
                logs = [(Path(tmp) / f"worker{i}.log").read_text(errors="replace")[-2000:] for i in range(len(procs))]
        late, waiting = lateness(engine, due, start, until, args.interval)
        due_in_run = sum(1 for at in due.values() if at <= until)
        print(f"\nrun {seconds:.0f} s; {due_in_run:,} sources due in it; requests {feeds.requests:,} "
              f"(new items on {feeds.changed:,})")
        print("| worker | polls/s | CPU (share of one core) | peak RSS MB (with its crawl process) |")
        print("|---|---|---|---|")
        total = 0
        for n, p in enumerate(procs):
            wid = workers.get(p.pid)
            count = polls.get(wid, 0)
            total += count
            print(f"| {n + 1} | {count / seconds:.1f} | {(cpu1[n] - cpu0[n]) / seconds:.2f} | {peak[n]:.0f} |")
        print(f"| all | {total / seconds:.1f} | {sum(cpu1) - sum(cpu0):.0f} s CPU | |")
        commits, rows = (pg1[0] - pg0[0]) / seconds, (pg1[1] - pg0[1]) / seconds
        print(f"\nPostgreSQL: {commits:.0f} commits/s, {rows:.0f} rows written/s "
              f"({commits / max(total / seconds, 1e-9):.2f} commits and {rows / max(total / seconds, 1e-9):.1f} "
              "rows per poll)")
        if late:
            cuts = statistics.quantiles(late, n=100, method="inclusive") if len(late) > 1 else [late[0]] * 99
            print(f"lateness after due time: p50 {cuts[49]:.1f} s, p95 {cuts[94]:.1f} s, max {max(late):.1f} s "
                  f"({len(late):,} polls and waits; {waiting:,} sources due and not yet polled at the end)")
        for n, log in enumerate(logs):
            if "ERROR" in log or "Traceback" in log:
                print(f"worker {n + 1} log tail:\n{log}")
    finally:
        engine.dispose()
        drop_database(args.pg_url, db_url)
        for server in servers:
            server.shutdown()
            server.server_close()


if __name__ == "__main__":
    main()
