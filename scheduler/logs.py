"""Logging: loguru for everything, stdlib logging (Scrapy, APScheduler, uvicorn) routed into it.
The crawl processes log through the same sink set-up (crawler.logs), so the daemon's stderr is
one stream in one format."""

from __future__ import annotations

import logging

from crawler.logs import InterceptHandler, add_stderr_sink


def setup_logging(level: str = "INFO", json_lines: bool = False) -> None:
    """Human lines on stderr by default; one JSON object per line with ``json_lines``."""
    add_stderr_sink(level, json_lines)
    logging.basicConfig(handlers=[InterceptHandler(tracebacks=level.upper() in ("DEBUG", "TRACE"))],
                        level=logging.WARNING, force=True)
    threshold = max(logging.INFO, logging.getLevelNamesMapping().get(level.upper(), logging.INFO))
    for noisy in ("scrapy", "apscheduler", "uvicorn", "httpx", "asyncio"):
        logging.getLogger(noisy).setLevel(threshold)
