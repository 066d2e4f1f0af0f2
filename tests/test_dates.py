"""Tests for crawler.dates: every date shape the catalogue's sources print."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from crawler.dates import datetime_from_struct, parse_date


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "tz", "expected"),
    [
        ("Tue, 04 Feb 2025 14:30:00 +0300", "UTC", utc(2025, 2, 4, 11, 30)),
        ("Tue, 04 Feb 2025 14:30:00 GMT", "Europe/Moscow", utc(2025, 2, 4, 14, 30)),
        ("2025-02-04T10:15:00.000Z", "Asia/Almaty", utc(2025, 2, 4, 10, 15)),
        ("2025-09-25T21:10:00+04:00", "UTC", utc(2025, 9, 25, 17, 10)),
        ("2025-12-02 10:33:00", "Asia/Baku", utc(2025, 12, 2, 6, 33)),
        ("04.02.2025 14:30", "Europe/Moscow", utc(2025, 2, 4, 11, 30)),
        ("04.02.2025", "Europe/Moscow", utc(2025, 2, 3, 21, 0)),
        ("21.02.2026 [19:22]", "Asia/Baku", utc(2026, 2, 21, 15, 22)),
        ("16.02.2026 / 19:16", "Asia/Almaty", utc(2026, 2, 16, 14, 16)),
        ("4 февраля 2025", "Europe/Moscow", utc(2025, 2, 3, 21, 0)),
        ("15 Август 2025", "Asia/Almaty", utc(2025, 8, 14, 19, 0)),
        ("13:05, 04 Февраля 2025", "Asia/Almaty", utc(2025, 2, 4, 8, 5)),
        ("02 dekabr, 2025", "Asia/Baku", utc(2025, 12, 1, 20, 0)),
        ("6 Dekabr 2025 15:49 (UTC +04:00)", "UTC", utc(2025, 12, 6, 11, 49)),
        ("25 September 2025 21:10 (UTC +04:00)", "UTC", utc(2025, 9, 25, 17, 10)),
        ("17 April 2024 20:39 (UTC+04:00)", "UTC", utc(2024, 4, 17, 16, 39)),
        ("1738664100", "UTC", utc(2025, 2, 4, 10, 15)),
    ],
)
def test_parse_date(value: str, tz: str, expected: datetime) -> None:
    parsed = parse_date(value, timezone=tz)
    assert parsed == expected
    assert parsed is not None and parsed.tzinfo is UTC


@pytest.mark.parametrize(
    "value",
    [None, "", "   ", "junk", "31 Feb 2025", "Sun, 31 Dec 9999 23:59:59 -9999", "15:49",
     "0000-00-00", "x" * 500, "\x00\xff", "32.13.2025"],
)
def test_junk_is_none(value: str | None) -> None:
    assert parse_date(value) is None


def test_missing_year_is_not_filled_from_today() -> None:
    assert parse_date("4 февраля") is None


def test_date_format_first() -> None:
    parsed = parse_date("04 February 2025", date_format="%d %B %Y", timezone="Asia/Baku")
    assert parsed == utc(2025, 2, 3, 20, 0)


def test_unknown_timezone_is_none() -> None:
    assert parse_date("2025-02-04", timezone="Mars/Olympus") is None


def test_struct_time() -> None:
    assert datetime_from_struct(time.struct_time((2025, 2, 4, 11, 30, 0, 1, 35, 0))) == utc(
        2025, 2, 4, 11, 30)
    assert datetime_from_struct(None) is None


def test_fast_paths_give_the_full_parsers_answers() -> None:
    """RFC 822, ISO 8601 and dotted dates take fast paths (their speed: bench/bench_dates.py)."""
    for minute in (0, 7, 59):
        expected = datetime(2025, 2, 4, 11, minute, tzinfo=UTC)
        assert parse_date(f"Tue, 04 Feb 2025 14:{minute:02d}:00 +0300") == expected
        assert parse_date(f"2025-02-04T11:{minute:02d}:00Z") == expected
