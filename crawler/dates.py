"""Dates as sources print them (RFC 822, ISO 8601, ru/en/az/kk month names) to aware UTC datetimes."""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, tzinfo
from datetime import timezone as fixed_timezone
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DEFAULT_LANGUAGES = ("ru", "en", "az", "kk")
# Dates outside this window are junk (year 9999, 0001, 1900 placeholders) and become None.
MIN_YEAR = 1970
MAX_YEAR = 2100
_MAX_LENGTH = 200

# "21.02.2026 [19:22]", "04.02.2025 14:30", "16.02.2026 / 19:16", "04.02.2025"
_NUMERIC = re.compile(
    r"^(?P<d>\d{1,2})[./](?P<m>\d{1,2})[./](?P<y>\d{4})"
    r"(?:\s*[,/\[\-–]?\s*(?P<H>\d{1,2}):(?P<M>\d{2})(?::(?P<S>\d{2}))?\s*\]?)?$"
)
# "(UTC +04:00)", "(UTC+04)", "UTC+4", "GMT+03:00" as printed next to a local time.
_UTC_SUFFIX = re.compile(
    r"\(?\s*(?:UTC|GMT)\s*(?P<sign>[+\-−])\s*(?P<h>\d{1,2})(?::?(?P<m>\d{2}))?\s*\)?\s*$",
    re.IGNORECASE,
)
_RFC822_HINT = re.compile(r"^\s*(?:[A-Za-z]{3},?\s+)?\d{1,2}\s+[A-Za-z]{3}\s+\d{2,4}\s+\d")
_ISO_HINT = re.compile(r"^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}|$)")
_EPOCH = re.compile(r"^\d{10}(?:\d{3})?(?:\.\d+)?$")
_BRACKETS = re.compile(r"[\[\]]")


def parse_date(
    value: str | None,
    *,
    languages: Sequence[str] | None = None,
    timezone: str = "UTC",
    date_format: str | None = None,
) -> datetime | None:
    """An aware UTC datetime for a date string, or None when it is not a usable date.

    Dates printed without an offset are taken to be in ``timezone``. ``date_format`` (a
    ``strptime`` format) is tried first when given. Fast paths (strptime, ISO 8601,
    RFC 822, dd.mm.yyyy) run before dateparser, which handles month names in
    ``languages`` (default ru, en, az, kk) and never fills in missing parts from today.
    Never raises.
    """
    if not isinstance(value, str):
        return None
    value = " ".join(value.split())
    if not value or len(value) > _MAX_LENGTH:
        return None
    tz = _zone(timezone)
    if tz is None:
        return None
    langs = tuple(languages) if languages else DEFAULT_LANGUAGES
    return _parse_cached(value, langs, timezone, date_format)


def parse_date_fast(value: str | None, *, timezone: str = "UTC") -> datetime | None:
    """Like :func:`parse_date`, but only the cheap formats (ISO 8601, RFC 822, dd.mm.yyyy)."""
    if not isinstance(value, str):
        return None
    value = " ".join(value.split())
    tz = _zone(timezone)
    if not value or len(value) > _MAX_LENGTH or tz is None:
        return None
    return _fast(value, tz)


def datetime_from_struct(value: time.struct_time | None) -> datetime | None:
    """An aware UTC datetime from a UTC ``struct_time`` (feedparser's ``*_parsed`` fields)."""
    if value is None:
        return None
    try:
        return _checked(datetime(*value[:6], tzinfo=UTC))
    except (TypeError, ValueError, OverflowError):
        return None


@lru_cache(maxsize=4096)
def _parse_cached(
    value: str, languages: tuple[str, ...], timezone: str, date_format: str | None
) -> datetime | None:
    tz = _zone(timezone)
    assert tz is not None  # checked by the caller
    if date_format:
        parsed = _strptime(value, date_format, tz)
        if parsed is not None:
            return parsed
    return _fast(value, tz) or _with_dateparser(value, languages, timezone)


def _fast(value: str, tz: tzinfo) -> datetime | None:
    if _ISO_HINT.match(value):
        return _iso(value, tz)
    if _RFC822_HINT.match(value):
        return _rfc822(value)
    if m := _NUMERIC.match(value):
        return _numeric(m, tz)
    if _EPOCH.match(value):
        return _epoch(value)
    return None


def _iso(value: str, tz: tzinfo) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return _to_utc(parsed, tz)


def _rfc822(value: str) -> datetime | None:
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    # "-0000" means "offset unknown": RFC 5322 says treat as UTC.
    return _to_utc(parsed, UTC)


def _numeric(m: re.Match[str], tz: tzinfo) -> datetime | None:
    try:
        parsed = datetime(
            int(m["y"]), int(m["m"]), int(m["d"]),
            int(m["H"] or 0), int(m["M"] or 0), int(m["S"] or 0),
        )
    except ValueError:
        return None
    return _to_utc(parsed, tz)


def _epoch(value: str) -> datetime | None:
    seconds = float(value)
    if len(value.split(".")[0]) == 13:
        seconds /= 1000
    try:
        return _checked(datetime.fromtimestamp(seconds, UTC))
    except (ValueError, OverflowError, OSError):
        return None


def _strptime(value: str, date_format: str, tz: tzinfo) -> datetime | None:
    try:
        parsed = datetime.strptime(value, date_format)
    except ValueError:
        return None
    return _to_utc(parsed, tz)


def _with_dateparser(value: str, languages: tuple[str, ...], timezone: str) -> datetime | None:
    import dateparser  # slow to import and to call: only when the fast paths fail

    text, offset = _split_utc_suffix(_BRACKETS.sub(" ", value))
    settings = {
        "PREFER_DATES_FROM": "past",
        "PREFER_DAY_OF_MONTH": "first",
        "REQUIRE_PARTS": ["day", "month", "year"],
        "DATE_ORDER": "DMY",
        "RETURN_AS_TIMEZONE_AWARE": False,
        "PARSERS": ["custom-formats", "absolute-time"],
    }
    try:
        parsed = dateparser.parse(text, languages=list(languages), settings=settings)
    except Exception:  # dateparser raises assorted errors on junk; junk is None by contract
        return None
    if parsed is None:
        return None
    return _to_utc(parsed, offset or _zone(timezone) or UTC)


def _split_utc_suffix(value: str) -> tuple[str, tzinfo | None]:
    m = _UTC_SUFFIX.search(value)
    if not m or m.start() == 0:
        return value, None
    minutes = int(m["h"]) * 60 + int(m["m"] or 0)
    if minutes > 18 * 60:
        return value, None
    sign = -1 if m["sign"] in "-−" else 1
    return value[: m.start()].strip(" ,-"), fixed_timezone(timedelta(minutes=sign * minutes))


def _to_utc(parsed: datetime, tz: tzinfo) -> datetime | None:
    try:
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=tz)
        return _checked(parsed.astimezone(UTC))
    except (ValueError, OverflowError):
        return None


def _checked(parsed: datetime) -> datetime | None:
    return parsed if MIN_YEAR <= parsed.year <= MAX_YEAR else None


@lru_cache(maxsize=64)
def _zone(name: str) -> tzinfo | None:
    if name.upper() == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None
