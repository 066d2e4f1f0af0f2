"""Revisit benchmark (issue 17): the crawl processes' CPU per 1,000 article revisits when
nothing changed, against the first poll of the same pages.

A local server serves FEEDS feeds of ITEMS items each; every item's article page is an
MFA-like HTML page (~7 KB: navigation, the article, a view counter, a sidebar and a footer
clock that change on every request). Rounds, each `crawl_round` (python -m crawler) on one
SQLite database:

  first    the feeds and every article page, stored (the first poll of the pages)
  idle     the feeds answer 304 and no revisit is due: the fixed cost of a round
  200      every item's first revisit, the server ignoring If-None-Match: its page is fetched
           again and compared — unchanged (only its chrome differs)
  304      every item's second revisit: a conditional request answered 304 (the ETag kept
           from the first fetch)

Each revisit round is made due by moving the items' first-seen times back (no waiting).
Figures are CPU seconds (user + sys) of the crawl processes, less the idle round's, per 1,000
pages. Targets: a 304 revisit ≤ 10 % of a first article fetch, an unchanged 200 ≤ 50 %.
Usage: .venv/bin/python bench/bench_revisits.py [--feeds N] [--items N] [--profile ROUND]
(--profile first|200|304: cProfile of that round's crawl process, printed after the figures;
it slows that round down, so its figure is not comparable)
"""

from __future__ import annotations

import argparse
import hashlib
import random
import resource
import sys
import tempfile
import threading
from datetime import UTC, datetime, timedelta
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import Engine, func, select  # noqa: E402

from scheduler.config import AppConfig, build_config  # noqa: E402
from scheduler.runner import crawl_round  # noqa: E402
from storage.db import make_engine, make_session_factory, upgrade  # noqa: E402
from storage.models import Item, ItemVersion, Revisit  # noqa: E402
from storage.repository import SourceRow, sync_sources  # noqa: E402

WORDS = ("министр встреча саммит сотрудничество безопасность Азия региональный форум стороны "
         "обсудили вопросы укрепления мер доверия подготовка заседание министров").split()


def article(n: int, i: int, rng: random.Random) -> bytes:
    text = random.Random(n * 100_003 + i)
    paragraphs = "".join(
        "<p>" + " ".join(text.choice(WORDS) for _ in range(40)).capitalize() + ".</p>" for _ in range(6))
    mention = "<p>Министры обсудили подготовку к саммиту СВМДА.</p>" if (n + i) % 10 == 0 else ""
    sidebar = "".join(f'<li><a href="/news/{rng.randint(1, 9999)}">{" ".join(rng.sample(WORDS, 4))}</a></li>'
                      for _ in range(5))
    return f"""<!DOCTYPE html><html lang="ru"><head><meta charset="utf-8">
<title>Новость {n}-{i} — Министерство иностранных дел</title>
<meta name="csrf-token" content="{rng.getrandbits(64):x}"></head><body>
<header><nav><a href="/">Главная</a> <a href="/news/">Новости</a> <a href="/press/">Пресс-служба</a></nav></header>
<main><article><h1>Новость {n}-{i}</h1><div class="date">04.12.2026 09:30</div>
<div class="text">{paragraphs}{mention}</div>
<div class="views">Просмотров: {rng.randint(10, 99_999)}</div></article>
<aside><h3>Самое читаемое</h3><ul>{sidebar}</ul></aside></main>
<footer><p>© Министерство иностранных дел, 2026</p>
<p>Страница сгенерирована в {rng.randint(0, 23):02}:{rng.randint(0, 59):02}:{rng.randint(0, 59):02}</p>
</footer></body></html>""".encode()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    feeds: dict[str, tuple[bytes, str]] = {}
    base = ""
    conditional = True  # False: article pages ignore If-None-Match (a server that never says 304)

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, status: int, body: bytes, ctype: str, etag: str | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        if etag:
            self.send_header("ETag", etag)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if status != 304:
            self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802
        if self.path in self.feeds:
            body, etag = self.feeds[self.path]
            if self.headers.get("If-None-Match") == etag:
                self._send(304, b"", "application/rss+xml", etag)
            else:
                self._send(200, body, "application/rss+xml; charset=utf-8", etag)
            return
        parts = self.path.strip("/").split("/")
        if len(parts) == 3 and parts[0] == "a":
            etag = f'"a-{parts[1]}-{parts[2]}"'  # the article's content never changes
            if self.conditional and self.headers.get("If-None-Match") == etag:
                self._send(304, b"", "text/html", etag)
            else:
                self._send(200, article(int(parts[1]), int(parts[2]), random.Random()),
                           "text/html; charset=utf-8", etag)
            return
        self._send(404, b"", "text/plain")


def serve(feeds: int, items: int) -> list[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    base = f"http://127.0.0.1:{server.server_address[1]}"
    for n in range(feeds):
        entries = "".join(
            f"<item><title>Новость {n}-{i}</title><link>{base}/a/{n}/{i}</link><guid>{n}-{i}</guid>"
            f"<pubDate>{formatdate(1_764_000_000 + i * 60, usegmt=True)}</pubDate>"
            f"<description>Краткое содержание {n}-{i}</description></item>" for i in range(items))
        body = (f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>F{n}</title>'
                f"<link>{base}/</link>{entries}</channel></rss>").encode()
        Handler.feeds[f"/feeds/{n}.xml"] = (body, '"' + hashlib.sha256(body).hexdigest()[:16] + '"')
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return [f"{base}/feeds/{n}.xml" for n in range(feeds)]


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def make_due(url: str) -> int:
    """Move first-seen and due times back so that every scheduled revisit is due now."""
    engine = make_engine(url)
    with make_session_factory(engine).begin() as session:
        due = session.scalar(select(func.max(Revisit.due_at))) or datetime.now(UTC)
        shift = max(timedelta(0), due - datetime.now(UTC)) + timedelta(seconds=1)
        for item in session.scalars(select(Item)):
            item.first_seen_at -= shift
        for revisit in session.scalars(select(Revisit).where(Revisit.due_at.is_not(None))):
            revisit.due_at -= shift
        count = session.scalar(select(func.count()).select_from(Revisit).where(Revisit.due_at.is_not(None)))
    engine.dispose()
    return int(count or 0)


def bench_database(url: str, urls: list[str], round_timeout: str) -> tuple[Engine, AppConfig]:
    """A migrated database at ``url`` with one source a feed (revisits 1h, 6h, 1d), and its config."""
    engine = make_engine(url)
    upgrade(engine)
    config = build_config({
        "storage": {"url": url},
        "sources": [{"id": f"s{n}", "url": u, "allow_private": True, "language": "ru"}
                    for n, u in enumerate(urls)],
        "crawl": {"timeout": "30s", "revisit": ["1h", "6h", "1d"], "jitter": 0},
        "daemon": {"round_timeout": round_timeout}}, {})
    with make_session_factory(engine).begin() as session:
        sync_sources(session, [SourceRow(s.id, s.kind, s.url) for s in config.sources], datetime.now(UTC))
    return engine, config


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--feeds", type=int, default=20)
    parser.add_argument("--items", type=int, default=25)
    parser.add_argument("--profile", choices=["first", "200", "304"])
    args = parser.parse_args()
    urls = serve(args.feeds, args.items)
    pages = args.feeds * args.items
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        engine, config = bench_database(url, urls, "10m")

        profile_dir = Path(tmp) / "profile"

        def round_cpu(label: str) -> float:
            if label == args.profile:
                from bench_crawl import enable_profiling

                profile_dir.mkdir()
                enable_profiling(profile_dir)
            before = children_cpu()
            report = crawl_round(config, None, timeout=600)
            cpu = children_cpu() - before
            if label == args.profile:
                from bench_crawl import disable_profiling

                disable_profiling()
            bad = [e for e in report.sources if e.outcome == "error"]
            print(f"{label:>6}: {cpu:6.2f} s CPU, {report.seconds:5.1f} s wall"
                  + (f", {len(bad)} errors: {bad[0].message}" if bad else ""))
            return cpu

        first = round_cpu("first")
        idle = round_cpu("idle")
        make_due(url)
        Handler.conditional = False  # the validators kept from the first fetch are not honoured
        unchanged = round_cpu("200")
        make_due(url)
        Handler.conditional = True
        not_modified = round_cpu("304")
        with make_session_factory(engine)() as session:
            versions = session.scalar(select(func.count()).select_from(ItemVersion))
            done = session.scalar(select(func.sum(Revisit.done)))
        engine.dispose()
        if args.profile:
            from bench_crawl import print_profile

            print_profile(profile_dir, Path(tempfile.gettempdir()) / f"bench-revisits-{args.profile}.prof")
    assert versions == pages, f"{versions} versions for {pages} pages: a revisit stored a version"
    assert done == 2 * pages, f"{done} revisits done, expected {2 * pages}"
    per = 1000 / pages
    first_k, unchanged_k, nm_k = ((c - idle) * per for c in (first, unchanged, not_modified))
    print(f"{pages} pages; CPU per 1,000 pages less the idle round ({idle:.2f} s):")
    print(f"  first poll (fetch, extract, store): {first_k:6.2f} s")
    print(f"  unchanged 200 revisit:              {unchanged_k:6.2f} s = {unchanged_k / first_k:.0%} (target ≤ 50 %)")
    print(f"  304 revisit:                        {nm_k:6.2f} s = {nm_k / first_k:.0%} (target ≤ 10 %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
