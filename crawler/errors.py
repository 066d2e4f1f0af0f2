"""Named errors of the crawler, one small hierarchy.

Our exception hierarchy (each says the error class a poll it ends gets)::

    CrawlerError                    internal, unless it says otherwise
    ├── BrowserUnavailableError     a browser source in a round that cannot start Chromium
    │                               (internal; also a Scrapy IgnoreRequest)
    ├── RenderedTooLargeError       a rendered page over max_response_size (too-large; also
    │                               an IgnoreRequest)
    ├── RefusedRequestError         a request we refuse to send (ssrf; also an IgnoreRequest)
    │   ├── BlockedAddressError     its host is or resolves to a private/reserved address
    │   └── SchemeError             its URL is not http(s)
    └── BackfillError               a backfill that cannot start (never a poll's error)

    OpmlError (crawler.opml)        a file that is not an OPML subscription list: a
                                    ValueError, kept beside its parser so that reading OPML
                                    does not import Scrapy (this module does)

Routine outcomes (HTTP errors, timeouts, parse problems) are not exceptions of ours: they
are classified into the error classes of :mod:`crawler.failures` (the one list) by
:mod:`crawler.outcomes` and recorded as data. A job on stdin that is not valid is pydantic's
ValidationError (``python -m crawler`` exits 2).
"""

from __future__ import annotations

from typing import ClassVar

from scrapy.exceptions import IgnoreRequest

from crawler.failures import INTERNAL, SSRF, TOO_LARGE, ErrorClass


class CrawlerError(Exception):
    """Base class of the crawler's own errors; ``error_class`` is the class a poll ended by
    one of them gets (:mod:`crawler.failures`)."""

    error_class: ClassVar[ErrorClass] = INTERNAL


class BrowserUnavailableError(CrawlerError, IgnoreRequest):
    """A ``render = "browser"`` source in a round that cannot start Chromium (a broken install:
    the source's error of class ``internal``)."""


class RenderedTooLargeError(CrawlerError, IgnoreRequest):
    """The rendered page is larger than max_response_size."""

    error_class = TOO_LARGE


class RefusedRequestError(CrawlerError, IgnoreRequest):
    """Raised by the safety middleware for a request that must never be sent."""

    error_class = SSRF


class BlockedAddressError(RefusedRequestError):
    """The request's host is, or resolves to, a loopback/private/reserved address."""


class SchemeError(RefusedRequestError):
    """The request's URL is not http(s) (e.g. a redirect to file:// or gopher://)."""


class BackfillError(CrawlerError):
    """A backfill that cannot start (a feed without a sitemap, a source being polled)."""
