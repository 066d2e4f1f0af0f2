"""One-off fetches with the crawler's own rules (SSRF guard, robots.txt, size limit, user agent,
per-host politeness, retries): what ``sources add`` and discovery read. Scrapy runs in a child
process (``python -m crawler.fetching``; the reactor cannot restart), which reads a FetchJob on
stdin and writes one Fetched per line on stdout."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from crawler.blocking import detect_block
from crawler.failures import CRASH, TIMEOUT, ErrorClass
from crawler.sources import CrawlSettings, SourceSpec

if TYPE_CHECKING:
    from scrapy.http import Response
    from twisted.python.failure import Failure

FETCH_SOURCE = "fetch"  # the pseudo source id of one-off requests (for the SSRF guard)
MAX_FETCHES = 40

_EXPECTS = ("feed", "html", "json", "sitemap", "telegram")  # what a fetched body may be read as


class FetchRequest(BaseModel):
    """One URL to read, and what it should serve (for anti-bot detection)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str
    expect: str = "html"  # html | feed | sitemap | json | telegram | robots
    obey_robots: bool = True


class FetchJob(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    crawl: CrawlSettings = CrawlSettings()
    requests: tuple[FetchRequest, ...]
    private_host_url: str | None = None  # a URL whose host may be on a private address
    deadline_seconds: float = Field(default=60.0, gt=0)
    log_level: str = "ERROR"
    delay: float = Field(default=0.0, ge=0)  # seconds between requests to a host (sessions)


class Fetched(BaseModel):
    """What one request gave: a response (any status) or an error class with a message."""

    url: str
    final_url: str = ""
    status: int | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    body_b64: str = ""
    error_class: ErrorClass | None = None
    message: str | None = None
    blocked: str | None = None  # the anti-bot page's reason, when the response is one

    @property
    def body(self) -> bytes:
        return base64.b64decode(self.body_b64) if self.body_b64 else b""

    @property
    def content_type(self) -> str | None:
        return self.headers.get("content-type")

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300 and not self.blocked


def fetch(requests: Sequence[FetchRequest], *, crawl: CrawlSettings, private_host_url: str | None = None,
          timeout: float = 60.0) -> list[Fetched]:
    """Fetch ``requests`` in a child crawl process; one Fetched per request, in their order.

    :param private_host_url: a URL the user typed: its host may be loopback/private.
    """
    requests = list(requests)[:MAX_FETCHES]
    if not requests:
        return []
    job = FetchJob(crawl=crawl, requests=tuple(requests), private_host_url=private_host_url,
                   deadline_seconds=timeout)
    try:
        done = subprocess.run([sys.executable, "-m", "crawler.fetching"], input=job.model_dump_json(),
                              capture_output=True, text=True, timeout=timeout + 15, check=False)
        lines = done.stdout.splitlines()
    except subprocess.TimeoutExpired:
        lines = []
    got = {f.url: f for f in (Fetched.model_validate_json(ln) for ln in lines if ln.startswith("{"))}
    return [got.get(r.url) or Fetched(url=r.url, error_class=TIMEOUT, message="no answer in time")
            for r in requests]


class FetchSession:
    """A child crawl process kept open for a sequence of fetches (backfill): one request at a
    time, with ``delay`` seconds between requests to a host. Use as a context manager."""

    def __init__(self, *, crawl: CrawlSettings, private_host_url: str | None = None, delay: float = 1.0,
                 timeout: float = 3600.0) -> None:
        job = FetchJob(crawl=crawl, requests=(), private_host_url=private_host_url,
                       deadline_seconds=timeout, delay=delay)
        self.process = subprocess.Popen([sys.executable, "-m", "crawler.fetching", "--session"],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        assert self.process.stdin is not None
        self.process.stdin.write(job.model_dump_json() + "\n")
        self.process.stdin.flush()

    def get(self, url: str, *, expect: str = "html") -> Fetched:
        """Fetch ``url`` now and wait for the answer."""
        assert self.process.stdin is not None and self.process.stdout is not None
        try:
            self.process.stdin.write(FetchRequest(url=url, expect=expect).model_dump_json() + "\n")
            self.process.stdin.flush()
        except BrokenPipeError:
            return Fetched(url=url, error_class=CRASH, message="the fetch process ended")
        line = self.process.stdout.readline()
        if not line:
            return Fetched(url=url, error_class=CRASH, message="the fetch process ended")
        return Fetched.model_validate_json(line)

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> FetchSession:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


# --- the child process -----------------------------------------------------------------------


def fetch_settings(job: FetchJob) -> dict[str, Any]:
    """The round's Scrapy settings (crawler.settings) without the item pipelines."""
    from crawler.job import CrawlJob
    from crawler.settings import round_settings

    url = job.private_host_url or (job.requests[0].url if job.requests else "http://localhost/")
    pseudo = SourceSpec(id=FETCH_SOURCE, url=url, allow_private=job.private_host_url is not None)
    crawl_job = CrawlJob(database_url="sqlite://", crawl=job.crawl, sources=(pseudo,),
                         deadline_seconds=job.deadline_seconds, log_level=job.log_level)
    settings = round_settings(crawl_job)
    settings["ITEM_PIPELINES"] = {}
    if job.delay:
        # at least ``delay`` apart: Scrapy would otherwise wait 0.5-1.5 times DOWNLOAD_DELAY
        settings.update({"DOWNLOAD_DELAY": job.delay, "AUTOTHROTTLE_START_DELAY": job.delay,
                         "RANDOMIZE_DOWNLOAD_DELAY": False,
                         "CONCURRENT_REQUESTS_PER_DOMAIN": 1, "AUTOTHROTTLE_TARGET_CONCURRENCY": 1.0})
    return settings


def _spider_class() -> Any:
    import scrapy
    from scrapy import Request

    from crawler.outcomes import classify_exception, failed_request, failure_exception

    class FetchSpider(scrapy.Spider):
        name = "newsmon-fetch"

        def __init__(self, job: FetchJob, results: list[Fetched], session: Any = None, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.job = job
            self.results = results
            self.session = session  # a file to answer on, one line per request (session mode)
            self.eof = False

        @classmethod
        def from_crawler(cls, crawler: Any, *args: Any, **kwargs: Any) -> Any:
            from scrapy import signals

            spider = super().from_crawler(crawler, *args, **kwargs)
            crawler.signals.connect(spider.idle, signal=signals.spider_idle)
            return spider

        async def start(self) -> AsyncIterator[Request]:
            for req in self.job.requests:
                yield self.make(req)

        def make(self, req: FetchRequest) -> Request:
            return Request(req.url, callback=self.done, errback=self.failed, dont_filter=True,
                           meta={"newsmon_source": FETCH_SOURCE, "handle_httpstatus_all": True,
                                 "dont_obey_robotstxt": not req.obey_robots, "newsmon_request": req})

        def schedule(self, req: FetchRequest) -> None:
            self.crawler.engine.crawl(self.make(req))

        def idle(self) -> None:
            from scrapy.exceptions import DontCloseSpider

            if self.session is not None and not self.eof:
                raise DontCloseSpider

        def answer(self, result: Fetched) -> None:
            self.results.append(result)
            if self.session is not None:
                self.session.write(result.model_dump_json() + "\n")
                self.session.flush()

        def done(self, response: Response) -> Iterator[Any]:
            req: FetchRequest = response.meta["newsmon_request"]
            headers = {k.decode("latin-1").lower(): v[0].decode("latin-1")
                       for k, v in response.headers.items() if v}
            expect = req.expect if req.expect in _EXPECTS else "html"
            blocked = None if req.expect == "robots" else detect_block(
                response.status, headers, response.body, expect=expect)
            self.answer(Fetched(url=req.url, final_url=response.url, status=response.status,
                                headers=headers, blocked=blocked,
                                body_b64=base64.b64encode(response.body).decode()))
            return iter(())

        def failed(self, failure: Failure) -> None:
            req: FetchRequest = failed_request(failure).meta["newsmon_request"]
            error_class, message = classify_exception(failure_exception(failure))
            self.answer(Fetched(url=req.url, error_class=error_class, message=message))

    return FetchSpider


def main() -> int:
    import logging

    from scrapy.crawler import AsyncCrawlerProcess

    session = "--session" in sys.argv
    job = FetchJob.model_validate_json(sys.stdin.readline() if session else sys.stdin.read())
    out = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    os.dup2(2, 1)  # whatever a library prints goes to stderr, not into the answers
    if job.log_level.upper() == "DEBUG":
        logging.basicConfig(level=logging.DEBUG, format="%(asctime)s %(name)s %(message)s")
    else:
        logging.disable(logging.CRITICAL)  # the answer is the data; failures are in it
    results: list[Fetched] = []
    process = AsyncCrawlerProcess(fetch_settings(job))
    spider_class = _spider_class()
    process.crawl(spider_class, job=job, results=results, session=out if session else None)
    if session:
        _read_requests(process)
    process.start(install_signal_handlers=True)
    if not session:
        for result in results:
            out.write(result.model_dump_json() + "\n")
    out.flush()
    return 0


def _read_requests(process: Any) -> None:
    """Session mode: a thread hands each request line of stdin to the spider (in the reactor)."""
    import threading

    def spider() -> Any:
        crawler = next(iter(process.crawlers))
        return crawler.spider

    def read() -> None:
        from twisted.internet import reactor

        for line in sys.stdin:
            if line.strip():
                req = FetchRequest.model_validate_json(line)
                reactor.callFromThread(lambda r=req: spider().schedule(r))
        reactor.callFromThread(lambda: setattr(spider(), "eof", True))
        reactor.callFromThread(lambda: process.stop())

    threading.Thread(target=read, daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
