"""`newsmon import` throughput on SQLite and PostgreSQL, against a plain-driver baseline.

Generates N export records (Russian and English titles and texts of a few hundred words, ~30 %
with a match, 1–2 versions, ~20 % carried by two sources) into a JSONL file, then times
`newsmon import FILE` (a subprocess) into a fresh, migrated database, and in its own process a
baseline: plain sqlite3 / psycopg reading the same file and inserting the same item and
version rows with ``executemany`` (no identity lookups, no FTS, no ORM), committing every
1,000 records. Reports wall and CPU seconds (the client process: the PostgreSQL server's CPU
is not counted) and items/s.

    .venv/bin/python bench/bench_import.py               # 200,000 records
    .venv/bin/python bench/bench_import.py --count 50000
    .venv/bin/python bench/bench_import.py --quick       # 20,000 records
    NEWSMON_BENCH_PG_URL=postgresql+psycopg://postgres@127.0.0.1:5432/postgres  (the server;
    without it the PostgreSQL half is skipped; NEWSMON_TEST_PG_URL is used when set)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# `newsmon` of this checkout (the code beside this script, whichever checkout is installed)
NEWSMON = [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(ROOT)!r}); "
           "from scheduler.cli import cli; cli(prog_name='newsmon')"]

RU = ("министр иностранных дел встреча посол сотрудничество безопасность экономика переговоры визит "
      "заявление делегация саммит форум председательство азия регион торговля энергетика транспорт "
      "культура образование совещание стороны обсудили вопросы развития партнерства меры доверия "
      "международной конференции взаимодействия республики казахстан россия китай индия заместитель "
      "генерального секретаря представители государств участников подчеркнули важность укрепления "
      "мира стабильности рамках организации прошли консультации экспертов подписали меморандум "
      "проект соглашения инвестиции инфраструктура цифровизация продовольственной климата воды").split()
EN = ("minister foreign affairs meeting ambassador cooperation security trade summit forum visit "
      "region delegation statement conference member states discussed issues development partnership "
      "confidence building measures secretariat deputy secretary general representatives stressed "
      "importance strengthening peace stability within framework organisation consultations experts "
      "signed memorandum draft agreement investment infrastructure digital food climate water energy").split()
ORGS = ["CICA", "SCO", "CSTO", "CIS", "EAEU", "BRICS", "OTS"]


def _text(rng: random.Random, vocabulary: list[str], words: int) -> str:
    out = []
    for n in range(words):
        word = rng.choice(vocabulary)
        if rng.random() < 0.15:
            word += rng.choice(("а", "ы", "ов", "ами", "s", "ed", "ing")) if vocabulary is RU else rng.choice(
                ("s", "ed", "ing"))
        out.append(word.capitalize() if n % 14 == 0 else word + ("." if n % 14 == 13 else ""))
    return " ".join(out)


def make_record(n: int, rng: random.Random, start: datetime) -> dict:
    vocabulary = RU if rng.random() < 0.7 else EN
    site = f"news{n % 40}"
    url = f"https://{site}.example/{start.year}/{n}"
    seen = start + timedelta(minutes=n * 3)
    versions = []
    for number in range(1, 2 + (rng.random() < 0.3)):
        title, text = _text(rng, vocabulary, rng.randint(6, 12)), _text(rng, vocabulary, rng.randint(200, 450))
        fetched = seen + timedelta(hours=number - 1)
        versions.append({"version": number, "title": title, "text": text,
                         "content_hash": "sha256:" + uuid.UUID(int=rng.getrandbits(128)).hex,
                         "fetched_at": fetched.isoformat(), "published_at": seen.isoformat()})
    sources = [f"src-{n % 40}"] + ([f"src-{(n + 7) % 40}"] if rng.random() < 0.2 else [])
    orgs = rng.sample(ORGS, k=rng.randint(1, 2)) if rng.random() < 0.3 else []
    last = versions[-1]
    return {"id": n + 1, "source": sources[0], "sources": sources, "url": url + "?utm_source=rss",
            "canonical_url": url, "guid": f"urn:{site}:{n}", "title": last["title"], "text": last["text"],
            "language": "ru" if vocabulary is RU else "en", "published_at": seen.isoformat(),
            "first_seen_at": seen.isoformat(), "updated_at": last["fetched_at"], "version": len(versions),
            "content_hash": last["content_hash"], "story_id": n // 3 if n % 5 == 0 else n + 1_000_000,
            "matches": [{"organisation": o, "alias": o, "form": o, "snippet": f"... {o} ...",
                         "start": 0, "end": len(o)} for o in orgs],
            "versions": versions}


def generate(path: Path, count: int) -> None:
    rng = random.Random(11)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    with path.open("w", encoding="utf-8") as out:
        for n in range(count):
            out.write(json.dumps(make_record(n, rng, start), ensure_ascii=False) + "\n")


def timed(command: list[str], **kwargs) -> tuple[float, float, subprocess.CompletedProcess]:
    """Wall and CPU (user + sys) seconds of a child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, **kwargs)
    wall = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{command[:3]} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), done


# --- the baseline (run as `bench_import.py --baseline sqlite|postgresql URL FILE`) -------------

BASE_ITEMS = ("CREATE TABLE base_items (id BIGINT PRIMARY KEY, source_id TEXT, url TEXT, "
              "canonical_url TEXT, guid TEXT, title TEXT, text TEXT, language TEXT, published_at TEXT, "
              "first_seen_at TEXT, version INTEGER, content_hash TEXT)")
BASE_VERSIONS = ("CREATE TABLE base_versions (id BIGINT PRIMARY KEY, item_id BIGINT, version INTEGER, "
                 "fetched_at TEXT, title TEXT, text TEXT, content_hash TEXT)")


def baseline(kind: str, url: str, path: Path) -> None:
    if kind == "sqlite":
        import sqlite3
        conn = sqlite3.connect(url)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        mark = "?"
    else:
        import psycopg
        conn = psycopg.connect(url)
        mark = "%s"
    conn.execute(BASE_ITEMS)
    conn.execute(BASE_VERSIONS)
    conn.commit()
    insert_item = f"INSERT INTO base_items VALUES ({', '.join([mark] * 12)})"
    insert_version = f"INSERT INTO base_versions VALUES ({', '.join([mark] * 7)})"
    items, versions, next_version = [], [], 0

    def flush() -> None:
        cursor = conn.cursor()
        cursor.executemany(insert_item, items)
        cursor.executemany(insert_version, versions)
        conn.commit()
        items.clear()
        versions.clear()

    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            r = json.loads(line)
            items.append((number, r["source"], r["url"], r["canonical_url"], r["guid"], r["title"], r["text"],
                          r["language"], r["published_at"], r["first_seen_at"], r["version"], r["content_hash"]))
            for v in r["versions"]:
                next_version += 1
                versions.append((next_version, number, v["version"], v["fetched_at"], v["title"], v["text"],
                                 v["content_hash"]))
            if len(items) >= 1000:
                flush()
    flush()
    conn.close()


# --- the run -----------------------------------------------------------------------------------


def fresh_pg(server: str) -> tuple[str, str]:
    """A new empty database on the server: (SQLAlchemy URL, libpq URL)."""
    from sqlalchemy import create_engine, make_url, text
    name = f"bench_import_{uuid.uuid4().hex[:8]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    url = make_url(server).set(database=name)
    return url.render_as_string(hide_password=False), url.set(drivername="postgresql").render_as_string(
        hide_password=False)


def drop_pg(server: str, url: str) -> None:
    from sqlalchemy import create_engine, make_url, text
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)'))
    admin.dispose()


def run_newsmon(url: str, data: Path, tmp: Path, count: int,
                server: str | None = None) -> tuple[float, float, str, float | None]:
    from storage.db import make_engine, upgrade
    engine = make_engine(url)
    upgrade(engine)  # migrated before the clock starts: the import alone is timed
    engine.dispose()
    config = tmp / f"newsmon-{uuid.uuid4().hex[:6]}.toml"
    config.write_text(f'[storage]\nurl = "{url}"\n', encoding="utf-8")
    before = server_cpu(server) if server else None
    wall, cpu, done = timed([*NEWSMON, "--config", str(config), "import", str(data)])
    after = server_cpu(server) if server else None
    summary = done.stderr.strip().splitlines()[-1]
    if f"imported {count} new items" not in summary:
        raise SystemExit(f"unexpected import report: {summary}")
    return wall, cpu, summary, after - before if before is not None and after is not None else None


def row(label: str, count: int, wall: float, cpu: float, server: float | None, base_wall: float | None) -> str:
    ratio = f"{wall / base_wall:.2f}×" if base_wall else "1×"
    server_cpu = "" if server is None else f"{server:.1f}"
    return f"| {label} | {wall:.1f} | {cpu:.1f} | {server_cpu} | {count / wall:,.0f} | {ratio} |"


def _ticks(pid: str) -> int:
    """utime + stime + cutime + cstime of a process (its own CPU and that of its reaped children)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15])


def server_cpu(server: str) -> float | None:
    """CPU seconds used so far by the PostgreSQL cluster (its postmaster and every backend and
    worker, live or ended), when it runs on this machine and /proc shows it; else None."""
    from sqlalchemy import create_engine, text
    engine = create_engine(server)
    try:
        with engine.connect() as conn:
            data = conn.execute(text("SHOW data_directory")).scalar()
        postmaster = (Path(str(data)) / "postmaster.pid").read_text().split()[0]
        children = [p.name for p in Path("/proc").iterdir() if p.name.isdigit()
                    and _parent(p.name) == postmaster]
        return sum(_ticks(pid) for pid in [postmaster, *children]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None
    finally:
        engine.dispose()


def _parent(pid: str) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]
    except OSError:
        return None


def load() -> str:
    return "load average " + " ".join(f"{v:.1f}" for v in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=200_000)
    parser.add_argument("--quick", action="store_true", help="20,000 records")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--baseline", nargs=3, metavar=("KIND", "URL", "FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline:
        kind, url, file = args.baseline
        baseline(kind, url, Path(file))
        return
    count = 20_000 if args.quick else args.count
    server = os.environ.get("NEWSMON_BENCH_PG_URL") or os.environ.get("NEWSMON_TEST_PG_URL")
    backends = args.backends.split(",")
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        data = tmp / "export.jsonl"
        began = time.perf_counter()
        generate(data, count)
        size = data.stat().st_size / 1e6
        print(f"\n{count:,} records, {size:,.0f} MB of JSONL (generated in {time.perf_counter() - began:.0f} s)\n")
        print(f"{load()} at the start")
        print("| run | wall s | CPU s (client) | CPU s (PostgreSQL server) | items/s | wall ratio to baseline |")
        print("|---|---|---|---|---|---|")
        for backend in backends:
            base_server = server_used = None
            if backend == "sqlite":
                base_wall, base_cpu, _ = timed([sys.executable, __file__, "--baseline", "sqlite",
                                                str(tmp / "baseline.db"), str(data)])
                wall, cpu, summary, _ = run_newsmon(f"sqlite:///{tmp / 'newsmon.db'}", data, tmp, count)
                label = "SQLite"
            elif server:
                base_url, base_libpq = fresh_pg(server)
                try:
                    before = server_cpu(server)
                    base_wall, base_cpu, _ = timed([sys.executable, __file__, "--baseline", "postgresql",
                                                    base_libpq, str(data)])
                    after = server_cpu(server)
                    base_server = after - before if before is not None and after is not None else None
                finally:
                    drop_pg(server, base_url)
                url, _ = fresh_pg(server)
                try:
                    wall, cpu, summary, server_used = run_newsmon(url, data, tmp, count, server)
                finally:
                    drop_pg(server, url)
                label = "PostgreSQL"
            else:
                print("| PostgreSQL | skipped: set NEWSMON_BENCH_PG_URL | | | | |")
                continue
            print(row(f"{label}: newsmon import (FTS maintained)", count, wall, cpu, server_used, base_wall))
            print(row(f"{label}: baseline, plain driver executemany (no FTS)", count, base_wall, base_cpu,
                      base_server, None))
            print(f"|  | ({summary}) | | | | |", flush=True)
        print(f"{load()} at the end")


if __name__ == "__main__":
    main()
