"""The write path's contract on SQLite and PostgreSQL: storing a batch with ``save_items`` leaves
the same rows and gives the same results as storing its writes one after the other (new,
unchanged, updated, GUID and link changes, an item named twice, copies of one story inside a
batch and across batches, the candidate limit, alert rules). The batch takes other routes
inside (one lookup, Core inserts of runs of new items, stories chosen for a run), so each
scenario is stored both ways, in two databases of the same backend."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from crawler.stories import MinHashStories
from storage.db import make_engine, make_session_factory, upgrade
from storage.repository import (
    ChannelRule,
    ItemWrite,
    MatchRow,
    SaveResult,
    SourceRow,
    sync_sources,
)
from storage.stories import StoryRule
from storage.writes import save_item, save_items
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


@pytest.fixture
def twins(db_url: str, tmp_path: Any,
          pg_template: str | None) -> Iterator[tuple[sessionmaker[Session], sessionmaker[Session]]]:
    """Two migrated databases of the same backend, with the same sources."""
    if db_url.startswith("sqlite"):
        other = f"sqlite:///{tmp_path / 'twin.db'}"
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


def one_by_one(factory: sessionmaker[Session], batches: Batches, rule: StoryRule | None) -> list[SaveResult]:
    results = []
    for batch in batches:
        with factory.begin() as session:
            results += [save_item(session, w, CHANNELS, stories=rule) for w in batch]
    return results


def batched(factory: sessionmaker[Session], batches: Batches, rule: StoryRule | None) -> list[SaveResult]:
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


def assert_same(twins: tuple[sessionmaker[Session], sessionmaker[Session]], batches: Batches,
                stories: MinHashStories | None = None) -> list[SaveResult]:
    single, batch = twins
    stories = stories or MinHashStories()
    for writes in batches:
        stories.prepare(writes)
    expected = one_by_one(single, batches, stories.rule)
    got = batched(batch, batches, stories.rule)
    assert outcome(got) == outcome(expected)
    before, after = snapshot(single), snapshot(batch)
    for table in before:
        assert after[table] == before[table], table
    return got


def test_new_items_with_copies_of_one_story_in_the_batch(twins):
    results = assert_same(twins, [[
        write("trend", 1, TREND), write("mfa-az", 1, MFA_AZ, matches=[CICA, SCO]),
        write("azertac", 1, AZERTAC, at=NOW + timedelta(minutes=5)),
        write("mid-ru", 1, MID_AZ, published_at=NOW - timedelta(days=9)),
        write("mid-ru", 2, MID_KZ, matches=[]), write("trend", 2, ("СВМДА", "Коротко."), guid=None),
    ]])
    assert results[0].story_id == results[2].story_id and results[2].events == []
    assert len({r.story_id for r in results}) == 5


def test_unchanged_updated_and_moved_items_next_to_new_ones(twins):
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
    results = assert_same(twins, [first, second])
    statuses = [r.status for r in results[len(first):]]
    assert statuses == ["unchanged", "new", "updated", "unchanged", "updated", "new", "unchanged"]


def test_an_item_named_twice_in_a_batch(twins):
    later = NOW + timedelta(minutes=1)
    assert_same(twins, [[
        write("trend", 1, TREND), write("azertac", 1, AZERTAC),
        write("trend", 1, TREND, at=later, content_hash="sha256:second"),
        write("trend", 9, MFA_AZ, guid="trend-1"),  # another URL, the first one's GUID
        write("mfa-az", 1, MFA_AZ),
    ]])


def test_an_unchanged_item_edited_later_in_the_batch(twins):
    first = [write("trend", 1, TREND), write("mfa-az", 1, MFA_AZ)]
    later = NOW + timedelta(hours=1)
    assert_same(twins, [first, [
        write("trend", 1, TREND, at=later),  # unchanged: its state before the batch
        write("mfa-az", 2, MFA_AZ, at=later),
        write("trend", 1, TREND, at=later, content_hash="sha256:edit", matches=[SCO]),
    ]])


def test_bench_like_copies_beyond_the_candidate_limit(twins):
    batches = [[cyclic(n, i, NOW + timedelta(seconds=n)) for i in range(40)] for n in range(3)]
    results = assert_same(twins, batches, MinHashStories(max_candidates=16))
    assert len({r.story_id for r in results}) < 10


def test_one_sources_look_alike_items_never_share_a_story(twins):
    """Syndication is across sources: one source's items with the same boilerplate body stay
    apart (a merge would swallow their alerts)."""
    body = ("Cookies help us deliver our services. By using our services, you agree to our use of "
            "cookies and to the processing of your data by our partners for advertising purposes.")
    batches = [[write("trend", i, (f"Trend headline {i} about CICA", body), matches=[CICA]) for i in range(4)],
               [write("trend", 9, ("Another headline", body)), write("azertac", 1, ("AZERTAC headline", body))]]
    results = assert_same(twins, batches)
    trend = [r.story_id for r in results[:5]]
    assert len(set(trend)) == 5  # every item of one source its own story
    assert results[5].story_id in trend  # another source's copy still joins
    assert all(r.events for r in results[:4])  # each one alerted


def test_window_and_no_story_rule(twins):
    batches = [[write("trend", 1, TREND)],
               [write("azertac", 1, AZERTAC, at=NOW + timedelta(days=4)), write("mfa-az", 1, MFA_AZ)]]
    assert_same(twins, batches)
    single, batch = twins
    plain = [[write("mid-ru", 1, MID_AZ), write("mid-ru", 2, MID_AZ, content_hash="sha256:x")]]
    assert outcome(batched(batch, plain, None)) == outcome(one_by_one(single, plain, None))


def test_signatures_are_datasketch_minhashes():
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
