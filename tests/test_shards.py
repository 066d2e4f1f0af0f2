"""Large rounds split over several crawl processes: the plan (hosts kept whole unless one host
alone outweighs a process, per-host budgets that add up to crawl.concurrency_per_host) and a
real two-process round writing one database (copies in both processes join one story, one
alert; no host sees more requests in flight than with one process)."""

from __future__ import annotations

import queue
import random
import threading
import time
from collections import Counter
from typing import Any

import pytest
from sqlalchemy import func, select

from crawler.addresses import url_host
from crawler.sources import SourceSpec
from crawler.writeturn import WriteTurn
from scheduler.config import build_config
from scheduler.runner import (
    MIN_SOURCES_PER_PROCESS,
    CrawlReport,
    Shard,
    _collect,
    _Run,
    crawl_processes,
    crawl_round,
    plan_shards,
)
from storage.db import make_engine, make_session_factory
from storage.models import AlertEvent, Item
from tests.plugins.sites import Handler, Site, rss


def specs(hosts: dict[str, int]) -> list[SourceSpec]:
    return [SourceSpec(id=f"{host.split('.')[0]}-{n}", url=f"https://{host}/feed/{n}")
            for host, count in hosts.items() for n in range(count)]


def test_a_small_round_stays_in_one_process() -> None:
    sources = specs({"a.example": MIN_SOURCES_PER_PROCESS * 2 - 1})
    shards = plan_shards(sources, processes=4, concurrency_per_host=2)
    assert len(shards) == 1 and shards[0].sources == sources and shards[0].host_concurrency == {}


def test_hosts_stay_whole_and_processes_balance() -> None:
    sources = specs({f"h{n}.example": 10 for n in range(30)})
    shards = plan_shards(sources, processes=2, concurrency_per_host=2)
    assert len(shards) == 2
    assert sorted(len(s.sources) for s in shards) == [150, 150]
    for shard in shards:
        assert shard.host_concurrency == {}
    hosts = [{url_host(s.url) for s in shard.sources} for shard in shards]
    assert not hosts[0] & hosts[1]
    assert sorted(s.id for shard in shards for s in shard.sources) == sorted(s.id for s in sources)


def test_one_big_host_is_split_with_budgets_adding_up() -> None:
    sources = specs({"big.example": 300, "small.example": 3})
    shards = plan_shards(sources, processes=2, concurrency_per_host=5)
    assert len(shards) == 2
    assert sorted(s.host_concurrency["big.example"] for s in shards) == [2, 3]
    assert all("small.example" not in s.host_concurrency for s in shards)
    counts = Counter(s.id for shard in shards for s in shard.sources)
    assert len(counts) == 303 and set(counts.values()) == {1}
    for shard in shards:  # each process keeps the round's order
        order = [sources.index(s) for s in shard.sources]
        assert order == sorted(order)


def test_browser_rendered_sources_share_one_process() -> None:
    # Each crawl process with a browser source starts a browser: they all go to one, whole hosts.
    sources = specs({"big.example": 300})
    sources += [SourceSpec(id=f"tg-{n}", url=f"https://t{n % 3}.example/s/channel{n}", kind="telegram",
                           render="browser") for n in range(40)]
    sources.append(SourceSpec(id="t0-feed", url="https://t0.example/rss"))  # a browser host's feed
    shards = plan_shards(sources, processes=2, concurrency_per_host=4)
    assert len(shards) == 2
    with_browser = [shard for shard in shards if any(s.renders for s in shard.sources)]
    assert len(with_browser) == 1
    browser_hosts = {url_host(s.url) for s in with_browser[0].sources if s.renders}
    assert browser_hosts == {"t0.example", "t1.example", "t2.example"}
    assert "t0-feed" in {s.id for s in with_browser[0].sources}  # its host stays whole
    assert not any(host in shard.host_concurrency for shard in shards for host in browser_hosts)
    counts = Counter(s.id for shard in shards for s in shard.sources)
    assert len(counts) == len(sources) and set(counts.values()) == {1}


def test_a_host_allowed_one_request_is_never_split() -> None:
    sources = specs({"polite.example": 300})
    assert len(plan_shards(sources, processes=2, concurrency_per_host=1)) == 1
    assert crawl_processes(3) == 3 and 1 <= crawl_processes(0) <= 4


SYNDICATED = ("The foreign ministers of the member states of CICA met in Astana on Tuesday to discuss "
              "the conference's work programme for the coming year, confidence building measures in "
              "the economic dimension, new threats and challenges, and the preparation of the summit "
              "that the chairmanship plans to hold in the autumn, a statement said.")


WORDS = ("harvest weather council river bridge school market festival museum theatre railway "
         "station hospital library stadium airport factory orchard vineyard harbour ferry tram").split()


def own_text(n: int) -> str:
    """A local item of outlet ``n``: words drawn at random, so no two outlets' items are alike."""
    pick = random.Random(n)
    return " ".join(pick.choice(WORDS) for _ in range(40))


@pytest.mark.slow
def test_a_round_over_two_processes_stores_copies_as_one_story(site: Site, db_url: str) -> None:
    engine = make_engine(db_url)
    prefix = site.unique("/shards")
    in_flight, peak, lock = [0], [0], threading.Lock()

    def feed(n: int) -> Any:
        body = rss([
            {"title": f"Outlet {n}: CICA ministers meet", "link": site.url(f"{prefix}/{n}/copy"),
             "description": f"ASTANA ({n}) — {SYNDICATED}"},
            {"title": f"Outlet {n} local news", "link": site.url(f"{prefix}/{n}/own"),
             "description": own_text(n)},
        ])

        def serve(request: Handler) -> None:
            with lock:
                in_flight[0] += 1
                peak[0] = max(peak[0], in_flight[0])
            try:
                time.sleep(0.01)
                request.send_bytes(body, "application/rss+xml")
            finally:
                with lock:
                    in_flight[0] -= 1
        return serve

    count = MIN_SOURCES_PER_PROCESS * 2
    sources = [{"id": f"outlet-{n}", "url": site.handle(f"{prefix}/{n}.xml", feed(n)), "allow_private": True}
               for n in range(count)]
    config = build_config({
        "storage": {"url": db_url}, "sources": sources,
        "crawl": {"timeout": "10s", "fetch_articles": False, "obey_robots": False, "processes": 2,
                  "concurrency_per_host": 2},
        "alerts": [{"kind": "webhook", "id": "hook", "url": "http://127.0.0.1:9/hook"}],
    }, {})
    assert len(plan_shards(config.sources, 2, 2)) == 2
    report = crawl_round(config, None, timeout=120)
    assert report.returncode == 0 and len(report.sources) == count
    assert all(e.outcome == "ok" and e.new == 2 for e in report.sources), report.sources[:3]
    assert peak[0] <= 2  # the host's budget of 2 was shared by the two processes
    with make_session_factory(engine)() as session:
        copies = session.execute(select(Item.story_id).where(Item.url.like("%/copy"))).scalars().all()
        own = session.execute(select(Item.story_id).where(Item.url.like("%/own"))).scalars().all()
        events = session.scalar(select(func.count()).select_from(AlertEvent))
    assert len(copies) == count and len(set(copies)) == 1  # one story across both processes
    assert len(set(own)) == count
    assert events == 1  # one alert for the story, though every outlet reprinted it
    engine.dispose()


def test_crawl_processes_take_turns_to_write_without_waiting(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path / 'turns.db'}"
    first, second = WriteTurn(url), WriteTurn(url)
    assert first.try_take()
    assert not second.try_take()  # answers at once: the process goes on crawling
    first.give_back()
    assert second.try_take() and not first.try_take()
    second.close()
    assert first.try_take()
    first.close()
    assert WriteTurn("postgresql+psycopg://u@db.example/newsmon").try_take()  # the database waits


def test_events_of_several_processes_merge_into_one_stream() -> None:
    runs = [_Run(Shard(), process=None), _Run(Shard(), process=None)]  # type: ignore[arg-type]
    lines: queue.Queue[tuple[int, str | None]] = queue.Queue()
    for item in [(0, '{"kind": "progress", "done": 1, "total": 4}'), (1, "not an event"),
                 (1, '{"kind": "progress", "done": 2, "total": 6}'), (0, None),
                 (1, '{"kind": "source", "source_id": "a", "outcome": "ok", "new": 3}'), (1, None)]:
        lines.put(item)
    seen: list[dict[str, Any]] = []
    report = CrawlReport()
    assert _collect(runs, lines, time.monotonic() + 30, report, seen.append) is False
    assert [(e["done"], e["total"]) for e in seen if e["kind"] == "progress"] == [(1, 4), (3, 10)]
    assert [(e.source_id, e.new) for e in report.sources] == [("a", 3)]
