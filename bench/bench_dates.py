"""Date parsing speed of the fast paths (RFC 822, ISO 8601, dotted): µs per date.

Usage: .venv/bin/python bench/bench_dates.py [--quick]
(Was a wall-clock assertion in tests/test_dates.py: 180 dates in under 0.2 s.)"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from crawler.dates import parse_date  # noqa: E402


def main() -> int:
    rounds = 20 if "--quick" in sys.argv else 200
    started = time.perf_counter()
    for _ in range(rounds):
        for minute in range(60):
            parse_date(f"Tue, 04 Feb 2025 14:{minute:02d}:00 +0300")
            parse_date(f"2025-02-04T14:{minute:02d}:00Z")
            parse_date(f"04.02.2025 14:{minute:02d}")
    per_date = (time.perf_counter() - started) / (rounds * 180) * 1e6
    print(f"| parse_date, fast paths | {per_date:.1f} µs per date | target ≤ 1,111 µs (180 in 0.2 s) |")
    return 0 if per_date <= 1111 else 1


if __name__ == "__main__":
    raise SystemExit(main())
