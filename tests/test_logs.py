"""Logging: stdlib records reach loguru; Scrapy's routine fetch errors are one DEBUG line (the poll
summary reports the failure), with their traceback only when tracebacks are on."""

from __future__ import annotations

import logging

import pytest
from loguru import logger

from crawler.logs import InterceptHandler


@pytest.fixture
def captured():
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m)), format="{level} {message}", level="DEBUG")
    yield lines
    logger.remove(sink)


def log_failure(handler: InterceptHandler, name: str) -> None:
    record_logger = logging.getLogger(name)
    record_logger.addHandler(handler)
    record_logger.propagate = False
    try:
        try:
            raise ConnectionError("DNS lookup failed: no results for hostname lookup: mid.ru.")
        except ConnectionError:
            record_logger.error("Error downloading <GET https://mid.ru/robots.txt>", exc_info=True)
    finally:
        record_logger.removeHandler(handler)


@pytest.mark.parametrize("name", ["scrapy.downloadermiddlewares.robotstxt", "scrapy.downloadermiddlewares.retry",
                                  "scrapy.core.scraper"])
def test_routine_fetch_errors_are_one_debug_line(captured, name):
    log_failure(InterceptHandler(), name)
    assert len(captured) == 1 and captured[0].startswith(f"DEBUG {name}: ")
    assert "Traceback" not in captured[0] and "mid.ru/robots.txt" in captured[0]


def test_tracebacks_kept_when_asked_and_other_loggers_keep_their_level(captured):
    log_failure(InterceptHandler(tracebacks=True), "scrapy.downloadermiddlewares.robotstxt")
    log_failure(InterceptHandler(), "newsmon.something")
    assert captured[0].startswith("DEBUG ") and "Traceback" in captured[0]
    assert captured[1].startswith("ERROR ") and "Traceback" in captured[1]
