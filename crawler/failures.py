"""The error classes of a poll: the one list, scrapy-free (the daemon imports it without the
crawler's dependencies). :mod:`crawler.outcomes` maps download failures onto them."""

from __future__ import annotations

from typing import Final, Literal, get_args

ErrorClass = Literal["timeout", "dns", "connect", "http-4xx", "http-5xx", "too-large", "redirects",
                     "parse", "blocked", "empty", "robots", "ssrf", "data-loss",
                     "internal", "extract", "storage", "crash"]
"""The class of a failed poll (``newsmon status``, the fetch log, a round's events)."""

TIMEOUT: Final = "timeout"
DNS: Final = "dns"
CONNECT: Final = "connect"
HTTP_4XX: Final = "http-4xx"
HTTP_5XX: Final = "http-5xx"
TOO_LARGE: Final = "too-large"
REDIRECTS: Final = "redirects"
PARSE: Final = "parse"
BLOCKED: Final = "blocked"
EMPTY: Final = "empty"
ROBOTS: Final = "robots"
SSRF: Final = "ssrf"
DATA_LOSS: Final = "data-loss"
# newsmon's own failures, never a routine outcome of the site:
INTERNAL: Final = "internal"  # an exception of ours while handling a response (a bug, a broken install)
EXTRACT: Final = "extract"  # article extraction raised; the items kept their listing text
STORAGE: Final = "storage"  # the database refused to record the poll
CRASH: Final = "crash"  # the crawl process died before reporting the source
ERROR_CLASSES: Final[tuple[ErrorClass, ...]] = get_args(ErrorClass)
OWN_FAULTS: Final[frozenset[ErrorClass]] = frozenset({INTERNAL, EXTRACT, STORAGE, CRASH})
_MAX_MESSAGE = 300


def fault_message(exc: BaseException) -> str:
    """``Type: message`` of an exception of ours, on one line."""
    return one_line(f"{type(exc).__name__}: {exc}")[:_MAX_MESSAGE]


def one_line(message: str) -> str:
    """``message`` with its line breaks and runs of whitespace as single spaces."""
    return " ".join(message.split())


def round_failure_class(exc: BaseException | None) -> ErrorClass:
    """The class of a source that a crawl round left unpolled: ``timeout`` when the round ran
    out of time (or ended without a reason), ``crash`` when it raised."""
    if exc is None or isinstance(exc, TimeoutError):
        return TIMEOUT
    return CRASH
