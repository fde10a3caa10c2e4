"""``Anchor``: a place in a circuit's anchor namespace, and the anchor
arguments of ``spawn``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from . import _elements
from ._spec import Cmd
from .errors import ElementError
from .runtime._addr import WorkerAddr, is_server_id
from .server._anchors import check_name

if TYPE_CHECKING:
    from ._client import Client

__all__ = ["Anchor", "anchor_dirs"]

_E = TypeVar("_E", bound=_elements.Element)


def anchor_dirs(anchor: Any) -> list[list[str]]:
    """``spawn``'s anchor argument (None, a path, or a list of paths) → the
    anchor directories on the host, each a list of checked names."""
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

    def __init__(self, client: Client, parts: list[str]) -> None:
        self._c = client
        self._parts = parts

    @property
    def parts(self) -> list[str]:
        """The names along the path (empty for ``/``; the first is a server ID)."""
        return list(self._parts)

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
        kernel = self._c.kernel(self._parts[0])
        return {
            name: Anchor(self._c, self._parts + [name]) for name in kernel.view(self._parts[1:])
        }

    def _kernel(self) -> Any:
        if not self._parts:
            raise ElementError("cannot create elements outside of servers")
        return self._c.kernel(self._parts[0])

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

    def _make(self, kind: str, cls: type[_E], spec: Any = None) -> _E:
        if len(self._parts) < 2:
            raise ElementError(
                "cannot create elements outside of servers"
                if not self._parts
                else "anchor already has an element (the server itself)"
            )
        kernel = self._kernel()
        kernel.make(self._parts[1:], kind, spec)
        el = _elements.handle(kernel, self._parts[0], self._parts[1:], kind)
        assert isinstance(el, cls)  # handle() maps each kind to its class
        return el

    def make_proc(self, cmd: Any) -> _elements.Proc:
        """Start an OS process on this anchor's host (never blocks on it);
        ``cmd`` is a ``pycircuit.Cmd`` or its JSON dict."""
        if isinstance(cmd, Cmd):
            cmd = cmd.to_json()
        return self._make("proc", _elements.Proc, dict(cmd))

    def make_chan(self, cap: int) -> _elements.Chan:
        return self._make("chan", _elements.Chan, cap)

    def make_nameserver(self, addr: str | None = None) -> _elements.Nameserver:
        """A DNS server on this anchor's host at ``addr`` (HOST:PORT; a free
        loopback port when None)."""
        return self._make("dns", _elements.Nameserver, addr)

    def make_docker(self, spec: dict) -> _elements.Container:
        """Run a container (the seed's JSON keys: Image, Memory, CpuShares,
        Volume, Dir, Entry, Env, Path, Args, Scrub) on a ``--docker`` server."""
        return self._make("docker", _elements.Container, dict(spec))

    def make_on_join(self) -> _elements.Subscription:
        return self._make("@join", _elements.Subscription)

    def make_on_leave(self) -> _elements.Subscription:
        return self._make("@leave", _elements.Subscription)

    def __repr__(self) -> str:
        return f"<Anchor {self.path}>"

    def __eq__(self, other) -> bool:
        return isinstance(other, Anchor) and other._parts == self._parts

    def __hash__(self) -> int:
        return hash(tuple(self._parts))
