"""What a new user sees from `newsmon run` with no [[alerts]]: the web page on the configured
port, one `match …` line per new match, one WARNING per poll of a source that refuses
connections (none after its third failure until it recovers, then one recovery line), and one
line format on stderr for the daemon and its crawl processes (or JSON lines from both)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from sqlalchemy import func, select

from storage.db import make_engine, make_session_factory
from storage.models import FetchLog
from tests.plugins.sites import Site, rss

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (TRACE|DEBUG|INFO|SUCCESS|WARNING|ERROR|CRITICAL) +\S")
TITLE = "CICA ministers meet in Astana"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], object], timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n"
                         + log.read_text(encoding="utf-8", errors="replace")[-4000:])


class FeedHandler(BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:  # noqa: N802
        status, body = (200, self.body) if self.path.startswith("/feed") else (404, b"")
        self.send_response(status)
        self.send_header("Content-Type", "application/rss+xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet
        pass


@pytest.fixture
def late_server() -> Iterator[Callable[[int, bytes], None]]:
    """Starts, when asked, a feed server on a port that refused connections until then."""
    servers: list[ThreadingHTTPServer] = []

    def start(port: int, body: bytes) -> None:
        handler = type("Handler", (FeedHandler,), {"body": body})
        server = ThreadingHTTPServer(("127.0.0.1", port), handler)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def write_config(tmp: Path, site: Site, web_port: int, refused_port: int) -> tuple[Path, str]:
    path = site.unique("/first-hour")
    now = formatdate(time.time(), usegmt=True)
    site.set(path, rss([{"title": TITLE, "link": site.url(f"{path}/1"), "guid": f"{path}/1", "pubDate": now,
                         "description": "The CICA ministers met in Astana today."}]))
    config = tmp / "newsmon.toml"
    config.write_text(f"""
[storage]
url = "sqlite:///{tmp / 'newsmon.db'}"

[crawl]
interval = "1s"
timeout = "5s"
obey_robots = true
fetch_articles = false
jitter = 0.0
max_backoff = "1s"

[daemon]
tick = "0.5s"
dispatch_interval = "1s"

[server]
port = {web_port}

[[sources]]
id = "good"
url = "{site.url(path)}"
allow_private = true

[[sources]]
id = "down"
url = "http://127.0.0.1:{refused_port}/feed.xml"
allow_private = true

[[organisations]]
id = "CICA"
name = "Conference on Interaction and Confidence-Building Measures in Asia"
aliases = ["CICA", "СВМДА"]
""", encoding="utf-8")
    return config, path


def start(config: Path, tmp: Path, *args: str, run_args: tuple[str, ...] = ()
          ) -> tuple[subprocess.Popen[bytes], Path, Path]:
    out, err = tmp / "stdout.log", tmp / "stderr.log"
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        process = subprocess.Popen([sys.executable, "-m", "scheduler", "--config", str(config), *args, "run",
                                    *run_args],
                                   cwd=tmp, stdout=stdout, stderr=stderr,
                                   env={**os.environ, "PYTHONPATH": str(ROOT)})
    return process, out, err


def stop(process: subprocess.Popen[bytes]) -> int:
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def polls(tmp: Path, source_id: str, outcome: str | None = None) -> int:
    engine = make_engine(f"sqlite:///{tmp / 'newsmon.db'}")
    try:
        with make_session_factory(engine)() as session:
            query = select(func.count()).select_from(FetchLog).where(FetchLog.source_id == source_id)
            if outcome:
                query = query.where(FetchLog.outcome == outcome)
            return int(session.scalar(query) or 0)
    except Exception:  # not created yet
        return 0
    finally:
        engine.dispose()


def lines_about(text: str, needle: str, level: str) -> list[str]:
    return [line for line in text.splitlines() if f" {level} " in line and needle in line]


def test_run_serves_the_page_prints_matches_and_quiets_a_failing_source(
        tmp_path: Path, site: Site, late_server: Callable[[int, bytes], None]) -> None:
    web_port, refused_port = free_port(), free_port()
    config, path = write_config(tmp_path, site, web_port, refused_port)
    process, out, err = start(config, tmp_path)
    try:
        text = lambda: err.read_text(encoding="utf-8", errors="replace")  # noqa: E731
        wait_until(lambda: f"match CICA: {TITLE} {site.url(path)}/1" in text(), 60, "the match line", err)
        with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/", timeout=10) as page:
            assert page.status == 200 and TITLE in page.read().decode("utf-8")
        wait_until(lambda: polls(tmp_path, "down") >= 6, 120, "six polls of the failing source", err)
        failed = polls(tmp_path, "down")
        late_server(refused_port, rss([{"title": "Weather", "link": f"http://127.0.0.1:{refused_port}/w",
                                        "guid": "w", "description": "Sunny."}]))
        wait_until(lambda: polls(tmp_path, "down", "ok") >= 1, 60, "the failing source to recover", err)
        wait_until(lambda: lines_about(text(), "poll down ok", "INFO"), 10, "the recovery line", err)
    finally:
        assert stop(process) == 0
    log = err.read_text(encoding="utf-8")
    head = log.splitlines()[:2]
    assert "1 alert channel (log)" in head[0], log[:2000]
    assert head[1].endswith(f"INFO    web page: http://127.0.0.1:{web_port}/"), log[:2000]
    # Exactly one WARNING per failed poll for the first three, none after, whoever logged it
    # (the crawl's Scrapy lines about the same failure are at DEBUG, not shown).
    assert failed >= 6
    running = log.split(" received: stopping")[0]
    warnings = [line for line in running.splitlines()
                if " WARNING " in line and ("poll down " in line or f"127.0.0.1:{refused_port}" in line)]
    assert len(warnings) == 3, running[-4000:]
    assert all(w.split(" ", 3)[3].startswith("poll down error connect:") for w in warnings), warnings
    assert "logged at most hourly" in warnings[-1]
    recovered = [line for line in lines_about(log, "poll down ok", "INFO") if "recovered after" in line]
    assert len(recovered) == 1, log[-4000:]
    assert len(lines_about(log, f"match CICA: {TITLE}", "INFO")) == 1
    # One stream: every stderr line (daemon and crawl processes) has the same shape; stdout is empty.
    bad = [line for line in log.splitlines() if not LINE.match(line)]
    assert not bad, bad[:5]
    assert out.read_text(encoding="utf-8") == ""


def test_log_json_gives_json_lines_from_daemon_and_crawl(tmp_path: Path, site: Site) -> None:
    web_port, refused_port = free_port(), free_port()
    config, _ = write_config(tmp_path, site, web_port, refused_port)
    process, _, err = start(config, tmp_path, "--log-json", "--log-level", "DEBUG")
    try:
        wait_until(lambda: polls(tmp_path, "down") >= 1 and polls(tmp_path, "good") >= 1, 60, "a round", err)
    finally:
        assert stop(process) == 0
    records = [json.loads(line)["record"] for line in err.read_text(encoding="utf-8").splitlines()]
    pids = {r["process"]["id"] for r in records}
    assert process.pid in pids and len(pids) >= 2  # the daemon and at least one crawl process
    crawl = [r["message"] for r in records if r["process"]["id"] != process.pid]
    assert any(m.startswith("scrapy.") for m in crawl), crawl[:20]
    # Scrapy's own lines about the refused connection are there, at DEBUG only.
    scrapy_failures = [r for r in records if str(refused_port) in r["message"] and r["message"].startswith("scrapy.")]
    assert scrapy_failures and {r["level"]["name"] for r in scrapy_failures} == {"DEBUG"}


def test_port_in_use_is_one_clear_error(tmp_path: Path, site: Site) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config, _ = write_config(tmp_path, site, port, free_port())
        process, out, err = start(config, tmp_path)
        assert process.wait(timeout=60) == 2
        message = err.read_text(encoding="utf-8")
        assert message.strip().splitlines() == [
            f"newsmon: cannot serve the web page on 127.0.0.1:{port}: the port is in use (another newsmon, "
            "or another program); set [server] port, or start with --no-serve"], message
        # A worker asked not to serve starts on the same configuration.
        process, _, err = start(config, tmp_path, run_args=("--no-serve",))
        try:
            wait_until(lambda: "alert channel (log)" in err.read_text(encoding="utf-8"), 60, "the start", err)
        finally:
            assert stop(process) == 0
    assert "web page" not in err.read_text(encoding="utf-8")


def test_public_address_without_token_is_refused(tmp_path: Path, site: Site) -> None:
    from click.testing import CliRunner

    from scheduler.cli import cli

    config, _ = write_config(tmp_path, site, free_port(), free_port())
    config.write_text(config.read_text(encoding="utf-8").replace("[server]\n", '[server]\nhost = "0.0.0.0"\n'),
                      encoding="utf-8")
    result = CliRunner().invoke(cli, ["--config", str(config), "run"])
    assert result.exit_code == 2
    assert "refusing to listen on 0.0.0.0 without [server] api_token" in result.output
