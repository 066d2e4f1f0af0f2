"""The page in a real browser: Debian's Chromium driven headless by Playwright against a real uvicorn."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from sqlalchemy.orm import Session, sessionmaker

from scheduler.config import AppConfig
from scheduler.web.app import create_app
from storage.db import make_engine, make_session_factory
from tests.test_api import SAMPLE, load
from tests.test_web import HOSTILE

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.browser


def _need_chromium() -> None:
    if Path(CHROMIUM).exists():
        return
    if os.environ.get("CI"):
        pytest.fail(f"{CHROMIUM} is missing: CI must run the browser test (apt-get install -y chromium)")
    pytest.skip(f"{CHROMIUM} not installed")


@pytest.fixture
def server(sqlite_url: str) -> Iterator[str]:
    """A real uvicorn on 127.0.0.1 and a free port, in a thread, serving the sample + hostile items."""
    engine = make_engine(sqlite_url)
    sessions: sessionmaker[Session] = make_session_factory(engine)
    load(sessions, SAMPLE + HOSTILE)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(create_app(AppConfig(), sessions), log_config=None, access_log=False,
                            lifespan="off")
    web = uvicorn.Server(config)
    thread = threading.Thread(target=web.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not web.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    web.should_exit = True
    thread.join(10)
    sock.close()
    engine.dispose()


def test_search_open_item_and_versions(server: str, tmp_path: Path) -> None:
    _need_chromium()
    from playwright.sync_api import expect, sync_playwright

    dialogs: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            page = browser.new_page()
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.goto(server + "/")
            expect(page.locator("h2", has_text="Newest matches")).to_be_visible()
            page.fill("#q", "СВМДА")
            page.click("#go")
            page.wait_for_url("**/?q=*")
            assert "q=%D0%A1%D0%92%D0%9C%D0%94%D0%90" in page.url  # the search lives in the URL
            result = page.locator("li.result", has_text="Руденко и Мустафаев обсудили СВМДА")
            expect(result).to_be_visible()
            expect(result.locator("mark").first).to_have_text("СВМДА")
            expect(page.locator("svg.bars rect").first).to_be_attached()
            page.screenshot(path=str(tmp_path / "search.png"), full_page=True)

            result.locator("a.title").click()
            page.wait_for_url("**/items/*")
            expect(page.locator("h1")).to_contain_text("Руденко")
            versions = page.locator("details.version")
            expect(versions).to_have_count(2)
            versions.nth(1).locator("summary").click()
            expect(versions.nth(1).locator("del")).to_have_text(" (черновик 1)")
            page.screenshot(path=str(tmp_path / "item.png"), full_page=True)

            page.goto(server + "/?q=alert&all=1")  # the hostile items, rendered and opened
            expect(page.locator("li.result").first).to_be_visible()
            page.locator("li.result a.title").first.click()
            page.wait_for_url("**/items/*")
            page.wait_for_timeout(300)
            assert page.evaluate("document.querySelectorAll('img, iframe, script:not([src])').length") == 0
        finally:
            browser.close()
    assert (tmp_path / "search.png").stat().st_size > 1000
    assert (tmp_path / "item.png").stat().st_size > 1000
    assert dialogs == []
