"""Crawl benchmark: 300 local feeds × 40 items through `crawl_round` (python -m crawler) on a
fresh SQLite database, against a minimal baseline in the same run (16 threads of urllib +
feedparser.parse + one sqlite3 transaction of the same rows); then an unchanged second round.

Targets (issue 3): first round ≤ 2× the baseline; second round ≤ 0.25× the first.
Usage: .venv/bin/python bench/bench_crawl.py [--feeds N] [--items N] [--profile] [--processes N]
       [--texts mixed|distinct|copies] [--morphology warm|cold|off]
(--profile: cProfile of the first round's crawl process, printed after it; slows it down)
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import random
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

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
        if self.path == "/__cpu":
            body = str(time.process_time()).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
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


def serve(feeds: int, items: int, texts: str = "mixed") -> None:
    """The fixture server's own process (``--serve``): prints its port, then serves until killed.
    ``/__cpu`` answers the CPU seconds (user + sys) it has used so far."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    base = f"http://127.0.0.1:{server.server_address[1]}"
    for n in range(feeds):
        body = make_feed(n, items, base, texts)
        Handler.feeds[f"/feeds/{n}.xml"] = (body, '"' + hashlib.sha256(body).hexdigest()[:16] + '"')
    print(server.server_address[1], flush=True)
    server.serve_forever(poll_interval=0.05)


class Server:
    """The fixture server in a process of its own, so that neither the baseline nor the crawl
    shares a GIL with it."""

    def __init__(self, feeds: int, items: int, texts: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--serve", "--feeds", str(feeds), "--items", str(items),
             "--texts", texts], stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        self.base = f"http://127.0.0.1:{int(self.process.stdout.readline())}"
        self.urls = [f"{self.base}/feeds/{n}.xml" for n in range(feeds)]

    def cpu(self) -> float:
        with urllib.request.urlopen(f"{self.base}/__cpu", timeout=10) as response:
            return float(response.read())

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def baseline(urls: list[str], db_path: Path) -> dict[str, float]:
    """The baseline script's body (``--baseline``, its own process): 16 threads of urllib +
    ``feedparser.parse``, a substring match, one sqlite3 transaction storing every entry."""
    def fetch_parse(url: str) -> list[tuple[str, str, str, str, int]]:
        with urllib.request.urlopen(url, timeout=30) as response:
            body = response.read()
            ctype = response.headers.get("Content-Type", "")
        parsed = feedparser.parse(io.BytesIO(body), response_headers={
            "content-type": ctype, "content-location": url})
        rows = []
        for e in parsed.entries:
            title, summary = e.get("title", ""), e.get("summary", "")
            rows.append((e.get("link", ""), title, summary, e.get("published", ""),
                         int("CICA" in title or "CICA" in summary)))
        return rows

    with ThreadPoolExecutor(16) as pool:
        rows = [row for rows in pool.map(fetch_parse, urls) for row in rows]
    db = sqlite3.connect(db_path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE items (url TEXT PRIMARY KEY, title TEXT, text TEXT, published TEXT, "
               "cica INTEGER)")
    with db:
        db.executemany("INSERT OR IGNORE INTO items VALUES (?, ?, ?, ?, ?)", rows)
    db.close()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"rows": len(rows), "matched": sum(row[4] for row in rows),
            "peak_mib": usage.ru_maxrss / 1024}


def run_baseline(urls: list[str], db_path: Path) -> dict[str, float]:
    """The baseline as a plain script in its own process, timed from its start to its exit
    (interpreter and imports included, as the crawl's own processes are)."""
    url_file = db_path.with_suffix(".urls")
    url_file.write_text("\n".join(urls))
    cpu_before = _children_cpu()
    started = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, "--baseline", str(url_file), str(db_path)],
                          check=True, capture_output=True, text=True)
    result = json.loads(done.stdout)
    result["wall"] = time.perf_counter() - started
    result["cpu"] = _children_cpu() - cpu_before
    return result


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


@dataclass
class Round:
    wall: float
    cpu: float           # the crawl processes and the runner (this process), user + sys
    server_cpu: float    # the fixture server's process during the round
    new: int


def crawl(urls: list[str], server: Server, db_url: str, profile: bool, keep: Path | None = None,
          processes: int = 0, profile_round: int = 1, morphology: str = "warm") -> tuple[Round, Round]:
    from scheduler.config import build_config
    from scheduler.runner import crawl_round
    from storage.db import make_engine, upgrade

    engine = make_engine(db_url)
    upgrade(engine)
    engine.dispose()
    cache_dir = Path(db_url.removeprefix("sqlite:///")).parent / "cache"
    config = build_config({
        "storage": {"url": db_url, "cache_dir": "" if morphology == "off" else str(cache_dir)},
        "crawl": {"fetch_articles": False, "concurrency_per_host": 16, "timeout": "30s",
                  "processes": processes},
        "sources": [{"id": f"f{n}", "url": url, "allow_private": True} for n, url in enumerate(urls)],
        "alerts": [{"kind": "webhook", "id": "hook", "url": "http://127.0.0.1:9/hook"}],
    }, {})
    if morphology == "warm":
        warm_morphology(config.organisations, cache_dir)
    profile_dir = Path(db_url.removeprefix("sqlite:///")).parent / "profile"
    rounds = []
    for number in (1, 2):
        if profile and number == profile_round:
            profile_dir.mkdir()
            enable_profiling(profile_dir)
        server_before, cpu_before, self_before = server.cpu(), _children_cpu(), time.process_time()
        started = time.perf_counter()
        report = crawl_round(config, None, timeout=600)
        wall = time.perf_counter() - started
        cpu = _children_cpu() - cpu_before + time.process_time() - self_before
        rounds.append(Round(wall, cpu, server.cpu() - server_before, sum(e.new for e in report.sources)))
        failed = [e for e in report.sources if e.outcome == "error"]
        if failed:
            print(f"round {number} errors:", failed[:3])
        if profile and number == profile_round:
            disable_profiling()
            print_profile(profile_dir, keep)
    return rounds[0], rounds[1]


def warm_morphology(organisations: Any, cache_dir: Path) -> None:
    """Fill the crawl's morphology cache as an earlier round would have (in this process, so
    no crawl process of the measured rounds loads pymorphy3)."""
    from crawler.matching import OrgMatcher, release_morphology
    from crawler.morphology import MorphologyCache

    cache = MorphologyCache(cache_dir)
    OrgMatcher(list(organisations), analyse=cache.analyse)
    cache.save()
    release_morphology()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--feeds", type=int, default=300)
    parser.add_argument("--items", type=int, default=40)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--processes", type=int, default=0,
                        help="crawl.processes (0, the default: one crawl process per CPU core)")
    parser.add_argument("--profile-round", type=int, choices=(1, 2), default=1,
                        help="the round to profile (1, the default: the first; 2: the unchanged re-poll)")
    parser.add_argument("--profile-out", type=Path, help="also keep the crawl's cProfile file here (for pstats)")
    parser.add_argument("--texts", choices=("mixed", "distinct", "copies"), default="mixed",
                        help="mixed (default): random words, one item in ten a wire story reprinted by "
                             "ten feeds; distinct: random words only; copies: rotations of one word "
                             "cycle, so nearly every item is a copy of every other (story lookup worst case)")
    parser.add_argument("--morphology", choices=("warm", "cold", "off"), default="warm",
                        help="the crawl's morphology cache (crawler.morphology) at round 1: warm "
                             "(default: written before, as by any earlier round), cold (empty: the "
                             "first round after an install), off (no cache directory)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--baseline", nargs=2, metavar=("URL_FILE", "DB"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.feeds, args.items, args.texts)
        return 0
    if args.baseline:
        print(json.dumps(baseline(Path(args.baseline[0]).read_text().split(), Path(args.baseline[1]))))
        return 0

    server = Server(args.feeds, args.items, args.texts)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            server_before = server.cpu()
            base = run_baseline(server.urls, Path(tmp) / "baseline.db")
            base_server = server.cpu() - server_before
            profile = args.profile or args.profile_out is not None
            first, second = crawl(server.urls, server, f"sqlite:///{tmp}/newsmon.db", profile,
                                  args.profile_out, args.processes, args.profile_round, args.morphology)
        peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    finally:
        server.close()
    print(f"feeds {args.feeds} × items {args.items} ({args.texts} texts): baseline rows {base['rows']:.0f} "
          f"({base['matched']:.0f} matching), crawl new {first.new}, second round new {second.new}")
    print("every process on its own: the fixture server, the baseline script, newsmon's crawl processes")
    print(f"baseline (own process: 16 threads urllib + feedparser + substring match + one sqlite3 "
          f"transaction): {base['wall']:.2f} s wall, {base['cpu']:.2f} s CPU, peak RSS "
          f"{base['peak_mib']:.0f} MiB; server CPU {base_server:.2f} s")
    print(f"crawl round 1 (fresh database): {first.wall:.2f} s wall = {first.wall / base['wall']:.2f}× "
          f"baseline (target ≤ 2×); {first.cpu:.2f} s CPU = {first.cpu / base['cpu']:.2f}× baseline CPU; "
          f"server CPU {first.server_cpu:.2f} s")
    print(f"crawl round 2 (unchanged): {second.wall:.2f} s wall = {second.wall / first.wall:.2f}× round 1 "
          f"(target ≤ 0.15×); {second.cpu:.2f} s CPU")
    print(f"peak RSS of a crawl process: {peak_mib:.0f} MiB (target ≤ 150); morphology cache "
          f"{args.morphology} at round 1")
    ok = first.wall <= 2 * base["wall"] and second.wall <= 0.15 * first.wall
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
