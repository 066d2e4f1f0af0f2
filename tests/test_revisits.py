"""Revisits end to end (`python -m crawler` rounds against the fixture server, SQLite and
PostgreSQL, revisit windows of a few seconds): a silent edit becomes version 2 with one `edit`
event, chrome that changes on every request is no version, a 410 is a removal and a page that
comes back a new version, a revisit whose worker died is done later, and two PostgreSQL
workers do each revisit once."""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from scheduler.config import AppConfig, build_config
from scheduler.runner import crawl_round
from storage.db import make_engine, make_session_factory
from storage.models import AlertEvent, Item, ItemVersion, Revisit
from storage.repository import SourceRow, sync_sources
from storage.revisits import claim_revisits
from tests.plugins.receivers import Receiver
from tests.plugins.sites import LAST_MODIFIED, Handler, Site, rss

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow

BODY = [
    "Министр иностранных дел провёл встречу с исполнительным директором Секретариата СВМДА.",
    "Стороны обсудили подготовку к предстоящему саммиту Совещания по взаимодействию и мерам "
    "доверия в Азии и ход реализации решений, принятых на прошлом заседании.",
    "Особое внимание было уделено вопросам укрепления мер доверия в регионе.",
]
EDITED = [*BODY[:2], "По итогам встречи стороны подписали меморандум о сотрудничестве в области "
          "цифровой дипломатии.", BODY[2]]


def article_html(paragraphs: list[str], title: str = "Встреча с исполнительным директором СВМДА",
                 *, views: int = 17, clock: str = "10:00:00", most_read: list[str] | None = None,
                 token: str = "abc", og_title: str | None = None) -> bytes:
    """An MFA-like article page: navigation, the article, a counter, a "most read" sidebar and a
    footer with the time the page was generated (the chrome a revisit must see through)."""
    most_read = most_read or ["Брифинг официального представителя", "Заявление МИД"]
    body = "".join(f"<p>{p}</p>" for p in paragraphs)
    og = f'<meta property="og:title" content="{og_title}">' if og_title else ""
    sidebar = "".join(f'<li><a href="/news/{i}">{t}</a></li>' for i, t in enumerate(most_read))
    return f"""<!DOCTYPE html><html lang="ru"><head><meta charset="utf-8">
<title>{title} — Министерство иностранных дел</title>
<meta name="csrf-token" content="{token}">{og}</head><body>
<header><nav><a href="/">Главная</a> <a href="/news/">Новости</a> <a href="/press/">Пресс-служба</a></nav></header>
<main><article><h1>{title}</h1><div class="date">04.12.2026 09:30</div>
<div class="text">{body}</div>
<div class="views">Просмотров: {views}</div></article>
<aside><h3>Самое читаемое</h3><ul>{sidebar}</ul></aside></main>
<footer><p>© Министерство иностранных дел, 2026</p><p>Страница сгенерирована в {clock}</p></footer>
</body></html>""".encode()


def chrome_changing(paragraphs: list[str]) -> Any:
    """A handler serving the article with new chrome on every request (no validators)."""
    def handler(request: Handler) -> None:
        rng = random.Random()
        page = article_html(paragraphs, views=rng.randint(100, 99_999),
                            clock=f"{rng.randint(0, 23):02}:{rng.randint(0, 59):02}:{rng.randint(0, 59):02}",
                            most_read=rng.sample(["Брифинг официального представителя", "Заявление МИД",
                                                  "Интервью министра", "Комментарий департамента",
                                                  "Ответ на вопрос СМИ"], 3),
                            token=f"{rng.getrandbits(64):x}")
        request.send_bytes(page, "text/html; charset=utf-8")
    return handler


def make_config(db_url: str, site: Site, feed: str, revisit: list[str], **alert: Any) -> AppConfig:
    config = build_config({
        "storage": {"url": db_url},
        "sources": [{"id": "mfa", "url": site.url(feed), "allow_private": True, "language": "ru"}],
        "crawl": {"timeout": "5s", "interval": "10m", "revisit": revisit, "jitter": 0},
        "alerts": [{"kind": "webhook", "id": "hook", "url": "http://127.0.0.1:9/hook",
                    "events": ["match", "edit", "removed"], **alert}],
    }, {})
    engine = make_engine(config.storage.url)
    with make_session_factory(engine).begin() as session:
        sync_sources(session, [SourceRow(id=s.id, kind=s.kind, url=s.url) for s in config.sources],
                     now=datetime.now(UTC))
    engine.dispose()
    return config


def publish(site: Site, n: int = 1) -> tuple[str, list[str]]:
    """A feed of ``n`` items (article pages not yet published); its path and the page paths."""
    base = site.unique("/rv")
    pages = [f"{base}/news/{i}" for i in range(n)]
    site.set(f"{base}/feed.xml", rss([{"title": f"Встреча с исполнительным директором СВМДА {i}",
                                        "link": site.url(p), "guid": f"g{i}"} for i, p in enumerate(pages)]))
    return f"{base}/feed.xml", pages


def crawl(config: AppConfig, **kwargs: Any) -> None:
    report = crawl_round(config, None, timeout=60, **kwargs)
    assert all(e.outcome != "error" for e in report.sources), report.sources


def wait_until(at: datetime) -> None:
    delay = (at - datetime.now(UTC)).total_seconds()
    if delay > 0:
        time.sleep(delay + 0.05)


def advance(db_url: str) -> None:
    """Let time pass until the next revisit is due: the items' first-seen times and the
    revisits' due times move back by that much (rounds take seconds on a loaded machine, so
    slots seconds apart would race them; this keeps the order of events exact)."""
    engine = make_engine(db_url)
    with make_session_factory(engine).begin() as session:
        due = session.scalar(select(func.min(Revisit.due_at)))
        assert due is not None, "no revisit is scheduled"
        shift = max(timedelta(0), due - datetime.now(UTC)) + timedelta(milliseconds=10)
        for item in session.scalars(select(Item)):
            item.first_seen_at -= shift
        for revisit in session.scalars(select(Revisit).where(Revisit.due_at.is_not(None))):
            revisit.due_at -= shift
    engine.dispose()


def state(db_url: str) -> tuple[list[Item], list[list[ItemVersion]], list[dict[str, Any]], list[Revisit]]:
    engine = make_engine(db_url)
    try:
        with make_session_factory(engine)() as session:
            items = list(session.scalars(select(Item).order_by(Item.id)))
            versions = [list(i.versions) for i in items]
            events = [json.loads(e.payload) for e in session.scalars(select(AlertEvent).order_by(AlertEvent.id))]
            revisits = list(session.scalars(select(Revisit).order_by(Revisit.item_id)))
            session.expunge_all()
            return items, versions, events, revisits
    finally:
        engine.dispose()


def test_silent_edit_is_version_two_with_one_edit_event(site: Site, db_url: str) -> None:
    feed, (page,) = publish(site)
    site.set(page, article_html(BODY), "text/html; charset=utf-8")
    config = make_config(db_url, site, feed, ["2s", "1h"])
    crawl(config)
    (item,), _, events, _ = state(db_url)
    assert item.version == 1 and [e["event"] for e in events] == ["match"]

    wait_until(item.first_seen_at + timedelta(seconds=2))
    crawl(config)  # first revisit, 2 s on: the same page (a 304: the first fetch's ETag)
    (item,), _, _, (revisit,) = state(db_url)
    assert (item.version, revisit.done, revisit.last_status) == (1, 1, 304) and revisit.etag
    feed_requests = len(site.requests(feed.split("?")[0]))

    site.set(page, article_html(EDITED), "text/html; charset=utf-8")  # the feed stays as it was
    advance(db_url)  # an hour on
    crawl(config)
    (item,), (versions,), events, (revisit,) = state(db_url)
    assert len(site.requests(feed)) == feed_requests + 1
    assert site.requests(feed)[-1].headers.get("If-None-Match")  # the feed itself: a 304
    assert item.version == 2 and [v.version for v in versions] == [1, 2]
    assert "цифровой дипломатии" in item.text and "цифровой дипломатии" not in versions[0].text
    assert revisit.done == 2 and revisit.due_at is None
    edits = [e for e in events if e["event"] == "edit"]
    assert len(edits) == 1 and len(events) == 2
    changes = edits[0]["changes"]
    assert (changes["from_version"], changes["to_version"], changes["title"]) == (1, 2, None)
    assert "{+По итогам встречи" in changes["diff"] and "[-" not in changes["diff"]
    assert edits[0]["organisations"] == ["CICA"] and edits[0]["item"]["version"] == 2
    assert versions[1].raw and versions[1].raw_status == 200  # the response, for WARC


def conditional(answers: list[tuple[int, dict[str, str]]]) -> tuple[Any, dict[str, bytes]]:
    """A handler serving ``page["body"]`` with an ETag of its bytes and a Last-Modified, that
    answers 304 to a matching If-None-Match; it records (status, request headers) of each."""
    page: dict[str, bytes] = {}

    def handler(request: Handler) -> None:
        body = page["body"]
        etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
        headers = {"ETag": etag, "Last-Modified": LAST_MODIFIED}
        status = 304 if request.headers.get("If-None-Match") == etag else 200
        answers.append((status, dict(request.headers.items())))
        request.send_bytes(body if status == 200 else b"", "text/html; charset=utf-8",
                           status=status, headers=headers)
    return handler, page


def test_first_revisit_is_conditional_on_the_first_fetch(site: Site, db_url: str) -> None:
    feed, (page,) = publish(site)
    answers: list[tuple[int, dict[str, str]]] = []
    handler, served = conditional(answers)
    served["body"] = article_html(BODY)
    site.handle(page, handler)
    config = make_config(db_url, site, feed, ["2s", "1h"])
    crawl(config)
    (item,), _, _, (revisit,) = state(db_url)
    assert [a[0] for a in answers] == [200] and "If-None-Match" not in answers[0][1]
    assert revisit.etag and revisit.done == 0  # kept from the first fetch, the schedule set
    assert revisit.due_at == item.first_seen_at + timedelta(seconds=2)

    wait_until(item.first_seen_at + timedelta(seconds=2))
    crawl(config)
    assert [a[0] for a in answers] == [200, 304]
    assert answers[1][1].get("If-None-Match") == revisit.etag
    assert answers[1][1].get("If-Modified-Since") == LAST_MODIFIED
    (item,), (versions,), events, (revisit,) = state(db_url)
    assert (item.version, len(versions), revisit.done, revisit.last_status) == (1, 1, 1, 304)
    assert [e["event"] for e in events] == ["match"]

    served["body"] = article_html(EDITED)  # a new ETag: the second revisit reads the page
    advance(db_url)
    crawl(config)
    assert [a[0] for a in answers] == [200, 304, 200]
    (item,), _, events, _ = state(db_url)
    assert item.version == 2 and [e["event"] for e in events] == ["match", "edit"]


def test_title_edit_is_found_by_the_first_revisit(site: Site, db_url: str) -> None:
    feed, (page,) = publish(site)  # the feed's title is not the page's (it ends in " 0")
    site.set(page, article_html(BODY, og_title="Встреча с директором СВМДА"), "text/html; charset=utf-8")
    config = make_config(db_url, site, feed, ["2s", "1h"])
    crawl(config)
    (item,), _, _, _ = state(db_url)
    old_title = item.title
    site.set(page, article_html(BODY, og_title="Встреча с директором СВМДА и послом Японии"),
             "text/html; charset=utf-8")  # the headline changes, not the text
    wait_until(item.first_seen_at + timedelta(seconds=2))
    crawl(config)
    (item,), (versions,), events, (revisit,) = state(db_url)
    assert revisit.done == 1 and item.version == 2
    assert item.title == "Встреча с директором СВМДА и послом Японии"
    assert versions[1].text == versions[0].text
    (edit,) = [e for e in events if e["event"] == "edit"]
    assert edit["changes"]["title"] == [old_title, item.title]


def test_chrome_that_changes_on_every_request_is_no_version(site: Site, db_url: str) -> None:
    feed, (page,) = publish(site)
    site.handle(page, chrome_changing(BODY))
    config = make_config(db_url, site, feed, ["2s", "1h", "1d"])
    crawl(config)
    (item,), _, _, _ = state(db_url)
    wait_until(item.first_seen_at + timedelta(seconds=2))
    crawl(config)  # compares the page with the item's text
    for _ in range(2):  # then with the page as the last revisit saw it
        advance(db_url)
        crawl(config)
    (item,), (versions,), events, (revisit,) = state(db_url)
    assert len(site.requests(page)) == 4  # first fetch + three revisits
    assert revisit.done == 3 and item.version == 1 and len(versions) == 1
    assert [e["event"] for e in events] == ["match"]


def test_gone_page_is_removed_and_a_page_that_comes_back_is_a_new_version(site: Site, db_url: str) -> None:
    feed, (page,) = publish(site)
    site.set(page, article_html(BODY), "text/html; charset=utf-8")
    config = make_config(db_url, site, feed, ["2s", "1h"])
    crawl(config)
    (item,), _, _, _ = state(db_url)
    site.set(page, b"<html><body>Gone</body></html>", "text/html", status=410)
    wait_until(item.first_seen_at + timedelta(seconds=2))
    crawl(config)
    (item,), (versions,), events, _ = state(db_url)
    assert item.removed and item.version == 2 and versions[1].removed
    assert versions[1].text == versions[0].text and versions[1].raw_status == 410  # the text stays
    removed = [e for e in events if e["event"] == "removed"]
    assert len(removed) == 1 and removed[0]["item"]["removed"] is True

    crawl(config)  # nothing due: nothing new
    (item,), _, events, _ = state(db_url)
    assert item.version == 2 and len([e for e in events if e["event"] == "removed"]) == 1

    site.set(page, article_html(BODY), "text/html; charset=utf-8")
    advance(db_url)
    crawl(config)
    (item,), (versions,), _, _ = state(db_url)
    assert not item.removed and item.version == 3 and not versions[2].removed
    assert versions[2].text == versions[0].text


def test_redirect_to_the_home_page_is_a_removal(site: Site, db_url: str) -> None:
    feed, (page,) = publish(site)
    site.set(page, article_html(BODY), "text/html; charset=utf-8")
    config = make_config(db_url, site, feed, ["1s"])
    crawl(config)
    (item,), _, _, _ = state(db_url)
    home = page.rsplit("/news/", 1)[0] + "/"
    site.set(home, b"<html><body><h1>Home</h1><p>Welcome</p></body></html>", "text/html")
    site.set(page, b"", "text/html", status=302, headers={"Location": site.url(home)})
    wait_until(item.first_seen_at + timedelta(seconds=1))
    crawl(config)
    (item,), (versions,), _, _ = state(db_url)
    assert item.removed and versions[-1].removed


def test_a_revisit_whose_worker_died_is_done_after_its_lease(site: Site, db_url: str) -> None:
    feed, (page,) = publish(site)
    site.set(page, article_html(BODY), "text/html; charset=utf-8")
    config = make_config(db_url, site, feed, ["1s", "1h"])
    crawl(config)
    (item,), _, _, _ = state(db_url)
    wait_until(item.first_seen_at + timedelta(seconds=1))
    engine = make_engine(db_url)
    with make_session_factory(engine).begin() as session:  # a worker claims it, then dies
        claimed = claim_revisits(session, "mfa", (1.0, 3600.0), datetime.now(UTC), "dead-worker",
                                 lease_seconds=600, limit=10)
    engine.dispose()
    assert [c.item_id for c in claimed] == [item.id]
    before = len(site.requests(page))
    crawl(config)  # the lease holds: not revisited twice at once
    assert len(site.requests(page)) == before
    engine = make_engine(db_url)
    with make_session_factory(engine).begin() as session:  # ten minutes on: the lease ends
        session.execute(update(Revisit).values(lease_expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    engine.dispose()
    crawl(config)  # a new worker: the revisit is done, its slot not lost
    _, _, _, (revisit,) = state(db_url)
    assert len(site.requests(page)) == before + 1 and revisit.done == 1
    assert revisit.lease_owner is None and revisit.due_at == item.first_seen_at + timedelta(hours=1)


def test_two_postgresql_workers_do_each_revisit_once(site: Site, pg_url: str) -> None:
    feed, pages = publish(site, 12)
    for page in pages:
        site.set(page, article_html(BODY), "text/html; charset=utf-8")
    config = make_config(pg_url, site, feed, ["1s"])
    crawl(config)
    items, _, _, _ = state(pg_url)
    assert len(items) == 12
    wait_until(max(i.first_seen_at for i in items) + timedelta(seconds=1))
    before = {p: len(site.requests(p)) for p in pages}
    threads = [threading.Thread(target=crawl, args=(config,), kwargs={"worker_id": f"w{n}"})
               for n in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert {p: len(site.requests(p)) - before[p] for p in pages} == dict.fromkeys(pages, 1)
    _, _, _, revisits = state(pg_url)
    assert [r.done for r in revisits] == [1] * 12


def daemon_config(tmp: Path, db_url: str, feed_url: str, hook: str) -> Path:
    path = tmp / "newsmon.toml"
    path.write_text(f"""
[storage]
url = "{db_url}"

[crawl]
interval = "1s"
timeout = "10s"
obey_robots = false
jitter = 0.0
revisit = ["3s", "1h"]

[daemon]
tick = "0.5s"
dispatch_interval = "1s"
round_timeout = "30s"
retry_cap = "3s"

[server]
enabled = false

[[sources]]
id = "mfa"
url = "{feed_url}"
allow_private = true
language = "ru"

[[organisations]]
id = "CICA"
name = "Conference on Interaction and Confidence-Building Measures in Asia"
aliases = ["CICA", "СВМДА"]

[[alerts]]
kind = "webhook"
id = "hook"
url = "{hook}"
allow_private = true
timeout = "3s"
events = ["match", "edit", "removed"]
""", encoding="utf-8")
    return path


def test_kill9_in_the_middle_of_the_schedule_loses_no_revisit(site: Site, receiver: Receiver,
                                                              tmp_path: Path) -> None:
    """`newsmon run` is killed (-9, with its crawl round) while the round holds the item's
    first revisit; the page was edited before. The restarted daemon does that revisit at once
    (the dead worker's revisit leases are freed, not left to expire): version 2, one `edit`."""
    from tests.test_daemon import Daemon
    from tests.test_daemon import wait_until as wait_for

    feed, (page,) = publish(site)
    answers: list[tuple[int, dict[str, str]]] = []
    handler, served = conditional(answers)
    served["body"] = article_html(BODY)
    revisiting, release = threading.Event(), threading.Event()

    def stalling(request: Handler) -> None:
        if answers and not revisiting.is_set():  # the first revisit: held until the kill
            revisiting.set()
            release.wait(30)
            return
        handler(request)

    site.handle(page, stalling)
    db_url = f"sqlite:///{tmp_path / 'newsmon.db'}"
    config = daemon_config(tmp_path, db_url, site.url(feed), f"{receiver.url}/hook")

    def start(name: str) -> Daemon:
        handle = open(tmp_path / f"{name}.log", "ab")  # noqa: SIM115 - closed by Daemon.kill
        process = subprocess.Popen([sys.executable, "-m", "scheduler", "--config", str(config), "run"],
                                   cwd=tmp_path, stdout=handle, stderr=subprocess.STDOUT,
                                   env={**os.environ, "PYTHONPATH": str(ROOT)})
        return Daemon(process, tmp_path / f"{name}.log", handle)

    def delivered(event: str) -> Counter[str]:
        return Counter(r.headers["webhook-id"] for r in receiver.ok("/hook") if r.json["event"] == event)

    started = time.monotonic()
    daemon = start("daemon")
    try:
        wait_for(lambda: bool(delivered("match")), 25, "the item's match alert")
        served["body"] = article_html(EDITED)  # a silent edit: the feed stays as it was
        wait_for(revisiting.is_set, 15, "the first revisit in flight")
    finally:
        daemon.kill9()
        release.set()
    _, _, _, (revisit,) = state(db_url)
    assert revisit.done == 0 and revisit.lease_owner  # claimed by the dead worker
    second = start("restarted")
    try:
        wait_for(lambda: bool(delivered("edit")), 25, "the edit alert after the restart")
        time.sleep(1.5)  # a repeat would come within a dispatch or two
    finally:
        rc, _ = second.terminate()
    assert rc == 0, second.output()[-3000:]
    assert time.monotonic() - started < 60
    (item,), (versions,), events, (revisit,) = state(db_url)
    assert item.version == 2 and "цифровой дипломатии" in item.text and len(versions) == 2
    assert revisit.done >= 1 and revisit.lease_owner is None
    assert [e["event"] for e in events] == ["match", "edit"]
    assert list(delivered("edit").values()) == [1] and list(delivered("match").values()) == [1]
    assert [a[0] for a in answers] == [200, 200]  # the first fetch, the revisit after the restart


def test_a_304_lowers_the_autothrottle_delay_as_a_200_does() -> None:
    """Scrapy lets only a 200 lower a host's delay; a round of 304 revisits kept the delay of
    its slowest answer (84 s for 500 revisits in the bench). A 404 still cannot lower it."""
    from scrapy.http import Response
    from scrapy.utils.test import get_crawler

    from crawler.downloader import ConditionalAutoThrottle
    from crawler.settings import BASE_SETTINGS

    throttle = ConditionalAutoThrottle(get_crawler(settings_dict=dict(BASE_SETTINGS)))
    throttle.mindelay, throttle.maxdelay = 0.0, 10.0
    for status, lowered in ((304, True), (200, True), (404, False), (302, False)):
        slot = type("Slot", (), {"delay": 1.0})()
        throttle._adjust_delay(slot, 0.1, Response("http://127.0.0.1/a", status=status))  # type: ignore[arg-type]
        assert (slot.delay < 1.0) is lowered, status
    slot = type("Slot", (), {"delay": 0.01})()
    throttle._adjust_delay(slot, 2.0, Response("http://127.0.0.1/a", status=404))  # type: ignore[arg-type]
    assert slot.delay == 1.0  # a slow answer raises it, whatever its status
    assert "crawler.downloader.ConditionalAutoThrottle" in BASE_SETTINGS["EXTENSIONS"]
    assert BASE_SETTINGS["EXTENSIONS"]["scrapy.extensions.throttle.AutoThrottle"] is None


# Loaded by the crawl process (PYTHONPATH): records the URL of every request that reaches
# Scrapy's scheduler in the file $NEWSMON_TEST_SCHEDULED.
SCHEDULER_SPY = """
import os
from scrapy.core.scheduler import Scheduler

_enqueue = Scheduler.enqueue_request

def enqueue_request(self, request):
    with open(os.environ["NEWSMON_TEST_SCHEDULED"], "a", encoding="utf-8") as out:
        out.write(request.url + "\\n")
    return _enqueue(self, request)

Scheduler.enqueue_request = enqueue_request
"""


def first_poll_one_at_a_time(site: Site, feed: str, db_url: str, **crawl_keys: str) -> AppConfig:
    """The config of one feed source with revisits 1 s and 1 h after first seen, one request at a
    time to the host; the source synced and polled once."""
    config = build_config({
        "storage": {"url": db_url},
        "sources": [{"id": "mfa", "url": site.url(feed), "allow_private": True, "language": "ru"}],
        "crawl": {"timeout": "5s", "interval": "10m", "revisit": ["1s", "1h"], "jitter": 0,
                  "concurrency_per_host": 1, **crawl_keys}}, {})
    engine = make_engine(db_url)
    with make_session_factory(engine).begin() as session:
        sync_sources(session, [SourceRow(id="mfa", kind="feed", url=site.url(feed))], now=datetime.now(UTC))
    engine.dispose()
    crawl(config)
    return config


def test_revisits_skip_the_scheduler_but_keep_politeness_robots_ssrf_and_size(
        site: Site, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Revisits go straight to the downloader (crawler.spiders.direct), not through the
    scheduler and the spider middlewares; every rule of the downloader still holds for them:
    one request at a time to a host that allows one, robots.txt on a redirect's target, the
    SSRF guard on a redirect to another loopback host, the response size limit."""
    feed, pages = publish(site, 8)
    active, peak = [0], [0]
    lock = threading.Lock()

    def slow(request: Handler) -> None:
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.05)
        with lock:
            active[0] -= 1
        request.send_bytes(article_html(BODY), "text/html; charset=utf-8")

    for page in pages:
        site.handle(page, slow)
    config = first_poll_one_at_a_time(site, feed, db_url, max_response_size="50KB")
    items, _, _, _ = state(db_url)
    assert len(items) == 8

    private = site.unique("/private/moved")  # disallowed by the site's robots.txt
    site.set(private, article_html(BODY), "text/html; charset=utf-8")
    site.set(pages[0], b"", "text/html", status=302, headers={"Location": site.url(private)})
    elsewhere = site.url("/internal").replace("127.0.0.1", "127.0.0.2")  # not the source's host
    site.set(pages[1], b"", "text/html", status=302, headers={"Location": elsewhere})
    site.set(pages[2], article_html(BODY * 400), "text/html; charset=utf-8")  # ~200 KB
    peak[0] = 0
    spy = tmp_path / "spy"
    spy.mkdir()
    (spy / "sitecustomize.py").write_text(SCHEDULER_SPY)
    scheduled = tmp_path / "scheduled.txt"
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(spy), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("NEWSMON_TEST_SCHEDULED", str(scheduled))
    wait_until(min(i.first_seen_at for i in items) + timedelta(seconds=1.5))
    report = crawl_round(config, None, timeout=60)

    (event,) = report.sources
    assert event.outcome == "error" and event.error_class == "ssrf"  # the redirect to 127.0.0.2
    assert site.requests(private) == []  # robots.txt held for the redirect's target
    assert scheduled.read_text().splitlines() == [site.url(feed)]  # only the feed was scheduled
    assert peak[0] == 1  # one request at a time, as the host allows
    items, versions, _, revisits = state(db_url)
    assert [r.done for r in revisits] == [1] * 8  # refused or failed revisits move on too
    assert all(len(v) == 1 for v in versions) and not any(i.removed for i in items)
    assert [len(site.requests(p)) for p in pages] == [2] * 8


def test_revisits_stop_at_the_rounds_deadline(site: Site, db_url: str) -> None:
    """Revisits sent straight to the downloader stop when the round closes at its deadline (as
    scheduled requests are dropped then): the round ends on its own, the rest stay due."""
    feed, pages = publish(site, 4)

    def slow_revisit(request: Handler) -> None:
        if site.count(f"slow{request.path}") > 1:  # the first fetch is quick, a revisit slow
            time.sleep(2.0)
        request.send_bytes(article_html(BODY), "text/html; charset=utf-8")

    for page in pages:
        site.handle(page, slow_revisit)
    config = first_poll_one_at_a_time(site, feed, db_url)
    items, _, _, _ = state(db_url)
    wait_until(min(i.first_seen_at for i in items) + timedelta(seconds=1.5))
    started = time.monotonic()
    report = crawl_round(config, None, timeout=8)  # the spider closes 3 s in (CLOSE_MARGIN 5 s)
    assert not report.timed_out and time.monotonic() - started < 8
    revisited = [len(site.requests(p)) - 1 for p in pages]  # one at a time, 2 s each, then closed
    assert set(revisited) <= {0, 1} and 1 <= sum(revisited) <= 2, revisited
    (event,) = report.sources  # the poll ran out of time; its revisits not sent stay due
    assert event.error_class == "timeout"
