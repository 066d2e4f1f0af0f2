"""The mapping from download failures and HTTP answers to a poll's error classes
(:mod:`crawler.failures`), by the exception's type. Scrapy ends three kinds of request with a
bare IgnoreRequest: robots.txt and too many redirects are told apart by Scrapy's own fixed
messages (SCRAPY_IGNORED; tests/test_own_faults.py checks Scrapy still raises them), a body over
the size limit while decompressing by the exception's cause."""

from __future__ import annotations

from typing import TYPE_CHECKING

from scrapy.exceptions import (
    CannotResolveHostError,
    DownloadCancelledError,
    DownloadConnectionRefusedError,
    DownloadFailedError,
    DownloadTimeoutError,
    IgnoreRequest,
    ResponseDataLossError,
)
from scrapy.spidermiddlewares.httperror import HttpError
from scrapy.utils._compression import _DecompressionMaxSizeExceeded
from twisted.internet import error as tx_error
from twisted.internet.defer import CancelledError
from twisted.internet.defer import TimeoutError as TxTimeoutError
from twisted.web._newclient import ResponseNeverReceived

from crawler.errors import CrawlerError
from crawler.failures import (
    CONNECT,
    DATA_LOSS,
    DNS,
    HTTP_4XX,
    HTTP_5XX,
    REDIRECTS,
    ROBOTS,
    SSRF,
    TIMEOUT,
    TOO_LARGE,
    ErrorClass,
)

if TYPE_CHECKING:
    from scrapy.http import Request
    from twisted.python.failure import Failure

_TIMEOUTS = (DownloadTimeoutError, TxTimeoutError, tx_error.TimeoutError, tx_error.TCPTimedOutError)
_DNS = (CannotResolveHostError, tx_error.DNSLookupError)
_CONNECT = (DownloadConnectionRefusedError, tx_error.ConnectError, tx_error.ConnectionLost,
            ResponseNeverReceived, DownloadFailedError)
_MAX_MESSAGE = 300
# The messages of Scrapy's bare IgnoreRequest (RobotsTxtMiddleware, RedirectMiddleware).
SCRAPY_IGNORED: dict[str, ErrorClass] = {"Forbidden by robots.txt": ROBOTS,
                                         "max redirections reached": REDIRECTS}


def status_class(status: int) -> ErrorClass:
    """``http-4xx`` or ``http-5xx`` for an error status."""
    return HTTP_5XX if status >= 500 else HTTP_4XX


def classify_exception(exc: BaseException) -> tuple[ErrorClass, str]:
    """The error class and a short message for an exception that ended a request."""
    message = _message(exc)
    if isinstance(exc, CrawlerError):  # ours say their class (ssrf, internal)
        return exc.error_class, message
    if isinstance(exc, HttpError):
        return _http_error(exc)
    if isinstance(exc, IgnoreRequest):
        return _ignored_class(exc), message
    if isinstance(exc, _TIMEOUTS):
        return TIMEOUT, message
    if isinstance(exc, _DNS):
        return DNS, message
    if isinstance(exc, DownloadCancelledError):  # Scrapy cancels a body over DOWNLOAD_MAXSIZE
        return TOO_LARGE, message if str(exc).strip() else "the response exceeded max_response_size"
    if isinstance(exc, CancelledError):
        return TIMEOUT, message
    if isinstance(exc, ResponseDataLossError):
        return DATA_LOSS, message
    if isinstance(exc, _CONNECT):
        return CONNECT, message
    return CONNECT, message


def failed_request(failure: Failure) -> Request:
    """The request a download failure ended (Scrapy sets ``failure.request`` before it calls
    the request's errback)."""
    request: Request = failure.request  # type: ignore[attr-defined]  # set by Scrapy, unknown to Twisted's Failure
    return request


def failure_exception(failure: Failure) -> BaseException:
    """The exception a Twisted Failure holds (always one when Scrapy hands it to an errback or
    a signal)."""
    return failure.value if failure.value is not None else RuntimeError(failure.getErrorMessage())


def _http_error(exc: HttpError) -> tuple[ErrorClass, str]:
    response = exc.response
    if 300 <= response.status < 400:
        location = (response.headers.get(b"Location") or b"").decode("latin-1", "replace")
        scheme = location.split(":", 1)[0].lower() if ":" in location else "http"
        if scheme not in ("http", "https"):  # Scrapy does not follow it; we call it what it is
            return SSRF, f"refused a redirect to a non-http(s) URL: {location[:200]!r}"
        return REDIRECTS, f"HTTP {response.status} redirect not followed"
    return status_class(response.status), f"HTTP {response.status}"


def _ignored_class(exc: IgnoreRequest) -> ErrorClass:
    if isinstance(exc.__cause__, _DecompressionMaxSizeExceeded):  # HttpCompressionMiddleware
        return TOO_LARGE
    return SCRAPY_IGNORED.get(str(exc), CONNECT)


def _message(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text[:_MAX_MESSAGE]

