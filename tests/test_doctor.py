"""`newsmon doctor`: every check on a good install, each failure in its own row with the right
exit code, nothing changed in the database, and --send-test through a real receiver."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from crawler.rendering import browser_available
from scheduler.checks import check_channel_url
from scheduler.cli import cli
from scheduler.config import AlertSpec
from tests.plugins.receivers import Receiver

# apprise's PGP helper imports the stdlib's imghdr (deprecated) when its plugins load.
pytestmark = pytest.mark.filterwarnings("ignore:'imghdr' is deprecated:DeprecationWarning")

CHECKS = ["configuration", "database", "feed parsing", "article extraction", "morphology", "chromium", "alerts"]
SOURCE = """
[[sources]]
id = "mid-ru"
url = "https://mid.ru/ru/rss.php"
"""
NEWSMON = Path(sys.executable).with_name("newsmon")


def write_config(tmp_path: Path, db: str, extra: str = SOURCE) -> Path:
    path = tmp_path / "newsmon.toml"
    path.write_text(f'[storage]\nurl = "{db}"\n{extra}', "utf-8")
    return path


def doctor(config: Path, *args: str, env: dict[str, str | None] | None = None) -> tuple[int, dict]:
    result = CliRunner().invoke(cli, ["--config", str(config), "doctor", "--format", "json", *args],
                                env={"NEWSMON_DATABASE_URL": None, **(env or {})}, catch_exceptions=False)
    return result.exit_code, json.loads(result.stdout)


def rows(doc: dict) -> dict[str, dict]:
    return {row["name"]: row for row in doc["checks"]}


def failed(doc: dict) -> list[str]:
    return [row["name"] for row in doc["checks"] if not row["ok"]]


def snapshot(directory: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(directory.iterdir())}


def test_good_install_passes_every_check(tmp_path, sqlite_url):
    code, doc = doctor(write_config(tmp_path, sqlite_url))
    assert code == 0, doc
    assert doc["ok"] is True
    assert [row["name"] for row in doc["checks"]] == CHECKS
    assert all(set(row) == {"name", "ok", "detail", "fix"} for row in doc["checks"])
    found = rows(doc)
    assert "newest migration" in found["database"]["detail"]
    assert "2 entries" in found["feed parsing"]["detail"]
    assert "trafilatura" in found["article extraction"]["detail"]
    assert "Совещания по взаимодействию и мерам доверия в Азии" in found["morphology"]["detail"]
    assert "not needed" in found["chromium"]["detail"]


def test_table_output(tmp_path, sqlite_url):
    config = write_config(tmp_path, sqlite_url)
    result = CliRunner().invoke(cli, ["--config", str(config), "doctor"], env={"NEWSMON_DATABASE_URL": None},
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    for name in CHECKS:
        assert name in result.output
    assert "7 checks, all passed" in result.output


def test_migrated_database_passes_and_is_not_changed(tmp_path, db_url):
    """SQLite and PostgreSQL; the SQLite file (and its directory) stay exactly as they were."""
    config = write_config(tmp_path, "sqlite:///unused.db")
    database_dir = tmp_path
    before = snapshot(database_dir)
    code, doc = doctor(config, env={"NEWSMON_DATABASE_URL": db_url})
    assert code == 0, doc
    assert rows(doc)["database"]["ok"] and "newest migration" in rows(doc)["database"]["detail"]
    assert snapshot(database_dir) == before  # newsmon.db: same mtime and size; no -wal, -shm or new file


def test_doctor_changes_nothing(tmp_path, sqlite_url):
    """A migrated database in rollback-journal mode (as a copy or a restored backup may be): an
    ordinary connection would switch it to WAL; doctor's leaves every byte as it was."""
    db = tmp_path / "newsmon.db"
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA journal_mode=DELETE")
    conn.close()
    config = write_config(tmp_path, sqlite_url)
    before, content = snapshot(tmp_path), db.read_bytes()
    code, doc = doctor(config)
    assert code == 0, doc
    assert snapshot(tmp_path) == before
    assert db.read_bytes() == content


def test_database_open_in_a_daemon_is_read_through_its_wal(tmp_path):
    """A daemon holds the database open and the schema is still only in the -wal file: doctor
    reads it there (not the stale main file) and writes nothing."""
    from storage.db import make_engine, upgrade

    db = tmp_path / "newsmon.db"
    holder = sqlite3.connect(db, isolation_level=None)
    try:
        holder.execute("PRAGMA journal_mode=WAL")
        holder.execute("BEGIN")  # a read transaction held open: no checkpoint can empty the -wal
        holder.execute("SELECT count(*) FROM sqlite_master").fetchall()
        engine = make_engine(f"sqlite:///{db}")
        upgrade(engine)
        engine.dispose()
        assert (tmp_path / "newsmon.db-wal").stat().st_size > 0
        config = write_config(tmp_path, f"sqlite:///{db}")
        before = snapshot(tmp_path)
        code, doc = doctor(config)
        assert code == 0, doc
        assert "newest migration" in rows(doc)["database"]["detail"]
        assert snapshot(tmp_path) == before
    finally:
        holder.close()


def test_missing_sqlite_file_passes_and_is_not_created(tmp_path):
    db = tmp_path / "data" / "sub" / "newsmon.db"
    code, doc = doctor(write_config(tmp_path, f"sqlite:///{db}"))
    assert code == 0, doc
    assert "created on first start" in rows(doc)["database"]["detail"]
    assert not (tmp_path / "data").exists()


def test_empty_database_is_migratable(tmp_path):
    db = tmp_path / "empty.db"
    sqlite3.connect(db).close()
    before = snapshot(tmp_path)
    code, doc = doctor(write_config(tmp_path, f"sqlite:///{db}"))
    assert code == 0, doc
    assert "schema is created on first start" in rows(doc)["database"]["detail"]
    assert snapshot(tmp_path) == {**before, "newsmon.toml": snapshot(tmp_path)["newsmon.toml"]}


def test_database_from_a_newer_version_fails(tmp_path):
    db = tmp_path / "newer.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)")
        conn.execute("INSERT INTO alembic_version VALUES ('9999_from_the_future')")
    conn.close()
    code, doc = doctor(write_config(tmp_path, f"sqlite:///{db}"))
    assert code == 1
    assert failed(doc) == ["database"]
    assert "9999_from_the_future" in rows(doc)["database"]["detail"]
    assert rows(doc)["database"]["fix"]


def test_unreachable_postgresql_fails(tmp_path, pg_url):
    from sqlalchemy.engine import make_url

    missing = make_url(pg_url).set(database="newsmon_doctor_no_such_db", password="s3cret-pw")
    code, doc = doctor(write_config(tmp_path, "sqlite:///unused.db"),
                       env={"NEWSMON_DATABASE_URL": missing.render_as_string(hide_password=False)})
    assert code == 1
    assert failed(doc) == ["database"]
    assert "cannot connect" in rows(doc)["database"]["detail"]
    assert "newsmon_doctor_no_such_db" in rows(doc)["database"]["detail"]
    assert "s3cret-pw" not in json.dumps(doc)  # the password is never printed


def test_bad_configuration_exits_2_and_still_runs_the_samples(tmp_path, sqlite_url):
    config = write_config(tmp_path, sqlite_url, SOURCE + "\n[crawl]\nintervall = \"5m\"\n")
    code, doc = doctor(config)
    assert code == 2
    assert [row["name"] for row in doc["checks"]] == CHECKS
    configuration = rows(doc)["configuration"]
    assert not configuration["ok"] and "crawl.intervall" in configuration["detail"]
    assert str(config) in configuration["detail"] and "intervall" in configuration["fix"]
    assert {"feed parsing", "article extraction", "morphology"}.isdisjoint(failed(doc))


def test_bad_webhook_url_fails_its_row(tmp_path, sqlite_url):
    """The configuration refuses a non-http(s) webhook (exit 2, like every command); the alerts
    row names it too."""
    code, doc = doctor(write_config(tmp_path, sqlite_url, SOURCE + '\n[[alerts]]\nkind = "webhook"\nurl = "ftp://x"\n'))
    assert code == 2
    assert "ftp://x" in rows(doc)["alerts"]["detail"] and not rows(doc)["alerts"]["ok"]
    assert rows(doc)["database"]["detail"].startswith("not checked")


def test_webhook_url_check_refuses_what_is_not_http():
    for url in ("ftp://x", "http://", "mailto:someone@example.org"):
        row = check_channel_url(AlertSpec.model_construct(kind="webhook", url=url))
        assert not row.ok and row.fix, url
    assert check_channel_url(AlertSpec(kind="webhook", url="https://hooks.example.org/x")).ok


def test_bad_apprise_url_fails_its_row(tmp_path, sqlite_url):
    alerts = ('\n[[alerts]]\nid = "broken"\nkind = "apprise"\nurl = "notaservice://nothing"\n'
              '\n[[alerts]]\nid = "good"\nkind = "apprise"\nurl = "json://127.0.0.1:9/notify"\n')
    code, doc = doctor(write_config(tmp_path, sqlite_url, SOURCE + alerts))
    assert code == 1
    assert failed(doc) == ["alerts: broken"]
    assert "notaservice://nothing" in rows(doc)["alerts: broken"]["detail"]
    assert rows(doc)["alerts: good"]["ok"]


def test_nothing_is_sent_without_send_test(tmp_path, sqlite_url, receiver: Receiver):
    alerts = f'\n[[alerts]]\nid = "hook"\nkind = "webhook"\nurl = "{receiver.url}/hook"\n'
    code, doc = doctor(write_config(tmp_path, sqlite_url, SOURCE + alerts))
    assert code == 0, doc
    assert rows(doc)["alerts: hook"]["ok"]
    assert "alerts: hook: test send" not in rows(doc)
    assert receiver.requests == []


def test_send_test_delivers_one_notification_per_channel(tmp_path, sqlite_url, receiver: Receiver):
    alerts = (f'\n[[alerts]]\nid = "hook"\nkind = "webhook"\nurl = "{receiver.url}/hook"\n'
              f'\n[[alerts]]\nid = "json"\nkind = "apprise"\nurl = "json://127.0.0.1:{receiver.port}/apprise"\n')
    code, doc = doctor(write_config(tmp_path, sqlite_url, SOURCE + alerts), "--send-test")
    assert code == 0, doc
    assert rows(doc)["alerts: hook: test send"]["ok"] and rows(doc)["alerts: json: test send"]["ok"]
    hook = receiver.ok("/hook")
    assert len(hook) == 1 and hook[0].json["event"] == "test"
    assert hook[0].headers["webhook-id"] == hook[0].json["event_id"]
    assert len(receiver.ok("/apprise")) == 1
    assert len(receiver.requests) == 2


def test_send_test_reports_a_failing_receiver(tmp_path, sqlite_url, receiver: Receiver):
    receiver.fail(503, times=1)
    alerts = f'\n[[alerts]]\nid = "hook"\nkind = "webhook"\nurl = "{receiver.url}/hook"\n'
    code, doc = doctor(write_config(tmp_path, sqlite_url, SOURCE + alerts), "--send-test")
    assert code == 1
    assert failed(doc) == ["alerts: hook: test send"]
    assert "http 503" in rows(doc)["alerts: hook: test send"]["detail"]
    assert len(receiver.requests) == 1  # one attempt, no retries


def test_chromium_is_checked_when_a_source_renders(tmp_path, sqlite_url):
    rendered = ('\n[[sources]]\nid = "cica"\nkind = "html"\nurl = "https://www.s-cica.org/press"\n'
                'render = "browser"\n[sources.selectors]\nitem = "div.news"\n')
    code, doc = doctor(write_config(tmp_path, sqlite_url, SOURCE + rendered))
    chromium = rows(doc)["chromium"]
    assert "cica" in chromium["detail"]
    if browser_available():
        assert code == 0 and chromium["ok"], chromium
        assert "chromium" in chromium["detail"].lower() and "not needed" not in chromium["detail"]
    else:
        assert code == 1 and failed(doc) == ["chromium"] and "chromium" in chromium["fix"]


def test_broken_trafilatura_fails_article_extraction(tmp_path, sqlite_url):
    """A trafilatura that cannot be imported (shadowed on PYTHONPATH) is a failed row, not a traceback."""
    shadow = tmp_path / "shadow" / "trafilatura"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text('raise ImportError("this trafilatura is broken on purpose")\n', "utf-8")
    config = write_config(tmp_path, sqlite_url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSMON_")}
    env["PYTHONPATH"] = str(tmp_path / "shadow")
    done = subprocess.run([str(NEWSMON), "--config", str(config), "doctor", "--format", "json"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120, check=False)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    doc = json.loads(done.stdout)
    assert doc["ok"] is False
    assert failed(doc) == ["article extraction"]
    assert "broken on purpose" in rows(doc)["article extraction"]["detail"]
    assert rows(doc)["article extraction"]["fix"]
