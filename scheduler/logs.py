"""Logging: loguru for everything, stdlib logging (Scrapy, APScheduler, uvicorn) routed into it."""

from __future__ import annotations

import logging
import sys

from loguru import logger

from crawler.logs import InterceptHandler


def setup_logging(level: str = "INFO", json_lines: bool = False) -> None:
    """Human lines on stderr by default; one JSON object per line with ``json_lines``."""
    logger.remove()
    if json_lines:
        logger.add(sys.stderr, level=level.upper(), serialize=True, enqueue=False)
    else:
        logger.add(sys.stderr, level=level.upper(), colorize=sys.stderr.isatty(),
                   format="<green>{time:YYYY-MM-DD HH:mm:ss}</green> <level>{level: <7}</level> {message}")
    logging.basicConfig(handlers=[InterceptHandler()], level=logging.WARNING, force=True)
    threshold = max(logging.INFO, logging.getLevelNamesMapping().get(level.upper(), logging.INFO))
    for noisy in ("scrapy", "apscheduler", "uvicorn", "httpx", "asyncio"):
        logging.getLogger(noisy).setLevel(threshold)
