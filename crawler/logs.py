"""stdlib logging (Scrapy, Twisted, APScheduler, uvicorn) routed into loguru."""

from __future__ import annotations

import logging

from loguru import logger


class InterceptHandler(logging.Handler):
    """Send stdlib log records to loguru, keeping their level and logger name."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        logger.opt(exception=record.exc_info).log(level, "{}: {}", record.name, record.getMessage())
