"""Which network addresses newsmon refuses to contact (fetch targets and alert targets alike):
pinned ranges, with no Scrapy or Twisted import so the daemon can use it too."""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Pinned explicitly: the stdlib's is_private/is_global flags changed between Python releases
# (CVE-2024-4032) and call multicast and NAT64 "global".
BLOCKED_NETWORKS: tuple[tuple[str, str], ...] = (
    ("0.0.0.0/8", "unspecified"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "CGNAT"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local (cloud metadata)"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "IETF protocol assignments"),
    ("192.0.2.0/24", "documentation"),
    ("192.88.99.0/24", "6to4 relay"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("::/96", "IPv4-compatible (deprecated)"),
    ("64:ff9b::/96", "NAT64"),
    ("64:ff9b:1::/48", "NAT64"),
    ("100::/64", "discard"),
    ("2001:db8::/32", "documentation"),
    ("fc00::/7", "unique local (ULA)"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local"),
    ("ff00::/8", "multicast"),
)
_NETWORKS = tuple((ipaddress.ip_network(cidr), why) for cidr, why in BLOCKED_NETWORKS)


def address_problem(address: str | IPAddress) -> str | None:
    """Why ``address`` must not be fetched (e.g. "loopback"), or None for a public address.

    IPv4-mapped (``::ffff:a.b.c.d``), IPv4-compatible and 6to4 IPv6 addresses are judged by
    the IPv4 address they carry.
    """
    try:
        ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    except ValueError:
        return "not an IP address"
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or (ip.sixtofour if ip.sixtofour else None)
        if embedded is not None:
            return address_problem(embedded)
        if ip.scope_id:
            return "scoped (link-local)"
    for network, why in _NETWORKS:
        if ip.version == network.version and ip in network:
            return why
    return None


def normal_host(host: str | None) -> str:
    """Lower-case host without a trailing dot or IPv6 brackets."""
    return (host or "").strip().strip("[]").rstrip(".").lower()


def url_host(url: str) -> str:
    try:
        return normal_host(urlsplit(url).hostname)
    except ValueError:
        return ""




def destination_problem(host: str | None, port: int | None = None) -> str | None:
    """None when every address ``host`` resolves to is public; else the reason to refuse.
    A name that does not resolve is left to fail on its own when contacted."""
    host = normal_host(host)
    if not host:
        return "no host"
    try:
        infos = socket.getaddrinfo(host, port or 80, type=socket.SOCK_STREAM)
    except OSError:
        return None
    for info in infos:
        address = str(info[4][0]).split("%", 1)[0]
        if problem := address_problem(address):
            return f"refused {host}: resolves to {address} ({problem})"
    return None
