"""HTTP API and page speed over generated items: /api/items p95 per query kind against search_items directly."""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

from bench_search import build  # noqa: E402
from searchdata import ORGS  # noqa: E402

from storage.db import make_engine, make_session_factory  # noqa: E402
from storage.queries import SearchFilter, search_items, strip_cursor  # noqa: E402

PHRASES = ("вопросам переговоров", "industrial port", "министр встреча", "security cooperation",
           "промышленный порт")

QUERIES: dict[str, list[tuple[dict[str, str], SearchFilter]]] = {
    "word": [({"q": w}, SearchFilter(query=w)) for w in ("министр", "саммит", "cooperation", "посол", "форум")],
    "phrase": [({"q": f'"{p}"'}, SearchFilter(query=f'"{p}"')) for p in PHRASES],
    "organisation": [({"org": o}, SearchFilter(organisations=[o])) for o in ORGS],
    "date range": [({"since": f"2024-03-{d:02d}", "until": f"2024-03-{d + 5:02d}"},
                    SearchFilter(since=datetime(2024, 3, d, tzinfo=UTC),
                                 until=datetime(2024, 3, d + 5, 23, 59, 59, 999999, tzinfo=UTC)))
                   for d in range(1, 20, 4)],
    "word + org + dates": [({"q": "министр", "org": "CICA", "since": "2024-02-01"},
                            SearchFilter(query="министр", organisations=["CICA"],
                                         since=datetime(2024, 2, 1, tzinfo=UTC)))],
}
PAGES = {"page / (newest matches)": "/", "page /?q=министр&org=CICA": "/?q=министр&org=CICA"}


def p95(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=20, method="inclusive")[18] if len(samples) > 1 else samples[0]


def start_server(db: Path) -> tuple[subprocess.Popen[bytes], str]:
    """`newsmon serve` in its own process (an in-process thread would share the GIL with the client)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = db.with_suffix(".toml")
    config.write_text(f'[storage]\nurl = "sqlite:///{db}"\n[server]\nport = {port}\n', "utf-8")
    proc = subprocess.Popen([sys.executable, "-m", "scheduler", "--config", str(config), "--log-level", "WARNING",
                             "serve"], cwd=HERE.parent)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + "/healthz").status_code == 200:
                return proc, base
        except httpx.TransportError:
            time.sleep(0.1)
    proc.terminate()
    raise RuntimeError("newsmon serve did not start")


def time_http(client: httpx.Client, base: str, path: str, params: dict[str, str] | None = None) -> float:
    began = time.perf_counter()
    response = client.get(base + path, params=params)
    elapsed = (time.perf_counter() - began) * 1000
    assert response.status_code == 200, response.text[:200]
    return elapsed


def time_direct(db: Path, rounds: int) -> dict[str, float]:
    sessions = make_session_factory(make_engine(f"sqlite:///{db}"))
    out = {}
    for name, cases in QUERIES.items():
        samples = []
        for _ in range(rounds):
            for _params, flt in cases:
                with sessions() as session:
                    began = time.perf_counter()
                    strip_cursor(search_items(session, flt))
                    samples.append((time.perf_counter() - began) * 1000)
        out[name] = p95(samples)
    return out


def time_api(base: str, rounds: int) -> tuple[dict[str, float], dict[str, float]]:
    api, pages = {}, {}
    with httpx.Client(timeout=30) as client:
        for name, cases in QUERIES.items():
            for params, _flt in cases:  # warm-up
                time_http(client, base, "/api/items", params)
            api[name] = p95([time_http(client, base, "/api/items", params)
                             for _ in range(rounds) for params, _flt in cases])
        for name, path in PAGES.items():
            first = time_http(client, base, path)
            samples = [time_http(client, base, path) for _ in range(rounds * 2)]
            pages[name] = (first, p95(samples))
    return api, pages  # type: ignore[return-value]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="20,000 items and fewer rounds")
    parser.add_argument("--items", type=int, default=None)
    parser.add_argument("--db", type=Path, help="keep the database here (reused when it exists)")
    args = parser.parse_args()
    count = args.items or (20_000 if args.quick else 200_000)
    rounds = 3 if args.quick else 10
    with tempfile.TemporaryDirectory() as tmp:
        db = args.db or Path(tmp) / "bench.db"
        if not db.exists():
            print(f"\n{count:,} items imported in {build(db, count):.0f} s\n")
        proc, base = start_server(db)
        try:
            api, pages = time_api(base, rounds)
        finally:
            proc.terminate()
            proc.wait(10)
        time_direct(db, 1)  # warm-up, so the ratio compares warm caches
        direct = time_direct(db, rounds)
    print("| query | /api/items p95 (HTTP, limit 50) | search_items p95 (direct) | ratio |")
    print("|---|---|---|---|")
    for name in QUERIES:
        print(f"| {name} | {api[name]:.1f} ms | {direct[name]:.1f} ms | {api[name] / max(direct[name], 0.01):.2f}× |")
    print("\n| page | first request | p95 |")
    print("|---|---|---|")
    for name, (first, p) in pages.items():
        print(f"| {name} | {first:.1f} ms | {p:.1f} ms |")


if __name__ == "__main__":
    main()
