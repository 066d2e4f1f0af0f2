"""Six newsmon processes — `run`, `serve`, `search`, `status`, `crawl` and `import` — started at
the same instant on a new and on an outdated database, SQLite and PostgreSQL: every one starts
(no "cannot open or migrate"), the schema ends current and whole, and nothing is lost.

``NEWSMON_CONCURRENT_START_REPEAT`` (default 1; 20 to soak) sets the repetitions per case."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, inspect, select

from storage.db import is_current, make_engine, make_session_factory, upgrade
from storage.models import Base, FetchLog, Item, ItemVersion, Source, StoryBand
from storage.repository import key_of
from tests.plugins.sites import Site, rss

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
REPEAT = int(os.environ.get("NEWSMON_CONCURRENT_START_REPEAT", "1"))
START_TIMEOUT = 90.0  # six interpreters importing Scrapy & co. on two shared CPUs

# Each process imports what its command needs, says it is ready and waits for the go file: the
# six then open the database within a millisecond or two of each other.
LAUNCHER = """
import importlib, os, sys, time
from scheduler.cli import cli
import alembic.command, storage.db
for module in sys.argv[3].split(","):
    importlib.import_module(module)
ready, go = sys.argv[1], sys.argv[2]
open(ready, "w").close()
while not os.path.exists(go):
    time.sleep(0.0005)
sys.argv = ["newsmon", *sys.argv[4:]]
cli()
"""

COMMANDS = {  # name: (arguments, modules it imports before it opens the database)
    "run": (["run"], "scheduler.daemon,scheduler.jobs"),
    "serve": (["serve", "--port", "0"], "uvicorn,scheduler.web.app"),
    "search": (["search", "--format", "json"], "storage.queries"),
    "status": (["status", "--format", "json"], "storage.queries"),
    "crawl": (["crawl"], "scheduler.daemon,scheduler.runner"),
    "import": (["import", "{backup}"], "storage.transfer"),
}
LONG_RUNNING = {"run": "newsmon daemon .* started", "serve": r"Uvicorn running on http://127\.0\.0\.1:(\d+)"}


def backup_records(prefix: str, count: int) -> list[dict]:
    when = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
    return [{"source": "archive", "url": f"https://example.org/{prefix}/{n}",
             "canonical_url": f"https://example.org/{prefix}/{n}", "title": f"СВМДА {prefix} {n}",
             "text": f"Совещание по взаимодействию и мерам доверия в Азии, {prefix} {n}.",
             "published_at": when.isoformat(), "first_seen_at": when.isoformat(), "language": "ru",
             "version": 1, "content_hash": f"sha256:{prefix}-{n}",
             "versions": [{"version": 1, "fetched_at": when.isoformat(), "title": f"СВМДА {prefix} {n}",
                           "text": f"Совещание по взаимодействию и мерам доверия в Азии, {prefix} {n}.",
                           "content_hash": f"sha256:{prefix}-{n}"}]}
            for n in range(count)]


@dataclass
class Started:
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := predicate():
            return result
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def start_together(tmp: Path, config: Path, backup: Path) -> dict[str, Started]:
    """Popen the six, wait until each has imported everything, then release them at once."""
    go = tmp / "go"
    started: dict[str, Started] = {}
    for name, (args, modules) in COMMANDS.items():
        log = tmp / f"{name}.log"
        with open(log, "wb") as handle:
            process = subprocess.Popen(
                [sys.executable, "-c", LAUNCHER, str(tmp / f"{name}.ready"), str(go), modules,
                 "--config", str(config), *(a.format(backup=backup) for a in args)],
                cwd=tmp, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True,
                env={**os.environ, "PYTHONPATH": str(ROOT)})
        started[name] = Started(name, process, log)
    try:
        wait_for(lambda: all((tmp / f"{n}.ready").exists() or s.process.poll() is not None
                             for n, s in started.items()), START_TIMEOUT, "six processes to be ready")
    except BaseException:
        stop_all(started)
        raise
    go.touch()
    return started


def stop_all(started: dict[str, Started]) -> None:
    for s in started.values():
        if s.process.poll() is None:
            os.killpg(s.process.pid, signal.SIGKILL)
            s.process.wait()


def finish(started: dict[str, Started]) -> dict[str, int]:
    """Wait for the one-shot commands; stop `run` and `serve` with SIGTERM once they serve."""
    codes: dict[str, int] = {}
    try:
        for name, pattern in LONG_RUNNING.items():
            s = started[name]
            found = wait_for(lambda s=s, p=pattern: s.process.poll() is not None or re.search(p, s.output()),
                             START_TIMEOUT, f"`{name}` to start")
            if name == "serve" and isinstance(found, re.Match):
                with urllib.request.urlopen(f"http://127.0.0.1:{found.group(1)}/api/items", timeout=30) as r:
                    assert r.status == 200 and "items" in json.load(r)
        for name, s in started.items():
            if name in LONG_RUNNING and s.process.poll() is None:
                s.process.send_signal(signal.SIGTERM)
        for name, s in started.items():
            codes[name] = s.process.wait(timeout=START_TIMEOUT)
    finally:
        stop_all(started)
    return codes


def write_config(tmp: Path, db_url: str, feed_url: str) -> Path:
    config = tmp / "newsmon.toml"
    config.write_text(f"""
[storage]
url = "{db_url}"

[crawl]
interval = "1h"
timeout = "10s"
obey_robots = false
fetch_articles = false

[daemon]
tick = "0.5s"

[server]
port = 0  # `run` serves the web page too, on any free port

[[sources]]
id = "local"
url = "{feed_url}"
kind = "feed"
allow_private = true

[[organisations]]
id = "CICA"
aliases = ["CICA", "СВМДА"]
""", encoding="utf-8")
    return config


def seed_outdated(db_url: str) -> None:
    """A database at 0001 with history in it, so the later migrations have work over rows.
    Written with Core inserts into tables 0001 has (today's write path needs today's schema)."""
    engine = make_engine(db_url)
    try:
        upgrade(engine, "0001")
        now = datetime.now(UTC)
        with engine.begin() as conn:
            conn.execute(Source.__table__.insert(), {
                "id": "archive", "name": "archive", "kind": "feed", "url": "", "host": "", "enabled": False,
                "interval_seconds": 600.0, "had_items": True, "failures": 0, "created_at": now})
            for record in backup_records("old", 5):
                when = datetime.fromisoformat(record["first_seen_at"])
                item_id = conn.execute(Item.__table__.insert().returning(Item.__table__.c.id), {
                    "source_id": "archive", "url": record["url"], "canonical_url": record["canonical_url"],
                    "url_key": key_of(record["canonical_url"]), "title": record["title"],
                    "text": record["text"], "language": "ru", "published_at": when, "first_seen_at": when,
                    "updated_at": when, "sort_at": when, "version": 1,
                    "content_hash": record["content_hash"]}).scalar_one()
                conn.execute(ItemVersion.__table__.insert(), {
                    "item_id": item_id, "version": 1, "fetched_at": when, "title": record["title"],
                    "text": record["text"], "content_hash": record["content_hash"]})
            conn.execute(FetchLog.__table__.insert(), {
                "source_id": "archive", "started_at": now - timedelta(days=40),
                "finished_at": now - timedelta(days=40), "outcome": "ok", "new": 0, "updated": 0,
                "unchanged": 0, "matched": 0})
            conn.execute(StoryBand.__table__.insert(), {"band": 42, "item_id": item_id,
                                                        "seen_at": now - timedelta(days=40)})
        assert not is_current(engine)
    finally:
        engine.dispose()


def check_database(db_url: str, *, seeded: bool) -> None:
    engine = make_engine(db_url)
    try:
        assert is_current(engine)
        with engine.connect() as connection:
            db = inspect(connection)
            tables = set(db.get_table_names())
            assert set(Base.metadata.tables) <= tables
            assert ("items_fts" if engine.dialect.name == "sqlite" else "items_search") in tables
            for table in Base.metadata.tables.values():
                assert {ix.name for ix in table.indexes} <= {ix["name"] for ix in db.get_indexes(table.name)}
        with make_session_factory(engine)() as session:
            urls = set(session.scalars(select(Item.canonical_url).where(Item.source_id == "archive")))
            expected = {r["canonical_url"] for r in backup_records("new", 3)}
            if seeded:
                expected |= {r["canonical_url"] for r in backup_records("old", 5)}
                assert session.scalar(select(func.count()).select_from(FetchLog)
                                      .where(FetchLog.source_id == "archive")) == 1
                assert session.scalar(select(func.count()).select_from(StoryBand)) >= 1
            assert urls == expected
            assert session.scalar(select(func.count()).select_from(Item).where(Item.source_id == "local")) == 2
    finally:
        engine.dispose()


@pytest.mark.timeout(120 + 120 * REPEAT)
@pytest.mark.parametrize("state", ["new", "outdated"])
def test_six_commands_start_together(state, new_database, site: Site, tmp_path):
    feed = site.unique("/concurrent-start")
    site.set(feed, rss([{"title": f"СВМДА news {n}", "link": site.url(f"{feed}/{n}"), "guid": f"{feed}/{n}",
                         "description": f"СВМДА item {n}."} for n in range(2)]))
    backup = tmp_path / "backup.jsonl"
    backup.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in backup_records("new", 3)),
                      encoding="utf-8")
    for repetition in range(REPEAT):
        tmp = tmp_path / f"rep-{repetition}"
        tmp.mkdir()
        db_url = new_database()
        if state == "outdated":
            seed_outdated(db_url)
        config = write_config(tmp, db_url, site.url(feed))
        codes = finish(start_together(tmp, config, backup))
        logs = {name: (tmp / f"{name}.log").read_text(encoding="utf-8", errors="replace") for name in COMMANDS}
        report = "\n".join(f"--- {name} exited {codes[name]}:\n{logs[name][-3000:]}" for name in COMMANDS)
        assert codes == dict.fromkeys(COMMANDS, 0), f"repetition {repetition}:\n{report}"
        assert not any("cannot open or migrate" in log for log in logs.values()), report
        assert "imported 3 new items" in logs["import"], report
        assert "stopped" in logs["run"], report
        check_database(db_url, seeded=state == "outdated")
