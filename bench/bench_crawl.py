"""Crawl benchmark: 300 local feeds × 40 items through `crawl_round` (python -m crawler) on a
fresh SQLite database, against a minimal baseline in the same run (16 threads of urllib +
feedparser.parse + one sqlite3 transaction of the same rows); then an unchanged second round.

Targets (issue 3): first round ≤ 2× the baseline; second round ≤ 0.25× the first.
Usage: .venv/bin/python bench/bench_crawl.py [--feeds N] [--items N] [--profile] [--processes N]
       [--texts mixed|distinct|copies]
(--profile: cProfile of the first round's crawl process, printed after it; slows it down)
"""

from __future__ import annotations

import argparse
import hashlib
import io
import random
import resource
import sqlite3
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import feedparser  # noqa: E402

WORDS = ("министр встреча саммит сотрудничество безопасность Азия региональный форум "
         "meeting summit cooperation security regional forum dialogue confidence").split()


def make_feed(n: int, items: int, base: str, texts: str = "mixed") -> bytes:
    """``texts``: "distinct" draws each item's words at random (every item a story of its own);
    "mixed" (the default) does the same except for one item in ten, a wire story that ten
    feeds reprint with their own dateline (stories of ~10 copies across sources); "copies"
    makes every item a rotation of one word cycle (all items copies of ~2 stories: the story
    lookup's worst case)."""
    parts = []
    for i in range(items):
        if texts == "copies":
            words = " ".join(WORDS[(n * 7 + i * 3 + k) % len(WORDS)] for k in range(60))
        elif texts == "mixed" and i % 10 == 5:
            rng = random.Random(f"wire {n // 10} {i}")
            words = f"CITY{n} " + " ".join(rng.choice(WORDS) for _ in range(60))
        else:
            rng = random.Random(n * 100_003 + i)
            words = " ".join(rng.choice(WORDS) for _ in range(60))
        mention = " The CICA ministers met." if (n + i) % 10 == 0 else ""
        date = formatdate(1_735_000_000 + n * 1000 + i * 60, usegmt=True)
        parts.append(
            f"<item><title>Feed {n} item {i}: {WORDS[i % len(WORDS)]}</title>"
            f"<link>{base}/a/{n}/{i}</link><guid>{base}/a/{n}/{i}</guid><pubDate>{date}</pubDate>"
            f"<description><![CDATA[<p>{words}{mention}</p><p>{words}</p>]]></description></item>")
    return (f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>'
            f"<title>Feed {n}</title><link>{base}/</link>{''.join(parts)}</channel></rss>").encode()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    feeds: dict[str, tuple[bytes, str]] = {}

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        found = self.feeds.get(self.path)
        if found is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body, etag = found
        if self.headers.get("If-None-Match") == etag:
            self.send_response(304)
            self.send_header("ETag", etag)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/rss+xml; charset=utf-8")
        self.send_header("ETag", etag)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def serve(feeds: int, items: int, texts: str = "mixed") -> tuple[ThreadingHTTPServer, list[str]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    base = f"http://127.0.0.1:{server.server_address[1]}"
    for n in range(feeds):
        body = make_feed(n, items, base, texts)
        Handler.feeds[f"/feeds/{n}.xml"] = (body, '"' + hashlib.sha256(body).hexdigest()[:16] + '"')
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server, [f"{base}/feeds/{n}.xml" for n in range(feeds)]


def baseline(urls: list[str], db_path: Path) -> tuple[float, int]:
    """16 threads fetch and parse; one sqlite3 transaction stores every entry."""
    def fetch_parse(url: str) -> list[tuple[str, str, str, str]]:
        with urllib.request.urlopen(url, timeout=30) as response:
            body = response.read()
            ctype = response.headers.get("Content-Type", "")
        parsed = feedparser.parse(io.BytesIO(body), response_headers={
            "content-type": ctype, "content-location": url})
        return [(e.get("link", ""), e.get("title", ""), e.get("summary", ""), e.get("published", ""))
                for e in parsed.entries]

    started = time.perf_counter()
    with ThreadPoolExecutor(16) as pool:
        rows = [row for rows in pool.map(fetch_parse, urls) for row in rows]
    db = sqlite3.connect(db_path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE items (url TEXT PRIMARY KEY, title TEXT, text TEXT, published TEXT)")
    with db:
        db.executemany("INSERT OR IGNORE INTO items VALUES (?, ?, ?, ?)", rows)
    db.close()
    return time.perf_counter() - started, len(rows)


PROFILE_HOOK = """
import atexit, cProfile, os
if os.environ.get("NEWSMON_BENCH_PROFILE"):
    _profiler = cProfile.Profile()
    _profiler.enable()

    def _dump() -> None:
        _profiler.disable()
        _profiler.dump_stats(os.path.join(os.environ["NEWSMON_BENCH_PROFILE"], f"crawl-{os.getpid()}.prof"))

    atexit.register(_dump)
    _exit = os._exit

    def _dump_and_exit(status: int) -> None:  # the crawl process ends with os._exit (no atexit)
        _dump()
        _exit(status)

    os._exit = _dump_and_exit
"""


def enable_profiling(directory: Path) -> None:
    """Profile every crawl subprocess (cProfile via a sitecustomize on PYTHONPATH); the stats
    land in ``directory`` as crawl-<pid>.prof."""
    import os

    (directory / "sitecustomize.py").write_text(PROFILE_HOOK)
    os.environ["NEWSMON_BENCH_PROFILE"] = str(directory)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(directory), os.environ.get("PYTHONPATH")]))


def disable_profiling() -> None:
    import os

    os.environ.pop("NEWSMON_BENCH_PROFILE", None)


def print_profile(directory: Path, keep: Path | None, top: int = 45) -> None:
    import pstats
    import shutil

    for path in sorted(directory.glob("crawl-*.prof")):
        if keep is not None:
            shutil.copyfile(path, keep)
        stats = pstats.Stats(str(path), stream=sys.stdout)
        stats.sort_stats("cumulative").print_stats(top)
        stats.sort_stats("tottime").print_stats(25)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def crawl(urls: list[str], db_url: str, profile: bool, keep: Path | None = None,
          processes: int = 0) -> tuple[float, float, int, int]:
    from scheduler.config import build_config
    from scheduler.runner import crawl_round
    from storage.db import make_engine, upgrade

    engine = make_engine(db_url)
    upgrade(engine)
    engine.dispose()
    config = build_config({
        "storage": {"url": db_url},
        "crawl": {"fetch_articles": False, "concurrency_per_host": 16, "timeout": "30s",
                  "processes": processes},
        "sources": [{"id": f"f{n}", "url": url, "allow_private": True} for n, url in enumerate(urls)],
        "alerts": [{"kind": "webhook", "id": "hook", "url": "http://127.0.0.1:9/hook"}],
    }, {})
    profile_dir = Path(db_url.removeprefix("sqlite:///")).parent / "profile"
    if profile:
        profile_dir.mkdir()
        enable_profiling(profile_dir)
    started = time.perf_counter()
    cpu_before = _children_cpu()
    self_before = time.process_time()
    first = crawl_round(config, None, timeout=600)
    first_s = time.perf_counter() - started
    print(f"round 1 CPU of the crawl processes (user + sys): {_children_cpu() - cpu_before:.2f} s; "
          f"this process (server, runner): {time.process_time() - self_before:.2f} s")
    if profile:
        disable_profiling()
        print_profile(profile_dir, keep)
    started = time.perf_counter()
    second = crawl_round(config, None, timeout=600)
    second_s = time.perf_counter() - started
    failed = [e for e in first.sources if e.outcome == "error"]
    if failed:
        print("errors:", failed[:3])
    return first_s, second_s, sum(e.new for e in first.sources), sum(e.new for e in second.sources)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--feeds", type=int, default=300)
    parser.add_argument("--items", type=int, default=40)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--processes", type=int, default=0,
                        help="crawl.processes (0, the default: one crawl process per CPU core)")
    parser.add_argument("--profile-out", type=Path, help="also keep the crawl's cProfile file here (for pstats)")
    parser.add_argument("--texts", choices=("mixed", "distinct", "copies"), default="mixed",
                        help="mixed (default): random words, one item in ten a wire story reprinted by "
                             "ten feeds; distinct: random words only; copies: rotations of one word "
                             "cycle, so nearly every item is a copy of every other (story lookup worst case)")
    args = parser.parse_args()
    server, urls = serve(args.feeds, args.items, args.texts)
    with tempfile.TemporaryDirectory() as tmp:
        base_s, rows = baseline(urls, Path(tmp) / "baseline.db")
        profile = args.profile or args.profile_out is not None
        first_s, second_s, new, new_again = crawl(urls, f"sqlite:///{tmp}/newsmon.db", profile, args.profile_out,
                                                  args.processes)
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    server.shutdown()
    print(f"feeds {args.feeds} × items {args.items} ({args.texts} texts): baseline rows {rows}, crawl new {new}, "
          f"second round new {new_again}")
    print(f"baseline (16 threads urllib + feedparser + one sqlite3 transaction): {base_s:.2f} s")
    print(f"crawl round 1 (fresh database): {first_s:.2f} s = {first_s / base_s:.2f}× baseline "
          f"(target ≤ 2×)")
    print(f"crawl round 2 (unchanged): {second_s:.2f} s = {second_s / first_s:.2f}× round 1 "
          f"(target ≤ 0.25×)")
    print(f"peak RSS of a crawl process: {peak_mib:.0f} MiB")
    ok = first_s <= 2 * base_s and second_s <= 0.25 * first_s
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
