"""When to poll a source next: interval with jitter on success, exponential back-off on failure,
server hints (Retry-After, Cache-Control max-age, RSS ttl) honoured within bounds. Pure."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime

_MAX_AGE = re.compile(r"(?:^|[,\s])(?:s-)?max-age\s*=\s*\"?(\d+)", re.I)


@dataclass(frozen=True)
class Hints:
    """What the server said about when to come back (all in seconds from now)."""

    retry_after: float | None = None
    max_age: float | None = None
    ttl: float | None = None


def next_poll_at(
    now: datetime,
    *,
    interval: float,
    failures: int = 0,
    hints: Hints = Hints(),
    max_backoff: float = 6 * 3600.0,
    jitter: float = 0.1,
    rand: random.Random | None = None,
) -> datetime:
    """The time of the next poll.

    :param failures: consecutive failures *including* this poll (0 after a success).
    :param hints: server hints; Retry-After applies after a failure, max-age and ttl after a
        success. A hint can only delay the poll (never more often than ``interval``) and never
        beyond ``max_backoff`` (or the interval, when that is larger).
    :param jitter: the delay varies by ± this fraction, so sources do not poll in lock-step.
    """
    rand = rand or random.Random()
    cap = max(max_backoff, interval)
    if failures > 0:
        delay = min(interval * 2 ** min(failures, 32), cap)
        if hints.retry_after is not None:
            delay = max(delay, min(hints.retry_after, cap))
    else:
        delay = interval
        for hint in (hints.max_age, hints.ttl):
            if hint is not None:
                delay = max(delay, min(hint, cap))
    spread = delay * jitter
    delay = delay + rand.uniform(-spread, spread) if spread else delay
    return now + timedelta(seconds=max(1.0, delay))


def retry_after_seconds(value: str | bytes | None, now: datetime) -> float | None:
    """Seconds from ``now`` that a ``Retry-After`` header asks for (delta-seconds or HTTP-date)."""
    if value is None:
        return None
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    text = text.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return max(0.0, (when - now).total_seconds())


def max_age_seconds(cache_control: str | bytes | None) -> float | None:
    """``max-age`` of a Cache-Control header, None when absent or ``no-store``/``no-cache``."""
    if not cache_control:
        return None
    text = cache_control.decode("latin-1") if isinstance(cache_control, bytes) else cache_control
    m = _MAX_AGE.search(text)
    return float(m.group(1)) if m else None
