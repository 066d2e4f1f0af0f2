"""Serving the web page and API from a process that does other work (`newsmon run`): the
socket is bound up front, so a port in use is one clear error at start, and uvicorn runs on a
thread of its own until stopped."""

from __future__ import annotations

import errno
import ipaddress
import socket
import threading
from typing import TYPE_CHECKING, Any

from scheduler.errors import ServeError

if TYPE_CHECKING:
    import uvicorn
    from sqlalchemy.orm import Session, sessionmaker

    from scheduler.config import AppConfig

LOOPBACK_NAMES = {"localhost", "ip6-localhost"}


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_access(host: str, api_token: str | None, insecure: bool = False) -> None:
    """A non-loopback address needs ``[server] api_token`` (or an explicit ``insecure``)."""
    if not is_loopback(host) and not api_token and not insecure:
        raise ServeError(f"refusing to listen on {host} without [server] api_token; "
                         "set a token or pass --insecure")


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port; a port in use or an address that is not ours raises
    ServeError with what to do."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise ServeError(f"cannot listen on {host}: {exc.strerror} ([server] host)") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ServeError(f"cannot serve the web page on {host}:{port}: the port is in use (another "
                             "newsmon, or another program); set [server] port, or start with --no-serve"
                             ) from None
        raise ServeError(f"cannot serve the web page on {host}:{port}: {exc.strerror} "
                         "([server] host and port)") from None
    sock.set_inheritable(False)
    return sock


def page_url(sock: socket.socket, host: str) -> str:
    port = sock.getsockname()[1]
    shown = f"[{host.strip('[]')}]" if ":" in host else host
    return f"http://{shown}:{port}/"


class LazyApp:
    """The web application, built (FastAPI imported) on the first request: a daemon whose page
    nobody opens does not carry its ~11 MiB."""

    def __init__(self, config: AppConfig, sessions: sessionmaker[Session]) -> None:
        self.config, self.sessions = config, sessions
        self.app: Any = None
        self.lock = threading.Lock()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self.app is None:
            with self.lock:
                if self.app is None:
                    from scheduler.web.app import create_app

                    self.app = create_app(self.config, self.sessions)
        await self.app(scope, receive, send)


class BackgroundServer:
    """uvicorn serving ``create_app(config, sessions)`` on an already bound socket, on a thread."""

    def __init__(self, config: AppConfig, sessions: sessionmaker[Session], sock: socket.socket) -> None:
        self.sock = sock
        self.config, self.sessions = config, sessions
        self.server: uvicorn.Server | None = None
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        import uvicorn

        settings = uvicorn.Config(LazyApp(self.config, self.sessions), log_config=None, access_log=False,
                                  server_header=False,
                                  lifespan="off", loop="asyncio", ws="none")
        self.server = uvicorn.Server(settings)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       name="web", daemon=True)
        self.thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        if self.server is not None and self.thread is not None:
            self.server.should_exit = True
            self.thread.join(timeout)
        self.sock.close()
