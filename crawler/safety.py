"""SSRF guard: only http(s), and never a loopback, private, link-local, CGNAT, multicast,
reserved or metadata address, checked on the resolved address of every request (redirects and
article links included) and again at connect time, except a source's own host when the source
sets ``allow_private``."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from scrapy.resolver import CachingThreadedResolver

from crawler.addresses import IPAddress, address_problem, normal_host, url_host
from crawler.errors import BlockedAddressError, SchemeError

if TYPE_CHECKING:
    from scrapy import Request
    from scrapy.crawler import Crawler
    from twisted.internet.base import ReactorBase
    from twisted.internet.defer import Deferred

    from crawler.sources import SourceSpec

HTTP_SCHEMES = frozenset({"http", "https"})


def check_url_syntax(url: str) -> str:
    """The URL's host; raises SchemeError for anything but a plain http(s) URL."""
    if "\\" in url or url != url.strip():
        raise SchemeError(f"refused {url[:200]!r}: ambiguous URL")
    try:
        parts = urlsplit(url)
        host = normal_host(parts.hostname)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise SchemeError(f"refused {url[:200]!r}: not a valid URL") from None
    if parts.scheme.lower() not in HTTP_SCHEMES:
        raise SchemeError(f"refused {url[:200]!r}: only http(s) URLs are fetched")
    if not host:
        raise SchemeError(f"refused {url[:200]!r}: no host")
    return host


def literal_address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def check_addresses(host: str, addresses: Iterable[str]) -> None:
    """Raise BlockedAddressError when any address ``host`` resolves to is not public."""
    for address in addresses:
        problem = address_problem(address.split("%", 1)[0])
        if problem:
            raise BlockedAddressError(f"refused {host}: resolves to {address} ({problem})")


def private_hosts(sources: Iterable[SourceSpec]) -> dict[str, str]:
    """source id → its own host, for the sources that set ``allow_private``."""
    return {s.id: url_host(s.url) for s in sources if s.allow_private}


class SafetyMiddleware:
    """Downloader middleware: refuses non-http(s) URLs and non-public destinations before any
    connection is made. Runs for every request, so redirects and article links are checked."""

    def __init__(self, allowed: dict[str, str]) -> None:
        self.allowed = allowed  # source id -> host it may reach on a private address
        self.any_allowed = frozenset(allowed.values())
        self._resolved: dict[str, list[str]] = {}

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> SafetyMiddleware:
        return cls(dict(crawler.settings.getdict("NEWSMON_PRIVATE_HOSTS")))

    def allows_private(self, request: Request, host: str) -> bool:
        source_id = request.meta.get("newsmon_source")
        if source_id is None:  # e.g. robots.txt: allowed for any allow_private source's host
            return host in self.any_allowed
        return self.allowed.get(source_id) == host

    async def process_request(self, request: Request) -> None:
        host = check_url_syntax(request.url)
        if self.allows_private(request, host):
            return None
        literal = literal_address(host)
        if literal is not None:
            check_addresses(host, [str(literal)])
            return None
        check_addresses(host, await self.resolve(host))
        return None

    async def resolve(self, host: str) -> list[str]:
        if host not in self._resolved:
            loop = asyncio.get_running_loop()
            try:
                infos = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
            except OSError:
                return []  # let the download fail with a DNS error of its own
            self._resolved[host] = [str(info[4][0]) for info in infos]
        return self._resolved[host]


class GuardedResolver(CachingThreadedResolver):
    """Connect-time check (DNS rebinding): the reactor's resolver refuses to hand out a
    non-public address except for the hosts of ``allow_private`` sources."""

    def __init__(self, reactor: ReactorBase, cache_size: int, timeout: float,
                 allowed_hosts: Iterable[str] = ()) -> None:
        super().__init__(reactor, cache_size, timeout)
        self.allowed_hosts = frozenset(allowed_hosts)

    @classmethod
    def from_crawler(cls, crawler: Crawler, reactor: ReactorBase) -> GuardedResolver:
        settings = crawler.settings
        cache = settings.getint("DNSCACHE_SIZE") if settings.getbool("DNSCACHE_ENABLED") else 0
        hosts = settings.getdict("NEWSMON_PRIVATE_HOSTS").values()
        return cls(reactor, cache, settings.getfloat("DNS_TIMEOUT"), hosts)

    def getHostByName(self, name: str, timeout: Any = ()) -> Deferred[str]:  # noqa: N802
        d = super().getHostByName(name, timeout)
        d.addCallback(self.checked, name)
        return d

    def checked(self, address: str, name: str) -> str:
        host = normal_host(name)
        if host not in self.allowed_hosts:
            check_addresses(host, [address])
        return address
