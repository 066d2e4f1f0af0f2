"""``render = "browser"``: listing pages that need JavaScript, fetched by Debian's Chromium
through scrapy-playwright, then handed to the normal parsers.

Only the listing pages (the document and its further pages) of ``html``/``telegram`` sources
with ``render = "browser"`` are rendered; their article pages use the normal downloader.
Nothing here imports Playwright at module level, and a job without a browser source gets no
Playwright settings at all, so ordinary rounds never start a browser.

Safety: Scrapy's SafetyMiddleware checks the page's own URL as for any request. Chromium then
follows redirects and loads sub-resources on its own, which Playwright's request routing does
not see reliably (a redirect hop is never routed), so every browser context talks to the
network only through a :class:`GuardProxy` on 127.0.0.1: each connection Chromium opens
(redirect hops, scripts, XHR, WebSockets, HTTPS tunnels) is checked against the addresses the
proxy itself resolves and then connects to, with the same rules as fetch targets
(:mod:`crawler.addresses`; ``allow_private`` only for the source's own host). The route hook
:func:`abort_request` additionally drops images, fonts and media, and any non-http(s) URL.
"""

from __future__ import annotations

import asyncio
import os
import socket
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from loguru import logger
from scrapy import signals
from scrapy.exceptions import (
    CannotResolveHostError,
    DownloadConnectionRefusedError,
    DownloadTimeoutError,
)

from crawler.addresses import normal_host
from crawler.errors import (
    BlockedAddressError,
    BrowserUnavailableError,
    RefusedRequestError,
    RenderedTooLargeError,
)
from crawler.failures import CONNECT, DNS, TIMEOUT, ErrorClass
from crawler.safety import check_addresses, literal_address

if TYPE_CHECKING:
    from scrapy import Request
    from scrapy.crawler import Crawler
    from scrapy.http import Response

    from crawler.job import CrawlJob
    from crawler.sources import SourceSpec

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ("--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync")
PLAYWRIGHT_HANDLER = "scrapy_playwright.handler.ScrapyPlaywrightDownloadHandler"
RENDERED_ROLES = frozenset({"document", "page"})  # article pages use the normal downloader
ABORTED_RESOURCES = frozenset({"image", "media", "font"})
SETTLE_SECONDS = 5.0  # at most this long waiting for the network to go quiet after DOMContentLoaded
PAGES_PER_CONTEXT = 4
RENDER_MIDDLEWARE = "crawler.rendering.RenderMiddleware"
RENDER_MIDDLEWARE_ORDER = 60  # right after SafetyMiddleware (50): the page's URL is checked first
REFUSED_HEADER = "X-Newsmon-Refused"  # on the proxy's answer when it refused a destination
FAILED_HEADER = "X-Newsmon-Proxy-Error"  # on its answer when it could not reach one: "dns: …"
_MAX_HEAD = 64 * 1024
_HOP_HEADERS = frozenset({"proxy-connection", "proxy-authorization", "connection", "keep-alive"})


def rendered(request_or_response: Request | Response) -> bool:
    return bool(request_or_response.meta.get("playwright"))


def browser_available(path: str = CHROMIUM) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def has_browser_sources(job: CrawlJob) -> bool:
    return any(s.renders for s in job.sources)


def browser_settings(job: CrawlJob) -> dict[str, Any]:
    """scrapy-playwright's settings for a job with browser sources (none without them, or
    without Chromium: RenderMiddleware then fails those sources with a clear message)."""
    if not has_browser_sources(job) or not browser_available():
        return {}
    timeout_ms = float(job.crawl.timeout) * 1000
    return {
        "DOWNLOAD_HANDLERS": {"http": PLAYWRIGHT_HANDLER, "https": PLAYWRIGHT_HANDLER},
        "PLAYWRIGHT_BROWSER_TYPE": "chromium",
        "PLAYWRIGHT_LAUNCH_OPTIONS": {"executable_path": CHROMIUM, "headless": True,
                                      "args": list(CHROMIUM_ARGS)},
        "PLAYWRIGHT_DEFAULT_NAVIGATION_TIMEOUT": timeout_ms,
        "PLAYWRIGHT_DOWNLOAD_TIMEOUT": int(timeout_ms),
        "PLAYWRIGHT_MAX_PAGES_PER_CONTEXT": PAGES_PER_CONTEXT,
        "PLAYWRIGHT_ABORT_REQUEST": "crawler.rendering.abort_request",
    }


def render_meta(spec: SourceSpec, role: str) -> dict[str, Any]:
    """Request meta sending a listing page of a browser source through Playwright."""
    if not spec.renders or role not in RENDERED_ROLES:
        return {}
    from scrapy_playwright.page import PageMethod  # no Playwright import

    return {"playwright": True,
            "playwright_page_goto_kwargs": {"wait_until": "domcontentloaded"},
            "playwright_page_methods": [PageMethod(settle, SETTLE_SECONDS)]}


def parsing_spec(spec: SourceSpec, response: Response) -> SourceSpec:
    """The spec to parse ``response`` with: a rendered page is UTF-8 text already, so a
    configured ``encoding`` (meant for the server's bytes) no longer applies."""
    if rendered(response) and spec.encoding:
        return spec.model_copy(update={"encoding": None})
    return spec


async def settle(page: Any, seconds: float) -> None:
    """Wait (at most ``seconds``) for the page's network to go quiet, so scripts that insert
    content after loading have run; a page that never goes quiet is taken as it is then."""
    from playwright.async_api import TimeoutError as PlaywrightTimeoutError

    try:
        await page.wait_for_load_state("networkidle", timeout=seconds * 1000)
    except PlaywrightTimeoutError:
        pass


def abort_request(request: Any) -> bool:
    """PLAYWRIGHT_ABORT_REQUEST: no images, fonts or media (they cost time and parse nothing),
    and nothing but http(s). Hosts and addresses are checked by the GuardProxy."""
    if request.resource_type in ABORTED_RESOURCES:
        return True
    return urlsplit(request.url).scheme.lower() not in ("http", "https")


class RenderMiddleware:
    """Downloader middleware for rendered requests: puts each in a browser context whose traffic
    goes through a GuardProxy, refuses them when Chromium is missing, and turns the browser's
    answers into what the spider expects (UTF-8 HTML, our error classes)."""

    def __init__(self, crawler: Crawler) -> None:
        settings = crawler.settings
        self.private_hosts: dict[str, str] = dict(settings.getdict("NEWSMON_PRIVATE_HOSTS"))
        self.available = settings.getdict("DOWNLOAD_HANDLERS").get("http") == PLAYWRIGHT_HANDLER
        self.max_size = settings.getint("DOWNLOAD_MAXSIZE")
        self.timeout = settings.getfloat("DOWNLOAD_TIMEOUT", 30.0)
        self.proxies: dict[str | None, GuardProxy] = {}
        self.lock = asyncio.Lock()
        crawler.signals.connect(self.close, signal=signals.spider_closed)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> RenderMiddleware:
        return cls(crawler)

    async def process_request(self, request: Request) -> None:
        if not rendered(request):
            return None
        if not self.available:
            raise BrowserUnavailableError(
                f'render = "browser" needs Chromium at {CHROMIUM}, which is missing '
                f"(install Debian's chromium package)")
        allowed = self.private_hosts.get(request.meta.get("newsmon_source", ""))
        proxy = await self.proxy_for(allowed)
        request.meta["playwright_context"] = proxy.context_name
        request.meta["playwright_context_kwargs"] = {
            "proxy": {"server": f"http://127.0.0.1:{proxy.port}"},
            "service_workers": "block", "accept_downloads": False}
        return None

    async def proxy_for(self, allowed_host: str | None) -> GuardProxy:
        async with self.lock:
            if allowed_host not in self.proxies:
                proxy = GuardProxy(allowed_host, self.timeout)
                await proxy.start()
                self.proxies[allowed_host] = proxy
            return self.proxies[allowed_host]

    def process_response(self, request: Request, response: Response) -> Response:
        if not rendered(request):
            return response
        raise_proxy_answer(response)
        text = response.text if hasattr(response, "text") else response.body.decode("utf-8", "replace")
        body = text.encode("utf-8")
        if self.max_size and len(body) > self.max_size:
            raise RenderedTooLargeError(f"the rendered page is larger than max_response_size "
                                        f"({len(body)} > {self.max_size} bytes)")
        headers = response.headers.copy()
        headers[b"Content-Type"] = b"text/html; charset=utf-8"
        return response.replace(body=body, headers=headers, encoding="utf-8")

    def process_exception(self, request: Request, exception: Exception) -> None:
        if not rendered(request):
            return None
        from playwright.async_api import TimeoutError as PlaywrightTimeoutError

        if isinstance(exception, PlaywrightTimeoutError):
            raise DownloadTimeoutError(f"the browser timed out: {str(exception).splitlines()[0]}")
        return None

    def close(self) -> None:
        for proxy in self.proxies.values():
            proxy.close()


_PROXY_FAILURES: dict[str, type[Exception]] = {
    DNS: CannotResolveHostError, TIMEOUT: DownloadTimeoutError, CONNECT: DownloadConnectionRefusedError}


def raise_proxy_answer(response: Response) -> None:
    """A page whose final answer came from the GuardProxy ends like a normal download would:
    BlockedAddressError (class ``ssrf``), or the DNS/connect/timeout error it met."""
    refused = response.headers.get(REFUSED_HEADER)
    if refused:
        raise BlockedAddressError(refused.decode("utf-8", "replace"))
    failed = response.headers.get(FAILED_HEADER)
    if failed:
        kind, _, message = failed.decode("utf-8", "replace").partition(": ")
        raise _PROXY_FAILURES.get(kind, DownloadConnectionRefusedError)(message)


class GuardProxy:
    """A forward HTTP proxy on 127.0.0.1 that a browser context's traffic goes through. Every
    connection is checked against the addresses its host resolves to (``allowed_host`` may be
    private: an ``allow_private`` source's own host) and made to the address that was checked,
    so redirect hops and DNS rebinding cannot reach a refused address."""

    def __init__(self, allowed_host: str | None, timeout: float) -> None:
        self.allowed_host = allowed_host
        self.timeout = timeout
        self.port = 0
        self.refused: list[str] = []
        self._server: asyncio.Server | None = None

    @property
    def context_name(self) -> str:
        return "newsmon" if self.allowed_host is None else f"newsmon-private-{self.allowed_host}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self.handle, "127.0.0.1", 0, limit=_MAX_HEAD)
        self.port = self._server.sockets[0].getsockname()[1]

    def close(self) -> None:
        if self._server is not None:
            self._server.close()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._serve(reader, writer)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError,
                ValueError):
            pass
        finally:
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.timeout)
        method, target, version = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
        tunnel = method.upper() == "CONNECT"
        host, port = split_target(target, tunnel)
        try:
            address = await self.destination(host, port)
        except RefusedRequestError as exc:
            self.refuse(writer, str(exc))
            return
        except OSError as exc:
            self.fail(writer, DNS, f"cannot resolve {host}: {exc}")
            return
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection(address, port), self.timeout)
        except TimeoutError:
            self.fail(writer, TIMEOUT, f"connecting to {host}:{port} timed out")
            return
        except OSError as exc:
            self.fail(writer, CONNECT, f"cannot connect to {host}:{port}: {exc}")
            return
        if tunnel:
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        else:
            up_writer.write(origin_form(head, method, target, version))
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def destination(self, host: str, port: int) -> str:
        """The address to connect to for ``host``; RefusedRequestError when it is not allowed."""
        literal = literal_address(host)
        if literal is not None:
            addresses = [str(literal)]
        else:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
            addresses = [str(info[4][0]) for info in infos]
        if host != self.allowed_host:
            check_addresses(host, addresses)
        if not addresses:
            raise OSError("no address")
        return addresses[0]

    def refuse(self, writer: asyncio.StreamWriter, reason: str) -> None:
        if reason not in self.refused:
            logger.warning("render: refused a browser request: {}", reason)
        self.refused.append(reason)
        reply(writer, 403, reason, {REFUSED_HEADER: one_line(reason)})

    def fail(self, writer: asyncio.StreamWriter, kind: ErrorClass, message: str) -> None:
        reply(writer, 502, message, {FAILED_HEADER: one_line(f"{kind}: {message}")})


def one_line(text: str) -> str:
    return " ".join(text.split())[:500]


def split_target(target: str, tunnel: bool) -> tuple[str, int]:
    """Host and port of a proxy request's target (``host:port`` for CONNECT, else a URL)."""
    parts = urlsplit(f"//{target}" if tunnel else target)
    if not tunnel and parts.scheme.lower() != "http":
        raise ValueError(f"not an http URL: {target[:200]!r}")
    host = normal_host(parts.hostname)
    if not host:
        raise ValueError("no host")
    return host, parts.port or (443 if tunnel else 80)


def origin_form(head: bytes, method: str, target: str, version: str) -> bytes:
    """The request head for the origin server: origin-form target, no proxy or keep-alive
    headers, and ``Connection: close`` (one request per proxied connection, so every request
    is checked)."""
    parts = urlsplit(target)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    lines = [f"{method} {path} {version}".encode("latin-1")]
    for line in head.split(b"\r\n")[1:]:
        name = line.split(b":", 1)[0].strip().lower().decode("latin-1")
        if line and name not in _HOP_HEADERS:
            lines.append(line)
    lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n"


def reply(writer: asyncio.StreamWriter, status: int, message: str,
          headers: dict[str, str] | None = None) -> None:
    body = message.encode("utf-8", "replace")[:1000]
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    writer.write(f"HTTP/1.1 {status} {'Forbidden' if status == 403 else 'Bad Gateway'}\r\n"
                 f"Content-Type: text/plain; charset=utf-8\r\nContent-Length: {len(body)}\r\n"
                 f"Connection: close\r\n{extra}\r\n".encode("latin-1", "replace") + body)


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()
