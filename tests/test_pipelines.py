"""The item pipelines called directly with a real database: counting per source, matching,
one transaction per item with its outbox rows, repeats dropped, a lost insert race retried."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
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
from storage.models import AlertEvent, FetchLog, Item, Revisit
from storage.repository import ItemWrite, SourceRow, sync_sources
from storage.revisits import RevisitResult, claim_revisits
from storage.writes import save_items

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


def _prepared(context: RoundContext, url: str) -> ItemBatch:
    return MatchPipeline(context).process_item(NormalizePipeline(context).process_item(
        ItemBatch("src", [record(url, url.rsplit("/", 1)[-1])])))


@pytest.mark.parametrize("still_to_come", [None, "request", "batch", "unstarted"])
def test_the_last_response_is_stored_without_waiting_for_company(
        context: RoundContext, monkeypatch: Any, still_to_come: str | None) -> None:
    # A group waits GROUP_DELAY for other responses to share its commit. The round's ledger
    # knows when nothing else can come (no request scheduled, downloading or in its callback,
    # no other batch on its way): then the group is stored at once, or as soon as the last
    # thing it waited for is done; never only by the timer or the end of the round.
    monkeypatch.setattr(pipelines, "GROUP_DELAY", 30.0)
    ledger, poll = context.ledger, context.poll("src")
    if still_to_come == "unstarted":  # a source whose document request start() has not handed out
        other = SourceSpec(id="later", url="http://news.example.org/later.rss")
        ledger.open([SourceSpec(id="src", url="http://news.example.org/rss"), other])
        poll = context.poll("src")
    ledger.request_added(poll)  # the feed
    if still_to_come == "request":
        ledger.request_added(poll)  # an article page, still downloading
    batch = _prepared(context, "http://news.example.org/last")
    ledger.item_added(poll)
    if still_to_come == "batch":
        ledger.item_added(poll)  # another response's batch, still on its way through the pipelines
    ledger.request_done(poll)  # the feed's callback is over
    storage = StoragePipeline(context)
    storage.open_spider()
    commits: list[int] = []
    event.listen(context.sessions.kw["bind"], "commit", lambda conn: commits.append(1))

    async def crawl() -> tuple[bool, bool]:
        pending = asyncio.ensure_future(storage.process_item(batch))
        done, _ = await asyncio.wait([pending], timeout=0.5)
        at_once = bool(done)
        if still_to_come == "request":
            ledger.request_done(poll)  # the article's callback ends without an item (e.g. a 304)
        elif still_to_come == "batch":
            ledger.item_done(poll)  # the other batch was dropped before reaching storage
        elif still_to_come == "unstarted":
            later = context.poll("later")
            ledger.request_added(later)
            ledger.request_done(later)
        done, _ = await asyncio.wait([pending], timeout=5)
        if not done:
            storage.close_spider()  # the end of the round flushes what waits
        await pending
        return at_once, bool(done)

    at_once, in_time = asyncio.run(crawl())
    assert at_once is (still_to_come is None)
    assert in_time  # stored when the last thing to come was done, not 30 s later
    assert context.poll("src").new == 1
    # one commit for the group (and the later source's poll, over without items, on its own)
    assert len(commits) == (2 if still_to_come == "unstarted" else 1)


ROUND_WITH_A_LONG_GROUP_DELAY = """
import sys
import crawler.pipelines
from crawler.__main__ import main
crawler.pipelines.GROUP_DELAY = 60.0  # a group that waited for company would outlive the round
sys.exit(main())
"""


@pytest.mark.slow
def test_a_real_round_stores_its_last_group_when_nothing_else_can_come(site: Any, sqlite_url: str) -> None:
    # `python -m crawler` with groups that would wait a minute for company: the ledger must see
    # the end of the round (feeds, then their article pages) and store every group at once. A
    # missed end leaves the last group waiting past the deadline: sources time out, items are lost.
    import subprocess
    import sys
    import time

    from scheduler.config import build_config
    from scheduler.runner import PROJECT_ROOT, build_job
    from tests.plugins.sites import rss

    sources = []
    for n in range(3):
        path = site.unique("/last")
        items = [{"title": f"CICA item {n}.{i}", "link": site.url(f"{path}/a{i}"), "guid": f"{path}/{i}",
                  "description": f"The CICA council met ({n}.{i})."} for i in range(2)]
        for i in range(2):
            site.set(f"{path}/a{i}", f"<html><body><article><h1>Item {n}.{i}</h1><p>The CICA "
                     f"council met in Astana, item {n}.{i}.</p></article></body></html>".encode(), "text/html")
        sources.append({"id": f"s{n}", "url": site.set(f"{path}.xml", rss(items)), "allow_private": True,
                        "fetch_articles": n == 0})
    config = build_config({"storage": {"url": sqlite_url}, "sources": sources,
                           "crawl": {"timeout": "5s", "obey_robots": False}}, {})
    job = build_job(config, config.sources, deadline=30)
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", ROUND_WITH_A_LONG_GROUP_DELAY], input=job.model_dump_json(),
                          capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=90)
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr[-2000:]
    events = [json.loads(line) for line in done.stdout.splitlines() if '"source"' in line]
    assert {(e["source_id"], e["outcome"], e["new"]) for e in events} == {
        ("s0", "ok", 2), ("s1", "ok", 2), ("s2", "ok", 2)}, done.stderr[-2000:]
    assert elapsed < 25  # well under GROUP_DELAY: no group waited for its timer
    engine = make_engine(sqlite_url)
    with make_session_factory(engine)() as session:
        assert session.scalar(select(func.count()).select_from(Item)) == 6
    engine.dispose()


@pytest.mark.parametrize("end", ["round-closed", "poll-recorded", "group-commit", "group-commit-fails"])
def test_a_quiet_revisit_that_skips_the_pipelines_is_recorded_by_the_end_of_the_round(
        db_url: str, end: str, monkeypatch: Any) -> None:
    """A 304 revisit goes from the spider to the ledger (``RoundLedger.quiet_revisit``), not
    through the item pipelines: its next due time, attempt count, status and lease are still
    written — with the next group commit (or on their own when that fails), with its poll, or
    at the close of the round."""
    engine = make_engine(db_url)
    sessions = make_session_factory(engine)
    spec = SourceSpec(id="src", url="http://news.example.org/rss")
    other = SourceSpec(id="other", url="http://news.example.org/other.rss")
    first = record("http://news.example.org/1", "one")
    first.canonical_url = first.url
    with sessions.begin() as session:
        sync_sources(session, [SourceRow(s.id, "feed", s.url) for s in (spec, other)], NOW)
        item_id = save_items(session, [first], [])[0].item_id
    schedule = (3600.0, 86400.0)
    later = NOW + timedelta(hours=1, seconds=1)
    with sessions.begin() as session:
        (claim,) = claim_revisits(session, "src", schedule, later, "w", lease_seconds=600, limit=5)
    job = CrawlJob(database_url=db_url, sources=(spec, other), organisations=tuple(builtin_organisations()))
    timers = None if end == "poll-recorded" else (lambda seconds, fn: None)  # never fire
    ledger = RoundLedger(sessions, job.crawl, emit=lambda e: None, schedule=timers)
    ledger.open([spec, other])
    context = RoundContext(job=job, sessions=sessions, ledger=ledger)
    poll = context.poll("src")
    ledger.request_added(poll)
    ledger.quiet_revisit(RevisitResult(item_id=claim.item_id, owner="w", kind="not-modified",
                                       fetched_at=later, schedule=schedule, status=304,
                                       first_seen_at=claim.first_seen_at))

    def revisit() -> Revisit:
        with sessions() as session:
            row = session.get(Revisit, item_id)
            assert row is not None
            return row

    if end != "round-closed":
        ledger.request_done(poll)  # its poll is over (recorded at once, or queued)
    if end.startswith("group-commit"):
        if end == "group-commit-fails":
            def broken(*args: Any, **kwargs: Any) -> Any:
                raise IntegrityError("INSERT", {}, Exception("always"))
            monkeypatch.setattr(pipelines, "save_items", broken)
        storage = StoragePipeline(context)
        storage.open_spider()
        second = record("http://news.example.org/2", "two")
        second.source_id = "other"
        batch = MatchPipeline(context).process_item(NormalizePipeline(context).process_item(
            ItemBatch("other", [second])))

        async def crawl() -> Any:
            return await storage.process_item(batch)

        if end == "group-commit-fails":
            with pytest.raises(DropItem):
                asyncio.run(crawl())
        else:
            asyncio.run(crawl())
    elif end == "round-closed":
        assert revisit().done == 0  # not yet: it waits for a commit of the round
        ledger.close("finished")
    row = revisit()
    assert (row.done, row.last_status, row.due_at) == (1, 304, NOW + timedelta(days=1))
    assert row.lease_owner is None and row.lease_expires_at is None
    assert ledger.quiet == [] and ledger.committing == []
    engine.dispose()
