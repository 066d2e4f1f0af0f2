"""Daemon benchmarks: detection latency (publish → webhook delivered) and the memory of a
daemon polling many local feeds, with a real `newsmon run` process, fixture server and receiver.

    .venv/bin/python bench/bench_daemon.py latency [--stories 12] [--interval 3]
    .venv/bin/python bench/bench_daemon.py memory --quick          # 100 feeds, 10 s interval, 3 min
    .venv/bin/python bench/bench_daemon.py memory --feeds 1000 --interval 60 --minutes 30
    .venv/bin/python bench/bench_daemon.py memory --feeds 300 --interval 20 --minutes 12 \
        --diagnose /tmp/snap --diagnose-minutes 1.5 --diagnose-frames 0   # bench/memdiag.py
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from email.utils import formatdate
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.plugins.receivers import start_receiver  # noqa: E402
from tests.plugins.sites import Site, rss  # noqa: E402


def start_site(tmp: Path) -> Site:
    sentinel = tmp / "sentinel.txt"
    sentinel.write_text("x", encoding="utf-8")
    site = Site(sentinel)
    threading.Thread(target=site.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return site


def feed_items(path: str, site: Site, titles: list[str]) -> bytes:
    now = formatdate(time.time(), usegmt=True)
    return rss([{"title": t, "link": site.url(f"{path}/{i}"), "guid": f"{path}/{i}", "pubDate": now,
                 "description": f"{t}. {uuid.uuid4().hex}"} for i, t in enumerate(titles)])


def write_config(tmp: Path, site: Site, paths: list[str], hook: str, interval: float,
                 batch: int) -> Path:
    sources = "".join(f'[[sources]]\nid = "f{i:04d}"\nurl = "{site.url(p)}"\nallow_private = true\n\n'
                      for i, p in enumerate(paths))
    config = tmp / "newsmon.toml"
    config.write_text(f"""
[storage]
url = "sqlite:///{tmp / 'newsmon.db'}"
[crawl]
interval = "{interval}s"
obey_robots = false
fetch_articles = false
[daemon]
tick = "1s"
dispatch_interval = "1s"
batch_size = {batch}
[server]
port = 0  # the daemon serves the web page too, on any free port
{sources}
[[organisations]]
id = "CICA"
aliases = ["CICA"]
[[alerts]]
kind = "webhook"
id = "hook"
url = "{hook}"
allow_private = true
""", encoding="utf-8")
    return config


def start_daemon(config: Path, tmp: Path, diagnose: list[str] | None = None) -> subprocess.Popen[bytes]:
    """``newsmon run`` in a process of its own; with ``diagnose`` (bench/memdiag.py's options),
    through the memory diagnostic."""
    log = open(tmp / "daemon.log", "wb")  # noqa: SIM115 - lives as long as the daemon
    start = [str(ROOT / "bench" / "memdiag.py"), *diagnose, "--"] if diagnose else ["-m", "scheduler"]
    return subprocess.Popen([sys.executable, *start, "--config", str(config), "run"],
                            cwd=tmp, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})


def stop_daemon(process: subprocess.Popen[bytes]) -> tuple[int, float]:
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    rc = process.wait(timeout=30)
    return rc, time.monotonic() - started


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def children_rss_kib(pid: int) -> int:
    total = 0
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            for child in (task / "children").read_text().split():
                total += rss_kib(int(child))
        except OSError:
            continue
    return total


def latency(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-daemon-"))
    site = start_site(tmp)
    receiver, _, _ = start_receiver()
    path = "/bench/latency"
    titles: list[str] = ["Weather report"]
    site.set(path, feed_items(path, site, titles))
    config = write_config(tmp, site, [path], f"{receiver.url}/hook", args.interval, 200)
    daemon = start_daemon(config, tmp)
    rng = random.Random(1)
    samples = []
    try:
        receiver.wait_for(lambda r: len(site.requests(path)) >= 1, 30)
        for n in range(args.stories):
            time.sleep(rng.uniform(0, args.interval))  # publish at a random phase of the cycle
            titles.insert(0, f"CICA statement {n}")
            published = time.monotonic()
            site.set(path, feed_items(path, site, titles))
            got = receiver.wait_ok(n + 1, "/hook", timeout=60)
            samples.append(got[-1].at - published if len(got) > n else float("inf"))
    finally:
        rc, took = stop_daemon(daemon)
    samples.sort()
    p95 = samples[max(0, int(round(0.95 * len(samples))) - 1)]
    print(f"latency: {len(samples)} stories, interval {args.interval:g}s: "
          f"p50 {statistics.median(samples):.2f}s p95 {p95:.2f}s max {samples[-1]:.2f}s; "
          f"SIGTERM → exit {rc} in {took:.1f}s")


def memory(args: argparse.Namespace) -> None:
    feeds, interval, minutes = (100, 10.0, 3.0) if args.quick else (args.feeds, args.interval, args.minutes)
    tmp = Path(tempfile.mkdtemp(prefix="bench-daemon-"))
    site = start_site(tmp)
    receiver, _, _ = start_receiver()
    paths = [f"/bench/m/{i}" for i in range(feeds)]
    for p in paths:
        site.set(p, feed_items(p, site, [f"Item {j} of {p}" for j in range(20)]))
    config = write_config(tmp, site, paths, f"{receiver.url}/hook", interval, args.batch)
    diagnose = None
    if args.diagnose:
        diagnose = ["--prefix", args.diagnose, "--minutes", str(args.diagnose_minutes),
                    "--frames", str(args.diagnose_frames)]
    daemon = start_daemon(config, tmp, diagnose)
    warmup = min(300.0, minutes * 60 / 6)
    start = time.monotonic()
    samples: list[tuple[float, int, int]] = []
    rng = random.Random(2)
    try:
        while (elapsed := time.monotonic() - start) < minutes * 60:
            samples.append((elapsed, rss_kib(daemon.pid), children_rss_kib(daemon.pid)))
            for p in rng.sample(paths, max(1, feeds // 20)):  # some feeds get a new item
                site.set(p, feed_items(p, site, [f"Item {uuid.uuid4().hex[:6]}"] +
                                       [f"Item {j} of {p}" for j in range(19)]))
            time.sleep(5)
    finally:
        rc, took = stop_daemon(daemon)
    polls = len(site.requests())
    after = [s for s in samples if s[0] >= warmup]
    base, end = after[0][1], after[-1][1]
    peak = max(s[1] for s in samples)
    child_peak = max(s[2] for s in samples)
    if args.csv:
        Path(args.csv).write_text("seconds,daemon_kib,children_kib\n" + "".join(
            f"{t:.1f},{d},{c}\n" for t, d, c in samples), encoding="utf-8")
    print(f"memory: {feeds} feeds, interval {interval:g}s, {minutes:g} min, batch {args.batch}: "
          f"{polls} polls ({polls / (minutes * 60):.1f}/s); daemon RSS at {warmup / 60:.1f} min "
          f"{base / 1024:.1f} MiB, at end {end / 1024:.1f} MiB (growth {100 * (end - base) / base:+.1f} %), "
          f"peak {peak / 1024:.1f} MiB; crawl subprocess peak {child_peak / 1024:.1f} MiB; "
          f"SIGTERM → exit {rc} in {took:.1f}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    lat = sub.add_parser("latency")
    lat.add_argument("--stories", type=int, default=12)
    lat.add_argument("--interval", type=float, default=3.0)
    mem = sub.add_parser("memory")
    mem.add_argument("--quick", action="store_true")
    mem.add_argument("--feeds", type=int, default=1000)
    mem.add_argument("--interval", type=float, default=60.0)
    mem.add_argument("--minutes", type=float, default=30.0)
    mem.add_argument("--batch", type=int, default=200)
    mem.add_argument("--csv", metavar="PATH", help="write every RSS sample (every 5 s) to this file")
    mem.add_argument("--diagnose", metavar="PREFIX",
                     help="run the daemon under bench/memdiag.py, snapshots to PREFIX-NNN.txt")
    mem.add_argument("--diagnose-minutes", type=float, default=5.0, help="between snapshots")
    mem.add_argument("--diagnose-frames", type=int, default=1, help="traceback depth; 0: tracemalloc off")
    args = parser.parse_args()
    latency(args) if args.mode == "latency" else memory(args)


if __name__ == "__main__":
    main()
