"""The SSRF guard: a pinned table of refused ranges, URL syntax, the downloader middleware
(before any connection) and the connect-time resolver check."""

from __future__ import annotations

import asyncio

import pytest
from scrapy import Request

from crawler.errors import BlockedAddressError, SchemeError
from crawler.outcomes import classify_exception
from crawler.safety import GuardedResolver, SafetyMiddleware, address_problem, check_url_syntax
from crawler.sources import SourceSpec

REFUSED = ["127.0.0.1", "127.0.0.2", "10.0.0.1", "172.16.0.1", "192.168.1.1", "100.64.0.1",
           "169.254.169.254", "0.0.0.0", "224.0.0.1", "255.255.255.255", "::1", "::",
           "::ffff:127.0.0.1", "::ffff:10.0.0.1", "fc00::1", "fd12:3456::1", "fe80::1", "ff02::1",
           "64:ff9b::7f00:1", "2002:7f00:1::1", "198.18.0.1"]
PUBLIC = ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2a00:1450:4001::1", "2606:4700::1111"]


@pytest.mark.parametrize("address", REFUSED)
def test_non_public_addresses_are_refused(address: str) -> None:
    assert address_problem(address) is not None


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address: str) -> None:
    assert address_problem(address) is None


@pytest.mark.parametrize("url", ["file:///etc/passwd", "gopher://127.0.0.1/", "ftp://example.org/",
                                 "data:text/plain,hi", " http://example.org/",
                                 "http://127.0.0.1:8888\\@example.com/", "http:///nohost"])
def test_only_plain_http_urls(url: str) -> None:
    with pytest.raises(SchemeError):
        check_url_syntax(url)


def middleware(*sources: SourceSpec) -> SafetyMiddleware:
    return SafetyMiddleware({s.id: s.url.split("/")[2].split(":")[0] for s in sources if s.allow_private})


def run(mw: SafetyMiddleware, url: str, source: str | None = "src") -> None:
    meta = {"newsmon_source": source} if source else {}
    asyncio.run(mw.process_request(Request(url, meta=meta)))


OWN = SourceSpec(id="src", url="http://127.0.0.1:8000/feed.xml", allow_private=True)


def test_a_source_reaches_its_own_private_host_only() -> None:
    mw = middleware(OWN)
    run(mw, "http://127.0.0.1:8000/article/1")  # own host: allowed
    for url in ("http://127.0.0.2:8000/x", "http://10.0.0.1/x", "http://169.254.169.254/latest",
                "http://[::1]/", "http://2130706433/", "http://0x7f000001/", "http://localhost/",
                "http://[::ffff:127.0.0.1]/"):
        with pytest.raises(BlockedAddressError) as refused:
            run(mw, url)
        assert classify_exception(refused.value)[0] == "ssrf"


def test_other_sources_get_nothing_from_an_allowance() -> None:
    mw = middleware(OWN)
    with pytest.raises(BlockedAddressError):
        run(mw, "http://127.0.0.1:8000/feed.xml", source="other")
    run(mw, "http://127.0.0.1:8000/robots.txt", source=None)  # robots.txt of an allowed host


def test_without_allowance_loopback_is_refused() -> None:
    with pytest.raises(BlockedAddressError):
        run(middleware(), "http://127.0.0.1:8000/feed.xml")


def test_non_http_redirect_targets_are_refused_by_the_middleware() -> None:
    with pytest.raises(SchemeError):
        run(middleware(OWN), "file:///etc/passwd")


def test_connect_time_resolver_refuses_rebinding() -> None:
    resolver = GuardedResolver.__new__(GuardedResolver)
    resolver.allowed_hosts = frozenset({"feeds.local"})
    assert resolver.checked("127.0.0.1", "feeds.local") == "127.0.0.1"
    assert resolver.checked("93.184.216.34", "example.org") == "93.184.216.34"
    with pytest.raises(BlockedAddressError):
        resolver.checked("127.0.0.1", "rebind.example.org")
