"""Search answers exactly what the plain query answers, whatever plan it picks (on SQLite
filters are counted first to choose one; on PostgreSQL the planner chooses), for phrases,
OR and exclusions, with and without the keyset cursor, on the generated bench history."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from bench.searchdata import generate
from storage import queries
from storage.db import make_engine, make_session_factory
from storage.queries import SearchFilter, iter_search, search_items
from storage.search import fts5_excluded, fts5_match, parse_query, tsquery

COUNT = 1500
QUERIES = ['"министр встреча"', '"мерам доверия"', '"industrial port"', '"вопросам переговоров"',
           '"international project" OR "trade forum"', '"security cooperation" -министр',
           'министр -"встреча посол"', "переговоры", '"нет такой фразы"']


def reference(session, query: str) -> list[int]:  # noqa: ANN001
    """Every match of ``query``, newest first, by the plainest SQL."""
    parsed = parse_query(query)
    if session.get_bind().dialect.name == "postgresql":
        sql = ("SELECT i.id FROM items i JOIN items_search s ON s.item_id = i.id "
               "WHERE s.terms @@ to_tsquery('simple', :q) ORDER BY i.sort_at DESC, i.id DESC")
        return list(session.scalars(text(sql), {"q": tsquery(parsed)}))
    positive, negative = fts5_match(parsed), fts5_excluded(parsed)
    sql = "SELECT id FROM items WHERE id IN (SELECT rowid FROM items_fts WHERE items_fts MATCH :p)"
    if negative:
        sql += " AND id NOT IN (SELECT rowid FROM items_fts WHERE items_fts MATCH :n)"
    return list(session.scalars(text(sql + " ORDER BY sort_at DESC, id DESC"), {"p": positive, "n": negative}))


@pytest.fixture
def history(db_url: str):  # noqa: ANN201
    engine = make_engine(db_url)
    generate(engine, COUNT, chunk=500, progress=False)
    yield make_session_factory(engine)
    engine.dispose()


def test_every_query_answers_as_the_plain_query(history):
    with history() as session:
        for query in QUERIES:
            expected = reference(session, query)
            for limit in (1, 7, 50):
                got = [i["id"] for i in search_items(session, SearchFilter(query=query, limit=limit))]
                assert got == expected[:limit], (query, limit)
            paged = [i["id"] for i in iter_search(session, SearchFilter(query=query, limit=10_000), page_size=13)]
            assert paged == expected, query
    assert any(len(reference(history(), q)) > 200 for q in QUERIES)  # SQLite's counts choose both plans


def test_a_phrase_with_other_filters_and_a_date_range(history):
    with history() as session:
        everything = search_items(session, SearchFilter(query='"министр встреча"', limit=1000))
        middle = everything[len(everything) // 2]
        since, until = everything[-1]["published_at"], middle["published_at"]
        flt = SearchFilter(query='"министр встреча"', sources=[middle["source"]],
                           since=queries.parse_when(since), until=queries.parse_when(until), limit=1000)
        expected = [i["id"] for i in everything if i["source"] == middle["source"]
                    and since <= i["published_at"] <= until]
        assert expected and [i["id"] for i in search_items(session, flt)] == expected
