"""Named errors of the scheduler (CLI, daemon, runner), one small hierarchy.

Our exception hierarchy::

    SchedulerError
    ├── ConfigError          a configuration that cannot be used: names the file, the key and
    │                        what is wrong (the CLI exits 2)
    ├── UnknownSourceError   a source id that is not configured (also a KeyError)
    └── ServeError           the web page cannot be served as configured (address in use, not
                             allowed, unknown host)

The web API's BadParameter (``scheduler.web.params``, a ValueError) never leaves it: it is
answered with 422 and its reason. The storage package's own (``storage.errors``) and the
crawler's (``crawler.errors``) reach the CLI as they are.
"""

from __future__ import annotations


class SchedulerError(Exception):
    """Base of every error the scheduler package raises on purpose."""


class ConfigError(SchedulerError):
    """A configuration that cannot be used: names the file, the key and what is wrong."""

    def __init__(self, path: str, key: str, message: str, line: int | None = None) -> None:
        self.path, self.key, self.message, self.line = path, key, message, line
        where = f"{path}:{line}" if line else path
        super().__init__(f"{where}: {key}: {message}" if key else f"{where}: {message}")


class UnknownSourceError(SchedulerError, KeyError):
    """Raised by crawl_round for a source id that is not configured."""


class ServeError(SchedulerError):
    """The web page cannot be served as configured (address in use, not allowed, unknown host)."""
