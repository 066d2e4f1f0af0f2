"""`status` and `/metrics` over a long fetch log, on SQLite and PostgreSQL: 10,000,000 generated
fetch-log rows (1,000 sources polled over 10 days, 3 workers) beside 20,000 items; each read
timed through the code that serves it (`status_dict` = `newsmon status --format json` and
`/api/status`; the `/metrics` collector), and, for comparison, a recount of the fetch log (what
both did before the rolled-up counters).

    .venv/bin/python bench/bench_status.py --pg-url postgresql+psycopg://…/postgres
    .venv/bin/python bench/bench_status.py --rows 1000000     # quicker
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine, text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_search import pg_database  # noqa: E402
from bench.searchdata import generate  # noqa: E402
from scheduler.web.metrics import make_registry, render  # noqa: E402
from storage.db import make_engine, make_session_factory, upgrade  # noqa: E402
from storage.partitions import create_day_partitions, is_partitioned  # noqa: E402
from storage.queries import status_dict  # noqa: E402
from storage.stats import recount_polls  # noqa: E402

SOURCES = 1000
WORKERS = ["bench-w1", "bench-w2", "bench-w3"]
DAYS = 10


def build(engine: Engine, rows: int) -> float:
    began = time.perf_counter()
    upgrade(engine)
    generate(engine, 20_000, progress=False)
    end = datetime.now(UTC).replace(microsecond=0)
    start = end - timedelta(days=DAYS)
    postgres = engine.dialect.name == "postgresql"
    with engine.begin() as conn:
        for i in range(40, SOURCES):
            conn.execute(text("INSERT INTO sources (id, name, kind, url, host, enabled, interval_seconds, failures, "
                              "had_items, created_at) VALUES (:id, :name, 'feed', :url, :host, true, 600, 0, true, "
                              ":at)"), {"id": f"src-{i}", "name": f"src-{i}", "url": f"https://news{i}.example/",
                                        "host": f"news{i}.example", "at": start})
        for worker in WORKERS:
            conn.execute(text("INSERT INTO workers (id, host, pid, started_at, heartbeat_at, polls) "
                              "VALUES (:id, 'bench', 1, :at, :at, 0)"), {"id": worker, "at": end})
        if postgres and is_partitioned(conn):
            create_day_partitions(conn, start, end)
    # generated in SQL (Python rows made SQLite's 10 M take 25 minutes): 80 % 304, 18 % 200, 2 % errors
    seconds = (end - start).total_seconds()
    chunk = 1_000_000
    for first in range(0, rows, chunk):
        last = min(rows, first + chunk)
        params = {"first": first, "last": last - 1, "start": start.timestamp(), "step": seconds / rows,
                  "sources": SOURCES}
        outcome = ("CASE WHEN (n * 7919) % 100 < 80 THEN 'not-modified' WHEN (n * 7919) % 100 < 98 THEN 'ok' "
                   "ELSE 'error' END")
        error = "CASE WHEN (n * 7919) % 100 = 98 THEN 'timeout' WHEN (n * 7919) % 100 = 99 THEN 'http-5xx' END"
        columns = ("source_id, started_at, finished_at, outcome, error_class, new, updated, unchanged, matched, "
                   "worker_id")
        values = (f"'src-' || (n % :sources), {{at}}, {{at}}, {outcome}, {error}, 0, 0, 0, 0, "
                  "'bench-w' || (n % 3 + 1)")
        with engine.begin() as conn:
            if postgres:
                at = "to_timestamp(:start + n * :step)"
                conn.execute(text(f"INSERT INTO fetch_log ({columns}) SELECT {values.format(at=at)} "
                                  "FROM generate_series(CAST(:first AS bigint), CAST(:last AS bigint)) AS n"), params)
            else:
                at = "strftime('%Y-%m-%d %H:%M:%f', :start + n * :step, 'unixepoch') || '000'"
                conn.execute(text(f"WITH RECURSIVE s(n) AS (SELECT :first UNION ALL SELECT n + 1 FROM s "
                                  f"WHERE n < :last) INSERT INTO fetch_log ({columns}) "
                                  f"SELECT {values.format(at=at)} FROM s"), params)
        print(f"\r  fetch log {last:,}/{rows:,}", end="", flush=True)
    print()
    with engine.begin() as conn:  # the counters, as migration 0004 fills them from an existing log
        conn.execute(text("DELETE FROM poll_counts"))
        conn.execute(text("INSERT INTO poll_counts (source_id, outcome, error_class, polls) "
                          "SELECT source_id, outcome, coalesce(error_class, ''), count(*) FROM fetch_log "
                          "GROUP BY source_id, outcome, coalesce(error_class, '')"))
        conn.execute(text("UPDATE workers SET polls = (SELECT count(*) FROM fetch_log "
                          "WHERE fetch_log.worker_id = workers.id)"))
    with engine.connect() as conn:
        if postgres:
            conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("VACUUM ANALYZE"))
        else:
            conn.exec_driver_sql("ANALYZE")
    return time.perf_counter() - began


def timed(fn, rounds: int) -> tuple[float, float]:  # noqa: ANN001
    samples = []
    for _ in range(rounds):
        began = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - began) * 1000)
    return statistics.median(samples), max(samples)


def measure(url: str, rounds: int) -> dict[str, tuple[float, float]]:
    engine = make_engine(url)
    sessions = make_session_factory(engine)
    registry = make_registry(sessions)

    def status() -> None:
        with sessions() as session:
            body = status_dict(session)
        assert len(body["sources"]) == SOURCES and len(body["workers"]) == len(WORKERS)

    def metrics() -> None:
        assert b"newsmon_polls_total" in render(registry)

    def recount() -> None:
        with sessions() as session:
            recount_polls(session)

    status(), metrics()  # warm
    out = {"status": timed(status, rounds), "/metrics": timed(metrics, rounds),
           "recount of the fetch log (before)": timed(recount, 1)}
    with engine.connect() as conn:
        out["fetch-log rows"] = (conn.execute(text("SELECT count(*) FROM fetch_log")).scalar(), 0)
    engine.dispose()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--pg-url")
    parser.add_argument("--db", type=Path, help="keep the SQLite database here (reused when it exists)")
    parser.add_argument("--keep", action="store_true", help="reuse the PostgreSQL bench database")
    args = parser.parse_args()
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    if not args.pg_url and "postgresql" in backends:
        backends.remove("postgresql")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for backend in backends:
            if backend == "sqlite":
                db = args.db or Path(tmp) / "status.db"
                url, fill = f"sqlite:///{db}", not db.exists()
            else:
                url, fill = pg_database(args.pg_url, f"bench_status_{args.rows}", fresh=not args.keep)
            print(f"{backend}: {'generating' if fill else 'reusing'} {args.rows:,} fetch-log rows")
            if fill:
                engine = make_engine(url)
                print(f"  built in {build(engine, args.rows):.0f} s")
                engine.dispose()
            results[backend] = measure(url, args.rounds)
    print(f"\n| read ({SOURCES:,} sources, {len(WORKERS)} workers) | "
          + " | ".join(f"{b} median ms | {b} max ms" for b in results) + " |")
    print("|---|" + "---|---|" * len(results))
    for name in ("status", "/metrics", "recount of the fetch log (before)"):
        print(f"| {name} | " + " | ".join(f"{results[b][name][0]:.0f} | {results[b][name][1]:.0f}"
                                         for b in results) + " |")
    print("| fetch-log rows | " + " | ".join(f"{results[b]['fetch-log rows'][0]:,} | " for b in results) + " |")


if __name__ == "__main__":
    main()
