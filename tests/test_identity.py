"""One canonical URL is one item, whichever sources carry it; a feed's edits are read again;
import applies the same identity rules; the migration merges the duplicates stored before.
Real crawl rounds against the fixture server, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from functools import partial
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select, text

from scheduler.cli import cli
from scheduler.config import AppConfig, build_config
from scheduler.runner import crawl_round
from storage.db import make_engine, make_session_factory, upgrade
from storage.models import AlertEvent, Base, Item, ItemSource, ItemVersion, Match, Source
from storage.queries import SearchFilter, search_items, source_status
from storage.repository import key_of
from storage.transfer import Importer
from tests.plugins.sites import Site, rss

pytestmark = pytest.mark.slow


def make_config(db_url: str, sources: list[dict[str, Any]], **crawl: Any) -> AppConfig:
    return build_config({
        "storage": {"url": db_url}, "sources": sources,
        "crawl": {"timeout": "5s", "interval": "10m", "obey_robots": False, **crawl},
        "alerts": [{"kind": "webhook", "id": "hook", "url": "http://127.0.0.1:9/hook"}],
    }, {})


def count(session: Any, model: Any) -> int:
    return session.scalar(select(func.count()).select_from(model))


def test_one_url_in_two_feeds_of_a_site_is_one_item(site: Site, db_url: str) -> None:
    base = site.unique("/mfa")
    article = site.url(f"{base}/news/3407/")
    main = site.set(f"{base}/rss.xml", rss([{"title": "Консультации по линии СВМДА", "link": article,
                                              "description": "Состоялись консультации по линии СВМДА."}]))
    press = site.set(f"{base}/press.xml", rss([{"title": "Консультации по линии СВМДА",
                                                 "link": article + "#comments",
                                                 "description": "Пресс-релиз: консультации СВМДА."}]))
    config = make_config(db_url, [
        {"id": "mfa-main", "url": main, "allow_private": True, "fetch_articles": False},
        {"id": "mfa-press", "url": press, "allow_private": True, "fetch_articles": False}])

    first = crawl_round(config, None, timeout=60).by_source()
    assert sum(e.new for e in first.values()) == 1, first

    sessions = make_session_factory(make_engine(db_url))
    with sessions() as session:
        assert count(session, Item) == 1
        assert count(session, AlertEvent) == 1  # alerted once
        items = search_items(session, SearchFilter(limit=10))
        assert len(items) == 1 and sorted(items[0]["sources"]) == ["mfa-main", "mfa-press"]
        assert items[0]["source"] == items[0]["sources"][0]
        for source in ("mfa-main", "mfa-press"):
            found = search_items(session, SearchFilter(sources=[source], limit=10))
            assert [i["id"] for i in found] == [items[0]["id"]]
        status = {s["id"]: s["items"] for s in source_status(session, datetime.now(UTC))}
        assert status["mfa-main"] == status["mfa-press"] == 1

    # Both feeds again (their different summaries must not take turns as new versions).
    site.set(f"{base}/rss.xml", rss([{"title": "Консультации по линии СВМДА", "link": article,
                                      "description": "Состоялись консультации по линии СВМДА."}],
                                    title="changed channel title"))
    site.set(f"{base}/press.xml", rss([{"title": "Консультации по линии СВМДА", "link": article + "#comments",
                                        "description": "Пресс-релиз: консультации СВМДА."}],
                                      title="changed channel title"))
    for _ in range(2):
        again = crawl_round(config, None, timeout=60).by_source()
        assert sum(e.new + e.updated for e in again.values()) == 0, again
    with sessions() as session:
        assert count(session, Item) == 1 and count(session, ItemVersion) == 1
        assert count(session, AlertEvent) == 1


ATOM = """<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom"><title>MFA</title><id>urn:mfa</id><updated>{updated}</updated>
<entry><title>Заместитель министра принял посла</title><id>urn:mfa:1</id><link href="{link}"/>
<updated>{updated}</updated><published>{published}</published><summary>{summary}</summary></entry>
</feed>"""
PAGE = ("<html><head><title>Заместитель министра принял посла</title></head><body><article>"
        "<h1>Заместитель министра принял посла</h1><p>{body}</p>"
        "<p>Стороны обсудили вопросы двустороннего сотрудничества и региональной повестки.</p>"
        "</article></body></html>")


def test_an_entry_the_feed_edits_is_read_again(site: Site, db_url: str) -> None:
    """Title unchanged, summary and <updated> changed: the article page is fetched again, the
    edit is a new version, and the organisation it added is alerted."""
    base = site.unique("/atom")
    link = site.url(f"{base}/news/1")
    atom = partial(ATOM.format, published=datetime.now(UTC).isoformat())  # recent: alerted
    site.set(f"{base}/news/1", PAGE.format(body="Состоялась беседа о двусторонних отношениях.").encode(),
             "text/html; charset=utf-8")
    feed = site.set(f"{base}.xml", atom(updated="2026-12-01T09:00:00Z", link=link,
                                               summary="Беседа о двусторонних отношениях.").encode(),
                    "application/atom+xml")
    config = make_config(db_url, [{"id": "mfa", "url": feed, "allow_private": True}])
    assert crawl_round(config, None, timeout=60).by_source()["mfa"].new == 1

    # Polled again unchanged (the channel's own <updated> moves): no page fetch, nothing stored.
    site.set(f"{base}.xml", atom(updated="2026-12-01T09:00:00Z", link=link,
                                        summary="Беседа о двусторонних отношениях.").encode()
             .replace(b"<title>MFA</title>", b"<title>MFA news</title>"), "application/atom+xml")
    fetched = len(site.requests(f"{base}/news/1"))
    same = crawl_round(config, None, timeout=60).by_source()["mfa"]
    assert (same.new, same.updated, same.unchanged) == (0, 0, 1), same
    assert len(site.requests(f"{base}/news/1")) == fetched

    site.set(f"{base}/news/1", PAGE.format(body="Обсуждено взаимодействие в рамках СВМДА.").encode(),
             "text/html; charset=utf-8")
    site.set(f"{base}.xml", atom(updated="2026-12-02T10:00:00Z", link=link,
                                        summary="Обсуждено взаимодействие в рамках СВМДА.").encode(),
             "application/atom+xml")
    edited = crawl_round(config, None, timeout=60).by_source()["mfa"]
    assert (edited.updated, edited.matched) == (1, 1), edited
    with make_session_factory(make_engine(db_url))() as session:
        item = session.scalar(select(Item))
        assert item is not None and item.version == 2 and "СВМДА" in item.text
        events = session.scalars(select(AlertEvent)).all()
        assert [json.loads(e.organisations) for e in events] == [["CICA"]]


def test_import_merges_a_guid_collision_and_reports_counts(db_url: str) -> None:
    """A record whose GUID an existing item of its source has, under another URL, is that
    item: a new version when its content differs, nothing when it does not."""
    engine = make_engine(db_url)
    sessions = make_session_factory(engine)
    now = datetime(2026, 12, 4, tzinfo=UTC)

    def record(url: str, text_: str, source: str = "mfa", **extra: Any) -> str:
        return json.dumps({"source": source, "url": url, "canonical_url": url, "guid": "urn:mfa:7",
                           "title": "Заявление", "first_seen_at": "2026-12-01T00:00:00+00:00",
                           "versions": [{"version": 1, "title": "Заявление", "text": text_,
                                         "content_hash": "sha256:" + key_of(text_),
                                         "fetched_at": "2026-12-01T00:00:00+00:00"}], **extra})

    with sessions() as session:
        report = Importer(session, now).feed([record("https://mfa.example/a", "Текст один.")])
        assert (report.items_new, report.versions_new, report.unchanged, report.errors) == (1, 1, 0, [])
    with sessions() as session:
        report = Importer(session, now).feed([
            record("https://mfa.example/moved/a", "Текст два."),  # same GUID, moved URL, edited
            record("https://mfa.example/a", "Текст один.", source="mfa-press",
                   sources=["mfa-press", "mfa"]),  # the same item carried by another source
        ])
        assert report.errors == []
        assert (report.items_new, report.versions_new, report.unchanged) == (0, 1, 1)
    with sessions() as session:
        item = session.scalar(select(Item))
        assert count(session, Item) == 1 and item is not None and item.version == 2
        assert sorted(item.source_ids) == ["mfa", "mfa-press"]
        again = Importer(session, now).feed([record("https://mfa.example/moved/a", "Текст два.")])
        assert (again.items_new, again.versions_new, again.unchanged) == (0, 0, 1)
    engine.dispose()


def test_an_import_chunk_mixing_new_stored_colliding_and_bad_records(db_url: str) -> None:
    """One chunk: new items (inserted together), a stored item gaining a version, an unchanged
    one, a GUID collision with a stored item and with a new item of the same chunk, a story
    shared by two new items, and a bad line that costs only itself; importing again is a no-op."""
    engine = make_engine(db_url)
    sessions = make_session_factory(engine)
    now = datetime(2026, 12, 4, tzinfo=UTC)

    def record(url: str, guid: str, text_: str, source: str = "mfa", **extra: Any) -> str:
        return json.dumps({"source": source, "url": url, "canonical_url": url, "guid": guid,
                           "title": "Заявление", "first_seen_at": "2026-12-01T00:00:00+00:00",
                           "versions": [{"version": 1, "title": "Заявление", "text": text_,
                                         "content_hash": "sha256:" + key_of(text_),
                                         "fetched_at": "2026-12-01T00:00:00+00:00"}], **extra},
                          ensure_ascii=False)

    with sessions() as session:
        first = Importer(session, now).feed([record("https://mfa.example/a", "urn:a", "alpha one"),
                                             record("https://mfa.example/b", "urn:b", "bravo one"),
                                             record("https://mfa.example/c", "urn:c", "charlie one")])
        assert (first.items_new, first.versions_new, first.unchanged, first.errors) == (3, 3, 0, [])
    lines = [
        record("https://mfa.example/n1", "urn:n1", "novel zebrafirst", sources=["mfa", "mfa-press"], story_id=77,
               matches=[{"organisation": "CICA", "alias": "СВМДА", "form": "СВМДА", "snippet": "…"}]),
        record("https://mfa.example/a", "urn:a", "alpha two quokkaedit"),  # stored: a new version
        record("https://mfa.example/b", "urn:b", "bravo one"),  # stored, unchanged
        "{not json",
        record("https://mfa.example/c-moved", "urn:c", "charlie two"),  # GUID of a stored item
        record("https://mfa.example/n1-moved", "urn:n1", "novel zebrasecond"),  # GUID of n1 (this chunk)
        record("https://mfa.example/n3", "urn:n3", "novel third", story_id=77,  # n1's story
               matches=[{"organisation": "SCO", "alias": "ШОС", "form": "ШОС", "snippet": "…"}]),
    ]
    with sessions() as session:
        report = Importer(session, now).feed(lines)
        assert [number for number, _ in report.errors] == [4]
        assert (report.items_new, report.versions_new, report.unchanged) == (2, 5, 1)
    with sessions() as session:
        items = {i.url: i for i in session.scalars(select(Item))}
        assert sorted(items) == [f"https://mfa.example/{u}" for u in ("a", "b", "c", "n1", "n3")]
        n1, n3 = items["https://mfa.example/n1"], items["https://mfa.example/n3"]
        assert (n1.version, n1.text, sorted(n1.source_ids)) == (2, "novel zebrasecond", ["mfa", "mfa-press"])
        assert n1.matches == []  # the later record of n1 (no match) replaced them, as record by record
        assert [m.organisation for m in n3.matches] == ["SCO"]
        assert n3.story_id == n1.story_id and n3.story_id != items["https://mfa.example/a"].story_id
        assert (items["https://mfa.example/a"].version, items["https://mfa.example/b"].version,
                items["https://mfa.example/c"].version) == (2, 1, 2)
        assert count(session, ItemVersion) == 8 and count(session, ItemSource) == 6
        found = {i["url"] for i in search_items(session, SearchFilter(query="zebrasecond"))}
        assert found == {"https://mfa.example/n1"}
        assert {i["url"] for i in search_items(session, SearchFilter(query="quokkaedit"))} == {"https://mfa.example/a"}
        assert {i["url"] for i in search_items(session, SearchFilter(query="third"))} == {"https://mfa.example/n3"}
        assert search_items(session, SearchFilter(query="zebrafirst")) == []
    with sessions() as session:
        again = Importer(session, now).feed(lines)
        assert (again.items_new, again.versions_new, again.unchanged) == (0, 0, 6)
        assert count(session, Item) == 5 and count(session, ItemVersion) == 8
    engine.dispose()


def test_an_old_export_without_sources_imports(db_url: str, tmp_path: Any) -> None:
    old = {"source": "mfa", "url": "https://mfa.example/b", "canonical_url": "https://mfa.example/b",
           "title": "Old", "text": "Old text", "content_hash": "sha256:old",
           "first_seen_at": "2025-01-01T00:00:00+00:00"}
    path = tmp_path / "old.jsonl"
    path.write_text(json.dumps(old) + "\n", encoding="utf-8")
    config = tmp_path / "newsmon.toml"
    config.write_text(f'[storage]\nurl = "{db_url}"\n', encoding="utf-8")
    runner = CliRunner()
    result = runner.invoke(cli, ["--config", str(config), "import", str(path)])
    assert result.exit_code == 0 and "1 new items, 1 new versions, 0 unchanged" in result.output, result.output
    exported = runner.invoke(cli, ["--config", str(config), "export"])
    assert json.loads(exported.stdout.splitlines()[0])["sources"] == ["mfa"]


def seed_duplicates(db_url: str) -> None:
    """A database at 0002 (per-source identity) holding one URL twice, in two sources."""
    engine = make_engine(db_url)
    upgrade(engine, "0002")
    day = datetime(2026, 11, 1, tzinfo=UTC)
    with engine.begin() as conn:
        for source in ("mfa-main", "mfa-press"):
            conn.execute(Source.__table__.insert(), {
                "id": source, "name": source, "kind": "feed", "url": f"http://x/{source}", "host": "x",
                "enabled": True, "interval_seconds": 600.0, "had_items": True, "failures": 0,
                "created_at": day})
        for n, (source, title, org) in enumerate([("mfa-main", "Консультации", "CICA"),
                                                  ("mfa-press", "Консультации (пресс-релиз)", "SCO")], 1):
            at = day.replace(hour=n)
            conn.execute(text(
                "INSERT INTO items (id, source_id, url, canonical_url, url_key, title, text, first_seen_at, "
                "updated_at, sort_at, version, content_hash) VALUES (:id, :s, :u, :u, :k, :t, :t, :at, :at, "
                ":at, 1, :h)"), {"id": n, "s": source, "u": "http://x/news/3407/", "k": key_of("http://x/news/3407/"),
                                 "t": title, "at": at, "h": f"sha256:{n}"})
            conn.execute(ItemVersion.__table__.insert(), {
                "item_id": n, "version": 1, "fetched_at": at, "title": title, "text": title,
                "content_hash": f"sha256:{n}"})
            conn.execute(Match.__table__.insert(), {
                "item_id": n, "organisation": org, "alias": org, "form": org, "snippet": title, "start": 0,
                "end": 3, "in_title": False})
            conn.execute(AlertEvent.__table__.insert(), {
                "event_id": f"e{n}", "channel": "hook", "item_id": n, "organisations": json.dumps([org]),
                "payload": "{}", "created_at": at, "attempts": 1, "next_attempt_at": at, "delivered_at": at})
    engine.dispose()


def test_the_migration_merges_duplicates_into_the_oldest_item(db_url: str) -> None:
    engine = make_engine(db_url)
    with engine.begin() as conn:  # the fixture's database back to nothing, then to 0002 with duplicates
        conn.execute(text("DROP TABLE IF EXISTS items_fts" if conn.dialect.name == "sqlite"
                          else "DROP TABLE IF EXISTS items_search"))
        Base.metadata.drop_all(conn)
        conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    engine.dispose()
    seed_duplicates(db_url)
    engine = make_engine(db_url)
    upgrade(engine)
    with make_session_factory(engine)() as session:
        items = session.scalars(select(Item)).all()
        assert [i.id for i in items] == [1]
        item = items[0]
        assert item.source_ids == ["mfa-main", "mfa-press"]
        assert [(v.version, v.title) for v in item.versions] == [(1, "Консультации (пресс-релиз)"),
                                                                  (2, "Консультации")]
        assert item.version == 2 and item.title == "Консультации"  # the keeper's text stays current
        assert sorted(m.organisation for m in item.matches) == ["CICA", "SCO"]
        assert sorted(e.item_id for e in session.scalars(select(AlertEvent))) == [1, 1]  # nothing dropped
        assert count(session, ItemSource) == 2
    engine.dispose()
