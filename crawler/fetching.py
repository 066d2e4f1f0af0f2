"""One-off fetches with the crawler's own rules (SSRF guard, robots.txt, size limit, user agent,
per-host politeness, retries): what ``sources add`` and discovery read. Scrapy runs in a child
process (``python -m crawler.fetching``; the reactor cannot restart), which reads a FetchJob on
stdin and writes one Fetched per line on stdout."""

from __future__ import annotations

import base64
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from crawler.blocking import EXPECTS, detect_block
from crawler.sources import CrawlSettings, SourceSpec

if TYPE_CHECKING:
    from scrapy.http import Response
    from twisted.python.failure import Failure

FETCH_SOURCE = "fetch"  # the pseudo source id of one-off requests (for the SSRF guard)
MAX_FETCHES = 40


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


class Fetched(BaseModel):
    """What one request gave: a response (any status) or an error class with a message."""

    url: str
    final_url: str = ""
    status: int | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    body_b64: str = ""
    error_class: str | None = None
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
    return [got.get(r.url) or Fetched(url=r.url, error_class="timeout", message="no answer in time")
            for r in requests]


def fetch_one(url: str, *, crawl: CrawlSettings, expect: str = "html",
              private_host_url: str | None = None) -> Fetched:
    return fetch([FetchRequest(url=url, expect=expect)], crawl=crawl, private_host_url=private_host_url)[0]


# --- the child process -----------------------------------------------------------------------


def fetch_settings(job: FetchJob) -> dict[str, Any]:
    """The round's Scrapy settings (crawler.settings) without the item pipelines."""
    from crawler.job import CrawlJob
    from crawler.settings import round_settings

    url = job.private_host_url or job.requests[0].url
    pseudo = SourceSpec(id=FETCH_SOURCE, url=url, allow_private=job.private_host_url is not None)
    crawl_job = CrawlJob(database_url="sqlite://", crawl=job.crawl, sources=(pseudo,),
                         deadline_seconds=job.deadline_seconds, log_level=job.log_level)
    settings = round_settings(crawl_job)
    settings["ITEM_PIPELINES"] = {}
    return settings


def _spider_class() -> Any:
    import scrapy
    from scrapy import Request

    from crawler.outcomes import classify_exception

    class FetchSpider(scrapy.Spider):
        name = "newsmon-fetch"

        def __init__(self, job: FetchJob, results: list[Fetched], **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.job = job
            self.results = results

        async def start(self) -> AsyncIterator[Request]:
            for req in self.job.requests:
                yield Request(req.url, callback=self.done, errback=self.failed, dont_filter=True,
                              meta={"newsmon_source": FETCH_SOURCE, "handle_httpstatus_all": True,
                                    "dont_obey_robotstxt": not req.obey_robots, "newsmon_request": req})

        def done(self, response: Response) -> Iterator[Any]:
            req: FetchRequest = response.meta["newsmon_request"]
            headers = {k.decode("latin-1").lower(): v[0].decode("latin-1")
                       for k, v in response.headers.items() if v}
            expect = req.expect if req.expect in EXPECTS else "html"
            blocked = None if req.expect == "robots" else detect_block(
                response.status, headers, response.body, expect=expect)
            self.results.append(Fetched(url=req.url, final_url=response.url, status=response.status,
                                        headers=headers, blocked=blocked,
                                        body_b64=base64.b64encode(response.body).decode()))
            return iter(())

        def failed(self, failure: Failure) -> None:
            req: FetchRequest = failure.request.meta["newsmon_request"]  # type: ignore[attr-defined]
            error_class, message = classify_exception(failure.value)
            self.results.append(Fetched(url=req.url, error_class=error_class, message=message))

    return FetchSpider


def main() -> int:
    import logging

    from scrapy.crawler import AsyncCrawlerProcess

    job = FetchJob.model_validate_json(sys.stdin.read())
    out = sys.stdout
    if job.log_level.upper() == "DEBUG":
        logging.basicConfig(level=logging.DEBUG, format="%(asctime)s %(name)s %(message)s")
    else:
        logging.disable(logging.CRITICAL)  # the answer is the data; failures are in it
    results: list[Fetched] = []
    process = AsyncCrawlerProcess(fetch_settings(job))
    process.crawl(_spider_class(), job=job, results=results)
    process.start(install_signal_handlers=True)
    for result in results:
        out.write(result.model_dump_json() + "\n")
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
