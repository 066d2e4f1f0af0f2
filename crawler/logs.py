"""Logging: one loguru sink on stderr with one format, shared by the daemon and its crawl
processes (so their lines read as one stream), and stdlib logging (Scrapy, Twisted, APScheduler,
uvicorn) routed into it."""

from __future__ import annotations

import logging
import sys

from loguru import logger

# The one line format of every newsmon process: `2026-12-04 14:19:18 WARNING poll mid-ru …`.
LINE_FORMAT = "<green>{time:YYYY-MM-DD HH:mm:ss}</green> <level>{level: <7}</level> {message}"

# Scrapy's own lines about a failed fetch (robots.txt, retries, download errors): each poll's
# outcome already records the failure with its class and the poll summary logs it once, so these
# go to DEBUG (with their traceback only when tracebacks are on).
ROUTINE = ("scrapy.downloadermiddlewares.",
           "scrapy.core.scraper", "scrapy.core.downloader", "scrapy_playwright")


def add_stderr_sink(level: str, json_lines: bool, *, diagnose: bool = True) -> int:
    """Replace loguru's sinks by the one stderr sink: human lines (coloured on a terminal), or
    one JSON object per line with ``json_lines``."""
    logger.remove()
    if json_lines:
        return logger.add(sys.stderr, level=level.upper(), serialize=True, backtrace=False,
                          diagnose=diagnose)
    return logger.add(sys.stderr, level=level.upper(), colorize=sys.stderr.isatty(), format=LINE_FORMAT,
                      backtrace=False, diagnose=diagnose)


class InterceptHandler(logging.Handler):
    """Send stdlib log records to loguru, keeping their level and logger name.

    With ``tracebacks`` off (the default below DEBUG), Scrapy's routine fetch errors lose their
    traceback; they are always logged at DEBUG."""

    def __init__(self, level: int = logging.NOTSET, *, tracebacks: bool = False) -> None:
        super().__init__(level)
        self.tracebacks = tracebacks

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        exc_info = record.exc_info
        if record.name.startswith(ROUTINE) and record.levelno < logging.CRITICAL:
            level = "DEBUG"
            if not self.tracebacks:
                exc_info = None
        logger.opt(exception=exc_info).log(level, "{}: {}", record.name, record.getMessage())
