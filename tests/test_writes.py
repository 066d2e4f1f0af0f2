"""The one write path, ``storage.writes.save_items``, on SQLite and PostgreSQL: what it stores
for new, unchanged, updated and moved items, GUID and link changes, an item named twice, copies
of one story inside a batch and across batches, the candidate limit and alert rules.

Each scenario also checks a property of the function: the result does not depend on how the
writes are grouped. Inside, a batch takes other routes than a write alone (one lookup, Core
inserts of runs of new items, stories chosen for a run), so each scenario is stored as given and
one write per call, in two databases of the same backend, and must leave the same rows and
give the same results."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from crawler.stories import MinHashStories
from storage.db import make_engine, make_session_factory, upgrade
from storage.models import AlertEvent
from storage.repository import (
    ChannelRule,
    ItemWrite,
    MatchRow,
    SaveResult,
    SourceRow,
    sync_sources,
)
from storage.stories import StoryRule
from storage.writes import save_items
from tests.plugins.db import _drop_pg_database, _new_pg_database
from tests.test_stories import AZERTAC, MFA_AZ, MID_AZ, MID_KZ, TREND

NOW = datetime(2025, 2, 4, 12, 0, tzinfo=UTC)
CICA = MatchRow("CICA", "СВМДА", "СВМДА", "…мерам доверия в Азии (СВМДА)…", 10, 15)
SCO = MatchRow("SCO", "ШОС", "ШОС", "…саммит ШОС…", 30, 33, True)
SOURCES = ("trend", "azertac", "mfa-az", "mid-ru", "bench")
CHANNELS = [ChannelRule("hook"), ChannelRule("sco-only", frozenset({"SCO"})),
            ChannelRule("fresh", max_age=timedelta(hours=1))]
WORDS = ("министр встреча саммит сотрудничество безопасность Азия региональный форум "
         "meeting summit cooperation security regional forum dialogue confidence").split()

Batches = Sequence[Sequence[ItemWrite]]


def write(source: str, n: int, story: tuple[str, str], at: datetime = NOW, **overrides: Any) -> ItemWrite:
    title, body = story
    url = f"https://{source}.example/news/{n}"
    values: dict[str, Any] = {
        "source_id": source, "url": url + "?utm=x", "canonical_url": url, "guid": f"{source}-{n}",
        "title": title, "text": body, "content_hash": f"sha256:{source}-{n}-{len(body)}-{body[-20:]}",
        "fetched_at": at, "published_at": at - timedelta(minutes=30), "matches": [CICA],
        "raw": b"<rss/>", "raw_headers": {"content-type": "application/rss+xml"}, "language": "ru",
    }
    values.update(overrides)
    return ItemWrite(**values)


def cyclic(n: int, i: int, at: datetime) -> ItemWrite:
    """The bench's items: cyclic word sequences, so that nearly all are copies of each other."""
    words = " ".join(WORDS[(n * 7 + i * 3 + k) % len(WORDS)] for k in range(60))
    mention = " The CICA ministers met." if (n + i) % 10 == 0 else ""
    return write(SOURCES[i % len(SOURCES)], n * 100 + i, (f"Feed {n} item {i}", f"{words}{mention}\n\n{words}"),
                 at=at + timedelta(microseconds=i), matches=[CICA] if mention else [])


Databases = tuple[sessionmaker[Session], sessionmaker[Session]]


@pytest.fixture
def databases(db_url: str, tmp_path: Any, pg_template: str | None) -> Iterator[Databases]:
    """Two migrated databases of the same backend, with the same sources."""
    if db_url.startswith("sqlite"):
        other = f"sqlite:///{tmp_path / 'other.db'}"
        upgrade(engine := make_engine(other))
        engine.dispose()
    else:
        assert pg_template is not None
        other = _new_pg_database(pg_template)
    engines = [make_engine(db_url), make_engine(other)]
    factories = [make_session_factory(e) for e in engines]
    for factory in factories:
        with factory.begin() as session:
            sync_sources(session, [SourceRow(s, "feed", f"https://{s}.example/rss") for s in SOURCES], NOW)
    yield factories[0], factories[1]
    for engine in engines:
        engine.dispose()
    if not db_url.startswith("sqlite"):
        _drop_pg_database(other)


def one_per_call(factory: sessionmaker[Session], batches: Batches, rule: StoryRule | None) -> list[SaveResult]:
    """Each batch in one transaction, one ``save_items`` call per write."""
    results = []
    for batch in batches:
        with factory.begin() as session:
            for w in batch:
                results += save_items(session, [w], CHANNELS, stories=rule)
    return results


def batched(factory: sessionmaker[Session], batches: Batches, rule: StoryRule | None) -> list[SaveResult]:
    """Each batch in one ``save_items`` call."""
    results = []
    for batch in batches:
        with factory.begin() as session:
            results += save_items(session, batch, CHANNELS, stories=rule)
    return results


TABLES = {
    "items": "SELECT * FROM items ORDER BY id",
    "item_versions": "SELECT * FROM item_versions ORDER BY id",
    "matches": "SELECT * FROM matches ORDER BY id",
    "stories": "SELECT * FROM stories ORDER BY id",
    "item_signatures": "SELECT * FROM item_signatures ORDER BY item_id",
    "story_bands": "SELECT band, item_id, seen_at FROM story_bands ORDER BY item_id, band, seen_at",
    "alert_keys": "SELECT channel, story_id, organisation FROM alert_keys ORDER BY channel, story_id, organisation",
    "alert_outbox": "SELECT * FROM alert_outbox ORDER BY id",
}


def snapshot(factory: sessionmaker[Session]) -> dict[str, list[Any]]:
    with factory() as session:
        out = {name: [dict(row._mapping) for row in session.execute(text(sql))] for name, sql in TABLES.items()}
        if session.get_bind().dialect.name == "sqlite":
            search = "SELECT rowid, terms FROM items_fts ORDER BY rowid"
        else:
            search = "SELECT item_id, terms::text FROM items_search ORDER BY item_id"
        out["search"] = [tuple(row) for row in session.execute(text(search))]
    for event in out["alert_outbox"]:  # event ids are random
        payload = json.loads(event.pop("payload"))
        assert payload.pop("event_id") == event.pop("event_id")
        event["payload"] = payload
    return out


def outcome(results: list[SaveResult]) -> list[tuple[Any, ...]]:
    return [(r.item_id, r.status, r.version, r.story_id, r.organisations, len(r.events)) for r in results]


def store(databases: Databases, batches: Batches, stories: MinHashStories | None = None) -> list[SaveResult]:
    """Store ``batches`` as given (the results returned) and one write per call (in the other
    database): the same rows and the same results."""
    one_by_one, as_given = databases
    stories = stories or MinHashStories()
    for writes in batches:
        stories.prepare(writes)
    expected = one_per_call(one_by_one, batches, stories.rule)
    got = batched(as_given, batches, stories.rule)
    assert outcome(got) == outcome(expected)
    before, after = snapshot(one_by_one), snapshot(as_given)
    for table in before:
        assert after[table] == before[table], table
    return got


def statuses(results: list[SaveResult]) -> list[tuple[int, str, int]]:
    return [(r.item_id, r.status, r.version) for r in results]


def test_new_items_with_copies_of_one_story_in_the_batch(databases: Databases) -> None:
    results = store(databases, [[
        write("trend", 1, TREND), write("mfa-az", 1, MFA_AZ, matches=[CICA, SCO]),
        write("azertac", 1, AZERTAC, at=NOW + timedelta(minutes=5)),
        write("mid-ru", 1, MID_AZ, published_at=NOW - timedelta(days=9)),
        write("mid-ru", 2, MID_KZ, matches=[]), write("trend", 2, ("СВМДА", "Коротко."), guid=None),
    ]])
    assert results[0].story_id == results[2].story_id and results[2].events == []
    assert len({r.story_id for r in results}) == 5


def test_unchanged_updated_and_moved_items_next_to_new_ones(databases: Databases) -> None:
    first = [write("trend", 1, TREND), write("mfa-az", 1, MFA_AZ), write("mid-ru", 1, MID_AZ),
             write("mid-ru", 2, MID_KZ), write("azertac", 7, AZERTAC)]
    later = NOW + timedelta(hours=2)
    title, body = MID_AZ
    second = [
        write("trend", 1, TREND, at=later),  # unchanged
        write("azertac", 1, AZERTAC, at=later),  # new, a copy of a stored story
        write("mfa-az", 1, MFA_AZ, at=later, content_hash="sha256:edited", matches=[CICA, SCO]),
        write("mid-ru", 1, MID_AZ, at=later, guid="mid-ru-new-guid"),  # the GUID changed
        write("mid-ru", 2, MID_KZ, at=later, url="https://mid-ru.example/moved",
              canonical_url="https://mid-ru.example/moved", content_hash="sha256:moved"),  # the link
        write("mid-ru", 3, (title, body + " Дополнено."), at=later),  # new, the template again
        write("azertac", 7, AZERTAC, at=later, matches=[]),  # unchanged (same hash)
    ]
    results = store(databases, [first, second])
    statuses = [r.status for r in results[len(first):]]
    assert statuses == ["unchanged", "new", "updated", "unchanged", "updated", "new", "unchanged"]


def test_an_item_named_twice_in_a_batch(databases: Databases) -> None:
    later = NOW + timedelta(minutes=1)
    results = store(databases, [[
        write("trend", 1, TREND), write("azertac", 1, AZERTAC),
        write("trend", 1, TREND, at=later, content_hash="sha256:second"),
        write("trend", 9, MFA_AZ, guid="trend-1"),  # another URL, the first one's GUID
        write("mfa-az", 1, MFA_AZ),
    ]])
    # the second and third naming of trend 1 (by its URL, then by its GUID) are its versions 2, 3
    assert statuses(results) == [(1, "new", 1), (2, "new", 1), (1, "updated", 2), (1, "updated", 3),
                                 (3, "new", 1)]
    assert [len(r.events) for r in results] == [2, 0, 0, 0, 0]  # the story is alerted once


def test_an_unchanged_item_edited_later_in_the_batch(databases: Databases) -> None:
    first = [write("trend", 1, TREND), write("mfa-az", 1, MFA_AZ)]
    later = NOW + timedelta(hours=1)
    results = store(databases, [first, [
        write("trend", 1, TREND, at=later),  # unchanged: its state before the batch
        write("mfa-az", 2, MFA_AZ, at=later),
        write("trend", 1, TREND, at=later, content_hash="sha256:edit", matches=[SCO]),
    ]])
    assert statuses(results[2:]) == [(1, "unchanged", 1), (3, "new", 1), (1, "updated", 2)]
    assert results[2].organisations == ["CICA"] and len(results[2].events) == 0
    # the edit adds SCO, not alerted for its story before: every channel that takes SCO
    assert results[4].organisations == ["SCO"]
    with databases[1]() as session:
        channels = session.scalars(select(AlertEvent.channel).where(AlertEvent.event_id.in_(results[4].events)))
        assert sorted(channels) == ["fresh", "hook", "sco-only"]


def test_bench_like_copies_beyond_the_candidate_limit(databases: Databases) -> None:
    batches = [[cyclic(n, i, NOW + timedelta(seconds=n)) for i in range(40)] for n in range(3)]
    results = store(databases, batches, MinHashStories(max_candidates=16))
    assert len({r.story_id for r in results}) < 10


def test_one_sources_look_alike_items_never_share_a_story(databases: Databases) -> None:
    """Syndication is across sources: one source's items with the same boilerplate body stay
    apart (a merge would swallow their alerts)."""
    body = ("Cookies help us deliver our services. By using our services, you agree to our use of "
            "cookies and to the processing of your data by our partners for advertising purposes.")
    batches = [[write("trend", i, (f"Trend headline {i} about CICA", body), matches=[CICA]) for i in range(4)],
               [write("trend", 9, ("Another headline", body)), write("azertac", 1, ("AZERTAC headline", body))]]
    results = store(databases, batches)
    trend = [r.story_id for r in results[:5]]
    assert len(set(trend)) == 5  # every item of one source its own story
    assert results[5].story_id in trend  # another source's copy still joins
    assert all(r.events for r in results[:4])  # each one alerted


def test_window_and_no_story_rule(databases: Databases) -> None:
    batches = [[write("trend", 1, TREND)],
               [write("azertac", 1, AZERTAC, at=NOW + timedelta(days=4)), write("mfa-az", 1, MFA_AZ)]]
    results = store(databases, batches)
    assert len({r.story_id for r in results}) == 3  # the copy came after the story window
    one_by_one, as_given = databases
    plain = [[write("mid-ru", 1, MID_AZ), write("mid-ru", 2, MID_AZ, content_hash="sha256:x")]]
    without_rule = batched(as_given, plain, None)
    assert outcome(without_rule) == outcome(one_per_call(one_by_one, plain, None))
    assert [r.status for r in without_rule] == ["new", "new"]
    assert len({r.story_id for r in results + without_rule}) == 5  # no rule: each item its own story


def test_signatures_are_datasketch_minhashes() -> None:
    """The vectorised MinHash gives datasketch's affine32 values (stored signatures stay valid)."""
    import datasketch

    from crawler.stories import _TAG, NUM_PERM, SEED, band_keys, shingles, words

    items = [write("trend", 1, TREND), write("azertac", 1, AZERTAC), write("x", 1, ("СВМДА", "Коротко.")),
             write("mid-ru", 1, MID_AZ)] + [cyclic(1, i, NOW) for i in range(5)]
    permutations = datasketch.MinHash(NUM_PERM, seed=SEED, scheme="affine32").permutations
    expected = []
    for item in items:
        tokens = words("", item.text)
        if len(tokens) < 8:
            expected.append(None)
            continue
        sketch = datasketch.MinHash(NUM_PERM, seed=SEED, permutations=permutations, scheme="affine32")
        sketch.update_batch(shingles(tokens))
        expected.append((_TAG + sketch.hashvalues.astype("<u4").tobytes(), band_keys(sketch.hashvalues)))
    finder = MinHashStories()
    assert finder.signatures(items) == expected
    assert [finder.signature(item) for item in items] == expected
