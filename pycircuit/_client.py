"""Clients of a circuit: ``connect``, ``Client``, ``Host``, ``Anchor``.

A client is a handle on one server (its *dial-in* server) plus this process's
runtime; calls to other hosts go to their servers directly. The first client
of a process becomes its default, used by ``pycircuit.spawn`` and friends.
"""

from __future__ import annotations

import atexit
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from collections.abc import Callable, Iterable

from . import _batch
from ._anchor import Anchor, anchor_dirs
from ._connect import ClientConfig, connect
from ._dialin import cluster_key, local_ip_toward, url_from_env
from .acid import serve_everywhere
from .errors import CircuitError
from .runtime._addr import WorkerAddr, is_server_id
from .runtime._runtime import HANDLE_MAIN, current
from .server._anchors import parse_path

# Every runtime of a client program serves acid (debuggable by its address).
serve_everywhere()

if TYPE_CHECKING:
    from ._embedded import EmbeddedServer

__all__ = ["connect_to", "Client", "Host", "Anchor", "ClientConfig", "default_client"]


@dataclass(frozen=True)
class Host:
    """A live server of the circuit."""

    id: str
    url: str

    def __str__(self) -> str:
        return f"/{self.id}"


class Client:
    """A connection to a circuit through one of its servers."""

    def __init__(self, url: str, _embedded: EmbeddedServer | None = None, _tls: Any = None):
        self._embedded = _embedded
        self._lock = threading.Lock()
        self.url = url
        try:
            addr = WorkerAddr.parse(url)
            # Our own runtime must be reachable from the circuit's workers,
            # which call back into it: listen where the server sees us from
            # (host and key count only if this makes the process's runtime).
            rt = current(host=local_ip_toward(addr.host), tls=_tls)
            assert rt is not None  # current() makes one when there is none
            self._rt = rt
        except CircuitError:
            if _embedded:
                _embedded.stop()
            raise
        try:
            self._kernel = self._rt.dial(addr, "circuit")
            info = self._kernel.info()
        except BaseException:
            if _embedded:
                _embedded.stop()
            raise
        self.server_id: str = info["id"]
        self._kernels: dict[str, Any] = {self.server_id: self._kernel}
        self._urls: dict[str, str] = {self.server_id: url}
        self._closed = False

    # -- hosts --------------------------------------------------------------
    def hosts(self) -> list[Host]:
        """The live servers, sorted by ID."""
        hosts = [Host(i, u) for i, u in self._kernel.hosts()]
        with self._lock:
            for h in hosts:
                self._urls[h.id] = h.url
        return sorted(hosts, key=lambda h: h.id)

    def kernel(self, host: Host | str | WorkerAddr) -> Any:
        """The kernel service (``circuit``) of a server: a ``Host``, a server
        ID (``X…``) or a circuit URL. Dialled once, then kept."""
        if isinstance(host, Host):
            sid, url = host.id, host.url
        elif isinstance(host, WorkerAddr):
            sid, url = None, host.url
        elif isinstance(host, str) and is_server_id(host.strip("/")):
            sid = host.strip("/")
            known = self._urls.get(sid)
            if known is None:
                self.hosts()
                known = self._urls.get(sid)
            if known is None:
                raise CircuitError(f"no live host {sid} in this circuit")
            url = known
        elif isinstance(host, str):
            sid, url = None, WorkerAddr.parse(host).url
        else:
            raise TypeError(
                f"a host is a Host, a server ID or a circuit URL, not {type(host).__name__}"
            )
        with self._lock:
            k = self._kernels.get(sid) if sid else None
        if k is not None:
            return k
        k = self._rt.dial(WorkerAddr.parse(url), "circuit")
        if sid is None:
            sid = k.info()["id"]
        with self._lock:
            self._kernels[sid] = k
            self._urls[sid] = url
        return k

    # -- workers ------------------------------------------------------------
    def spawn(
        self,
        host: Host | str | WorkerAddr,
        anchor: Any,
        fn: Callable[..., Any],
        /,
        *args: Any,
        **kwargs: Any,
    ) -> tuple[Any, WorkerAddr]:
        """Run ``fn(*args, **kwargs)`` in a new worker process on ``host``;
        returns ``(value, worker address)``."""
        if not callable(fn):
            raise TypeError("spawn needs a callable")
        anchors = anchor_dirs(anchor)
        kernel = self.kernel(host)
        addr = WorkerAddr.parse(kernel.spawn(anchors))
        value = self._rt.call_remote(addr, HANDLE_MAIN, "run", (fn, args, kwargs), {})
        return value, addr

    def spawn_many(
        self,
        host: Host | str | WorkerAddr,
        anchor: Any,
        fn: Callable[..., Any],
        arg_tuples: Iterable[tuple[Any, ...]],
        /,
        *,
        return_exceptions: bool = False,
    ) -> list[tuple[Any, WorkerAddr | None]]:
        """Run ``fn(*args)`` for each ``args`` in ``arg_tuples``, each in a
        new worker on ``host`` (listed under ``anchor`` as with ``spawn``).
        The server starts the workers a batch at a time, one request each;
        returns ``[(value, worker address)]`` in the order of
        ``arg_tuples``. As with ``asyncio.gather``, the first error (in that
        order) is raised once every call has answered, or with
        ``return_exceptions`` stands in place of its value. An item whose
        worker the server could not start has ``SpawnError`` for its error
        and None for its address (each request to the server is all or
        none: a failed one leaves no worker of it)."""
        if not callable(fn):
            raise TypeError("spawn_many needs a callable")
        calls = _batch.argument_tuples(arg_tuples)
        if not calls:
            return []
        anchors = anchor_dirs(anchor)
        return _batch.spawn_many(self._rt, self.kernel(host), anchors, fn, calls, return_exceptions)

    def kill(self, addr: WorkerAddr | str) -> bool:
        """Kill a worker (by address or URL) with SIGKILL.

        Like ``Popen.kill``, killing a worker that has already exited is not
        an error: returns True when a live worker was signalled, False when no
        server of the circuit has it alive (it died, or never existed).  A
        malformed URL raises CircuitError; an unreachable server NetworkError."""
        addr = WorkerAddr.parse(addr)
        return any(self.kernel(h).kill(addr.id) for h in self.hosts())

    # -- anchors ------------------------------------------------------------
    def walk(self, path: str | list[str]) -> Anchor:
        return Anchor(self, parse_path(path))

    def close(self) -> None:
        global _default
        if self._closed:
            return
        self._closed = True
        with _default_lock:
            if _default is self:
                _default = None
        if self._embedded is not None:
            self._embedded.stop()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<pycircuit.Client of {self.url}>"


_default: Client | None = None
_default_lock = threading.Lock()


def connect_to(
    url: str | None,
    discover: str | None,
    key: str | None,
    cfg: ClientConfig,
    embedded: EmbeddedServer | None = None,
) -> Client:
    """``pycircuit.connect`` (``_connect``), once the client's modules are
    loaded; ``embedded``: the embedded server it started before loading them."""
    global _default
    tls = cluster_key(key)
    if url is None:
        url = url_from_env(discover, cfg)
    if url is not None and embedded is not None:  # started on a guess the environment overrules
        embedded.stop()
        embedded = None
    if url is None and embedded is None:
        from ._embedded import EmbeddedServer  # a subprocess only here

        embedded = EmbeddedServer(tls.path if tls is not None else None, cfg.embedded_start_timeout)
    if embedded is not None:
        url = embedded.url()
    assert url is not None
    client = Client(url, embedded, tls)
    with _default_lock:
        if _default is None:
            _default = client
    return client


_default_making = threading.Lock()  # single flight: one thread connects, the others take its client


def default_client() -> Client:
    """The process default client, connecting on first use (once, however
    many threads ask at the same time)."""
    c = _default
    if c is not None:
        return c
    with _default_making:
        c = _default
        if c is None:
            c = connect()
            d = _default
            if d is not None and d is not c:  # an explicit connect() became the default meanwhile
                c.close()
                c = d
    return c


@atexit.register
def _close_default() -> None:
    c = _default
    if c is not None:
        c.close()
