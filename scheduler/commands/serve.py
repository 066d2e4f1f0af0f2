"""`newsmon serve`: the HTTP API and web page."""

from __future__ import annotations

from types import FrameType

import click

from scheduler.context import AppContext, fail, pass_app


def _server_class() -> type:
    import uvicorn

    class QuietExitServer(uvicorn.Server):
        """Stops gracefully on SIGTERM/SIGINT and then exits 0 (no re-raised signal)."""

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            super().handle_exit(sig, frame)
            self._captured_signals.clear()

    return QuietExitServer


@click.command()
@click.option("--host", default=None, metavar="HOST", help="Address to listen on (default: [server] host, 127.0.0.1).")
@click.option("--port", default=None, type=click.IntRange(0, 65535), help="Port (default: [server] port, 8080).")
@click.option("--insecure", is_flag=True,
              help="Allow a non-loopback address without api_token (anyone who can reach it can read).")
@pass_app
def serve(app: AppContext, host: str | None, port: int | None, insecure: bool) -> None:
    """Serve the JSON API, the search page and /metrics.

    \b
    Examples:
      newsmon serve                      # http://127.0.0.1:8080/
      newsmon serve --host 0.0.0.0       # needs [server] api_token (or --insecure)
    """
    import uvicorn
    from loguru import logger

    from scheduler.errors import ServeError
    from scheduler.web.app import create_app
    from scheduler.web.server import check_access

    settings = app.config.server
    host = host or settings.host
    port = settings.port if port is None else port
    try:
        check_access(host, settings.api_token, insecure)
    except ServeError as exc:
        fail(str(exc), 2)
    web = create_app(app.config, app.sessions)
    config = uvicorn.Config(web, host=host, port=port, log_config=None, access_log=False,
                            server_header=False, lifespan="off")
    logger.info("serving http://{}:{}/ (token {})", host, port, "required" if settings.api_token else "off")
    _server_class()(config).run()
    logger.info("server stopped")


COMMANDS = [serve]
