"""A generated news history for the search benchmarks, written straight into the tables by
bulk SQL (COPY on PostgreSQL, executemany on SQLite): items, versions, matches, the sources
that carry them and the full-text rows. The full-text rows hold exactly what the product
writes (``storage.search.search_terms`` of title and text; on PostgreSQL through
``to_tsvector('simple', …)`` with ``search_pairs``, as ``storage.writes.index_items`` does), so queries see the
same index as after `newsmon import`, which is 5–20× slower to build.

Words follow a Zipf law over a vocabulary of real Russian and English news words followed by
made-up ones: the top words are in almost every item, rank 10–30 in a third to three quarters
of them, the tail in few — so two-word phrases of common words have tens of thousands of
candidate items (every one holds both words) and few hits, as in real news.
"""

from __future__ import annotations

import bisect
import itertools
import random
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, text

from storage.search import fts5_terms, search_pairs, search_terms

REAL_RU = ("министр встреча посол сотрудничество безопасность экономика переговоры визит заявление "
           "делегация саммит форум председательство азия регион торговля энергетика транспорт культура "
           "образование вопросам переговоров промышленный порт развития стран рамках международного "
           "проекта заседании").split()
REAL_EN = ("minister meeting ambassador cooperation security trade summit forum visit region "
           "industrial port development countries framework international project session").split()
SYLLABLES = "ка ро ми на те ли до ва се ру по ко ты жа ле би му зо ре ни".split()
ORGS = ["CICA", "SCO", "CSTO", "CIS", "EAEU", "BRICS", "OTS"]
PLANTED = ["мерам доверия", "шанхайская организация", "стратегическое партнерство"]
SOURCES = 40
START = datetime(2024, 1, 1, tzinfo=UTC)


def _vocabulary(rng: random.Random, size: int = 4000) -> list[str]:
    words: list[str] = []
    for ru, en in itertools.zip_longest(REAL_RU, REAL_EN):
        words.extend(w for w in (ru, en) if w)
    seen = set(words)
    while len(words) < size:
        word = "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4)))
        if word not in seen:
            seen.add(word)
            words.append(word)
    return words


class Generator:
    """Deterministic items: ``record(n)`` is the same on every run and backend."""

    def __init__(self, seed: int = 7) -> None:
        rng = random.Random(seed)
        self.words = _vocabulary(rng)
        weights = [1.0 / (rank + 1) for rank in range(len(self.words))]
        self.cumulative = list(itertools.accumulate(weights))

    def record(self, n: int) -> dict:
        rng = random.Random(n * 7919 + 1)
        total = self.cumulative[-1]
        count = rng.randint(60, 160)
        words = [self.words[bisect.bisect_left(self.cumulative, rng.random() * total)] for _ in range(count)]
        if rng.random() < 0.2:
            at = rng.randrange(len(words))
            words[at:at] = rng.choice(PLANTED).split()
        orgs = rng.sample(ORGS, k=1) if rng.random() < 0.3 else []
        if orgs:
            words.insert(rng.randrange(len(words)), orgs[0])
        published = START + timedelta(minutes=n * 3)
        title = " ".join(words[:8])
        body = " ".join(words)
        source = f"src-{n % SOURCES}"
        return {"id": n + 1, "source": source, "url": f"https://news{n % SOURCES}.example/{n}",
                "title": title, "text": body, "published_at": published, "orgs": orgs,
                "language": "ru" if rng.random() < 0.7 else "en", "terms": search_terms(title, body)}


def _key(value: str) -> str:
    from storage.repository import key_of

    return key_of(value)


def _rows(gen: Generator, start: int, stop: int) -> dict[str, list[tuple]]:
    out: dict[str, list[tuple]] = {"items": [], "versions": [], "matches": [], "links": [], "search": []}
    for n in range(start, stop):
        r = gen.record(n)
        at, item_id = r["published_at"], r["id"]
        out["items"].append((item_id, r["source"], r["url"], r["url"], _key(r["url"]), r["title"], r["text"],
                             r["language"], at, at, at, at, 1, f"sha256:{n}"))
        out["versions"].append((item_id, 1, at, r["title"], r["text"], f"sha256:{n}", at))
        for org in r["orgs"]:
            out["matches"].append((item_id, org, org, org, org, 0, len(org), False))
        out["links"].append((item_id, r["source"], f"sha256:{n}", at))
        out["search"].append((item_id, r["terms"]))
    return out


ITEM_COLUMNS = ("id, source_id, url, canonical_url, url_key, title, text, language, published_at, "
                "first_seen_at, updated_at, sort_at, version, content_hash")
VERSION_COLUMNS = "item_id, version, fetched_at, title, text, content_hash, published_at"
MATCH_COLUMNS = 'item_id, organisation, alias, form, snippet, start, "end", in_title'
LINK_COLUMNS = "item_id, source_id, content_hash, first_seen_at"


def _sources(engine: Engine) -> None:
    with engine.begin() as conn:
        for i in range(SOURCES):
            conn.execute(text(
                "INSERT INTO sources (id, name, kind, url, host, enabled, interval_seconds, failures, "
                "had_items, created_at) VALUES (:id, :name, 'feed', :url, :host, true, 600, 0, true, :at)"),
                {"id": f"src-{i}", "name": f"src-{i}", "url": f"https://news{i}.example/feed",
                 "host": f"news{i}.example", "at": START})


def generate(engine: Engine, count: int, chunk: int = 10_000, progress: bool = True) -> None:
    """Fill a freshly migrated, empty database at ``engine`` with ``count`` items."""
    gen = Generator()
    _sources(engine)
    postgres = engine.dialect.name == "postgresql"
    for start in range(0, count, chunk):
        rows = _rows(gen, start, min(count, start + chunk))
        raw = engine.raw_connection()
        try:
            (_copy if postgres else _executemany)(raw, rows)
            raw.commit()
        finally:
            raw.close()
        if progress:
            print(f"\r  generated {min(count, start + chunk):,}/{count:,}", end="", flush=True)
    if progress:
        print()
    with engine.begin() as conn:
        if postgres:
            for table in ("items", "item_versions", "matches", "item_sources"):
                conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                                  f"(SELECT coalesce(max(id), 1) FROM {table}))"))
    with engine.connect() as conn:
        if postgres:
            conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("VACUUM ANALYZE"))
        else:
            conn.exec_driver_sql("ANALYZE")


def _copy(raw, rows: dict[str, list[tuple]]) -> None:
    cur = raw.driver_connection.cursor()
    for table, columns, key in (("items", ITEM_COLUMNS, "items"), ("item_versions", VERSION_COLUMNS, "versions"),
                                ("matches", MATCH_COLUMNS, "matches"), ("item_sources", LINK_COLUMNS, "links")):
        with cur.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
            for row in rows[key]:
                copy.write_row(row)
    cur.execute("CREATE TEMP TABLE IF NOT EXISTS bench_terms (item_id bigint, terms text, pairs int4[]) "
                "ON COMMIT DELETE ROWS")
    with cur.copy("COPY bench_terms (item_id, terms, pairs) FROM STDIN") as copy:
        for item_id, terms in rows["search"]:
            copy.write_row((item_id, terms, search_pairs(terms)))
    cur.execute("INSERT INTO items_search (item_id, terms, pairs) "
                "SELECT item_id, v, coalesce(pairs, search_pair_hashes(v)) "
                "FROM bench_terms, to_tsvector('simple', terms) v")


def _executemany(raw, rows: dict[str, list[tuple]]) -> None:
    cur = raw.cursor()

    def many(sql: str, data: list[tuple]) -> None:
        cur.executemany(sql, [tuple(v.strftime("%Y-%m-%d %H:%M:%S.%f") if isinstance(v, datetime) else v for v in row)
                              for row in data])

    many(f"INSERT INTO items ({ITEM_COLUMNS}) VALUES ({', '.join('?' * 14)})", rows["items"])
    many(f"INSERT INTO item_versions ({VERSION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)", rows["versions"])
    many(f"INSERT INTO matches ({MATCH_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows["matches"])
    many(f"INSERT INTO item_sources ({LINK_COLUMNS}) VALUES (?, ?, ?, ?)", rows["links"])
    many("INSERT INTO items_fts (rowid, terms) VALUES (?, ?)", [(i, fts5_terms(t)) for i, t in rows["search"]])

