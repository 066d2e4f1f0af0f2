"""What every request of a round no longer pays for (issue 17, a 304 revisit ≤ 10 % of a first
fetch): Scrapy's stats, which nothing reads; its DEBUG line per request, made into a record
only to be dropped by the handler's level; and asyncio tasks per response beyond two."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from scrapy.settings import Settings
from scrapy.utils.conf import build_component_list

from crawler.job import CrawlJob
from crawler.settings import round_settings
from crawler.sources import SourceSpec

ROOT = Path(__file__).resolve().parents[1]


def _job(level: str = "WARNING") -> CrawlJob:
    return CrawlJob(database_url="sqlite://", log_level=level,
                    sources=(SourceSpec(id="a", url="https://example.org/feed"),))


def test_a_round_keeps_no_scrapy_stats_and_few_tasks_per_response() -> None:
    settings = Settings(round_settings(_job()))
    assert settings["STATS_CLASS"] == "scrapy.statscollectors.DummyStatsCollector"
    downloader = build_component_list(settings.getwithbase("DOWNLOADER_MIDDLEWARES"))
    spider = build_component_list(settings.getwithbase("SPIDER_MIDDLEWARES"))
    assert "scrapy.downloadermiddlewares.stats.DownloaderStats" not in downloader
    assert "scrapy.spidermiddlewares.depth.DepthMiddleware" not in spider
    assert "scrapy.spidermiddlewares.metacopy.MetaCopyDetectionMiddleware" not in spider
    assert not {"scrapy.extensions.corestats.CoreStats", "scrapy.extensions.logcount.LogCount"} & set(
        build_component_list(settings.getwithbase("EXTENSIONS")))
    assert settings.getint("DEPTH_LIMIT") == 0  # what made DepthMiddleware stats-only
    assert settings.getint("CONCURRENT_ITEMS") <= 2
    # the rules every request keeps
    assert {"crawler.safety.SafetyMiddleware", "crawler.downloader.RobotsMiddleware",
            "crawler.downloader.RetryAfterMiddleware",
            "scrapy.downloadermiddlewares.redirect.RedirectMiddleware",
            "scrapy.downloadermiddlewares.downloadtimeout.DownloadTimeoutMiddleware",
            "scrapy.downloadermiddlewares.httpcompression.HttpCompressionMiddleware"} <= set(downloader)
    assert {"scrapy.spidermiddlewares.httperror.HttpErrorMiddleware",
            "scrapy.spidermiddlewares.urllength.UrlLengthMiddleware",
            "scrapy.spidermiddlewares.referer.RefererMiddleware"} <= set(spider)


# crawl_round as the crawl process runs it, stopped where Scrapy would start: which levels do
# Scrapy's loggers then let through?
LEVELS_AT_START = """
import json, logging, sys
from scrapy.crawler import AsyncCrawlerProcess
import crawler.__main__ as main
from crawler.job import CrawlJob

job = CrawlJob.model_validate_json(sys.stdin.read())
main.setup_logging(job.log_level, False)

def start(self, *args, **kwargs):
    engine = logging.getLogger("scrapy.core.engine")
    print(json.dumps({"debug": engine.isEnabledFor(logging.DEBUG),
                      "warning": engine.isEnabledFor(logging.WARNING)}))

AsyncCrawlerProcess.start = start
main.crawl_round(job, sys.stdout)
"""


def _levels_at_start(level: str) -> dict[str, bool]:
    done = subprocess.run([sys.executable, "-c", LEVELS_AT_START], input=_job(level).model_dump_json(),
                          capture_output=True, text=True, check=True, cwd=ROOT)
    result: dict[str, bool] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_scrapys_per_request_debug_lines_are_not_made_below_the_rounds_level() -> None:
    assert _levels_at_start("WARNING") == {"debug": False, "warning": True}
    assert _levels_at_start("DEBUG") == {"debug": True, "warning": True}
