"""Search and export over a large history: p95 latency of word, phrase, organisation and
date-range queries through the read path, against raw sqlite3 FTS5 queries in the same run;
export peak memory at two sizes (constant memory means the same peak).

    .venv/bin/python bench/bench_search.py            # 200,000 items
    .venv/bin/python bench/bench_search.py --quick    # 20,000 items
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from storage.db import make_engine, make_session_factory, upgrade  # noqa: E402
from storage.queries import SearchFilter, search_items  # noqa: E402
from storage.search import fts5_match, parse_query  # noqa: E402
from storage.transfer import Importer  # noqa: E402

WORDS_RU = ("министр встреча посол сотрудничество безопасность экономика переговоры визит "
            "заявление делегация саммит форум председательство азия регион торговля энергетика "
            "транспорт культура образование").split()
WORDS_EN = "minister meeting ambassador cooperation security trade summit forum visit region".split()
ORGS = ["CICA", "SCO", "CSTO", "CIS", "EAEU", "BRICS", "OTS"]
PHRASES = ["мерам доверия", "шанхайская организация", "стратегическое партнерство"]


def make_record(n: int, rng: random.Random, start: datetime) -> dict:
    words = [rng.choice(WORDS_RU if rng.random() < 0.7 else WORDS_EN) for _ in range(rng.randint(60, 160))]
    if rng.random() < 0.2:
        words[rng.randrange(len(words)):0] = rng.choice(PHRASES).split()
    orgs = rng.sample(ORGS, k=1) if rng.random() < 0.3 else []
    published = start + timedelta(minutes=n * 3)
    text = " ".join(words)
    return {"source": f"src-{n % 40}", "url": f"https://news{n % 40}.example/{n}",
            "canonical_url": f"https://news{n % 40}.example/{n}", "title": " ".join(words[:8]),
            "published_at": published.isoformat(), "first_seen_at": published.isoformat(),
            "matches": [{"organisation": o, "alias": o, "form": o, "snippet": o} for o in orgs],
            "versions": [{"version": 1, "title": " ".join(words[:8]), "text": text,
                          "content_hash": f"sha256:{n}", "fetched_at": published.isoformat()}]}


def build(db: Path, count: int) -> float:
    engine = make_engine(f"sqlite:///{db}")
    upgrade(engine)
    sessions = make_session_factory(engine)
    rng = random.Random(7)
    start = datetime(2024, 1, 1, tzinfo=UTC)
    began = time.perf_counter()
    lines = (json.dumps(make_record(n, rng, start), ensure_ascii=False) for n in range(count))
    with sessions() as session:
        Importer(session, datetime.now(UTC)).feed(lines, chunk=2000)
    engine.dispose()
    return time.perf_counter() - began


QUERIES = {
    "word": [SearchFilter(query=w) for w in ("министр", "саммит", "cooperation", "посол", "форум")],
    "phrase": [SearchFilter(query=f'"{p}"') for p in PHRASES],
    "organisation": [SearchFilter(organisations=[o]) for o in ORGS],
    "date range": [SearchFilter(since=datetime(2024, 3, d, tzinfo=UTC), until=datetime(2024, 3, d + 5, tzinfo=UTC))
                   for d in range(1, 20, 4)],
    "word + org + dates": [SearchFilter(query="министр", organisations=["CICA"],
                                        since=datetime(2024, 2, 1, tzinfo=UTC))],
}


def p95(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=20, method="inclusive")[18] if len(samples) > 1 else samples[0]


def time_read_path(db: Path, rounds: int) -> dict[str, float]:
    sessions = make_session_factory(make_engine(f"sqlite:///{db}"))
    out = {}
    for name, filters in QUERIES.items():
        samples = []
        for _ in range(rounds):
            for flt in filters:
                with sessions() as session:
                    began = time.perf_counter()
                    search_items(session, flt)
                    samples.append((time.perf_counter() - began) * 1000)
        out[name] = p95(samples)
    return out


def time_baseline(db: Path, rounds: int) -> float:
    """Raw sqlite3: the FTS5 match joined to items, newest 50 ids — no ORM, no JSON."""
    conn = sqlite3.connect(db)
    samples = []
    for _ in range(rounds):
        for flt in QUERIES["word"]:
            match = fts5_match(parse_query(flt.query or ""))
            began = time.perf_counter()
            conn.execute("SELECT id FROM items WHERE id IN (SELECT rowid FROM items_fts WHERE items_fts MATCH ?) "
                         "ORDER BY sort_at DESC LIMIT 50", (match,)).fetchall()
            samples.append((time.perf_counter() - began) * 1000)
    return p95(samples)


def export_peak_mb(db: Path, limit_items: int | None) -> tuple[float, float]:
    code = ("import sys, resource, time; sys.path.insert(0, %r)\n"
            "from storage.db import make_engine, make_session_factory\n"
            "from storage.transfer import export_jsonl, iter_items\n"
            "import io, os\n"
            "s = make_session_factory(make_engine('sqlite:///%s'))()\n"
            "out = open(os.devnull, 'w'); t = time.perf_counter()\n"
            "n = export_jsonl(s, out, since_id=%d)\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, time.perf_counter() - t, n)\n")
    since = 0 if limit_items is None else max(0, limit_items)
    result = subprocess.run([sys.executable, "-c", code % (str(ROOT), db, since)], capture_output=True,
                            text=True, check=True)
    peak, seconds, _ = result.stdout.split()
    return float(peak), float(seconds)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--db", type=Path, help="keep the database here (reused when it exists)")
    args = parser.parse_args()
    count = 20_000 if args.quick else 200_000
    rounds = 3 if args.quick else 5
    with tempfile.TemporaryDirectory() as tmp:
        db = args.db or Path(tmp) / "bench.db"
        build_s = build(db, count) if not db.exists() else float("nan")
        read = time_read_path(db, rounds)
        baseline = time_baseline(db, rounds)
        full_peak, full_s = export_peak_mb(db, None)
        tenth_peak, _ = export_peak_mb(db, count - count // 10)
    print(f"\n{count:,} items imported in {build_s:.0f} s ({count / build_s:,.0f} items/s)\n")
    print("| query | p95 ms (read path, ITEM JSON) | ratio to raw FTS5 baseline |")
    print("|---|---|---|")
    for name, value in read.items():
        print(f"| {name} | {value:.1f} | {value / baseline:.1f}× |")
    print(f"| baseline: raw sqlite3 FTS5 word query, ids only | {baseline:.1f} | 1.0× |")
    print(f"\nexport of {count:,} items: {full_s:.1f} s, peak RSS {full_peak:.0f} MB; "
          f"export of the last {count // 10:,}: peak RSS {tenth_peak:.0f} MB "
          f"(ratio {full_peak / tenth_peak:.2f}: constant memory)")


if __name__ == "__main__":
    main()
