"""The aiohttp application: the page, its live updates (SSE), the worker
tools behind it, and ``/metrics``.

The circuit is polled only while a page is open (one poll loop for every
page), more slowly while nothing but figures change; a section of the
state goes out only when it changed. Circuit calls
block, so they run in a small thread pool.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import os
from typing import Any
from collections.abc import Callable
from urllib.parse import urlencode

from aiohttp import web

from ..errors import CircuitError
from . import _metrics
from ._collect import Circuit
from ._config import WebConfig
from ._security import Guard

log = logging.getLogger(__name__)

STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
_ASSETS = {"app.js": "text/javascript", "flame.js": "text/javascript", "style.css": "text/css"}
_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


class Broker:
    """One poll loop for all open pages; each page gets the changed sections."""

    def __init__(
        self, circuit: Circuit, pool: concurrent.futures.Executor, every: float, backoff: int
    ) -> None:
        self._circuit = circuit
        self._pool = pool
        self._every = every
        self._backoff = backoff
        self._queues: set[asyncio.Queue] = set()
        self._task: asyncio.Task | None = None
        self.state: dict = {}
        self.polls = 0

    async def poll_once(self) -> bool:
        """Read the circuit; send each page the sections that changed.
        True if more than figures changed (a worker, an element, an event)."""
        snap = await asyncio.get_running_loop().run_in_executor(self._pool, self._circuit.snapshot)
        self.polls += 1
        changed = {k: v for k, v in snap.items() if self.state.get(k, ...) != v}
        if not changed:
            return False
        moved = bool(changed.keys() - {"hosts", "workers"}) or _ids(self.state) != _ids(snap)
        self.state.update(changed)
        msg = _event(changed)
        for q in list(self._queues):
            if q.full():  # a page that stopped reading: it reconnects and gets the whole state
                self._queues.discard(q)
                while not q.empty():
                    q.get_nowait()
                q.put_nowait(None)
            else:
                q.put_nowait(msg)
        return moved

    def subscribe(self) -> asyncio.Queue:
        q: asyncio.Queue = asyncio.Queue(maxsize=64)
        self._queues.add(q)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._loop())
        return q

    def unsubscribe(self, q: asyncio.Queue) -> None:
        self._queues.discard(q)

    async def _loop(self) -> None:
        """Every ``every`` seconds while things move; at rest (only CPU and
        memory figures change) the pause doubles, up to ``backoff`` times."""
        pause = self._every
        while self._queues:
            try:
                moved = await self.poll_once()
            except Exception:  # a bug must not end live updates for good
                log.exception("polling the circuit failed")
                moved = False
            pause = self._every if moved else min(2 * pause, self._backoff * self._every)
            await asyncio.sleep(pause)


def _ids(state: dict) -> dict:
    """Which hosts and workers there are."""
    return {
        h.get("id"): sorted(w["id"] for w in state.get("workers", {}).get(h.get("id"), []))
        for h in state.get("hosts", [])
    }


def _event(sections: dict) -> bytes:
    return b"event: state\ndata: " + json.dumps(sections, separators=(",", ":")).encode() + b"\n\n"


def make_app(circuit: Circuit, guard: Guard, cfg: WebConfig = WebConfig()) -> web.Application:
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="pycircuit-web")
    broker = Broker(circuit, pool, cfg.poll_every, cfg.backoff)
    profiles = asyncio.Semaphore(4)

    async def blocking(fn: Callable, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)

    @web.middleware
    async def security(request: web.Request, handler: Callable) -> web.StreamResponse:
        resp = await _guarded(request, handler)
        if not resp.prepared:  # a stream sent its headers itself
            resp.headers.update(_HEADERS)
        return resp

    async def _guarded(request: web.Request, handler: Callable) -> web.StreamResponse:
        if not guard.host_ok(request.headers.get("Host")):
            return web.Response(status=403, text="pycircuit web: unexpected Host header\n")
        query_token = request.query.get("token")
        given = (
            query_token
            or guard.bearer(request.headers.get("Authorization"))
            or request.cookies.get(guard.cookie)
        )
        verdict = guard.check(given)
        if verdict != 200:
            return web.Response(
                status=verdict,
                text="pycircuit web: open the URL it printed (it carries ?token=...)\n",
                headers={"WWW-Authenticate": "Bearer"} if verdict == 401 else None,
            )
        if query_token and request.method == "GET" and request.path != "/metrics":
            # Trade the token in the URL for a cookie, and take it out of the address bar.
            rest = {k: v for k, v in request.query.items() if k != "token"}
            resp = web.Response(
                status=303,
                headers={"Location": request.path + ("?" + urlencode(rest) if rest else "")},
            )
            resp.set_cookie(
                guard.cookie,
                guard.token,
                httponly=True,
                samesite="Strict",
                path="/",
                secure=guard.scheme == "https",
            )
            return resp
        return await handler(request)

    with open(os.path.join(STATIC, "index.html"), encoding="utf-8") as index_file:
        page = index_file.read().replace("{{csrf}}", guard.csrf)  # hex: nothing to escape

    async def index(request: web.Request) -> web.Response:
        return web.Response(text=page, content_type="text/html", charset="utf-8")

    # Read once, here: a blocking read inside the event loop would stall every viewer.
    assets: dict[str, bytes] = {}
    for asset_name in _ASSETS:
        with open(os.path.join(STATIC, asset_name), "rb") as f:
            assets[asset_name] = f.read()

    async def asset(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in assets:
            raise web.HTTPNotFound()
        return web.Response(body=assets[name], content_type=_ASSETS[name], charset="utf-8")

    async def events(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={**_HEADERS, "Content-Type": "text/event-stream"})
        await resp.prepare(request)
        q = broker.subscribe()  # the first poll after a quiet time sends what changed meanwhile
        try:
            if broker.state:
                await resp.write(_event(broker.state))
            while True:
                try:
                    msg = await asyncio.wait_for(q.get(), cfg.keepalive)
                except asyncio.TimeoutError:
                    msg = b": keepalive\n\n"
                if msg is None:
                    break
                await resp.write(msg)
        except ConnectionError:
            pass  # the page went away (with handler cancellation, also a CancelledError)
        finally:
            broker.unsubscribe(q)
        return resp

    async def state(request: web.Request) -> web.Response:
        """The whole state, read now (for scripts; the page uses /events)."""
        return web.json_response(await blocking(circuit.snapshot), headers=_HEADERS)

    async def tool(fn: Callable, *args: Any) -> web.Response:
        try:
            return web.Response(text=await blocking(fn, *args), content_type="text/plain")
        except ValueError as e:
            return web.json_response({"error": str(e)}, status=400)
        except LookupError as e:
            return web.json_response({"error": str(e)}, status=404)
        except CircuitError as e:
            return web.json_response({"error": str(e)}, status=502)

    async def stack(request: web.Request) -> web.Response:
        return await tool(circuit.stack, request.query.get("id", ""))

    async def profile(request: web.Request) -> web.Response:
        try:
            seconds = float(request.query.get("seconds", "5"))
        except ValueError:
            return web.json_response({"error": "seconds is a number"}, status=400)
        async with profiles:
            return await tool(circuit.profile, request.query.get("id", ""), seconds)

    async def kill(request: web.Request) -> web.Response:
        """The one control: kills a worker (POST, CSRF token, same origin)."""
        if not guard.csrf_ok(
            request.headers.get("X-CSRF-Token"),
            request.headers.get("Origin"),
            request.headers.get("Host"),
        ):
            return web.json_response({"error": "missing or wrong CSRF token"}, status=403)
        try:
            body = await request.json()
            wid = str(body["id"])
        except (ValueError, KeyError, TypeError):
            return web.json_response({"error": 'want JSON {"id": "Q..."}'}, status=400)
        resp = await tool(circuit.kill, wid)
        return web.json_response({"killed": wid}) if resp.status == 200 else resp

    async def metrics(request: web.Request) -> web.Response:
        body = await blocking(_metrics.render, circuit.host_metrics)
        return web.Response(body=body, headers={"Content-Type": _metrics.CONTENT_TYPE})

    async def shutdown(app: web.Application) -> None:
        pool.shutdown(wait=False, cancel_futures=True)

    app = web.Application(middlewares=[security])
    app["broker"] = broker
    app.on_cleanup.append(shutdown)
    app.add_routes(
        [
            web.get("/", index),
            web.get("/static/{name}", asset),
            web.get("/events", events),
            web.get("/api/state", state),
            web.get("/api/stack", stack),
            web.get("/api/profile", profile),
            web.post("/api/kill", kill),
            web.get("/metrics", metrics),
        ]
    )
    return app
