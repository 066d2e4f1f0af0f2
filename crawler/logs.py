"""stdlib logging (Scrapy, Twisted, APScheduler, uvicorn) routed into loguru."""

from __future__ import annotations

import logging

from loguru import logger

# Network failures of these loggers are routine: each poll's outcome already records them with
# a class, so they are logged as one warning line, without a traceback.
ROUTINE = ("scrapy.downloadermiddlewares.robotstxt", "scrapy.core.scraper", "scrapy.core.downloader",
           "scrapy_playwright")


class InterceptHandler(logging.Handler):
    """Send stdlib log records to loguru, keeping their level and logger name.

    With ``tracebacks`` off (the default below DEBUG), routine fetch errors lose their
    traceback and become warnings."""

    def __init__(self, level: int = logging.NOTSET, *, tracebacks: bool = False) -> None:
        super().__init__(level)
        self.tracebacks = tracebacks

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        exc_info = record.exc_info
        if not self.tracebacks and record.name.startswith(ROUTINE) and record.levelno < logging.CRITICAL:
            exc_info, level = None, "WARNING"
        logger.opt(exception=exc_info).log(level, "{}: {}", record.name, record.getMessage())
