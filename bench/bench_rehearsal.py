"""A 100,000-source rehearsal: 3 `newsmon run` workers on one PostgreSQL poll 100,000 feeds on
loopback hosts at a 10-minute interval; most answers are 304, 1 % of requests publish a new item.

The feeds are served by one asyncio process of their own (its CPU is reported apart) listening
on ``--hosts`` loopback addresses (127.77.x.y: each a distinct host for the workers' per-host
politeness), ``--sources / --hosts`` feeds each. The sources are stored beforehand as after a
first poll (ETag known); once every worker has started (loaded the configuration, synced the
sources, registered) their next polls are set, spread evenly over the first interval from
then, so the run is the steady state and worker start-up is not counted as lateness.

Reported over the run, per worker: polls/s, CPU (its own and its crawl subprocesses', from
/proc), peak RSS (the same processes); PostgreSQL commits/s and rows written/s
(pg_stat_database) and the CPU of its processes; the lateness of polls after their due time
(due = the set next poll for a source's first poll, the previous poll's end + interval after;
"recorded" = the fetch log's finished_at, "round start" = its started_at; a source due and not
polled at the end counts with its wait so far).

    NEWSMON_TEST_PG_URL=postgresql+psycopg://… .venv/bin/python bench/bench_rehearsal.py
        [--sources 100000] [--hosts 5000] [--workers 3] [--duration 600] [--interval 600]
        [--batch-size 1000] [--processes 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from email.utils import formatdate
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import text  # noqa: E402

from bench.bench_scaleout import drop_database, new_database, start_workers, stop_workers  # noqa: E402
from storage.db import make_engine  # noqa: E402

NEW = 0.01  # share of requests that find a new item
FAR = timedelta(days=30)  # next polls sit this far ahead until every worker has started


# --- the feed server (a process of its own) ---------------------------------------------------------


def host_address(h: int) -> str:
    return f"127.77.{h // 250}.{1 + h % 250}"


def feed_body(path: str, version: int) -> bytes:
    items = "".join(
        f"<item><title>{path} report {v}</title><link>http://example.org{path}/{v}</link>"
        f"<guid>{path}/{v}</guid><pubDate>{formatdate(usegmt=True)}</pubDate>"
        f"<description>Report {v} of {path} on regional security and cooperation.</description></item>"
        for v in range(version, max(-1, version - 3), -1))
    return (f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>{path}</title>'
            f"<link>http://example.org/</link>{items}</channel></rss>").encode()


def run_server(sources: int, hosts: int) -> None:
    """Serve /f/N (N < sources) on every host address; ETag "vK" for version K of a feed; a
    request publishes version K+1 with probability NEW. Prints the port, then on stdin's end
    the request counts as JSON."""
    version = [0] * sources
    counts = {"requests": 0, "changed": 0, "not_modified": 0}
    rand = random.Random(11)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                path = lines[0].split(" ")[1]
                etag = next((line.split(":", 1)[1].strip() for line in lines[1:]
                             if line.lower().startswith("if-none-match:")), None)
                try:
                    n = int(path.rsplit("/", 1)[1])
                    known = path.startswith("/f/") and 0 <= n < sources
                except ValueError:
                    known = False
                if not known:
                    writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                    continue
                counts["requests"] += 1
                if rand.random() < NEW:
                    version[n] += 1
                    counts["changed"] += 1
                tag = f'"v{version[n]}"'
                if etag == tag:
                    counts["not_modified"] += 1
                    writer.write(f"HTTP/1.1 304 Not Modified\r\nETag: {tag}\r\nContent-Length: 0\r\n\r\n".encode())
                else:
                    body = feed_body(path, version[n])
                    writer.write(f"HTTP/1.1 200 OK\r\nETag: {tag}\r\nContent-Type: application/rss+xml; "
                                 f"charset=utf-8\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError, IndexError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        addresses = [host_address(h) for h in range(hosts)]
        for port in range(18100, 18200):
            try:
                server = await asyncio.start_server(handle, host=addresses, port=port, backlog=256)
                break
            except OSError:
                continue
        else:
            raise SystemExit("no free port on the bench's loopback addresses")
        print(port, flush=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.read)  # the bench closes stdin at the end
        print(json.dumps(counts), flush=True)
        server.close()

    asyncio.run(main())


def start_server(sources: int, hosts: int) -> tuple[subprocess.Popen[str], int]:
    process = subprocess.Popen([sys.executable, __file__, "--serve", str(sources), str(hosts)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.strip().isdigit():
        process.kill()
        raise SystemExit(f"the feed server did not start: {line!r}")
    return process, int(line)


def stop_server(process: subprocess.Popen[str]) -> dict[str, int]:
    assert process.stdin is not None and process.stdout is not None
    process.stdin.close()
    try:
        counts: dict[str, int] = json.loads(process.stdout.readline() or "{}")
    finally:
        process.wait(timeout=30)
    return counts


# --- set-up ------------------------------------------------------------------------------------------


def source_urls(sources: int, hosts: int, port: int) -> list[tuple[str, str]]:
    return [(f"r{n:06d}", f"http://{host_address(n % hosts)}:{port}/f/{n}") for n in range(sources)]


def write_config(tmp: Path, db_url: str, urls: list[tuple[str, str]], interval: float, *,
                 batch_size: int, processes: int) -> Path:
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
processes = {processes}

[daemon]
tick = "1s"
lease = "120s"
batch_size = {batch_size}

[server]
enabled = false

{sources}
[[organisations]]
id = "CICA"
name = "Conference on Interaction and Confidence-Building Measures in Asia"
aliases = ["CICA"]
""", encoding="utf-8")
    return path


def seed(engine: Any, urls: list[tuple[str, str]], parked: datetime, interval: float) -> None:
    """The sources as after a first poll (ETag of version 0), their next polls parked far ahead."""
    raw = engine.raw_connection()
    try:
        cursor = raw.driver_connection.cursor()
        columns = ("id, name, kind, url, host, enabled, interval_seconds, etag, had_items, next_poll_at, "
                   "last_poll_at, last_success_at, failures, created_at")
        rand = random.Random(3)
        with cursor.copy(f"COPY sources ({columns}) FROM STDIN") as copy:
            for sid, url in urls:
                host = url.split("//")[1].split(":")[0]
                copy.write_row((sid, "", "feed", url, host, True, interval, '"v0"', True,
                                parked + timedelta(seconds=rand.uniform(0, interval)),
                                parked - timedelta(seconds=interval), parked - timedelta(seconds=interval), 0,
                                parked - timedelta(days=1)))
        raw.commit()
    finally:
        raw.close()


def wait_ready(engine: Any, procs: list[subprocess.Popen[bytes]], timeout: float) -> float:
    """Seconds until every worker has registered (configuration loaded, sources synced)."""
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        if any(p.poll() is not None for p in procs):
            raise SystemExit("a worker exited during start-up")
        with engine.connect() as conn:
            live = conn.execute(text("SELECT count(*) FROM workers WHERE stopped_at IS NULL")).scalar_one()
        if live >= len(procs):
            return time.monotonic() - began
        time.sleep(1.0)
    raise SystemExit(f"the workers did not start within {timeout:.0f} s")


def release(engine: Any, start: datetime, parked: datetime) -> dict[str, datetime]:
    """Move the parked next polls to start from ``start``; returns each source's due time."""
    with engine.begin() as conn:
        rows = conn.execute(text("UPDATE sources SET next_poll_at = next_poll_at - :shift "
                                 "RETURNING id, next_poll_at"), {"shift": parked - start}).all()
    return {sid: at for sid, at in rows}


# --- measurements ------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and of its children that ended (waited for)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def tree_cpu(pid: int) -> float:
    """CPU of a process, its ended children and its live children (one level)."""
    return cpu_seconds(pid) + sum(cpu_seconds(c) for c in children(pid))


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and its live children, in MB."""
    total = 0
    for p in [pid, *children(pid)]:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def postmaster_pid(engine: Any) -> int | None:
    """The PostgreSQL server's pid when it runs on this machine (its CPU is then reported)."""
    try:
        with engine.connect() as conn:
            directory = conn.execute(text("SHOW data_directory")).scalar_one()
        return int((Path(directory) / "postmaster.pid").read_text().split()[0])
    except Exception:  # another user's server, or not readable: not reported
        return None


def pg_stats(engine: Any) -> tuple[int, int]:
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_stat_clear_snapshot()"))
        row = conn.execute(text("SELECT xact_commit, tup_inserted + tup_updated + tup_deleted FROM pg_stat_database "
                                "WHERE datname = current_database()")).one()
    return int(row[0]), int(row[1])


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def lateness(rows: list[Any], due: dict[str, datetime], until: datetime, interval: float,
             column: int) -> tuple[list[float], int]:
    """Seconds each poll came after its due time (``column`` 1: the fetch log's started_at, 2:
    finished_at); plus sources due before ``until`` and not polled by then (their wait so far
    is counted as well)."""
    late, last_end = [], {}
    for row in rows:
        source, finished = row[0], row[2]
        if row[column] > until:
            continue
        expected = last_end[source] + timedelta(seconds=interval) if source in last_end else due[source]
        late.append(max(0.0, (row[column] - expected).total_seconds()))
        last_end[source] = finished
    waiting = 0
    for source, at in due.items():
        expected = last_end[source] + timedelta(seconds=interval) if source in last_end else at
        if expected < until:
            late.append((until - expected).total_seconds())
            waiting += 1
    return late, waiting


def percentiles(values: list[float]) -> str:
    if not values:
        return "no polls due"
    cuts = statistics.quantiles(values, n=100, method="inclusive") if len(values) > 1 else [values[0]] * 99
    return f"p50 {cuts[49]:.1f} s, p95 {cuts[94]:.1f} s, max {max(values):.1f} s"


# --- the run -----------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> None:
    server, port = start_server(args.sources, args.hosts)
    urls = source_urls(args.sources, args.hosts, port)
    db_url = new_database(args.pg_url)
    engine = make_engine(db_url)
    postmaster = postmaster_pid(engine)
    print(f"{args.sources:,} sources on {args.hosts:,} loopback hosts, interval {args.interval:.0f} s, "
          f"{args.workers} workers (batch_size {args.batch_size}, processes {args.processes}), "
          f"{args.duration:.0f} s; {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}", flush=True)
    counts: dict[str, int] = {}
    try:
        parked = datetime.now(UTC) + FAR
        seed(engine, urls, parked, args.interval)
        with tempfile.TemporaryDirectory(prefix="bench-rehearsal-") as tmp:
            config = write_config(Path(tmp), db_url, urls, args.interval, batch_size=args.batch_size,
                                  processes=args.processes)
            procs = start_workers(config, args.workers, Path(tmp))
            try:
                ready = wait_ready(engine, procs, args.startup)
                start = datetime.now(UTC) + timedelta(seconds=2)
                due = release(engine, start, parked)
                print(f"workers ready after {ready:.0f} s; load {os.getloadavg()[0]:.1f}", flush=True)
                time.sleep(max(0.0, (start - datetime.now(UTC)).total_seconds()))
                began = time.monotonic()
                cpu0 = [tree_cpu(p.pid) for p in procs]
                aside0 = (tree_cpu(server.pid), tree_cpu(postmaster) if postmaster else 0.0, machine_busy())
                pg0 = pg_stats(engine)
                peak = [0.0] * len(procs)
                while time.monotonic() - began < args.duration:
                    time.sleep(2.0)
                    peak = [max(m, tree_rss_mb(p.pid)) for m, p in zip(peak, procs, strict=True)]
                seconds = time.monotonic() - began
                cpu1 = [tree_cpu(p.pid) for p in procs]
                aside1 = (tree_cpu(server.pid), tree_cpu(postmaster) if postmaster else 0.0, machine_busy())
                pg1 = pg_stats(engine)
                until = datetime.now(UTC)
                load_after = os.getloadavg()[0]
                with engine.connect() as conn:
                    polls = dict(conn.execute(text(
                        "SELECT worker_id, count(*) FROM fetch_log WHERE started_at >= :a AND finished_at <= :b "
                        "GROUP BY worker_id"), {"a": start, "b": until}).all())
                    workers = dict(conn.execute(text("SELECT pid, id FROM workers")).all())
                    outcomes = conn.execute(text(
                        "SELECT outcome, coalesce(error_class, ''), count(*), "
                        "avg(extract(epoch FROM finished_at - started_at)) FROM fetch_log "
                        "WHERE started_at >= :a AND finished_at <= :b GROUP BY 1, 2 ORDER BY 3 DESC"),
                        {"a": start, "b": until}).all()
                    log = conn.execute(text("SELECT source_id, started_at, finished_at FROM fetch_log "
                                            "WHERE started_at >= :a ORDER BY source_id, started_at"),
                                       {"a": start}).all()
            finally:
                exited = [p.poll() for p in procs]  # a worker that died during the run
                stop_workers(procs)
                logs = [(Path(tmp) / f"worker{i}.log").read_text(errors="replace") for i in range(len(procs))]
                if args.keep_logs:
                    for i, text_ in enumerate(logs):
                        (Path(args.keep_logs) / f"worker{i}.log").write_text(text_, encoding="utf-8")
        counts = stop_server(server)
        report(args, seconds, procs, workers, polls, cpu0, cpu1, peak, pg0, pg1, aside0, aside1,
               outcomes, log, due, until, counts, load_after)
        for n, text_ in enumerate(logs):
            if "ERROR" in text_ or "Traceback" in text_ or exited[n] is not None:
                print(f"worker {n + 1} (exit status {exited[n]}) log tail:\n{text_[-2000:]}")
    finally:
        if server.poll() is None:
            server.kill()
        engine.dispose()
        drop_database(args.pg_url, db_url)


def report(args: argparse.Namespace, seconds: float, procs: list[Any], workers: dict[int, str],
           polls: dict[str, int], cpu0: list[float], cpu1: list[float], peak: list[float],
           pg0: tuple[int, int], pg1: tuple[int, int], aside0: Any, aside1: Any, outcomes: list[Any],
           log: list[Any], due: dict[str, datetime], until: datetime, counts: dict[str, int],
           load_after: float) -> None:
    due_in_run = sum(1 for at in due.values() if at <= until)
    print(f"\nrun {seconds:.0f} s; {due_in_run:,} sources due in it ({due_in_run / seconds:.1f}/s); "
          f"feed server: {counts.get('requests', 0):,} requests, {counts.get('not_modified', 0):,} answered 304, "
          f"new items on {counts.get('changed', 0):,}; load average at the end {load_after:.1f}")
    print("| worker | polls/s | CPU (cores, with its crawl processes) | CPU ms per poll "
          "| peak RSS MB (with its crawl process) |")
    print("|---|---|---|---|---|")
    total = 0
    for n, p in enumerate(procs):
        count = polls.get(workers.get(p.pid, ""), 0)
        total += count
        cpu = cpu1[n] - cpu0[n]
        print(f"| {n + 1} | {count / seconds:.1f} | {cpu / seconds:.2f} | {1000 * cpu / max(count, 1):.1f} | "
              f"{peak[n]:.0f} |")
    cpu = sum(cpu1) - sum(cpu0)
    print(f"| all | {total / seconds:.1f} | {cpu / seconds:.2f} | {1000 * cpu / max(total, 1):.1f} | |")
    rate = max(total / seconds, 1e-9)
    commits, rows = (pg1[0] - pg0[0]) / seconds, (pg1[1] - pg0[1]) / seconds
    busy = (aside1[2][0] - aside0[2][0]) / max(1, aside1[2][1] - aside0[2][1]) * (os.cpu_count() or 1)
    print(f"\nPostgreSQL: {commits:.0f} commits/s, {rows:.0f} rows written/s ({commits / rate:.2f} commits and "
          f"{rows / rate:.1f} rows per poll); its processes {(aside1[1] - aside0[1]) / seconds:.2f} cores. "
          f"Feed server {(aside1[0] - aside0[0]) / seconds:.2f} cores. Whole machine busy {busy:.2f} of "
          f"{os.cpu_count()} cores (other jobs included).")
    print("outcomes: " + "; ".join(f"{o}{' ' + c if c else ''} {n:,} (round start to recorded {d:.1f} s)"
                                   for o, c, n, d in outcomes))
    for column, name in ((2, "recorded"), (1, "round start")):
        late, waiting = lateness(log, due, until, args.interval, column)
        print(f"lateness after due time ({name}): {percentiles(late)} ({len(late):,} polls and waits; "
              f"{waiting:,} sources due and not yet polled at the end)")


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--serve":
        run_server(int(sys.argv[2]), int(sys.argv[3]))
        return
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", type=int, default=100_000)
    parser.add_argument("--hosts", type=int, default=5_000)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--duration", type=float, default=600.0)
    parser.add_argument("--interval", type=float, default=600.0)
    parser.add_argument("--batch-size", type=int, default=1000, help="[daemon] batch_size of the workers")
    parser.add_argument("--processes", type=int, default=1, help="[crawl] processes of the workers")
    parser.add_argument("--startup", type=float, default=600.0, help="seconds allowed for the workers to start")
    parser.add_argument("--keep-logs", metavar="DIR", help="copy the workers' logs into DIR")
    parser.add_argument("--pg-url", default=os.environ.get("NEWSMON_TEST_PG_URL"))
    args = parser.parse_args()
    if not args.pg_url:
        sys.exit("set NEWSMON_TEST_PG_URL (or --pg-url) to a PostgreSQL server")
    run(args)


if __name__ == "__main__":
    main()
