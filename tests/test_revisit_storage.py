"""Revisits below the crawl: the judgement of a page (pure), the schedule, claims and what a
revisit stores (SQLite and PostgreSQL), the alert events of edits and removals and a channel's
narrowing by events, sources and query, and how people see it (show, API, page, Apprise)."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from crawler.revisits import judge, page_fingerprint, removal_redirect, stable_lines
from crawler.text import content_hash
from scheduler.config import ConfigError, build_config
from scheduler.notifiers import change_message, digest_message
from storage.db import make_engine, make_session_factory, upgrade
from storage.diffs import short_word_diff, word_diff
from storage.models import AlertEvent, Item, Revisit
from storage.outbox import ClaimedEvent
from storage.queries import SearchFilter, search_items, source_status
from storage.repository import ChannelRule, ItemWrite, MatchRow, SourceRow, sync_sources
from storage.revisits import (
    RevisitClaim,
    RevisitResult,
    claim_revisits,
    next_due,
    save_quiet_revisits,
    save_revisit,
)
from storage.search import parse_query, query_admits
from storage.transfer import Importer, export_jsonl
from storage.writes import save_item

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
CICA = MatchRow("CICA", "СВМДА", "СВМДА", "…СВМДА…", 0, 5)
SCO = MatchRow("SCO", "ШОС", "ШОС", "…ШОС…", 0, 3)
TEXT = "Министр провёл встречу с директором СВМДА.\nСтороны обсудили саммит."
SCHEDULE = (3600.0, 86400.0)


def write(title: str = "Встреча по линии СВМДА", text: str = TEXT, *, source: str = "mfa",
          url: str = "https://mfa.example/news/1", matches: list[MatchRow] | None = None,
          fetched_at: datetime = NOW) -> ItemWrite:
    return ItemWrite(source_id=source, url=url, canonical_url=url, title=title, text=text,
                     content_hash=content_hash(title, text), fetched_at=fetched_at,
                     published_at=fetched_at, matches=[CICA] if matches is None else matches,
                     raw=b"<html>page</html>", raw_url=url, raw_status=200)


def claim_of(**overrides: object) -> RevisitClaim:
    values: dict[str, object] = dict(
        item_id=1, source_id="mfa", url="https://mfa.example/news/1",
        canonical_url="https://mfa.example/news/1", title="Встреча", text=TEXT, content_hash="",
        removed=False, version=1, version_url="https://mfa.example/news/1", etag=None,
        last_modified=None, page_title=None, page_hash=None)
    values.update(overrides)
    return RevisitClaim(**values)  # type: ignore[arg-type]


# --- pure ---------------------------------------------------------------------------------------


def test_counters_clocks_and_generated_at_lines_are_not_content() -> None:
    text = ("Министр провёл встречу.\nПросмотров: 1523\n04.12.2026 12:33\n"
            "Page generated in 0.034 s\nViews 77\nВ 2026 году прошли 12 встреч министров.")
    assert stable_lines(text) == ["Министр провёл встречу.", "В 2026 году прошли 12 встреч министров."]
    assert page_fingerprint(text) == page_fingerprint(text.replace("1523", "1524").replace("12:33", "12:34"))
    assert page_fingerprint(text) != page_fingerprint(text.replace("12 встреч", "13 встреч"))


def test_judge_compares_with_the_last_revisit_or_with_a_page_read_text() -> None:
    first = judge(claim_of(), "Встреча", TEXT + "\nПросмотров: 5")
    assert not first.changed and first.page_hash == page_fingerprint(TEXT)
    edited = judge(claim_of(page_title=first.page_title, page_hash=first.page_hash),
                   "Встреча (обновлено)", TEXT + "\nДобавлен абзац.")
    assert edited.changed and edited.title == "Встреча (обновлено)" and "Добавлен абзац." in edited.text
    # a text that came from the feed, not the page: the first revisit only sets the baseline
    feed_text = judge(claim_of(version_url="https://mfa.example/rss.xml", text="Короткая аннотация."),
                      "Встреча", TEXT)
    assert not feed_text.changed and feed_text.page_hash == page_fingerprint(TEXT)
    back = judge(claim_of(removed=True, page_title=first.page_title, page_hash=first.page_hash), "Встреча", TEXT)
    assert back.changed and back.text == TEXT  # a page that comes back is a new version


@pytest.mark.parametrize(("final", "gone"), [
    ("https://mfa.example/", True), ("https://mfa.example/ru/", True), ("https://mfa.example/index.php", True),
    ("https://mfa.example/news/", True), ("https://mfa.example/press/list", True),
    ("https://mfa.example/news/1", False), ("http://mfa.example/news/1/", False),
    ("https://mfa.example/news/1-renamed", False), ("https://mfa.example/ru/news/1", False),
])
def test_a_redirect_to_the_home_page_or_a_listing_is_a_removal(final: str, gone: bool) -> None:
    assert removal_redirect("https://mfa.example/news/1", final, ["https://mfa.example/press/list"]) is gone


def test_short_word_diff_puts_the_longest_run_first_and_fits_4_kb() -> None:
    old = "one two three four five six seven eight nine ten"
    new = "one 2 three four five six seven eight NINE TEN ELEVEN"
    diff = short_word_diff(old, new)
    assert diff.splitlines()[0].endswith("[-nine ten-] {+NINE TEN ELEVEN+}")
    assert "[-two-] {+2+}" in diff.splitlines()[1]
    huge = short_word_diff(" ".join(f"w{i}" for i in range(5000)), " ".join(f"v{i}" for i in range(5000)))
    assert len(huge.encode()) <= 4096
    assert word_diff("a b c", "a x c") == "a [-b-] {+x+} c" and word_diff("same", "same") == ""


def test_a_channel_query_is_the_search_syntax() -> None:
    query = parse_query('СВМДА -спорт "мер доверия" OR саммит')
    assert query_admits(query, "Саммит СВМДА", "")
    assert query_admits(query, "О СВМДА", "укрепление мер доверия")
    assert not query_admits(query, "Саммит СВМДА", "спортивный турнир… спорт")
    assert not query_admits(query, "СВМДА", "доверия мер")


def test_next_due_skips_slots_that_passed() -> None:
    assert next_due(NOW, SCHEDULE, NOW + timedelta(minutes=5)) == NOW + timedelta(hours=1)
    assert next_due(NOW, SCHEDULE, NOW + timedelta(hours=2)) == NOW + timedelta(days=1)
    assert next_due(NOW, SCHEDULE, NOW + timedelta(days=2)) is None


def test_configuration_of_revisits_and_channels() -> None:
    config = build_config({"crawl": {"revisit": ["6h", "1h"]}, "sources": [
        {"id": "a", "url": "https://a.example/rss"},
        {"id": "b", "url": "https://b.example/rss", "revisit": []},
        {"id": "t", "url": "https://t.me/s/x", "kind": "telegram"}]}, {})
    assert [s.revisits(config.crawl) for s in config.sources] == [(3600.0, 21600.0), (), ()]
    assert build_config({}, {}).crawl.revisit == (3600.0, 21600.0, 86400.0, 259200.0)
    for alert, key in [({"events": ["edited"]}, "alerts[0].events[0]"), ({"query": "  "}, "alerts[0].query"),
                       ({"sources": ["nope"]}, "alerts[0].sources")]:
        with pytest.raises(ConfigError) as caught:
            build_config({"alerts": [{"kind": "webhook", "url": "https://h.example/", **alert}]}, {})
        assert caught.value.key == key


# --- storage, both backends ---------------------------------------------------------------------


@pytest.fixture
def factory(session_factory):
    with session_factory.begin() as session:
        sync_sources(session, [SourceRow("mfa", "feed", "https://mfa.example/rss"),
                               SourceRow("news", "feed", "https://news.example/rss")], NOW)
    return session_factory


def result(item_id: int, kind: str = "page", **values: object) -> RevisitResult:
    defaults: dict[str, object] = dict(item_id=item_id, owner="w", kind=kind,
                                       fetched_at=NOW + timedelta(hours=1, minutes=1),
                                       schedule=SCHEDULE, status=200)
    defaults.update(values)
    return RevisitResult(**defaults)  # type: ignore[arg-type]


def edited(item_id: int, text: str, matches: list[MatchRow], title: str = "Встреча по линии СВМДА",
           **values: object) -> RevisitResult:
    return result(item_id, changed=True, title=title, text=text, content_hash=content_hash(title, text),
                  matches=matches, page_title=title.casefold(), page_hash=page_fingerprint(text),
                  raw=b"<html>edited</html>", raw_url="https://mfa.example/news/1", **values)


def test_claims_seed_the_schedule_lease_once_and_free_after_the_lease(factory) -> None:
    with factory.begin() as s:
        item_id = save_item(s, write()).item_id
    later = NOW + timedelta(hours=1, seconds=1)
    with factory.begin() as s:
        assert claim_revisits(s, "mfa", SCHEDULE, NOW + timedelta(minutes=1), "a", lease_seconds=60, limit=5) == []
        assert s.get(Revisit, item_id).due_at == NOW + timedelta(hours=1)  # seeded, not yet due
    with factory.begin() as s:
        claims = claim_revisits(s, "mfa", SCHEDULE, later, "a", lease_seconds=60, limit=5)
    assert [c.item_id for c in claims] == [item_id] and claims[0].text == TEXT
    with factory.begin() as s:
        assert claim_revisits(s, "mfa", SCHEDULE, later, "b", lease_seconds=60, limit=5) == []
        assert claim_revisits(s, "mfa", (), later, "b", lease_seconds=60, limit=5) == []  # revisits off
    with factory.begin() as s:  # a's lease ended without a result: b does it
        assert [c.item_id for c in claim_revisits(s, "mfa", SCHEDULE, later + timedelta(seconds=61), "b",
                                                  lease_seconds=60, limit=5)] == [item_id]


def test_quiet_revisits_move_the_schedule_on_in_one_statement(factory) -> None:
    """304s, failures and unchanged pages: the schedule, lease and baseline as ``save_revisit``
    would leave them, for several revisits at once, and no version."""
    with factory.begin() as s:
        ids = [save_item(s, write(url=f"https://mfa.example/news/{n}")).item_id for n in range(3)]
    later = NOW + timedelta(hours=1, seconds=1)
    with factory.begin() as s:
        claims = claim_revisits(s, "mfa", SCHEDULE, later, "w", lease_seconds=60, limit=5)
    assert sorted(c.item_id for c in claims) == ids and all(c.first_seen_at == NOW for c in claims)
    results = [result(ids[0], "not-modified", status=304, first_seen_at=NOW),
               result(ids[1], "failed", status=None, first_seen_at=NOW),
               result(ids[2], "page", changed=False, etag='"e2"', last_modified="Tue, 01 Dec 2026 09:00:00 GMT",
                      page_title="встреча", page_hash="sha256:abc", first_seen_at=NOW)]
    assert all(r.quiet for r in results)
    assert not result(ids[0], "removed", first_seen_at=NOW).quiet
    assert not result(ids[0], "page", changed=True, first_seen_at=NOW).quiet
    with factory.begin() as s:
        saved = save_quiet_revisits(s, results)
    assert [r.status for r in saved] == ["unchanged"] * 3
    with factory() as s:
        rows = {r.item_id: r for r in s.scalars(select(Revisit))}
        assert all(r.done == 1 and r.lease_owner is None and r.lease_expires_at is None
                   and r.due_at == NOW + timedelta(days=1) and r.last_at == results[0].fetched_at
                   for r in rows.values())
        assert [rows[i].last_status for i in ids] == [304, None, 200]
        assert (rows[ids[2]].etag, rows[ids[2]].page_title, rows[ids[2]].page_hash) == ('"e2"', "встреча",
                                                                                       "sha256:abc")
        assert rows[ids[0]].etag is None and rows[ids[0]].page_hash is None
        assert all(i.version == 1 for i in s.scalars(select(Item)))


def test_an_edit_is_a_version_with_an_edit_event_and_a_new_organisation_a_match(factory) -> None:
    channels = [ChannelRule("hook", events=frozenset({"match", "edit", "removed"})),
                ChannelRule("matches-only"), ChannelRule("sco", frozenset({"SCO"}), events=frozenset({"edit"}))]
    with factory.begin() as s:
        item_id = save_item(s, write(), channels).item_id
    new_text = TEXT + "\nТакже обсуждено сотрудничество с ШОС."
    with factory.begin() as s:
        saved = save_revisit(s, edited(item_id, new_text, [CICA, SCO]), channels)
    assert (saved.status, saved.version) == ("updated", 2)
    with factory() as s:
        item = s.get(Item, item_id)
        assert item.text == new_text and {m.organisation for m in item.matches} == {"CICA", "SCO"}
        assert [v.version for v in item.versions] == [1, 2] and item.versions[1].raw
        events = [json.loads(e.payload) | {"channel": e.channel}
                  for e in s.scalars(select(AlertEvent).order_by(AlertEvent.id))]
    kinds = sorted((e["channel"], e["event"], tuple(e["organisations"])) for e in events)
    assert kinds == [("hook", "edit", ("CICA", "SCO")), ("hook", "match", ("CICA",)),
                     ("hook", "match", ("SCO",)), ("matches-only", "match", ("CICA",)),
                     ("matches-only", "match", ("SCO",)), ("sco", "edit", ("SCO",))]
    edit = next(e for e in events if e["event"] == "edit" and e["channel"] == "hook")
    assert edit["changes"] == {"from_version": 1, "to_version": 2, "title": None,
                               "diff": "СВМДА. Стороны обсудили саммит. {+Также обсуждено сотрудничество с ШОС.+}"}
    with factory() as s:  # the same page again: nothing
        assert save_revisit(s, edited(item_id, new_text, [CICA, SCO]), channels).status == "unchanged"


def test_removal_keeps_the_text_and_a_page_that_comes_back_is_a_version(factory) -> None:
    channels = [ChannelRule("hook", events=frozenset({"removed"}))]
    with factory.begin() as s:
        item_id = save_item(s, write(), channels).item_id
    with factory.begin() as s:
        assert save_revisit(s, result(item_id, "removed", status=410, raw=b"gone"), channels).version == 2
        assert save_revisit(s, result(item_id, "removed", status=404), channels).status == "unchanged"
    with factory.begin() as s:
        back = save_revisit(s, result(item_id, "page", changed=True, title="Встреча по линии СВМДА",
                                      text=TEXT, content_hash=content_hash("Встреча по линии СВМДА", TEXT),
                                      matches=[CICA]), channels)
    assert back.version == 3
    with factory() as s:
        item = s.get(Item, item_id)
        assert [(v.version, v.removed, v.text == TEXT) for v in item.versions] == \
            [(1, False, True), (2, True, True), (3, False, True)]
        assert not item.removed
        events = [json.loads(p) for p in s.scalars(select(AlertEvent.payload))]
    assert [e["event"] for e in events] == ["removed"] and events[0]["item"]["removed"] is True


def test_export_then_import_keeps_removals(factory, tmp_path) -> None:
    """Removed items stay removed on import, with their removal versions; a page that came
    back is not removed; importing the same file again changes nothing."""
    source_url = f"sqlite:///{tmp_path / 'source.db'}"
    engine = make_engine(source_url)
    upgrade(engine)
    source = make_session_factory(engine)
    with source.begin() as s:
        sync_sources(s, [SourceRow("mfa", "feed", "https://mfa.example/rss")], NOW)
        gone = save_item(s, write()).item_id
        back = save_item(s, write(url="https://mfa.example/news/2")).item_id
        edited_then_gone = save_item(s, write(url="https://mfa.example/news/3")).item_id
    with source.begin() as s:
        save_revisit(s, edited(edited_then_gone, TEXT + "\nДобавлен абзац.", [CICA]))
    with source.begin() as s:
        for item_id in (gone, back, edited_then_gone):
            save_revisit(s, result(item_id, "removed", status=410))
        save_revisit(s, result(back, "page", changed=True, title="Встреча по линии СВМДА", text=TEXT,
                               content_hash=content_hash("Встреча по линии СВМДА", TEXT), matches=[CICA]))
    out = io.StringIO()
    with source() as s:
        assert export_jsonl(s, out) == 3
    engine.dispose()
    lines = out.getvalue().splitlines()
    assert [json.loads(line)["removed"] for line in lines] == [True, False, True]

    for _ in range(2):  # the second import finds everything stored
        with factory() as s:
            report = Importer(s, NOW).feed(lines)
            assert report.errors == []
    assert (report.items_new, report.versions_new, report.unchanged) == (0, 0, 3)
    with factory() as s:
        items = {i.url.rsplit("/", 1)[1]: i for i in s.scalars(select(Item))}
        assert {k: (i.removed, [(v.version, v.removed) for v in i.versions]) for k, i in items.items()} == {
            "1": (True, [(1, False), (2, True)]),
            "2": (False, [(1, False), (2, True), (3, False)]),
            "3": (True, [(1, False), (2, False), (3, True)])}
        assert [v.text == TEXT for v in items["2"].versions] == [True] * 3  # the text stays
        assert items["3"].versions[2].text == items["3"].versions[1].text != TEXT


def test_channels_narrowed_by_sources_and_query(factory) -> None:
    channels = [ChannelRule("ministries", sources=frozenset({"mfa"})),
                ChannelRule("no-sport", query="СВМДА -спорт"), ChannelRule("all")]
    with factory.begin() as s:
        save_item(s, write(), channels)
        save_item(s, write("Турнир СВМДА", "Спорт и СВМДА.", source="news", url="https://news.example/2"),
                  channels)
        save_item(s, write("Новости", "СВМДА и саммит.", source="news", url="https://news.example/3"),
                  channels)
        sent = sorted((e.channel, e.item_id) for e in s.scalars(select(AlertEvent)))
    assert sent == [("all", 1), ("all", 2), ("all", 3), ("ministries", 1), ("no-sport", 1), ("no-sport", 3)]


def test_feed_edits_are_edit_events_too(factory) -> None:
    channels = [ChannelRule("hook", events=frozenset({"edit"}))]
    with factory.begin() as s:
        save_item(s, write(), channels)
        save_item(s, write(text=TEXT + " Дополнено.", fetched_at=NOW + timedelta(minutes=10)), channels)
        events = [json.loads(p) for p in s.scalars(select(AlertEvent.payload))]
    assert [(e["event"], e["changes"]["diff"]) for e in events] == [
        ("edit", "СВМДА. Стороны обсудили саммит. {+Дополнено.+}")]


def test_status_edited_since_and_the_views(factory) -> None:
    with factory.begin() as s:
        first = save_item(s, write()).item_id
        second = save_item(s, write(url="https://mfa.example/news/2")).item_id
        save_item(s, write(source="news", url="https://news.example/9"))
    later = NOW + timedelta(hours=1, seconds=1)
    with factory.begin() as s:
        assert len(claim_revisits(s, "mfa", SCHEDULE, later, "w", lease_seconds=60, limit=5)) == 2
        save_revisit(s, edited(first, TEXT + " Правка.", [CICA], fetched_at=later))
        save_revisit(s, result(second, "not-modified", status=304, fetched_at=later))
    with factory() as s:
        status = {row["id"]: row["revisits"] for row in source_status(s, later)}
        found = search_items(s, SearchFilter(edited_since=later - timedelta(minutes=1)))
        none = search_items(s, SearchFilter(edited_since=later + timedelta(minutes=1)))
    assert status["mfa"] == {"done": 2, "due": 0, "revisited": 2, "edited": 1, "removed": 0, "edit_rate": 0.5}
    assert status["news"]["done"] == 0
    assert [i["id"] for i in found] == [first] and none == []


def test_show_versions_prints_word_diffs_and_marks_removal(factory, tmp_path, db_url) -> None:
    from scheduler.cli import cli

    with factory.begin() as s:
        item_id = save_item(s, write()).item_id
    with factory.begin() as s:
        save_revisit(s, edited(item_id, TEXT + " Правка.", [CICA]))
    with factory.begin() as s:
        save_revisit(s, result(item_id, "removed", status=404, fetched_at=NOW + timedelta(days=1, minutes=1)))
    config = tmp_path / "newsmon.toml"
    config.write_text(f'[storage]\nurl = "{db_url}"\n', encoding="utf-8")
    out = CliRunner().invoke(cli, ["--config", str(config), "show", str(item_id), "--versions"])
    assert out.exit_code == 0, out.output
    assert "REMOVED: the page is gone" in out.output
    assert "Стороны обсудили саммит. {+Правка.+}" in out.output
    assert "--- version 3" in out.output and "REMOVED (the page was gone)" in out.output


def test_apprise_text_says_what_changed_and_digests_have_their_own_section() -> None:
    item = {"id": 7, "title": "Встреча", "source": "mfa", "url": "https://mfa.example/news/1"}
    body = {"event": "edit", "item": item, "changes": {"from_version": 1, "to_version": 2,
                                                        "title": ["Встреча", "Встреча <b>"], "diff": "{+новое+}"}}
    title, text = change_message(body, ["CICA"], "http://news.local:8080")
    assert title == "CICA: Edited: Встреча"
    assert "version 1 → 2" in text and "«Встреча &lt;b&gt;»" in text and "{+новое+}" in text
    assert 'href="http://news.local:8080/items/7"' in text
    events = [ClaimedEvent(1, "e1", "c", json.dumps({"event": "match", "item": item}), ["CICA"], 0),
              ClaimedEvent(2, "e2", "c", json.dumps({"event": "removed", "item": item}), ["CICA"], 0)]
    title, text = digest_message(events, "http://news.local:8080")
    assert "1 story, 1 edit or removal" in title
    assert text.index("Edits and removals") < text.index("removed: Встреча")
