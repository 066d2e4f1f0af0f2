"""Fixture HTTP server (owned by the crawler tests): a real ThreadingHTTPServer on 127.0.0.1
serving the fixture sites of tests/data/sites (their real hosts rewritten to the server),
tests/data/faults, routes published at run time, and dynamic fault endpoints; every request
is logged for tests to assert on."""

from __future__ import annotations

import gzip
import hashlib
import io
import threading
import time
import tomllib
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

DATA = Path(__file__).resolve().parents[1] / "data"
SITES = DATA / "sites"
FAULTS = DATA / "faults"
LAST_MODIFIED = formatdate(1_700_000_000, usegmt=True)
SENTINEL_TOKEN = "NEWSMON-SENTINEL-" + "7f3c9a1e"
CONTENT_TYPES = {".xml": "application/xml", ".rss": "application/rss+xml",
                 ".atom": "application/atom+xml", ".html": "text/html; charset=utf-8",
                 ".json": "application/json", ".txt": "text/plain"}
ROBOTS = b"User-agent: *\nDisallow: /private/\n"


@dataclass
class Route:
    """A response published by a test: fixed bytes with validators, or a handler function."""

    body: bytes = b""
    content_type: str = "application/xml"
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    validators: bool = True
    handler: Callable[[Handler], None] | None = None


@dataclass(frozen=True)
class Logged:
    path: str
    headers: dict[str, str]
    at: float


def rss(items: list[dict[str, str]], title: str = "Fixture feed", extra: str = "") -> bytes:
    """An RSS 2.0 document; each item a dict of element name → text (escaped by the caller)."""
    parts = [f"<item>{''.join(f'<{k}>{v}</{k}>' for k, v in item.items())}</item>" for item in items]
    return (f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>'
            f"<title>{title}</title><link>http://example.org/</link>{extra}{''.join(parts)}"
            f"</channel></rss>").encode()


class Handler(BaseHTTPRequestHandler):
    server: SiteServer
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes: no 40 ms stalls

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
        pass

    def do_GET(self) -> None:  # noqa: N802
        site = self.server.site
        site.record(self)
        parts = urlsplit(self.path)
        try:
            route = site.routes.get(self.path) or site.routes.get(parts.path)
            if route is not None:
                self.serve_route(route)
            elif parts.path == "/robots.txt":
                self.send_bytes(ROBOTS, "text/plain")
            elif parts.path.startswith("/faults/"):
                site.fault(self, parts.path.removeprefix("/faults/"), parse_qs(parts.query))
            elif (static := site.static(self.path) or site.static(parts.path)) is not None:
                self.serve_route(static)
            else:
                self.send_bytes(b"not found", "text/plain", status=404)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def serve_route(self, route: Route) -> None:
        if route.handler is not None:
            route.handler(self)
            return
        headers = dict(route.headers)
        if route.validators and route.status == 200:
            etag = '"' + hashlib.sha256(route.body).hexdigest()[:16] + '"'
            headers.setdefault("ETag", etag)
            headers.setdefault("Last-Modified", LAST_MODIFIED)
            if self.headers.get("If-None-Match") == headers["ETag"]:
                self.send_bytes(b"", None, status=304, headers=headers)
                return
        self.send_bytes(route.body, route.content_type, status=route.status, headers=headers)

    def send_bytes(self, body: bytes, content_type: str | None, *, status: int = 200,
                   headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if status != 304:
            self.wfile.write(body)


class SiteServer(ThreadingHTTPServer):
    daemon_threads = True
    site: Site


class Site:
    """The running fixture server: ``site.url(path)``, ``site.set(path, body, type)``,
    ``site.requests(path)``."""

    def __init__(self, sentinel: Path) -> None:
        self.routes: dict[str, Route] = {}
        self.log: list[Logged] = []
        self.lock = threading.Lock()
        self.sentinel = sentinel
        self.stopping = threading.Event()
        self.counters: dict[str, int] = {}
        self.server = SiteServer(("127.0.0.1", 0), Handler)
        self.server.site = self
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._sites = load_sites(self.base)

    def url(self, path: str) -> str:
        return self.base + path

    def unique(self, prefix: str = "/t") -> str:
        """A fresh path, so tests sharing the session server never collide."""
        return f"{prefix}/{uuid.uuid4().hex[:10]}"

    def set(self, path: str, body: bytes, content_type: str = "application/rss+xml", *,
            status: int = 200, headers: dict[str, str] | None = None, validators: bool = True) -> str:
        """Publish (or replace) what ``path`` serves; returns its URL."""
        self.routes[path] = Route(body, content_type, status, dict(headers or {}), validators)
        return self.url(path)

    def handle(self, path: str, handler: Callable[[Handler], None]) -> str:
        self.routes[path] = Route(handler=handler)
        return self.url(path)

    def record(self, request: Handler) -> None:
        with self.lock:
            self.log.append(Logged(request.path, {k: v for k, v in request.headers.items()},
                                   time.monotonic()))

    def requests(self, path: str | None = None) -> list[Logged]:
        with self.lock:
            return [r for r in self.log if path is None or urlsplit(r.path).path == path
                    or r.path == path]

    def static(self, path: str) -> Route | None:
        if path in self._sites:
            return self._sites[path]
        if f"/bare{path}" in self._sites:
            return self._sites[f"/bare{path}"]
        if path.startswith("/data/faults/"):
            file = FAULTS / path.removeprefix("/data/faults/")
            if file.is_file() and FAULTS in file.resolve().parents:
                return Route(file.read_bytes(), CONTENT_TYPES.get(file.suffix, "application/xml"))
        return None

    def count(self, key: str) -> int:
        with self.lock:
            self.counters[key] = self.counters.get(key, 0) + 1
            return self.counters[key]

    # -- faults --------------------------------------------------------------------------------

    def fault(self, request: Handler, name: str, query: dict[str, list[str]]) -> None:
        arg = {k: v[0] for k, v in query.items()}
        kind, _, rest = name.partition("/")
        handler = getattr(self, f"fault_{kind.replace('-', '_')}", None)
        if handler is None:
            request.send_bytes(b"no such fault", "text/plain", status=404)
            return
        handler(request, rest, arg)

    def fault_status(self, request: Handler, rest: str, arg: dict[str, str]) -> None:
        """/faults/status/<code>[?retry_after=N]: an error answer (HTML body)."""
        headers = {"Retry-After": arg["retry_after"]} if "retry_after" in arg else {}
        request.send_bytes(b"<html><body>error</body></html>", "text/html",
                           status=int(rest or 500), headers=headers)

    def fault_flaky(self, request: Handler, rest: str, arg: dict[str, str]) -> None:
        """/faults/flaky/<key>?fail=N: 503 (Retry-After: 0) N times, then a feed."""
        if self.count(f"flaky/{rest}") <= int(arg.get("fail", 1)):
            request.send_bytes(b"busy", "text/plain", status=503, headers={"Retry-After": "0"})
            return
        request.send_bytes(rss([{"title": "Flaky item", "link": f"{self.base}/flaky/{rest}/1"}]),
                           "application/rss+xml")

    def fault_slow(self, request: Handler, rest: str, arg: dict[str, str]) -> None:
        """/faults/slow?seconds=N: headers, then one byte every 0.1 s for N seconds."""
        request.send_response(200)
        request.send_header("Content-Type", "application/rss+xml")
        request.send_header("Content-Length", "1000000")
        request.end_headers()
        request.wfile.write(b'<?xml version="1.0"?><rss version="2.0"><channel>')
        deadline = time.monotonic() + float(arg.get("seconds", 30))
        while time.monotonic() < deadline and not self.stopping.is_set():
            request.wfile.write(b" ")
            request.wfile.flush()
            time.sleep(0.1)

    def fault_huge(self, request: Handler, rest: str, arg: dict[str, str]) -> None:
        """/faults/huge?size=N[&length=0]: N bytes of feed-like text (no Content-Length when
        length=0: the limit must apply while streaming)."""
        size = int(arg.get("size", 50_000_000))
        request.send_response(200)
        request.send_header("Content-Type", "application/rss+xml")
        if arg.get("length", "1") != "0":
            request.send_header("Content-Length", str(size))
        else:
            request.send_header("Connection", "close")
            request.close_connection = True
        request.end_headers()
        chunk = b"<!-- padding -->" * 4096
        sent = 0
        while sent < size and not self.stopping.is_set():
            piece = chunk[: size - sent]
            request.wfile.write(piece)
            sent += len(piece)

    def fault_gzip_bomb(self, request: Handler, rest: str, arg: dict[str, str]) -> None:
        """/faults/gzip-bomb?size=N: a small gzip body that inflates to N bytes."""
        body = gzip_bomb(int(arg.get("size", 200_000_000)))
        request.send_bytes(body, "application/rss+xml", headers={"Content-Encoding": "gzip"})

    def fault_redirect(self, request: Handler, rest: str, arg: dict[str, str]) -> None:
        """/faults/redirect?to=URL: 302 to any URL."""
        request.send_bytes(b"", "text/plain", status=302, headers={"Location": arg["to"]})

    def fault_loop(self, request: Handler, rest: str, arg: dict[str, str]) -> None:
        """/faults/loop/a ↔ /faults/loop/b: a redirect loop."""
        other = "b" if rest == "a" else "a"
        request.send_bytes(b"", "text/plain", status=302,
                           headers={"Location": f"{self.base}/faults/loop/{other}"})

    def fault_antibot(self, request: Handler, rest: str, arg: dict[str, str]) -> None:
        """/faults/antibot: a 403 Cloudflare challenge page where a feed was expected."""
        body = (b"<!DOCTYPE html><html><head><title>Just a moment...</title></head><body>"
                b"<script>window._cf_chl_opt={cType:'managed'};</script></body></html>")
        request.send_bytes(body, "text/html; charset=UTF-8", status=403,
                           headers={"Server": "cloudflare", "cf-mitigated": "challenge"})

    def fault_html_feed(self, request: Handler, rest: str, arg: dict[str, str]) -> None:
        """/faults/html-feed: an ordinary web page (200) where a feed was expected."""
        body = b"<!DOCTYPE html><html><head><title>Home</title></head><body><p>Welcome</p></body></html>"
        request.send_bytes(body, "text/html; charset=utf-8")

    def fault_html_403(self, request: Handler, rest: str, arg: dict[str, str]) -> None:
        """/faults/html-403: a 403 with an HTML page at a feed URL."""
        body = b"<!DOCTYPE html><html><head><title>Forbidden</title></head><body>No.</body></html>"
        request.send_bytes(body, "text/html; charset=utf-8", status=403)

    def fault_xxe(self, request: Handler, rest: str, arg: dict[str, str]) -> None:
        """/faults/xxe: a feed whose entities name the sentinel file and an URL on this server."""
        body = (f'<?xml version="1.0"?>\n<!DOCTYPE rss [\n'
                f'<!ENTITY xxe SYSTEM "file://{self.sentinel}">\n'
                f'<!ENTITY remote SYSTEM "{self.base}/faults/canary">\n'
                f'<!ENTITY % dtd SYSTEM "{self.base}/faults/canary">\n]>\n'
                f'<rss version="2.0"><channel><title>XXE &xxe;</title><link>{self.base}/</link>'
                f"<item><title>Item &xxe; &remote;</title><link>{self.base}/xxe/1</link>"
                f"<description>Body &xxe; &remote;</description></item></channel></rss>").encode()
        request.send_bytes(body, "application/rss+xml")

    def fault_canary(self, request: Handler, rest: str, arg: dict[str, str]) -> None:
        self.count("canary")
        request.send_bytes(SENTINEL_TOKEN.encode(), "text/plain")

    def fault_laughs(self, request: Handler, rest: str, arg: dict[str, str]) -> None:
        """/faults/laughs: billion laughs plus a quadratic blow-up entity, and one good item."""
        ents = '<!ENTITY lol "lol">' + "".join(
            f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">' for i in range(1, 10))
        big = "A" * 50_000
        body = (f'<?xml version="1.0"?>\n<!DOCTYPE rss [{ents}<!ENTITY a "{big}">]>\n'
                f'<rss version="2.0"><channel><title>Laughs</title><link>{self.base}/</link>'
                f"<item><title>Laughs &lol9;</title><link>{self.base}/laughs/1</link>"
                f"<description>{'&a;' * 2000}</description></item></channel></rss>").encode()
        request.send_bytes(body, "application/rss+xml")

    def fault_cp1251(self, request: Handler, rest: str, arg: dict[str, str]) -> None:
        """/faults/cp1251?charset=1&declaration=1: a windows-1251 feed, with or without either."""
        declaration = ' encoding="windows-1251"' if arg.get("declaration", "1") == "1" else ""
        text = (f'<?xml version="1.0"{declaration}?><rss version="2.0"><channel><title>Лента</title>'
                f"<link>{self.base}/</link><item><title>Совещание по взаимодействию и мерам доверия"
                f" в Азии провело заседание</title><link>{self.base}/cp1251/{rest or 'x'}/1</link>"
                f"<description>Новости СВМДА: министры встретились в Астане.</description></item>"
                f"</channel></rss>")
        content_type = "application/rss+xml; charset=windows-1251" if arg.get("charset", "1") == "1" \
            else "application/rss+xml"
        request.send_bytes(text.encode("cp1251"), content_type)

    def fault_lying_etag(self, request: Handler, rest: str, arg: dict[str, str]) -> None:
        """/faults/lying-etag/<key>: the same body each time, a new ETag each time, no 304."""
        n = self.count(f"lying/{rest}")
        request.send_bytes(rss([{"title": "Steady item", "link": f"{self.base}/lying/{rest}/1"}]),
                           "application/rss+xml", headers={"ETag": f'"v{n}"'})


def gzip_bomb(size: int, _cache: dict[int, bytes] = {}) -> bytes:  # noqa: B006 - a cache
    if size not in _cache:
        out = io.BytesIO()
        with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=9) as gz:
            block = b"\0" * (1 << 20)
            for _ in range(size // len(block)):
                gz.write(block)
            gz.write(b"\0" * (size % len(block)))
        _cache[size] = out.getvalue()
    return _cache[size]


def load_sites(base: str) -> dict[str, Route]:
    """Every file of tests/data/sites at ``/sites/<name><path>`` (blocked variants at
    ``/blocked/<name>/<n><path>``), with the site's real hosts rewritten to this server."""
    routes: dict[str, Route] = {}
    for manifest in sorted(SITES.glob("*/manifest.toml")):
        name = manifest.parent.name
        spec = tomllib.loads(manifest.read_text(encoding="utf-8"))
        prefix = f"{base}/sites/{name}"
        blocked = 0
        for entry in spec.get("files", []):
            body = rewrite_hosts((manifest.parent / entry["file"]).read_bytes(),
                                 spec.get("hosts", []), prefix)
            route = Route(body, entry.get("content_type", "application/xml"),
                          int(entry.get("status", 200)), dict(entry.get("headers", {})))
            if entry.get("role") == "blocked":
                blocked += 1
                routes[f"/blocked/{name}/{blocked}{entry['path']}"] = route
            else:
                routes.setdefault(f"/sites/{name}{entry['path']}", route)
                # Root-relative links of a site's pages ("/ru/…") land here.
                routes.setdefault(f"/bare{entry['path']}", route)
    return routes


def rewrite_hosts(body: bytes, hosts: list[str], prefix: str) -> bytes:
    for host in sorted(hosts, key=len, reverse=True):
        for scheme in (b"https://", b"http://"):
            body = body.replace(scheme + host.encode(), prefix.encode())
    return body


def site_manifest(name: str) -> dict[str, Any]:
    return tomllib.loads((SITES / name / "manifest.toml").read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """The fixture HTTP server, once per session."""
    sentinel = tmp_path_factory.mktemp("sentinel") / "secret.txt"
    sentinel.write_text(SENTINEL_TOKEN, encoding="utf-8")
    server = Site(sentinel)
    thread = threading.Thread(target=server.server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    yield server
    server.stopping.set()
    server.server.shutdown()
    server.server.server_close()
