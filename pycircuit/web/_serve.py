"""Runs the web view until a signal: binds, prints the URL, serves."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import secrets
import signal
import socket
from collections.abc import Callable

from aiohttp import web

from .._client import Client
from ..errors import CircuitError
from ._app import make_app
from ._config import WebConfig
from ._collect import Circuit
from ._security import Guard

log = logging.getLogger(__name__)


def serve(client: Client, cfg: WebConfig, announce: Callable[[str], None]) -> None:
    """Serve until SIGTERM or SIGINT; ``announce`` gets the URL (with its
    token) once the socket listens."""
    asyncio.run(_serve(client, cfg, announce))


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", "", "::"):
        return "127.0.0.1" if host != "::" else "[::1]"
    try:
        return f"[{host}]" if ipaddress.ip_address(host).version == 6 else host
    except ValueError:
        return host


async def _serve(client: Client, cfg: WebConfig, announce: Callable[[str], None]) -> None:
    family = socket.AF_INET6 if ":" in cfg.host else socket.AF_INET
    try:
        sock = socket.create_server((cfg.host, cfg.port), family=family, backlog=64)
    except OSError as e:
        raise CircuitError(f"cannot listen on {cfg.host}:{cfg.port}: {e.strerror or e}") from None
    port = sock.getsockname()[1]
    ssl_ctx = None
    if cfg.key_path:
        from ._tls import server_context

        ssl_ctx = server_context(cfg.key_path, cfg.host)
    guard = Guard(
        token=secrets.token_urlsafe(32),
        csrf=secrets.token_hex(16),
        bound_host=cfg.host,
        port=port,
        scheme="https" if ssl_ctx else "http",
    )
    circuit = Circuit(client, cfg)
    try:
        circuit.watch_membership()
    except CircuitError as e:  # the page still works; only the timeline is empty
        log.warning("no membership events: %s", e)
    runner = web.AppRunner(
        make_app(circuit, guard, cfg), access_log=None, handler_cancellation=True
    )
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await web.SockSite(runner, sock, ssl_context=ssl_ctx).start()
        announce(f"{guard.scheme}://{_url_host(cfg.host)}:{port}/?token={guard.token}")
        await stop.wait()
    finally:
        await runner.cleanup()
        await loop.run_in_executor(None, circuit.close)
