"""Clients of a circuit: ``connect``, ``Client``, ``Host``, ``Anchor``.

A client is a handle on one server (its *dial-in* server) plus this process's
runtime; calls to other hosts go to their servers directly. The first client
of a process becomes its default, used by ``pycircuit.spawn`` and friends.
"""

from __future__ import annotations

import atexit
import ipaddress
import os
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from typing import Any
from collections.abc import Callable

from . import _elements
from .errors import CircuitError, ElementError, NetworkError
from .runtime._addr import WorkerAddr, is_server_id
from .runtime._runtime import HANDLE_MAIN, current
from .server._anchors import check_name, parse_path

__all__ = ["connect", "Client", "Host", "Anchor", "default_client"]

EMBEDDED_START_TIMEOUT = 30.0


@dataclass(frozen=True)
class Host:
    """A live server of the circuit."""

    id: str
    url: str

    def __str__(self) -> str:
        return f"/{self.id}"


class _Embedded:
    """A local server owned by this process; it exits when we close its stdin
    (which the kernel also does if we die)."""

    def __init__(self, key_path: str | None = None) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        env.pop("CIRCUIT_KEY", None)  # it uses our key, or none
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pycircuit.cli",
                "start",
                "-a",
                "127.0.0.1:0",
                "--embedded",
                *(["--key", key_path] if key_path else []),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None,
            env=env,
            close_fds=True,
        )
        line = [b""]
        reader = threading.Thread(
            target=lambda: line.__setitem__(0, self.proc.stdout.readline()), daemon=True
        )
        reader.start()
        reader.join(EMBEDDED_START_TIMEOUT)
        url = line[0].decode().strip()
        if not url:
            self.stop()
            raise CircuitError("the embedded local server did not start (see its stderr above)")
        self.url = url

    def stop(self) -> None:
        p = self.proc
        if p.poll() is None:
            try:
                p.stdin.close()
            except OSError:  # it exited already: the wait below reaps it
                pass
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


class Client:
    """A connection to a circuit through one of its servers."""

    def __init__(self, url: str, _embedded: _Embedded | None = None, _tls: Any = None):
        self._embedded = _embedded
        self._lock = threading.Lock()
        self.url = url
        try:
            addr = WorkerAddr.parse(url)
            # Our own runtime must be reachable from the circuit's workers,
            # which call back into it: listen where the server sees us from
            # (host and key count only if this makes the process's runtime).
            self._rt = current(host=_local_ip_toward(addr.host), tls=_tls)
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

    def _kernel_of(self, host: Host | str | WorkerAddr) -> Any:
        if isinstance(host, Host):
            sid, url = host.id, host.url
        elif isinstance(host, WorkerAddr):
            sid, url = None, host.url
        elif isinstance(host, str) and is_server_id(host.strip("/")):
            sid = host.strip("/")
            url = self._urls.get(sid)
            if url is None:
                self.hosts()
                url = self._urls.get(sid)
            if url is None:
                raise CircuitError(f"no live host {sid} in this circuit")
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
        fn: Callable,
        /,
        *args: Any,
        **kwargs: Any,
    ):
        """Run ``fn(*args, **kwargs)`` in a new worker process on ``host``;
        returns ``(value, worker address)``."""
        if not callable(fn):
            raise TypeError("spawn needs a callable")
        anchors = _anchor_dirs(anchor)
        kernel = self._kernel_of(host)
        addr = WorkerAddr.parse(kernel.spawn(anchors))
        value = self._rt.call_remote(addr, HANDLE_MAIN, "run", (fn, args, kwargs), {})
        return value, addr

    def kill(self, addr: WorkerAddr | str) -> bool:
        """Kill a worker (by address or URL) with SIGKILL.

        Like ``Popen.kill``, killing a worker that has already exited is not
        an error: returns True when a live worker was signalled, False when no
        server of the circuit has it alive (it died, or never existed).  A
        malformed URL raises CircuitError; an unreachable server NetworkError."""
        addr = WorkerAddr.parse(addr)
        return any(self._kernel_of(h).kill(addr.id) for h in self.hosts())

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


def _local_ip_toward(host: str) -> str:
    try:
        if ipaddress.ip_address(host).is_loopback:
            return "127.0.0.1"
    except ValueError:  # a name, not an address: the route lookup below resolves it
        pass
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((host, 9))  # UDP connect sends nothing; it picks the route
            return s.getsockname()[0]
    except OSError as e:
        raise NetworkError(f"no route to circuit host {host}: {e.strerror or e}") from None


def _anchor_dirs(anchor: Any) -> list[list[str]]:
    if anchor is None:
        return []
    items = [anchor] if isinstance(anchor, str) else list(anchor)
    out = []
    for a in items:
        if isinstance(a, str):
            names = [n for n in a.split("/") if n]
        elif isinstance(a, (list, tuple)):
            names = list(a)
        else:
            raise ElementError(f"an anchor is a path or a list of paths, not {type(a).__name__}")
        if names and is_server_id(names[0]):
            names = names[1:]  # a full path names the host's own anchor
        out.append([check_name(n) for n in names])
    return out


class Anchor:
    """A place in the anchor namespace: ``/`` (its children are the servers),
    ``/X…`` (a server) or below."""

    def __init__(self, client: Client, parts: list[str]):
        self._c = client
        self._parts = parts

    @property
    def path(self) -> str:
        return "/" + "/".join(self._parts)

    def walk(self, path: str | list[str]) -> Anchor:
        more = [n for n in path.split("/") if n] if isinstance(path, str) else list(path)
        return Anchor(self._c, self._parts + [check_name(n) for n in more])

    def view(self) -> dict[str, Anchor]:
        """The children of this anchor, by name."""
        if not self._parts:
            return {h.id: Anchor(self._c, [h.id]) for h in self._c.hosts()}
        kernel = self._c._kernel_of(self._parts[0])
        return {
            name: Anchor(self._c, self._parts + [name]) for name in kernel.view(self._parts[1:])
        }

    def _kernel(self) -> Any:
        if not self._parts:
            raise ElementError("cannot create elements outside of servers")
        return self._c._kernel_of(self._parts[0])

    def get(self) -> Any:
        """The element here, or None: a worker's address, a handle for a
        process, channel or subscription, else the element's description."""
        if not self._parts:
            return None
        kernel = self._kernel()
        desc = kernel.get(self._parts[1:])
        if desc is None:
            return None
        kind = desc["kind"]
        if kind == "worker":
            return WorkerAddr.parse(desc["url"])
        if kind in ("proc", "chan", "@join", "@leave", "docker", "dns"):
            return _elements.handle(kernel, self._parts[0], self._parts[1:], kind)
        return desc

    def peek(self) -> Any:
        """The element's state (JSON-able), or None for an empty anchor."""
        if not self._parts:
            return None
        return self._kernel().peek(self._parts[1:])

    def scrub(self) -> None:
        """Remove the element here (a worker is killed)."""
        if len(self._parts) < 2:
            raise ElementError(
                "server anchors cannot be scrubbed" if self._parts else "cannot scrub /"
            )
        self._kernel().scrub(self._parts[1:])

    def _make(self, kind: str, spec: Any = None) -> _elements.Element:
        if len(self._parts) < 2:
            raise ElementError(
                "cannot create elements outside of servers"
                if not self._parts
                else "anchor already has an element (the server itself)"
            )
        kernel = self._kernel()
        kernel.make(self._parts[1:], kind, spec)
        return _elements.handle(kernel, self._parts[0], self._parts[1:], kind)

    def make_proc(self, cmd: Any) -> _elements.Proc:
        """Start an OS process on this anchor's host (never blocks on it);
        ``cmd`` is a ``pycircuit.Cmd`` or its JSON dict."""
        from ._spec import Cmd

        if isinstance(cmd, Cmd):
            cmd = cmd.to_json()
        return self._make("proc", dict(cmd))

    def make_chan(self, cap: int) -> _elements.Chan:
        return self._make("chan", cap)

    def make_nameserver(self, addr: str | None = None) -> _elements.Nameserver:
        """A DNS server on this anchor's host at ``addr`` (HOST:PORT; a free
        loopback port when None)."""
        return self._make("dns", addr)

    def make_docker(self, spec: dict) -> _elements.Container:
        """Run a container (the seed's JSON keys: Image, Memory, CpuShares,
        Volume, Dir, Entry, Env, Path, Args, Scrub) on a ``--docker`` server."""
        return self._make("docker", dict(spec))

    def make_on_join(self) -> _elements.Subscription:
        return self._make("@join")

    def make_on_leave(self) -> _elements.Subscription:
        return self._make("@leave")

    def __repr__(self) -> str:
        return f"<Anchor {self.path}>"

    def __eq__(self, other) -> bool:
        return isinstance(other, Anchor) and other._parts == self._parts

    def __hash__(self) -> int:
        return hash(tuple(self._parts))


_default: Client | None = None
_default_lock = threading.Lock()


def connect(
    url: str | None = None, *, discover: str | None = None, key: str | None = None
) -> Client:
    """Connect to a circuit. Without ``url``: ``$CIRCUIT`` (a file holding a
    URL), then ``$CIRCUIT_DISCOVER``/``discover``; otherwise, outside a
    worker, an embedded local server owned by this process."""
    global _default
    tls = _cluster_key(key)
    embedded = None
    if url is None:
        url = _url_from_env(discover)
    if url is None:
        embedded = _Embedded(tls.path if tls is not None else None)
        url = embedded.url
    client = Client(url, embedded, tls)
    with _default_lock:
        if _default is None:
            _default = client
    return client


def _cluster_key(key: str | None) -> Any:
    """The cluster key this process's runtime is to use: ``key``, else
    ``$CIRCUIT_KEY``; None for none. A runtime's key is fixed when it is
    made: an explicit key that differs from it is an error."""
    from .runtime._tls import load_key

    rt = current(create=False)
    if rt is None:
        path = key or os.environ.get("CIRCUIT_KEY")
        return load_key(path) if path else None
    if (
        key is not None
    ):  # $CIRCUIT_KEY gives way to the key of an existing runtime (say, a worker's)
        have = getattr(rt.cfg.tls, "fingerprint", None)
        if have != load_key(key).fingerprint:
            raise CircuitError(
                f"this process's pycircuit runtime already runs {'with another' if have else 'without a'} "
                f"cluster key; a process uses one key (connect with key= before anything else)"
            )
    return rt.cfg.tls


def _url_from_env(discover: str | None) -> str | None:
    path = os.environ.get("CIRCUIT")
    if path:
        try:
            with open(path) as f:
                return f.read().strip()
        except OSError as e:
            raise CircuitError(
                f"$CIRCUIT names {path!r}, which cannot be read: {e.strerror}"
            ) from None
    iface = discover or os.environ.get("CIRCUIT_DISCOVER")
    if iface:
        return discover_url(iface)
    from .spawn._worker import server_url

    return server_url()  # inside a worker: its own server


DISCOVER_TIMEOUT = 3.0


def discover_url(iface: str, timeout: float = DISCOVER_TIMEOUT) -> str:
    """A server's URL found by multicast DNS on one interface (a name such
    as ``eth0`` or an address); raises CircuitError if none answers."""
    from .server._discovery import browse, interface_address

    return browse(interface_address(iface), timeout=timeout, want=1)[0]


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
