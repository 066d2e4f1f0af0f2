"""next_poll_at with an injected now: jitter, back-off and its cap, server hints."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from crawler.policy import Hints, max_age_seconds, next_poll_at, retry_after_seconds

NOW = datetime(2025, 2, 4, 9, 30, tzinfo=UTC)


def delay(**kwargs: object) -> float:
    kwargs.setdefault("jitter", 0.0)
    return (next_poll_at(NOW, **kwargs) - NOW).total_seconds()  # type: ignore[arg-type]


def test_success_polls_after_the_interval() -> None:
    assert delay(interval=600) == 600


def test_jitter_spreads_within_the_fraction() -> None:
    rand = random.Random(7)
    delays = [(next_poll_at(NOW, interval=600, jitter=0.1, rand=rand) - NOW).total_seconds()
              for _ in range(200)]
    assert all(540 <= d <= 660 for d in delays)
    assert max(delays) - min(delays) > 60


@pytest.mark.parametrize(("failures", "expected"), [(1, 1200), (2, 2400), (3, 4800), (10, 6 * 3600)])
def test_failures_back_off_exponentially_up_to_the_cap(failures: int, expected: float) -> None:
    assert delay(interval=600, failures=failures, max_backoff=6 * 3600) == expected


def test_retry_after_delays_a_failed_poll_but_never_past_the_cap() -> None:
    assert delay(interval=600, failures=1, hints=Hints(retry_after=3600)) == 3600
    assert delay(interval=600, failures=1, hints=Hints(retry_after=10)) == 1200
    assert delay(interval=600, failures=1, hints=Hints(retry_after=10**9), max_backoff=7200) == 7200


def test_max_age_and_ttl_delay_a_success_within_bounds() -> None:
    assert delay(interval=600, hints=Hints(max_age=1800)) == 1800
    assert delay(interval=600, hints=Hints(ttl=60)) == 600  # never more often than the interval
    assert delay(interval=600, hints=Hints(ttl=10**9), max_backoff=3600) == 3600


def test_a_cap_below_the_interval_does_not_shorten_it() -> None:
    assert delay(interval=7200, failures=3, max_backoff=3600) == 7200


def test_retry_after_header_forms() -> None:
    assert retry_after_seconds("120", NOW) == 120
    when = (NOW + timedelta(hours=1)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert retry_after_seconds(when.encode(), NOW) == 3600
    assert retry_after_seconds("Tue, 04 Feb 2020 00:00:00 GMT", NOW) == 0
    assert retry_after_seconds("soon", NOW) is None
    assert retry_after_seconds(None, NOW) is None


def test_cache_control_max_age() -> None:
    assert max_age_seconds(b"public, max-age=900") == 900
    assert max_age_seconds("s-maxage=60, max-age=30") is not None
    assert max_age_seconds("no-cache") is None
    assert max_age_seconds(None) is None
