"""Requests sent straight to Scrapy's downloader (``engine.download_async``): every downloader
middleware (SSRF guard, robots.txt, retries, redirects, timeouts, sizes, compression, headers)
and the per-host download slots with their AutoThrottle delay still apply, but not the
scheduler, the spider middlewares nor the scraper's output chain. A round's revisits go this
way: a conditional GET whose answer is usually a 304 cost more in that bookkeeping than in
its own handling (bench/README.md, "Revisits", 2026-12-05 session 8)."""

from __future__ import annotations

import asyncio
from collections import defaultdict, deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from loguru import logger
from scrapy.exceptions import IgnoreRequest
from scrapy.http import Request
from scrapy.utils.httpobj import urlparse_cached
from twisted.python.failure import Failure

if TYPE_CHECKING:
    from scrapy.crawler import Crawler

BACKOUT_PAUSE = 0.05  # seconds between looks at an engine that sends nothing now


class DirectRequests:
    """Downloads requests through ``crawler``'s engine and hands each response (or failure) to
    the request's callback (or errback); items the callback yields go to the item pipelines.

    Politeness is the downloader's, as for scheduled requests: a host's requests wait in its
    download slot (its concurrency, its AutoThrottle delay), and no request is started while
    the engine backs out (``needs_backout``: the downloader holds CONCURRENT_REQUESTS requests,
    the scraper is full, or the spider is closing at the round's deadline), the engine's own
    rule for scheduled ones. A host gets as many workers as its slot's concurrency, so hosts go on side by side
    and one slow host does not hold the others' requests. The UrlLengthMiddleware's limit
    (URLLENGTH_LIMIT), a spider middleware, is applied here: a longer URL fails at once."""

    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        settings = crawler.settings
        self.per_host = settings.getint("CONCURRENT_REQUESTS_PER_DOMAIN") or 1
        self.slots = settings.getdict("DOWNLOAD_SLOTS")
        self.max_url = settings.getint("URLLENGTH_LIMIT")
        self.items: set[asyncio.Task[None]] = set()  # batches on their way through the pipelines

    async def run(self, requests: Iterable[Request]) -> None:
        """Send ``requests``; return when every one is answered and handled."""
        hosts: dict[str, deque[Request]] = defaultdict(deque)
        for request in requests:
            hosts[urlparse_cached(request).hostname or ""].append(request)
        workers = [self._worker(queue) for host, queue in hosts.items()
                   for _ in range(min(len(queue), self._concurrency(host)))]
        await asyncio.gather(*workers)
        while self.items:  # the crawl is not idle before its last batch is through
            await asyncio.gather(*self.items)

    def _concurrency(self, host: str) -> int:
        slot = self.slots.get(host) or {}
        return max(1, int(slot.get("concurrency", self.per_host)))

    async def _worker(self, queue: deque[Request]) -> None:
        while queue:
            await self.fetch(queue.popleft())

    async def fetch(self, request: Request) -> None:
        """One request, through to its callback or errback."""
        engine = self.crawler.engine
        assert engine is not None
        while engine.needs_backout():  # full, or closing (the round's deadline): then never
            await asyncio.sleep(BACKOUT_PAUSE)
        try:
            if self.max_url and len(request.url) > self.max_url:
                raise IgnoreRequest(f"URL longer than {self.max_url} characters")
            response = await engine.download_async(request)
        except Exception as exc:  # a refusal (SSRF, robots.txt), a timeout, a failed download
            failure = Failure(exc)  # type: ignore[no-untyped-call]  # Twisted leaves __init__ untyped
            failure.request = request  # type: ignore[attr-defined]  # as Scrapy sets it for errbacks
            await self._handle(request, request.errback, failure)
        else:
            await self._handle(request, request.callback, response, **request.cb_kwargs)

    async def _handle(self, request: Request, handler: Any, *args: Any, **kwargs: Any) -> None:
        """Run the callback to its end (its bookkeeping done), then send its items through the
        item pipelines (without waiting for them: a batch may wait there for company) and its
        requests to the scheduler."""
        if handler is None:
            return
        try:
            outputs = list(handler(*args, **kwargs) or ())
        except Exception:  # the callbacks catch their own faults; this is a bug in one of them
            logger.exception("handling {} failed", request.url)
            return
        scraper = self.crawler.engine.scraper
        response = args[0] if not isinstance(args[0], Failure) else None
        for output in outputs:
            if isinstance(output, Request):
                self.crawler.engine.crawl(output)
                continue
            task = asyncio.ensure_future(scraper.start_itemproc_async(output, response=response))
            self.items.add(task)
            task.add_done_callback(self.items.discard)
