"""SQLite's full-text table reads folded terms with FTS5's ``ascii`` tokenizer (migration 0007)
and finds exactly what the ``unicode61 remove_diacritics 2`` table found: the shipped fold
table is unicode61's, every query finds the same rows, and the migration converts a database
indexed the old way."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import text

from storage import fts_fold
from storage.db import make_engine, upgrade
from storage.search import UNFOLDED, fts5_excluded, fts5_match, fts5_terms, parse_query, search_terms
from tests.fts_fold_table import module_text, unicode61_fold
from tests.test_migrations import downgrade

ROOT = Path(__file__).resolve().parents[1]
REAL = [json.loads(line)["text"] for line in
        (ROOT / "tests/data/matching/real_sentences.jsonl").read_text(encoding="utf-8").splitlines()]
# words whose characters unicode61 folded: Azerbaijani and Turkish letters, accents, ligatures,
# an underscore, full-width and other scripts
ODD = ["Azərbaycan Respublikası XİN başçısı görüş keçirib", "naïve café Ærø Straße œuvre",
       "foo_bar snake_case", "ＣＩＣＡ ｓｃｏ", "Ελληνικά ΚΑΚΟ", "Қазақстан Республикасы СІМ",
       "µ-meter ǅ ǈ ﬁnal", "Đorđe Šešelj Ødegaard", "İstanbul IŞIK"]
DOCS = [*REAL, *ODD, *(f"{a} {b}" for a, b in zip(ODD, REAL, strict=False))]
QUERIES = ["azerbaycan", "azərbaycan", "başçısı", "bascisi", '"xin bascisi"', "cafe", "naive OR œuvre",
           "foo", '"foo bar"', "foo_bar", "cica", "ＣＩＣＡ", "ελληνικα", "қазақстан", "казакстан", "final",
           "ﬁnal", "dorde", "sesel", "istanbul", "işik", "isik", "meter -µ", "СВМДА", "совещание -азии",
           '"мерам доверия"', "министр OR посол", "-the"]


def test_the_shipped_table_is_unicode61s() -> None:
    fold = unicode61_fold()
    generated = module_text(fold)
    assert (ROOT / "storage/fts_fold.py").read_text(encoding="utf-8") == generated, \
        "regenerate: .venv/bin/python -m tests.fts_fold_table > storage/fts_fold.py"
    assert len(fts_fold.SOURCE) + len(fts_fold.DROPPED) == len(fold) > 1000
    # the characters fts5_terms passes without a look-up are ones unicode61 keeps
    kept = re.compile(f"[{UNFOLDED}]")
    assert not [cp for cp in fold if kept.match(chr(cp))]
    # folding is done once: a folded character folds to itself
    for out in fold.values():
        assert fts5_terms(out) == out


def _table(tokenizer: str, terms: list[str]) -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:")
    conn.execute(f"CREATE VIRTUAL TABLE items_fts USING fts5(terms, tokenize = '{tokenizer}')")
    conn.executemany("INSERT INTO items_fts(rowid, terms) VALUES (?, ?)", list(enumerate(terms, 1)))
    return conn


def _found(conn: sqlite3.Connection, query: str) -> set[int]:
    parsed = parse_query(query)
    found = {r for (r,) in conn.execute("SELECT rowid FROM items_fts")}
    if (positive := fts5_match(parsed)) is not None:
        found &= {r for (r,) in conn.execute("SELECT rowid FROM items_fts WHERE items_fts MATCH ?", (positive,))}
    if (negative := fts5_excluded(parsed)) is not None:
        found -= {r for (r,) in conn.execute("SELECT rowid FROM items_fts WHERE items_fts MATCH ?", (negative,))}
    return found


def test_every_query_finds_what_unicode61_found() -> None:
    terms = [search_terms(doc) for doc in DOCS]
    before = _table("unicode61 remove_diacritics 2", terms)  # as items were indexed until 0007
    after = _table("ascii", [fts5_terms(t) for t in terms])
    words = {w for t in terms for w in t.split()}
    queries = [*QUERIES, *sorted(words)[::7]]
    hits = 0
    for query in queries:
        found = _found(before, query)
        assert _found(after, query) == found, query
        hits += bool(found)
    assert hits > len(queries) * 0.8
    assert _found(after, "cafe") == _found(after, "café") != set()  # as unicode61 folded it


def test_0007_converts_a_database_indexed_the_old_way(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    try:
        upgrade(engine, "0006")
        terms = [search_terms(doc) for doc in DOCS]
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO items_fts(rowid, terms) VALUES (:i, :t)"),
                         [{"i": i, "t": t} for i, t in enumerate(terms, 1)])
        old = _table("unicode61 remove_diacritics 2", terms)
        expected = {q: _found(old, q) for q in QUERIES}
        upgrade(engine)

        def found_now() -> dict[str, set[int]]:
            conn = sqlite3.connect(engine.url.database)
            try:
                assert "tokenize = 'ascii'" in conn.execute(
                    "SELECT sql FROM sqlite_master WHERE name = 'items_fts'").fetchone()[0]
                return {q: _found(conn, q) for q in QUERIES}
            finally:
                conn.close()

        assert found_now() == expected
        downgrade(engine, "0006")
        with engine.connect() as conn:
            assert "unicode61" in conn.execute(text(
                "SELECT sql FROM sqlite_master WHERE name = 'items_fts'")).scalar()
            assert conn.execute(text("SELECT count(*) FROM items_fts")).scalar() == len(DOCS)
        upgrade(engine)
        assert found_now() == expected
    finally:
        engine.dispose()


def test_0007_compresses_long_texts_with_lz4_on_postgresql(pg_url: str) -> None:
    engine = make_engine(pg_url)
    query = text("SELECT attrelid::regclass::text || '.' || attname, attcompression FROM pg_attribute "
                 "WHERE (attrelid::regclass::text, attname) IN "
                 "(('items', 'text'), ('item_versions', 'text'), ('items_search', 'terms'))")
    try:
        with engine.connect() as conn:
            if not conn.execute(text("SELECT 'lz4' = ANY(enumvals) FROM pg_settings "
                                     "WHERE name = 'default_toast_compression'")).scalar():
                pytest.skip("this PostgreSQL has no lz4")
            assert dict(conn.execute(query).all()) == {
                "items.text": "l", "item_versions.text": "l", "items_search.terms": "l"}
        downgrade(engine, "0006")
        with engine.connect() as conn:
            assert set(dict(conn.execute(query).all()).values()) == {"p"}
    finally:
        engine.dispose()
