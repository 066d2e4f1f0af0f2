"""Downloader middlewares of ours: retries that honour Retry-After within the round's deadline,
and robots.txt that holds for every request waiting on it; an AutoThrottle that takes a 304
for a 200."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from scrapy.downloadermiddlewares.retry import RetryMiddleware
from scrapy.downloadermiddlewares.robotstxt import RobotsTxtMiddleware
from scrapy.extensions.throttle import AutoThrottle
from scrapy.utils.defer import maybe_deferred_to_future
from scrapy.utils.httpobj import urlparse_cached
from twisted.internet.defer import Deferred

from crawler.policy import retry_after_seconds

if TYPE_CHECKING:
    from scrapy import Request
    from scrapy.crawler import Crawler
    from scrapy.http import Response
    from scrapy.robotstxt import RobotParser

RETRY_AFTER_CODES = frozenset({429, 503})


class RetryAfterMiddleware(RetryMiddleware):
    """Scrapy's RetryMiddleware (RETRY_TIMES on RETRY_HTTP_CODES) with a pause between attempts:
    the server's Retry-After on 429/503, else a short exponential back-off. A Retry-After longer
    than ``NEWSMON_RETRY_AFTER_MAX`` or than what is left of the round is not waited for: the
    response is returned as it is and the hint goes into the source's next poll time."""

    def __init__(self, crawler: Crawler) -> None:
        super().__init__(crawler.settings)
        self.crawler = crawler
        settings = crawler.settings
        self.max_wait = settings.getfloat("NEWSMON_RETRY_AFTER_MAX", 10.0)
        self.backoff = settings.getfloat("NEWSMON_RETRY_BACKOFF", 0.5)
        self.deadline = time.monotonic() + settings.getfloat("NEWSMON_DEADLINE", 300.0)
        self.request_timeout = settings.getfloat("DOWNLOAD_TIMEOUT", 30.0)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> RetryAfterMiddleware:
        return cls(crawler)

    async def process_response(self, request: Request, response: Response) -> Request | Response:  # type: ignore[override]  # Scrapy awaits coroutine middleware methods; the base declares the sync form
        if request.meta.get("dont_retry") or response.status not in self.retry_http_codes:
            return response
        delay = self.delay_for(request, response)
        if delay is None:
            return response
        retry = self._retry(request, f"HTTP {response.status}")
        if retry is None:
            return response
        if delay > 0:
            await asyncio.sleep(delay)
        return retry

    def delay_for(self, request: Request, response: Response) -> float | None:
        """Seconds to wait before retrying, or None when waiting would not fit."""
        attempt = request.meta.get("retry_times", 0)
        delay: float = self.backoff * 2**attempt
        if response.status in RETRY_AFTER_CODES:
            hinted = retry_after_seconds(response.headers.get(b"Retry-After"), datetime.now(UTC))
            if hinted is not None:
                delay = hinted
        left = self.deadline - time.monotonic() - self.request_timeout
        if delay > min(self.max_wait, left):
            return None
        return delay


class RobotsMiddleware(RobotsTxtMiddleware):
    """Scrapy's RobotsTxtMiddleware, fixed for requests that wait on the same robots.txt.

    Scrapy 2.19 awaits the shared per-host Deferred with ``maybe_deferred_to_future``, whose
    callback returns None: under the asyncio reactor only the first waiting request gets the
    parser and every other one gets None, i.e. "allowed". Each waiter gets its own Deferred here.
    """

    async def robot_parser(self, request: Request) -> RobotParser | None:
        parser = self._parsers.get(urlparse_cached(request).netloc)
        if isinstance(parser, Deferred):
            waiter: Deferred[RobotParser | None] = Deferred()

            def relay(result: RobotParser | None) -> RobotParser | None:
                waiter.callback(result)
                return result

            parser.addBoth(relay)
            return await maybe_deferred_to_future(waiter)
        return await super().robot_parser(request)


class ConditionalAutoThrottle(AutoThrottle):
    """Scrapy's AutoThrottle, with a 304 counted as a 200: the delay may fall after it too.
    Scrapy lets only a 200 lower a host's delay (error pages are quick and would speed the
    crawl up), so a round of revisits answered 304 kept the delay of its slowest answer and
    took ten times as long as the same pages fetched whole."""

    def _adjust_delay(self, slot: Any, latency: float, response: Response) -> None:
        """Scrapy's policy (``AutoThrottle._adjust_delay``) with 304 beside 200."""
        target = latency / self.target_concurrency
        delay = min(max(self.mindelay, max(target, (slot.delay + target) / 2.0)), self.maxdelay)
        if response.status not in (200, 304) and delay <= slot.delay:
            return
        slot.delay = delay
