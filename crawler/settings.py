"""Scrapy settings of a crawl round: fixed politeness and safety knobs plus the few values that
come from the job (user agent, timeouts, sizes, robots, deadline, private hosts), and
scrapy-playwright's settings when the job has ``render = "browser"`` sources (crawler.rendering)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from crawler.job import CrawlJob

# Seconds kept between CLOSESPIDER_TIMEOUT and the job's deadline, for the graceful close
# (pending items stored, polls recorded) before the watchdog would have to step in.
CLOSE_MARGIN = 5.0

BASE_SETTINGS: dict[str, Any] = {
    "BOT_NAME": "newsmon",
    "TWISTED_REACTOR": "twisted.internet.asyncioreactor.AsyncioSelectorReactor",
    "TELNETCONSOLE_ENABLED": False,
    "REMOTE_CONTROL_ENABLED": False,  # Scrapy 2.19 default is a code-executing HTTP endpoint
    "LOG_ENABLED": True,
    "LOG_INSTALL_ROOT_HANDLER": False,  # stdlib logging goes to loguru (crawler.__main__)
    "LOG_LEVEL": "WARNING",
    "COOKIES_ENABLED": False,
    "CONCURRENT_REQUESTS": 32,
    # Scrapy checks each callback for `return value` in a generator by reading and parsing its
    # source; its cache is keyed by the bound method, new for every request, so the check ran
    # for every response (~0.8 ms of CPU each, a fifth of a 304 poll). Ours return no values.
    "WARN_ON_GENERATOR_RETURN_VALUE": False,
    # Outputs of a response processed at once. A response yields one ItemBatch (and perhaps
    # article requests, first); Scrapy starts this many asyncio tasks per response, even for a
    # callback that yields nothing (a 304 revisit): 100 by default, 8 before 2026-12-05.
    "CONCURRENT_ITEMS": 2,
    # Nothing reads Scrapy's stats (a round's figures are its events): every request cost ~20
    # stats calls through the collector's deprecation-checking __getattribute__.
    "STATS_CLASS": "scrapy.statscollectors.DummyStatsCollector",
    "CONCURRENT_REQUESTS_PER_DOMAIN": 2,
    "DOWNLOAD_DELAY": 0,
    "DOWNLOAD_DELAY_JITTER": 0.5,
    "AUTOTHROTTLE_ENABLED": True,
    "AUTOTHROTTLE_START_DELAY": 0.0,
    "AUTOTHROTTLE_MAX_DELAY": 10.0,
    "AUTOTHROTTLE_TARGET_CONCURRENCY": 2.0,
    "RETRY_ENABLED": True,
    "RETRY_TIMES": 2,
    "RETRY_HTTP_CODES": [500, 502, 503, 504, 522, 524, 408, 429],
    # Timeouts, refused connections and DNS failures are not retried inside a round: they would
    # multiply the time a dead host costs. The next poll (with back-off) is the retry.
    "RETRY_EXCEPTIONS": ["scrapy.exceptions.ResponseDataLossError"],
    "REDIRECT_MAX_TIMES": 10,
    "DOWNLOAD_FAIL_ON_DATALOSS": True,
    "DNSCACHE_ENABLED": True,
    "DNS_TIMEOUT": 10,
    "TWISTED_DNS_RESOLVER": "crawler.safety.GuardedResolver",
    "HTTPERROR_ALLOWED_CODES": [],
    "METAREFRESH_ENABLED": False,
    "DOWNLOADER_MIDDLEWARES": {
        "crawler.safety.SafetyMiddleware": 50,  # before robots.txt is fetched for a host
        "scrapy.downloadermiddlewares.retry.RetryMiddleware": None,
        "crawler.downloader.RetryAfterMiddleware": 550,
        "scrapy.downloadermiddlewares.robotstxt.RobotsTxtMiddleware": None,
        "crawler.downloader.RobotsMiddleware": 100,
    },
    "ITEM_PIPELINES": {
        "crawler.pipelines.NormalizePipeline": 100,
        "crawler.pipelines.MatchPipeline": 200,
        "crawler.pipelines.StoragePipeline": 300,
    },
    "EXTENSIONS": {
        "scrapy.extensions.telnet.TelnetConsole": None,
        "scrapy.extensions.memusage.MemoryUsage": None,
        "scrapy.extensions.throttle.AutoThrottle": None,
        "crawler.downloader.ConditionalAutoThrottle": 0,  # a 304 may lower the delay
    },
    "STATS_DUMP": False,
    "LOGSTATS_INTERVAL": 0,
    "NEWSMON_RETRY_AFTER_MAX": 10.0,
    "NEWSMON_RETRY_BACKOFF": 0.5,
}


# Scrapy components a round never uses: off by COOKIES_ENABLED, REMOTE_CONTROL_ENABLED and the
# absence of HTTPCACHE_ENABLED, FEEDS, JOBDIR, MEMDEBUG_ENABLED, LOGSTATS_INTERVAL; feeding only
# Scrapy's stats, which nothing reads (STATS_CLASS): DownloaderStats (it builds each request's
# HTTP form again to count its bytes), DepthMiddleware (DEPTH_LIMIT is 0), CoreStats and
# LogCount (a handler on every log record); no-ops for a round: HttpAuthMiddleware (no source
# sets http_user), the downloader's OffsiteMiddleware (the spider sets no allowed_domains) and
# MetaCopyDetectionMiddleware (a warning for requests that copy Scrapy's internal meta keys from
# a response; ours build their own meta). The last seven ran for every request or response,
# revisits included (bench/README.md, "Revisits", 2026-12-05 "a cheaper request path"). They
# are left out of Scrapy's base lists, not set to None: Scrapy imports every component it is
# given, even one set to None, and the first two pull in aiohttp (remote control) and
# tldextract + requests + urllib3 (cookies), ~13 MiB of every crawl process.
UNUSED_COMPONENTS: dict[str, tuple[str, ...]] = {
    "EXTENSIONS": (
        "scrapy.extensions.remote_control.RemoteControl",
        "scrapy.extensions.feedexport.FeedExporter",
        "scrapy.extensions.memdebug.MemoryDebugger",
        "scrapy.extensions.spiderstate.SpiderState",
        "scrapy.extensions.logstats.LogStats",
        "scrapy.extensions.corestats.CoreStats",
        "scrapy.extensions.logcount.LogCount",
    ),
    "DOWNLOADER_MIDDLEWARES": (
        "scrapy.downloadermiddlewares.cookies.CookiesMiddleware",
        "scrapy.downloadermiddlewares.httpcache.HttpCacheMiddleware",
        "scrapy.downloadermiddlewares.stats.DownloaderStats",
        "scrapy.downloadermiddlewares.httpauth.HttpAuthMiddleware",
        "scrapy.downloadermiddlewares.offsite.OffsiteMiddleware",
    ),
    "SPIDER_MIDDLEWARES": (
        "scrapy.spidermiddlewares.depth.DepthMiddleware",
        "scrapy.spidermiddlewares.metacopy.MetaCopyDetectionMiddleware",
    ),
}


def component_bases() -> dict[str, Any]:
    """Scrapy's ``*_BASE`` component lists less UNUSED_COMPONENTS."""
    from scrapy.settings import default_settings

    bases = {}
    for name, unused in UNUSED_COMPONENTS.items():
        base = getattr(default_settings, f"{name}_BASE")
        bases[f"{name}_BASE"] = {path: order for path, order in base.items() if path not in unused}
    return bases


def round_settings(job: CrawlJob) -> dict[str, Any]:
    """The settings of the crawl for ``job``."""
    from crawler.rendering import RENDER_MIDDLEWARE, RENDER_MIDDLEWARE_ORDER, browser_settings, has_browser_sources
    from crawler.safety import private_hosts

    crawl = job.crawl
    size = int(crawl.max_response_size)
    settings = dict(BASE_SETTINGS)
    settings.update(component_bases())
    settings.update({
        "USER_AGENT": crawl.user_agent,
        "ROBOTSTXT_OBEY": crawl.obey_robots or any(s.obey_robots for s in job.sources),
        "CONCURRENT_REQUESTS_PER_DOMAIN": crawl.concurrency_per_host,
        "AUTOTHROTTLE_TARGET_CONCURRENCY": float(crawl.concurrency_per_host),
        "DOWNLOAD_TIMEOUT": float(crawl.timeout),
        "DOWNLOAD_MAXSIZE": size,
        "DOWNLOAD_WARNSIZE": max(1, size // 2),
        "CLOSESPIDER_TIMEOUT": max(1.0, job.deadline_seconds - CLOSE_MARGIN),
        "NEWSMON_DEADLINE": job.deadline_seconds,
        "NEWSMON_PRIVATE_HOSTS": private_hosts(job.sources),
        "LOG_LEVEL": job.log_level.upper(),
        # Scrapy's download slot of a request is its host name.
        "DOWNLOAD_SLOTS": {host: {"concurrency": n} for host, n in job.host_concurrency.items()},
    })
    if has_browser_sources(job):  # only then: ordinary rounds never load Playwright
        settings["DOWNLOADER_MIDDLEWARES"] = {**settings["DOWNLOADER_MIDDLEWARES"],
                                              RENDER_MIDDLEWARE: RENDER_MIDDLEWARE_ORDER}
        settings.update(browser_settings(job))
    return settings
