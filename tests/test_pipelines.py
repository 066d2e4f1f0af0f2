"""The item pipelines called directly with a real database: counting per source, matching,
one transaction per item with its outbox rows, repeats dropped, a lost insert race retried."""

from __future__ import annotations

import asyncio
import inspect
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from scrapy.exceptions import DropItem
from sqlalchemy import event, func, select
from sqlalchemy.exc import IntegrityError

import crawler.pipelines as pipelines
from crawler.failures import STORAGE
from crawler.job import ChannelSpec, CrawlJob
from crawler.organisations import builtin_organisations
from crawler.pipelines import (
    ItemBatch,
    MatchPipeline,
    NormalizePipeline,
    StoragePipeline,
)
from crawler.polls import RoundContext, RoundLedger
from crawler.sources import SourceSpec
from storage.db import make_engine, make_session_factory
from storage.models import AlertEvent, FetchLog, Item
from storage.repository import ItemWrite, SourceRow, sync_sources

NOW = datetime.now(UTC)


@pytest.fixture
def context(db_url: str) -> Any:
    engine = make_engine(db_url)
    sessions = make_session_factory(engine)
    spec = SourceSpec(id="src", url="http://news.example.org/rss")
    job = CrawlJob(database_url=db_url, sources=(spec,), organisations=tuple(builtin_organisations()),
                   channels=(ChannelSpec(id="hook"),))
    ledger = RoundLedger(sessions, job.crawl, emit=lambda e: None)
    ledger.open([spec])
    yield RoundContext(job=job, sessions=sessions, ledger=ledger)
    engine.dispose()


def run(context: RoundContext, record: ItemWrite) -> ItemWrite:
    batch = ItemBatch("src", [record])
    storage = StoragePipeline(context)
    storage.open_spider()
    for stage in (NormalizePipeline(context), MatchPipeline(context)):
        batch = stage.process_item(batch)
    return storage.store(batch).items[0]


def record(url: str, title: str, text: str = "", **kwargs: Any) -> ItemWrite:
    return ItemWrite(source_id="src", url=url, canonical_url="", title=title, text=text, content_hash="",
                     fetched_at=NOW, published_at=NOW, raw_status=200, **kwargs)


def test_new_items_are_matched_stored_and_alerted(context: RoundContext) -> None:
    item = run(context, record("http://news.example.org/1?utm_source=x", "  CICA\u00ad summit ",
                               "Ministers of СВМДА met."))
    assert item.canonical_url == "http://news.example.org/1"
    assert {m.organisation for m in item.matches} == {"CICA"} and item.matches[0].in_title
    poll = context.poll("src")
    assert (poll.new, poll.matched, poll.events) == (1, 1, 1)
    with context.sessions() as session:
        stored = session.scalar(select(Item))
        assert stored is not None and stored.title == "CICA summit"
        assert session.scalar(select(func.count()).select_from(AlertEvent)) == 1


def test_repeats_within_a_poll_are_dropped(context: RoundContext) -> None:
    run(context, record("http://news.example.org/1", "A", guid="g"))
    with pytest.raises(DropItem):
        run(context, record("http://news.example.org/1#frag", "A again"))
    with pytest.raises(DropItem):
        run(context, record("http://news.example.org/other", "A", guid="g"))


def test_unchanged_and_updated_are_counted(context: RoundContext) -> None:
    run(context, record("http://news.example.org/1", "A", "text"))
    context.poll("src").seen.clear()  # a later poll
    run(context, record("http://news.example.org/1", "A", "text"))
    context.poll("src").seen.clear()
    run(context, record("http://news.example.org/1", "A", "new text"))
    poll = context.poll("src")
    assert (poll.new, poll.unchanged, poll.updated) == (1, 1, 1)


def test_future_dates_are_dropped_and_empty_titles_fall_back_to_the_url(context: RoundContext) -> None:
    item = run(context, ItemWrite(
        source_id="src", url="http://news.example.org/9", canonical_url="", title="", text="", content_hash="",
        fetched_at=NOW, published_at=datetime(2999, 1, 1, tzinfo=UTC)))
    assert item.published_at is None and item.title == "http://news.example.org/9"


def test_a_lost_insert_race_is_retried_once(context: RoundContext, monkeypatch: Any) -> None:
    real = pipelines.save_items
    calls = []

    def racing(session: Any, writes: Any, channels: Any, **kwargs: Any) -> Any:  # the insert race, lost once
        calls.extend(w.canonical_url for w in writes)
        if len(calls) == 1:
            raise IntegrityError("INSERT", {}, Exception("unique"))
        return real(session, writes, channels, **kwargs)

    monkeypatch.setattr(pipelines, "save_items", racing)
    run(context, record("http://news.example.org/1", "A"))
    assert len(calls) == 2 and context.poll("src").new == 1


def test_items_of_one_response_share_a_commit_but_fail_alone(context: RoundContext,
                                                             monkeypatch: Any) -> None:
    real_batch = pipelines.save_items

    def flaky_batch(session: Any, writes: Any, channels: Any, **kwargs: Any) -> Any:
        if any(w.title == "bad" for w in writes):
            raise IntegrityError("INSERT", {}, Exception("always"))
        return real_batch(session, writes, channels, **kwargs)

    monkeypatch.setattr(pipelines, "save_items", flaky_batch)
    batch = ItemBatch("src", [record(f"http://news.example.org/{t}", t)
                              for t in ("good", "bad")])
    storage = StoragePipeline(context)
    storage.open_spider()
    storage.store(MatchPipeline(context).process_item(NormalizePipeline(context).process_item(batch)))
    with context.sessions() as session:  # the bad item cost only itself
        assert session.scalars(select(Item.title)).all() == ["good"]
    poll = context.poll("src")
    # the good item stored; the refused one is the source's error (an item lost is never "ok")
    assert poll.new == 1 and (poll.outcome, poll.error_class) == ("error", STORAGE)
    assert poll.message == "storing http://news.example.org/bad failed"


def test_responses_arriving_together_share_one_commit_and_a_bad_one_fails_alone(
        context: RoundContext, monkeypatch: Any) -> None:
    real_batch = pipelines.save_items

    def flaky_batch(session: Any, writes: Any, channels: Any, **kwargs: Any) -> Any:
        if any(w.title.startswith("bad") for w in writes):
            raise IntegrityError("INSERT", {}, Exception("always"))
        return real_batch(session, writes, channels, **kwargs)

    def response(*titles: str) -> ItemBatch:
        batch = ItemBatch("src", [record(f"http://news.example.org/{t}", t) for t in titles])
        return MatchPipeline(context).process_item(NormalizePipeline(context).process_item(batch))

    commits: list[int] = []
    bind = context.sessions.kw["bind"]
    event.listen(bind, "commit", lambda conn: commits.append(1))
    storage = StoragePipeline(context)
    storage.open_spider()

    async def crawl(*batches: ItemBatch) -> list[Any]:
        return await asyncio.gather(*(storage.process_item(b) for b in batches), return_exceptions=True)

    first = asyncio.run(crawl(response("a1", "a2"), response("b1", "b2"), response("c1", "c2")))
    assert all(isinstance(r, ItemBatch) for r in first)
    assert len(commits) == 1  # three responses, one transaction
    monkeypatch.setattr(pipelines, "save_items", flaky_batch)
    second = asyncio.run(crawl(response("d1", "d2"), response("bad1", "bad2")))
    assert isinstance(second[0], ItemBatch) and isinstance(second[1], DropItem)
    with context.sessions() as session:
        assert sorted(session.scalars(select(Item.title)).all()) == ["a1", "a2", "b1", "b2", "c1", "c2", "d1", "d2"]
    assert context.poll("src").new == 8


@pytest.mark.parametrize("failing", [False, True])
def test_finished_polls_are_recorded_in_the_next_item_commit(db_url: str, failing: bool,
                                                             monkeypatch: Any) -> None:
    engine = make_engine(db_url)
    sessions = make_session_factory(engine)
    specs = [SourceSpec(id=s, url=f"http://news.example.org/{s}.rss") for s in ("src", "done")]
    with sessions.begin() as session:
        sync_sources(session, [SourceRow(s.id, "feed", s.url) for s in specs], NOW)
    job = CrawlJob(database_url=db_url, sources=tuple(specs), organisations=tuple(builtin_organisations()))
    emitted: list[Any] = []
    ledger = RoundLedger(sessions, job.crawl, emit=emitted.append, schedule=lambda seconds, fn: None)
    ledger.open(specs)
    context = RoundContext(job=job, sessions=sessions, ledger=ledger)
    ledger.finish(context.poll("done"))  # queued: its timer never fires in this test
    commits: list[int] = []
    event.listen(engine, "commit", lambda conn: commits.append(1))
    storage = StoragePipeline(context)
    storage.open_spider()
    batch = ItemBatch("src", [record("http://news.example.org/1", "one")])
    batch = MatchPipeline(context).process_item(NormalizePipeline(context).process_item(batch))

    async def crawl() -> Any:
        return await storage.process_item(batch)

    if failing:  # the item commit fails: the poll is still recorded, on its own
        def broken(*args: Any, **kwargs: Any) -> Any:
            raise IntegrityError("INSERT", {}, Exception("always"))
        monkeypatch.setattr(pipelines, "save_items", broken)
        with pytest.raises(DropItem):
            asyncio.run(crawl())
    else:
        asyncio.run(crawl())
        assert len(commits) == 1  # the item and the finished poll: one commit
    with sessions() as session:
        assert session.scalars(select(FetchLog.source_id)).all() == ["done"]
    assert [e.source_id for e in emitted] == ["done"]
    engine.dispose()


class _Engine:
    """The parts of Scrapy's ExecutionEngine that StoragePipeline._last_to_come reads."""

    def __init__(self, downloading: bool) -> None:
        self._start = None  # start requests all handed out
        self.downloader = SimpleNamespace(active={"a request"} if downloading else set())
        self._slot = SimpleNamespace(scheduler=SimpleNamespace(has_pending_requests=lambda: False))
        self.scraper = SimpleNamespace(slot=SimpleNamespace(queue=[]))


@pytest.mark.parametrize("downloading", [False, True])
def test_the_last_response_is_stored_without_waiting_for_company(context: RoundContext, monkeypatch: Any,
                                                                  downloading: bool) -> None:
    # A group waits GROUP_DELAY for other responses to share its commit; when nothing else is
    # downloading, scheduled or queued, that wait would only leave the round idle.
    monkeypatch.setattr(pipelines, "GROUP_DELAY", 30.0)
    batch = MatchPipeline(context).process_item(NormalizePipeline(context).process_item(
        ItemBatch("src", [record("http://news.example.org/last", "last")])))
    storage = StoragePipeline(context)
    storage.crawler = SimpleNamespace(engine=_Engine(downloading))  # type: ignore[assignment]
    storage.open_spider()

    async def crawl() -> bool:
        pending = asyncio.ensure_future(storage.process_item(batch))
        done, _ = await asyncio.wait([pending], timeout=5)
        if not done:
            storage.close_spider()  # the end of the round flushes what waits
        await pending
        return bool(done)

    assert asyncio.run(crawl()) is not downloading
    assert context.poll("src").new == 1


def test_the_engine_idle_test_still_reads_what_last_to_come_reads() -> None:
    # _last_to_come mirrors ExecutionEngine.spider_is_idle (less the items waiting in the
    # pipeline) through Scrapy internals: a Scrapy upgrade that renames them must show here.
    from scrapy.core.engine import ExecutionEngine
    from scrapy.core.scraper import Slot

    idle = inspect.getsource(ExecutionEngine.spider_is_idle)
    for name in ("self._start is not None", "self.downloader.active", "self._slot.scheduler.has_pending_requests()"):
        assert name in idle
    assert "self.queue" in inspect.getsource(Slot.is_idle)
