"""Phrases on PostgreSQL are narrowed by the index of adjacent word pairs (``items_search.pairs``)
before their positions are checked: every writer (the write path, import, the migration of an
existing database) fills the pairs that the stored tsvector's positions give, so a phrase
finds exactly what it found without them, on both backends — Russian phrases in any
grammatical case, other alphabets, words PostgreSQL splits differently from the stemmer."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from alembic import command
from sqlalchemy import Engine, text

from storage.db import _alembic_config, make_engine, make_session_factory, upgrade
from storage.import_prep import search_binary
from storage.queries import SearchFilter, iter_search, search_items
from storage.repository import ItemWrite, SourceRow, sync_sources
from storage.search import pair_hash, pair_hashes, parse_query, phrase_pairs, search_pairs, search_terms
from storage.transfer import Importer
from storage.writes import save_items
from tests.test_import_speed import ODD, REAL
from tests.test_search_plans import reference

NOW = datetime(2026, 12, 5, 6, 0, tzinfo=UTC)
TEXTS = [
    "Совещание по взаимодействию и мерам доверия в Азии провело заседание",
    "Министры обсудили меры доверия и взаимодействие",  # the same stems: the same phrase
    "доверия мерам: слова рядом, но в другом порядке",
    "Меры по укреплению доверия в Азии",
    "Industrial port of Aktau: the industrial ports of the Caspian",
    "port industrial zone, an industrial area by the port",
    "Қазақстан Республикасы Сыртқы істер министрлігі мерам доверия",
    "Azərbaycan Respublikası Xarici İşlər Nazirliyi və industrial port",
    "foo_bar baz qux: the stemmer keeps one word, PostgreSQL reads two",
    "naïve café de Paris and мерам доверия",
    " ".join(["слово"] * 16_390) + " мерам доверия",  # positions past 16,383 are one position on PostgreSQL
    " ".join(["повтор"] * 300) + " мерам доверия повтор",
]
QUERIES = ['"мерам доверия"', '"мерами доверия"', '"доверия мерам"', '"мерам доверия в Азии"',
           '"industrial port"', '"industrial ports"', '"port industrial"', '"Қазақстан Республикасы"',
           '"Республикасы Сыртқы"', '"bar baz"', '"foo_bar baz"', '"foo bar baz"', '"naïve café"',
           '"Azərbaycan Respublikası"', '"слово слово"', '"повтор повтор мерам"',
           '"мерам доверия" OR "industrial port"', '"мерам доверия" OR Азии', '"мерам доверия" -Азии',
           '"industrial port" "мерам доверия"', 'доверия -"мерам доверия"', '"мерам доверия" OR "bar baz"']


def writes() -> list[ItemWrite]:
    out = []
    for n, body in enumerate(TEXTS):
        url = f"https://mid.example/news/{n}"
        out.append(ItemWrite(source_id="mid", url=url, canonical_url=url, guid=f"g{n}", title=f"Новость {n}",
                             text=body, content_hash=f"sha256:{n}", fetched_at=NOW,
                             published_at=NOW - timedelta(hours=n), matches=[], language="ru"))
    return out


def export_lines() -> list[str]:
    return [json.dumps({
        "source": "mid", "url": w.url, "canonical_url": w.canonical_url, "guid": w.guid, "language": "ru",
        "published_at": w.published_at.isoformat() if w.published_at else None,
        "first_seen_at": NOW.isoformat(), "versions": [{"version": 1, "title": w.title, "text": w.text,
                                                         "content_hash": w.content_hash,
                                                         "fetched_at": NOW.isoformat()}]},
        ensure_ascii=False) for w in writes()]


def store(url: str, writer: str) -> None:
    engine = make_engine(url)
    sessions = make_session_factory(engine)
    with sessions.begin() as session:
        sync_sources(session, [SourceRow("mid", "feed", "https://mid.example/rss")], NOW)
    if writer == "write path":
        with sessions.begin() as session:
            save_items(session, writes(), now=NOW)
    else:
        with sessions() as session:
            report = Importer(session, NOW).feed(export_lines(), chunk=5)
        assert report.items_new == len(TEXTS)
    engine.dispose()


def assert_same_as_without_pairs(url: str) -> None:
    engine = make_engine(url)
    with make_session_factory(engine)() as session:
        for query in QUERIES:
            expected = reference(session, query)
            assert [i["id"] for i in search_items(session, SearchFilter(query=query))] == expected, query
            paged = [i["id"] for i in iter_search(session, SearchFilter(query=query, limit=100), page_size=2)]
            assert paged == expected, query
        found = {q: {i["title"] for i in search_items(session, SearchFilter(query=q))} for q in QUERIES}
    engine.dispose()
    assert found['"мерами доверия"'] == found['"мерам доверия"'] >= {f"Новость {n}" for n in (0, 1, 6, 9, 11)}
    assert "Новость 3" not in found['"мерам доверия"'] and found['"доверия мерам"'] == {"Новость 2"}
    assert found['"мерам доверия в Азии"'] == {"Новость 0"}
    assert found['"industrial port"'] == found['"industrial ports"'] == {"Новость 4", "Новость 7"}
    assert found['"port industrial"'] == {"Новость 5"}
    assert found['"Қазақстан Республикасы"'] == found['"Республикасы Сыртқы"'] == {"Новость 6"}
    assert found['"bar baz"'] == found['"foo_bar baz"'] == found['"foo bar baz"'] == {"Новость 8"}
    assert found['"naïve café"'] == {"Новость 9"} and found['"Azərbaycan Respublikası"'] == {"Новость 7"}
    # PostgreSQL keeps the first 256 positions of a word: as before the pairs, it misses this one
    assert found['"повтор повтор мерам"'] == ({"Новость 11"} if url.startswith("sqlite") else set())


def stored_pairs(url: str) -> dict[int, tuple[set[str], set[str]]]:
    """Per row: its pairs, and the pairs its tsvector's positions give (the server's function)."""
    engine = make_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT item_id, pairs, search_pair_hashes(terms) FROM items_search")).all()
    engine.dispose()
    return {i: (set(p), set(s)) for i, p, s in rows}


@pytest.mark.parametrize("writer", ["write path", "import"])
def test_phrases_find_what_they_found_without_pairs(db_url: str, writer: str) -> None:
    store(db_url, writer)
    assert_same_as_without_pairs(db_url)
    if db_url.startswith("postgresql"):
        pairs = stored_pairs(db_url)
        assert len(pairs) == len(TEXTS)
        for held, from_positions in pairs.values():  # a superset only where a word repeats > 255 times
            assert held >= from_positions and (held == from_positions or pair_hash("повтор", "повтор") in held)


def test_python_pairs_equal_the_servers_on_real_texts(pg_url: str) -> None:
    texts = [*REAL, *ODD, *TEXTS[:10], "", "одно", "2026 g20 1st e5"]
    computed = [search_pairs(search_terms(t)) for t in texts]
    assert sum(p is None for p in computed) >= 8  # the odd words: the server takes them from the tsvector
    assert sum(p is not None for p in computed) >= 120
    engine = make_engine(pg_url)
    with engine.connect() as conn:
        for source, pairs in zip(texts, computed, strict=True):
            if pairs is not None:
                ours, server = conn.execute(text("SELECT CAST(:p AS int4[]), "
                                                 "search_pair_hashes(to_tsvector('simple', :t))"),
                                            {"p": pairs, "t": search_terms(source)}).one()
                assert sorted(ours) == sorted(server), source[:80]
                assert len(ours) == len(set(ours))
    engine.dispose()


def test_only_phrases_of_plain_words_are_narrowed() -> None:
    assert phrase_pairs(parse_query('"мерами доверия в Азии" OR "industrial ports" министр')) == [
        [sorted([pair_hash("мер", "довер"), pair_hash("довер", "в"), pair_hash("в", "аз")]),
         [pair_hash("industri", "port")]]]
    assert phrase_pairs(parse_query('"мерам доверия" OR министр')) == []  # a word narrows nothing
    assert phrase_pairs(parse_query('"Қазақстан Республикасы" "foo_bar baz" -"мерам доверия"')) == []


def downgrade_to(engine: Engine, revision: str) -> None:
    with engine.begin() as connection:
        config = _alembic_config(engine)
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


def test_the_migration_fills_the_pairs_of_an_existing_database(pg_url: str) -> None:
    store(pg_url, "write path")
    engine = make_engine(pg_url)
    downgrade_to(engine, "0007")
    with engine.connect() as conn:
        columns = conn.execute(text("SELECT column_name FROM information_schema.columns "
                                    "WHERE table_name = 'items_search'")).scalars().all()
    assert "pairs" not in columns
    upgrade(engine)
    engine.dispose()
    pairs = stored_pairs(pg_url)
    assert len(pairs) == len(TEXTS) and all(held == positions for held, positions in pairs.values())
    assert_same_as_without_pairs(pg_url)


def test_the_import_computes_the_pair_hashes_of_the_write_path() -> None:
    texts = [*REAL, *TEXTS[:6], "", "одно", "2026 g20 1st e5", "а б а б а"]
    plain = 0
    for source in texts:
        terms = search_terms(source)
        binary = search_binary(terms)
        assert (binary is None) == (pair_hashes(terms) is None), source[:80]
        if binary is None:  # another alphabet: the server takes the pairs from its tsvector
            continue
        plain += 1
        array = binary[1]  # int4[] in binary: ndim, flags, oid, [length, lower bound], then (4, value)...
        count = int.from_bytes(array[12:16], "big") if len(array) > 12 else 0
        values = [int.from_bytes(array[20 + 8 * n + 4:20 + 8 * n + 8], "big", signed=True) for n in range(count)]
        assert values == sorted(values, key=lambda v: v & 0xFFFFFFFF) and len(set(values)) == count
        assert sorted(values) == pair_hashes(terms), source[:80]
    assert plain >= 120
    assert search_pairs(search_terms("мерам доверия")) == "{" + str(pair_hash("мер", "довер")) + "}"


def colliding_words() -> tuple[str, str]:
    """Two plain words whose 32-bit hashes are equal (so are the hashes of their pairs with any
    next word)."""
    from storage.search import word_hash

    seen: dict[int, str] = {}
    n = 0
    while True:
        word = f"w{n}"
        other = seen.setdefault(word_hash(word), word)
        if other != word:
            return other, word
        n += 1


def test_a_hash_shared_by_two_pairs_only_widens_the_candidates(db_url: str) -> None:
    first, second = colliding_words()
    assert search_terms(f"{first} {second} conference") == f"{first} {second} confer"
    assert pair_hash(first, "confer") == pair_hash(second, "confer") and first != second
    engine = make_engine(db_url)
    sessions = make_session_factory(engine)
    with sessions.begin() as session:
        sync_sources(session, [SourceRow("mid", "feed", "https://mid.example/rss")], NOW)
    bodies = [f"the {first} conference opened", f"the {second} conference opened", f"{first} and {second}"]
    items = [ItemWrite(source_id="mid", url=f"https://mid.example/c/{n}", canonical_url=f"https://mid.example/c/{n}",
                       guid=f"c{n}", title=f"Collision {n}", text=body, content_hash=f"sha256:c{n}", fetched_at=NOW,
                       published_at=NOW, matches=[], language="en") for n, body in enumerate(bodies)]
    with sessions.begin() as session:
        save_items(session, items, now=NOW)
    with sessions() as session:
        for n, word in enumerate((first, second)):
            found = [i["title"] for i in search_items(session, SearchFilter(query=f'"{word} conference"'))]
            assert found == [f"Collision {n}"]
            assert reference(session, f'"{word} conference"') == [i["id"] for i in search_items(
                session, SearchFilter(query=f'"{word} conference"'))]
        if db_url.startswith("postgresql"):  # both rows hold the shared key: the index found both
            shared = session.execute(text("SELECT count(*) FROM items_search WHERE pairs @> ARRAY[:h]"),
                                     {"h": pair_hash(first, "confer")}).scalar()
            assert shared == 2
    engine.dispose()


def test_the_migration_hashes_the_text_pairs_of_a_database_of_0008(pg_url: str) -> None:
    store(pg_url, "import")
    engine = make_engine(pg_url)
    downgrade_to(engine, "0008_search_pairs")
    column_type = ("SELECT data_type || ':' || udt_name FROM information_schema.columns "
                   "WHERE table_name = 'items_search' AND column_name = 'pairs'")
    with engine.connect() as conn:
        assert conn.execute(text(column_type)).scalar() == "ARRAY:_text"
        texts = {i: set(p) for i, p in conn.execute(text("SELECT item_id, pairs FROM items_search"))}
    assert any("мер довер" in pairs for pairs in texts.values())
    upgrade(engine)
    with engine.connect() as conn:
        assert conn.execute(text(column_type)).scalar() == "ARRAY:_int4"
        storage = conn.execute(text("SELECT attstorage FROM pg_attribute WHERE attrelid = 'items_search'::regclass "
                                    "AND attname = 'pairs'")).scalar()
        assert storage == "e"  # external: random hashes are not compressed
    engine.dispose()
    hashed = stored_pairs(pg_url)
    assert {i: held for i, (held, _) in hashed.items()} == {
        i: {pair_hash(*p.split(" ")) for p in pairs} for i, pairs in texts.items()}
    assert all(held == positions for held, positions in hashed.values())
    assert_same_as_without_pairs(pg_url)
