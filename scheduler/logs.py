"""Logging: loguru for everything, stdlib logging (Scrapy, APScheduler, uvicorn) routed into it."""

from __future__ import annotations

import logging
import sys

from loguru import logger


class InterceptHandler(logging.Handler):
    """Send stdlib log records to loguru, keeping the caller's module and level."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        logger.opt(depth=6, exception=record.exc_info).log(level, record.getMessage())


def setup_logging(level: str = "INFO", json_lines: bool = False) -> None:
    """Human lines on stderr by default; one JSON object per line with ``json_lines``."""
    logger.remove()
    if json_lines:
        logger.add(sys.stderr, level=level.upper(), serialize=True, enqueue=False)
    else:
        logger.add(sys.stderr, level=level.upper(), colorize=sys.stderr.isatty(),
                   format="<green>{time:YYYY-MM-DD HH:mm:ss}</green> <level>{level: <7}</level> {message}")
    logging.basicConfig(handlers=[InterceptHandler()], level=logging.WARNING, force=True)
    for noisy in ("scrapy", "apscheduler", "uvicorn", "httpx", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.INFO, logging.getLevelName(level.upper())
                                              if isinstance(logging.getLevelName(level.upper()), int)
                                              else logging.INFO))
