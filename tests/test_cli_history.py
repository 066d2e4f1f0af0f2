"""`newsmon import`, `search`, `show` and `export` through the CLI, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner

from scheduler.cli import cli

ITEM_KEYS = {"id", "source", "sources", "url", "canonical_url", "title", "published_at", "first_seen_at",
             "language", "organisations", "matches", "story_id", "version", "content_hash"}
CONFIG = """
[[sources]]
id = "mid-ru"
url = "https://mid.ru/ru/rss.php"

[[organisations]]
id = "CICA"
aliases = ["CICA", "СВМДА"]

[[organisations]]
id = "SCO"
aliases = ["SCO", "ШОС"]
"""


def record(n: int, title: str, text: str, *, source: str = "mid-ru", orgs: tuple[str, ...] = (),
           day: int = 1, story: int | None = None, versions: int = 1) -> dict:
    published = datetime(2025, 2, day, 9, 30, tzinfo=UTC)
    return {
        "id": n, "source": source, "url": f"https://example.org/news/{n}?utm_source=x",
        "canonical_url": f"https://example.org/news/{n}", "title": title,
        "published_at": published.isoformat(), "first_seen_at": (published + timedelta(minutes=3)).isoformat(),
        "language": "ru", "organisations": list(orgs),
        "matches": [{"organisation": o, "alias": o, "form": o, "snippet": f"…{o}…"} for o in orgs],
        "story_id": story or n, "version": versions, "content_hash": f"sha256:{n}-{versions}",
        "text": text,
        "versions": [{"version": v, "fetched_at": published.isoformat(), "title": title,
                      "text": text if v == versions else f"{text} (черновик {v})",
                      "content_hash": f"sha256:{n}-{v}"} for v in range(1, versions + 1)],
    }


SAMPLE = [
    record(1, "Руденко и Мустафаев обсудили СВМДА", "Совещания по взаимодействию и мерам доверия в Азии.",
           orgs=("CICA",), day=4, versions=2),
    record(2, "Заседание ШОС в Астане", "Шанхайская организация сотрудничества провела заседание.",
           source="tass", orgs=("SCO",), day=3),
    record(3, "Football results", "Nothing about organisations here.", source="tass", day=2),
    record(4, "СВМДА и ШОС: совместное заявление", "Обе организации приняли заявление.",
           source="interfax", orgs=("CICA", "SCO"), day=1, story=1),
]


@pytest.fixture
def run(tmp_path, db_url):
    config = tmp_path / "newsmon.toml"
    config.write_text(CONFIG, "utf-8")
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None):
        return runner.invoke(cli, ["--config", str(config), *args], input=input,
                             env={"NEWSMON_DATABASE_URL": db_url}, catch_exceptions=False)
    return invoke


@pytest.fixture
def loaded(run):
    sample = "\n".join(json.dumps(r, ensure_ascii=False) for r in SAMPLE) + "\n"
    result = run("import", "-", input=sample)
    assert result.exit_code == 0, result.output
    assert "4 new items" in result.output
    return run


def search_ids(run, *args: str) -> list[str]:
    result = run("search", *args, "--format", "json")
    assert result.exit_code == 0, result.output
    return [item["title"] for item in json.loads(result.stdout)]


def test_search_returns_contract_items_newest_first(loaded):
    result = loaded("search", "СВМДА", "--format", "json")
    items = json.loads(result.stdout)
    assert [i["title"] for i in items] == ["Руденко и Мустафаев обсудили СВМДА",
                                           "СВМДА и ШОС: совместное заявление"]
    assert set(items[0]) == ITEM_KEYS
    assert items[0]["organisations"] == ["CICA"] and items[0]["version"] == 2
    assert items[0]["published_at"] == "2025-02-04T09:30:00+00:00"
    assert items[0]["canonical_url"] == "https://example.org/news/1"


def test_full_text_query_language(loaded):
    assert search_ids(loaded, "совещание") == ["Руденко и Мустафаев обсудили СВМДА"]  # any form
    assert search_ids(loaded, '"мерам доверия"') == ["Руденко и Мустафаев обсудили СВМДА"]
    assert search_ids(loaded, '"доверия мерам"') == []
    assert search_ids(loaded, "football OR заседание") == ["Заседание ШОС в Астане", "Football results"]
    assert search_ids(loaded, "СВМДА -заявление") == ["Руденко и Мустафаев обсудили СВМДА"]
    assert search_ids(loaded, "СВМДА AND заявление") == ["СВМДА и ШОС: совместное заявление"]
    only_excluded = loaded("search", "--source", "tass", "--format", "json", "--", "-заседание")
    assert [i["title"] for i in json.loads(only_excluded.stdout)] == ["Football results"]


def test_filters(loaded):
    assert search_ids(loaded, "--org", "SCO") == ["Заседание ШОС в Астане", "СВМДА и ШОС: совместное заявление"]
    assert search_ids(loaded, "--source", "tass", "--limit", "1") == ["Заседание ШОС в Астане"]
    assert search_ids(loaded, "--since", "2025-02-02", "--until", "2025-02-03") == [
        "Заседание ШОС в Астане", "Football results"]
    assert search_ids(loaded, "--since", "2025-02-03T10:00:00+01:00") == [
        "Руденко и Мустафаев обсудили СВМДА", "Заседание ШОС в Астане"]


def test_bad_date_is_usage_error(loaded):
    result = loaded("search", "--since", "yesterday")
    assert result.exit_code == 2 and "ISO date" in result.output


def test_csv_and_jsonl(loaded):
    rows = list(csv.DictReader(io.StringIO(loaded("search", "--org", "CICA", "--format", "csv").stdout)))
    assert [r["organisations"] for r in rows] == ["CICA", "CICA;SCO"]
    lines = loaded("search", "--format", "jsonl").stdout.splitlines()
    assert len(lines) == 4 and all(json.loads(line)["id"] for line in lines)


def test_show_versions(loaded):
    item_id = json.loads(loaded("search", "Руденко", "--format", "json").stdout)[0]["id"]
    shown = json.loads(loaded("show", str(item_id), "--versions", "--format", "json").stdout)
    assert [v["version"] for v in shown["versions"]] == [1, 2]
    assert shown["versions"][0]["text"].endswith("(черновик 1)")
    assert "Совещания" in loaded("show", str(item_id)).output
    missing = loaded("show", "99999")
    assert missing.exit_code == 1 and "no item 99999" in missing.output


def test_export_import_round_trip_is_a_no_op(loaded, tmp_path):
    out = tmp_path / "export.jsonl"
    assert loaded("export", "--out", str(out)).exit_code == 0
    exported = [json.loads(line) for line in out.read_text("utf-8").splitlines()]
    assert len(exported) == 4 and all(len(e["versions"]) >= 1 and "text" in e for e in exported)
    again = loaded("import", str(out))
    assert again.exit_code == 0 and "0 new items, 0 new versions, 4 unchanged" in again.output
    later = loaded("export", "--since-id", str(exported[1]["id"]))
    assert [json.loads(line)["id"] for line in later.stdout.splitlines()] == [e["id"] for e in exported[2:]]
    # stories survive the trip: items 1 and 4 shared story 1 in the file
    stories = {e["title"]: e["story_id"] for e in exported}
    assert stories["Руденко и Мустафаев обсудили СВМДА"] == stories["СВМДА и ШОС: совместное заявление"]


def test_bad_import_lines_are_reported_and_the_rest_imported(run):
    good = json.dumps(record(9, "Новость о СВМДА", "Текст.", orgs=("CICA",)), ensure_ascii=False)
    no_url = json.dumps({"source": "mid-ru", "title": "x"})
    result = run("import", "-", input=f"{good}\nnot json\n{no_url}\n")
    assert result.exit_code == 1
    assert "line 2:" in result.output and "line 3: url" in result.output
    assert search_ids(run, "СВМДА") == ["Новость о СВМДА"]


@pytest.mark.parametrize(("selective", "ubiquitous"), [(1, 10**9), (1, 1)])
def test_every_query_plan_gives_the_same_answers(loaded, monkeypatch, selective, ubiquitous):
    """SQLite picks a plan by how common a filter is; each plan must answer the same."""
    queries = [("СВМДА",), ('"мерам доверия"',), ("--org", "SCO"), ("СВМДА", "--org", "SCO"),
               ("СВМДА", "--since", "2025-02-02"), ("football OR заседание", "--source", "tass")]
    expected = [search_ids(loaded, *q) for q in queries]
    import storage.queries

    monkeypatch.setattr(storage.queries, "SELECTIVE", selective)
    monkeypatch.setattr(storage.queries, "UBIQUITOUS", ubiquitous)
    assert [search_ids(loaded, *q) for q in queries] == expected
    assert all(expected)


def test_rematch_reports_then_stores_gained_and_lost_matches(run):
    unmatched = record(20, "Саммит в Астане", "Лидеры обсудили повестку СВМДА и ШОС.")  # matches not stored
    stale = record(21, "Football results", "Nothing here.", orgs=("SCO",))  # a match that no longer holds
    result = run("import", "-", input="\n".join(json.dumps(r, ensure_ascii=False) for r in (unmatched, stale)))
    assert result.exit_code == 0
    dry = run("rematch", "--dry-run")
    assert "+ CICA" in dry.output and "+ SCO" in dry.output and "- SCO" in dry.output
    assert "would change: 2 matches gained, 1 lost" in dry.output
    assert search_ids(run, "--org", "CICA") == []  # a dry run stores nothing
    done = run("rematch", "--org", "CICA")
    assert "changed: 1 matches gained, 0 lost" in done.output
    assert search_ids(run, "--org", "CICA") == ["Саммит в Астане"]
    assert search_ids(run, "--org", "SCO") == ["Football results"]  # --org CICA left SCO alone
    assert run("rematch", "--org", "NATO").exit_code == 2


MANY = 5_200  # more than five pages of the read path


@pytest.fixture
def many(run, db_url):
    """MANY items stored through the batch write path; three items share each publication
    minute (ties of the newest-first order across page boundaries); every 7th is about SCO."""
    from storage.db import make_engine, make_session_factory
    from storage.repository import ItemWrite, MatchRow, SourceRow, sync_sources
    from storage.writes import save_items

    now = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    sco = MatchRow("SCO", "ШОС", "ШОС", "…ШОС…", 0, 3)
    writes = [ItemWrite(
        source_id="mid-ru", url=f"https://example.org/many/{n}", canonical_url=f"https://example.org/many/{n}",
        title=f"Новость {n}" + (" о ШОС" if n % 7 == 0 else ""), text=f"Текст {n}.", fetched_at=now,
        content_hash=f"sha256:many-{n}", published_at=now - timedelta(minutes=n // 3),
        matches=[sco] if n % 7 == 0 else []) for n in range(MANY)]
    engine = make_engine(db_url)
    sessions = make_session_factory(engine)
    with sessions.begin() as session:
        sync_sources(session, [SourceRow(id="mid-ru", kind="feed", url="https://mid.ru/ru/rss.php")], now=now)
    for start in range(0, MANY, 1000):
        with sessions.begin() as session:
            save_items(session, writes[start:start + 1000], now=now)
    engine.dispose()
    return run


def newest_first(db_url: str, where: str = "") -> list[int]:
    from sqlalchemy import text

    from storage.db import make_engine

    engine = make_engine(db_url)
    with engine.connect() as conn:
        ids = list(conn.scalars(text(f"SELECT id FROM items {where} ORDER BY sort_at DESC, id DESC")))
    engine.dispose()
    return ids


def test_search_limit_beyond_one_page_returns_exactly_n_in_every_format(many, db_url):
    expected = newest_first(db_url)[:5000]
    assert len(expected) == 5000

    result = many("search", "--limit", "5000", "--format", "json")
    assert result.exit_code == 0, result.output
    items = json.loads(result.stdout)
    assert [i["id"] for i in items] == expected  # exactly N, newest first, no duplicates
    assert set(items[0]) == ITEM_KEYS
    order = [(i["published_at"], i["id"]) for i in items]
    assert order == sorted(order, reverse=True) and len(set(order)) == 5000
    assert result.stdout == json.dumps(items, ensure_ascii=False, indent=2) + "\n"

    lines = many("search", "--limit", "5000", "--format", "jsonl").stdout.splitlines()
    assert [json.loads(line)["id"] for line in lines] == expected
    rows = list(csv.DictReader(io.StringIO(many("search", "--limit", "5000", "--format", "csv").stdout)))
    assert [int(r["id"]) for r in rows] == expected

    everything = json.loads(many("search", "--limit", "100000", "--format", "json").stdout)
    assert [i["id"] for i in everything] == newest_first(db_url)  # fewer matches: all of them


def test_search_with_fewer_matches_returns_all_and_only_the_table_is_capped(many, db_url):
    sco = newest_first(db_url, "WHERE title LIKE '%ШОС%'")
    assert len(sco) == len(range(0, MANY, 7))
    for args in (("ШОС",), ("--org", "SCO"), ("ШОС", "--org", "SCO", "--source", "mid-ru")):
        lines = many("search", *args, "--limit", "5000", "--format", "jsonl").stdout.splitlines()
        assert [json.loads(line)["id"] for line in lines] == sco, args
    assert many("search", "ШОС", "--limit", "300", "--format", "jsonl").stdout.count("\n") == 300

    zero = many("search", "--limit", "0")  # no maximum; at least 1
    assert zero.exit_code == 2 and "--limit" in zero.output
    table = many("search", "--limit", "1500")  # the table format alone has a cap, and says so
    assert table.exit_code == 0 and table.stdout.count("\n") > 1000
    assert "the table shows the first 1,000 items and there are more" in table.stderr
    assert "--format json, jsonl or csv" in table.stderr
    small = many("search", "ШОС", "--limit", "5000")
    assert small.exit_code == 0 and small.stderr == ""


def test_search_reads_in_pages_and_holds_one_page(many, db_url):
    from sqlalchemy import event

    from storage.db import make_engine, make_session_factory
    from storage.queries import SearchFilter, iter_search

    engine = make_engine(db_url)
    statements: list[str] = []
    event.listen(engine, "before_cursor_execute",
                 lambda conn, cursor, sql, *rest: statements.append(sql))
    with make_session_factory(engine)() as session:
        held = []
        ids = []
        for item in iter_search(session, SearchFilter(limit=MANY), page_size=500):
            held.append(len(session.identity_map))
            ids.append(item["id"])
    engine.dispose()
    assert ids == newest_first(db_url) and "_cursor" not in item
    pages = [s for s in statements if "ORDER BY items.sort_at DESC" in s]
    assert len(pages) == 11  # 5,200 items in pages of 500
    assert max(held) == 0  # each page's rows leave the session before its items are yielded

