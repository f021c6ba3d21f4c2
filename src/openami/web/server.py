"""Serving the platform over HTTP: the API (and, in later releases, the console and portal).

``build_web_app`` adapts a running :class:`~openami.app.Platform` to the API's context;
``serve_platform`` is `openami serve`: the platform plus uvicorn in one event loop, shut down in order
on SIGINT/SIGTERM so everything accepted is written before exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Iterator
from datetime import timedelta

import uvicorn
from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from jinja2 import Environment, PackageLoader, select_autoescape

from openami import __version__
from openami.api.app import create_api
from openami.api.deps import ApiContext
from openami.app import Platform
from openami.config import Settings
from openami.hes.http_push import UplinkPushService
from openami.security.service import AuthService
from openami.transports.ports import probe_port

log = logging.getLogger(__name__)


def build_web_app(platform: Platform) -> FastAPI:
    context = ApiContext(
        engine=platform.engine,
        settings=platform.settings,
        auth_service=AuthService(
            platform.engine, token_ttl=timedelta(hours=platform.settings.token_ttl_hours)
        ),
        metrics_text=platform.metrics.exposition,
        health=platform.health,
        commands=platform.commands,
        vault=platform.vault,
        uplinks=UplinkPushService(platform.engine, platform.bus),
        gateway_link=platform.gateway_link,
    )
    app = create_api(context)
    app.add_api_route("/", _landing_page(platform), methods=["GET"], include_in_schema=False)
    return app


_templates = Environment(loader=PackageLoader("openami.web"), autoescape=select_autoescape())


def _landing_page(platform: Platform) -> Callable[[], HTMLResponse]:
    """The page a browser gets at the server's root: status and where to go next."""

    def landing() -> HTMLResponse:
        health = platform.health()
        parts = [(k, v) for k, v in health.items() if k not in ("status", "version")]
        page = _templates.get_template("index.html").render(version=__version__, health=health, parts=parts)
        return HTMLResponse(page)

    return landing


class _Server(uvicorn.Server):
    """uvicorn without its own signal capture.

    uvicorn re-raises a captured SIGTERM after it stops serving, which kills the process before the
    platform's shutdown (flush of accepted readings) can run. We install our own handlers instead
    (:func:`stop_on_signals`), and the caller stops the platform in order once serving returns.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def stop_on_signals(server: uvicorn.Server) -> None:
    """SIGINT/SIGTERM ask the server to finish (a second one forces it); serve() then returns normally."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, server.handle_exit, sig, None)


def web_server(platform: Platform) -> uvicorn.Server:
    """A uvicorn server for the platform's API on the configured host and port (checked to be free)."""
    settings = platform.settings
    probe_port(settings.web_host, settings.web_port, "OPENAMI_WEB_PORT")
    config = uvicorn.Config(
        build_web_app(platform),
        host=settings.web_host,
        port=settings.web_port,
        log_config=None,
        lifespan="off",
    )
    server = _Server(config)
    stop_on_signals(server)
    return server


async def serve_platform(settings: Settings) -> None:
    """Run the platform and the web server until SIGINT/SIGTERM."""
    probe_port(settings.web_host, settings.web_port, "OPENAMI_WEB_PORT")
    platform = Platform.build(settings)
    await platform.start()
    try:
        server = web_server(platform)
        log.info("serving", extra={"url": f"http://{settings.web_host}:{settings.web_port}"})
        await server.serve()
    finally:
        await platform.stop()
