"""Named errors of the crawler, one small hierarchy.

Our exception hierarchy::

    CrawlerError                 (error class internal unless it says otherwise)
    ├── JobError                 the crawl job on stdin is not valid (python -m crawler exits 2)
    └── RefusedRequestError      a request we refuse to send (also a Scrapy IgnoreRequest)
        ├── BlockedAddressError  its host is or resolves to a private/reserved address (ssrf)
        └── SchemeError          its URL is not http(s) (ssrf)

Routine outcomes (HTTP errors, timeouts, parse problems) are not exceptions of ours: they
are classified into error classes by :mod:`crawler.outcomes` and recorded as data.
"""

from __future__ import annotations

from scrapy.exceptions import IgnoreRequest

from crawler.failures import INTERNAL, SSRF


class CrawlerError(Exception):
    """Base class of the crawler's own errors; ``error_class`` is the class a poll ended by
    one of them gets (:mod:`crawler.failures`)."""

    error_class = INTERNAL


class JobError(CrawlerError):
    """Raised by ``python -m crawler`` when the job read from stdin is not a valid CrawlJob."""


class RefusedRequestError(CrawlerError, IgnoreRequest):
    """Raised by the safety middleware for a request that must never be sent."""

    error_class = SSRF


class BlockedAddressError(RefusedRequestError):
    """The request's host is, or resolves to, a loopback/private/reserved address."""


class SchemeError(RefusedRequestError):
    """The request's URL is not http(s) (e.g. a redirect to file:// or gopher://)."""
