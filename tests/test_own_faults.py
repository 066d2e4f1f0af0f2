"""newsmon's own failures are loud: a broken install or a bug is the source's error (class
``extract`` or ``internal``), never ``ok``; `newsmon crawl` exits 1; each cause is logged once
per round, without a traceback per page. The product runs as users run it (`newsmon crawl` in a
subprocess) with one of its libraries shadowed on PYTHONPATH."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from crawler.failures import (
    CRASH,
    ERROR_CLASSES,
    EXTRACT,
    INTERNAL,
    OWN_FAULTS,
    STORAGE,
    TIMEOUT,
    round_failure_class,
)
from storage.db import make_engine, make_session_factory
from storage.models import FetchLog, Item
from tests.plugins.sites import Site, rss

pytestmark = pytest.mark.slow
ARTICLE = ("<html><head><title>{title}</title></head><body><article><h1>{title}</h1>"
           "<p>Заместитель министра обсудил с послом взаимодействие в рамках СВМДА. {n}</p>"
           "<p>Стороны договорились продолжить консультации по вопросам региональной безопасности.</p>"
           "</article></body></html>")


def shadow(tmp_path: Path, module: str, body: str) -> Path:
    """A directory that, first on PYTHONPATH, replaces ``module`` with ``body``."""
    root = tmp_path / f"shadow-{module}"
    (root / module).mkdir(parents=True)
    (root / module / "__init__.py").write_text(body, encoding="utf-8")
    return root


def newsmon(config: Path, *args: str, pythonpath: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run([sys.executable, "-m", "scheduler", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=120, env=env)


def feed_with_articles(site: Site, count: int) -> str:
    base = site.unique("/own")
    items = []
    for n in range(count):
        path = f"{base}/article/{n}"
        site.set(path, ARTICLE.format(title=f"Консультации {n}", n=n).encode(), "text/html; charset=utf-8")
        items.append({"title": f"Консультации {n}", "link": site.url(path), "description": f"Кратко {n}."})
    return site.set(f"{base}.xml", rss(items))


def write_config(tmp_path: Path, sources: dict[str, str]) -> Path:
    config = tmp_path / "newsmon.toml"
    lines = [f'[storage]\nurl = "sqlite:///{tmp_path / "own.db"}"',
             '[crawl]\ntimeout = "5s"\nfetch_articles = true\nobey_robots = false']
    for source_id, url in sources.items():
        lines.append(f'[[sources]]\nid = "{source_id}"\nurl = "{url}"\nallow_private = true')
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return config


def status_errors(config: Path) -> dict[str, dict | None]:
    result = newsmon(config, "status", "--format", "json")
    assert result.returncode == 0, result.stderr
    return {s["id"]: s["last_error"] for s in json.loads(result.stdout)["sources"]}


def test_broken_article_extraction_is_an_extract_error_and_crawl_exits_1(site: Site, tmp_path: Path) -> None:
    """trafilatura unimportable (as with lxml 6.2 without lxml_html_clean): every article
    fails to extract; the items are still stored with their feed text, the source's outcome
    is ``extract``, the cause is logged once for all its pages, and the exit status is 1."""
    config = write_config(tmp_path, {"mfa": feed_with_articles(site, 4), "quiet": feed_with_articles(site, 2)})
    broken = shadow(tmp_path, "trafilatura", 'raise ImportError("lxml.html.clean module is now a separate project")\n')

    result = newsmon(config, "crawl", pythonpath=broken)

    assert result.returncode == 1, result.stdout + result.stderr
    assert "own fault" in result.stderr and "extract" in result.stderr
    log = result.stderr  # (stdout has the summary table, a row per source)
    assert log.count("lxml.html.clean module is now a separate project") == 1, log  # once per round
    assert "6 pages of 2 sources" in log, log
    assert "Traceback" not in log
    errors = status_errors(config)
    assert {errors["mfa"]["class"], errors["quiet"]["class"]} == {EXTRACT}
    assert errors["mfa"]["message"].startswith("ImportError: ") and "\n" not in errors["mfa"]["message"]
    with make_session_factory(make_engine(f"sqlite:///{tmp_path / 'own.db'}"))() as session:
        texts = {i.title: i.text for i in session.scalars(select(Item).where(Item.source_id == "mfa"))}
        assert texts == {f"Консультации {n}": f"Кратко {n}." for n in range(4)}  # the listing text kept
        assert {f.outcome for f in session.scalars(select(FetchLog))} == {"error"}

    healed = newsmon(config, "crawl")  # the install repaired: the next poll is ok again
    assert healed.returncode == 0, healed.stdout + healed.stderr
    assert status_errors(config) == {"mfa": None, "quiet": None}


def test_a_bug_in_parsing_is_an_internal_error(site: Site, tmp_path: Path) -> None:
    """An exception of ours while parsing (here: the feed library itself raising) is class
    ``internal``, not ``parse`` (which says the site sent something malformed)."""
    config = write_config(tmp_path, {"feed": feed_with_articles(site, 1)})
    broken = shadow(tmp_path, "feedparser",
                    "def parse(*args, **kwargs):\n    raise RuntimeError('parser bug\\nsecond line')\n")

    result = newsmon(config, "crawl", pythonpath=broken)

    assert result.returncode == 1, result.stdout + result.stderr
    error = status_errors(config)["feed"]
    assert error["class"] == INTERNAL
    assert error["message"] == "RuntimeError: parser bug second line"


def test_routine_failures_still_exit_0_when_some_source_worked(site: Site, tmp_path: Path) -> None:
    """A site's 404 is the site's problem: `crawl` exits 0 when another source worked."""
    config = write_config(tmp_path, {"good": feed_with_articles(site, 1),
                                     "gone": site.url("/faults/status/404")})
    result = newsmon(config, "crawl")
    assert result.returncode == 0, result.stdout + result.stderr
    assert status_errors(config)["gone"]["class"] == "http-4xx"


def test_every_class_is_in_the_one_list() -> None:
    assert OWN_FAULTS <= set(ERROR_CLASSES)
    assert len(set(ERROR_CLASSES)) == len(ERROR_CLASSES)
    assert round_failure_class(None) == TIMEOUT
    assert round_failure_class(TimeoutError("deadline")) == TIMEOUT
    assert round_failure_class(RuntimeError("the round's process vanished")) == CRASH
    assert STORAGE in OWN_FAULTS and CRASH in OWN_FAULTS


def test_scrapys_bare_ignore_requests_are_told_apart_by_type_or_scrapys_fixed_messages() -> None:
    """Robots.txt and redirect loops end in an IgnoreRequest that only Scrapy's message tells
    apart (a Scrapy upgrade that rewords them shows here); a decompression bomb by its cause."""
    import inspect

    from scrapy.downloadermiddlewares import redirect, robotstxt
    from scrapy.exceptions import IgnoreRequest
    from scrapy.utils._compression import _DecompressionMaxSizeExceeded

    from crawler.failures import CONNECT, REDIRECTS, ROBOTS, TOO_LARGE
    from crawler.outcomes import SCRAPY_IGNORED, classify_exception

    assert SCRAPY_IGNORED == {"Forbidden by robots.txt": ROBOTS, "max redirections reached": REDIRECTS}
    for module, message in ((robotstxt, "Forbidden by robots.txt"), (redirect, "max redirections reached")):
        assert f'raise IgnoreRequest("{message}")' in inspect.getsource(module)
        assert classify_exception(IgnoreRequest(message)) == (SCRAPY_IGNORED[message], message)
    bomb = IgnoreRequest("Ignored response <200 http://x/> because its body exceeded DOWNLOAD_MAXSIZE")
    bomb.__cause__ = _DecompressionMaxSizeExceeded(2_000_000, 1_000_000)
    assert classify_exception(bomb)[0] == TOO_LARGE
    # the same words without the cause are not a size problem: no classification by wording
    assert classify_exception(IgnoreRequest("the body was larger than DOWNLOAD_MAXSIZE"))[0] == CONNECT


def test_a_rounds_report_carries_its_failure_as_data() -> None:
    from scheduler.jobs import unfinished_failure
    from scheduler.runner import CrawlReport, process_failure

    assert process_failure(False, 0) is None
    assert process_failure(False, -15) is None  # SIGTERM: stopped on purpose
    assert process_failure(True, -9) == (TIMEOUT, "the crawl round was stopped at its deadline")
    assert process_failure(False, 124)[0] == TIMEOUT  # the crawl process's own watchdog
    assert process_failure(False, 1) == (CRASH, "the crawl process exited with status 1")
    # what the daemon records for a source the round left unrecorded
    crashed = CrawlReport(failure=CRASH, failure_message="the crawl process exited with status -11")
    assert unfinished_failure(None, crashed) == (CRASH, "the crawl process exited with status -11")
    assert unfinished_failure(None, CrawlReport())[0] == TIMEOUT
    assert unfinished_failure(None, None)[0] == TIMEOUT
    assert unfinished_failure(RuntimeError("boom"), crashed) == (CRASH, "RuntimeError: boom")
