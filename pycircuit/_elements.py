"""Client-side handles of elements (process, channel, subscriptions).

Every method is one kernel call on the element's server. Blocking calls are
made in slices of at most the server's ``ServerConfig.max_block``, so a
client that goes away mid-wait never pins a server thread for long; the
client loops until its own deadline.
"""

from __future__ import annotations

import io
import time
from typing import Any, NamedTuple

from .errors import ElementError


class ProcStat(NamedTuple):
    cmd: dict
    exit: str | None
    phase: str


def _sliced(call, timeout: float | None) -> Any:
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            return call(left)
        except ElementError as e:
            if str(e) != "timeout" or (deadline is not None and time.monotonic() >= deadline):
                raise


class Element:
    kind = "?"

    def __init__(self, kernel: Any, server_id: str, path: list[str]) -> None:
        self._k = kernel
        self._sid = server_id
        self._path = list(path)

    @property
    def path(self) -> str:
        return "/" + "/".join([self._sid] + self._path)

    def _op(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return self._k.op(self._path, name, args, kwargs)

    def peek(self) -> Any:
        return self._op("peek")

    def scrub(self) -> None:
        self._k.scrub(self._path)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.path}>"


class _Writer(io.RawIOBase):
    def __init__(self, proc: Stdio) -> None:
        self._p = proc

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        """Blocks, like a pipe, until the process has taken all of ``b``; the server
        takes it in bounded slices, so no server thread waits on a process that
        never reads."""
        data = bytes(b)
        sent = self._p._op("stdin_write", data)
        while sent < len(data):
            sent += self._p._op("stdin_write", data[sent:])
        return len(data)

    def close(self) -> None:
        if not self.closed:
            try:
                self._p._op("stdin_close")
            finally:
                super().close()


class _Reader(io.RawIOBase):
    def __init__(self, proc: Stdio, stream: str) -> None:
        self._p = proc
        self._stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        data = _sliced(lambda t: self._p._op("read", self._stream, len(buf), timeout=t), None)
        buf[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            try:
                self._p._op("close_stream", self._stream)
            finally:
                super().close()


class Stdio(Element):
    """What processes and containers share: standard files and signals."""

    @property
    def stdin(self) -> io.RawIOBase:
        return _Writer(self)

    @property
    def stdout(self) -> io.RawIOBase:
        return _Reader(self, "stdout")

    @property
    def stderr(self) -> io.RawIOBase:
        return _Reader(self, "stderr")

    def signal(self, name: str) -> None:
        self._op("signal", name)

    def _wait(self, timeout: float | None) -> Any:
        return _sliced(lambda t: self._op("wait", timeout=t), timeout)

    def wait(self, timeout: float | None = None) -> Any:
        """Block until the process or container has exited; its state."""
        return self._wait(timeout)


class Proc(Stdio):
    """A process element: the OS process it runs keeps running if the
    element is scrubbed; ``signal("KILL")`` ends it. ``wait`` returns once the
    process has exited or was killed, stdin open or not, output read or not."""

    kind = "proc"

    def peek(self) -> ProcStat:
        d = self._op("peek")
        return ProcStat(d["Cmd"], d["Exit"], d["Phase"])

    def wait(self, timeout: float | None = None) -> ProcStat:
        d = self._wait(timeout)
        return ProcStat(d["Cmd"], d["Exit"], d["Phase"])


class Container(Stdio):
    """A docker element; ``peek``/``wait`` give the container's inspect data
    (``wait`` once the container has exited)."""

    kind = "docker"

    def peek(self) -> dict:
        return self._op("peek")

    def wait(self, timeout: float | None = None) -> dict:
        return self._wait(timeout)


class Nameserver(Element):
    """A DNS server element: ``set("www 60 IN A 10.0.0.1")``, ``unset("www")``."""

    kind = "dns"

    def set(self, rr: str) -> None:
        self._op("set", rr)

    def unset(self, name: str) -> None:
        self._op("unset", name)


class Chan(Element):
    kind = "chan"

    def send(self, msg: bytes, timeout: float | None = None) -> None:
        if not isinstance(msg, (bytes, bytearray, memoryview)):
            raise TypeError("channel messages are bytes")
        _sliced(lambda t: self._op("send", bytes(msg), timeout=t), timeout)

    def recv(self, timeout: float | None = None) -> bytes:
        return _sliced(lambda t: self._op("recv", timeout=t), timeout)

    def close(self) -> None:
        self._op("close")


class Subscription(Element):
    """``@join`` / ``@leave``: each event is a server path ``/X…``."""

    kind = "@join"

    def recv(self, timeout: float | None = None) -> str:
        return _sliced(lambda t: self._op("recv", timeout=t), timeout)


def handle(kernel: Any, server_id: str, path: list[str], kind: str) -> Element:
    cls = {
        "proc": Proc,
        "chan": Chan,
        "@join": Subscription,
        "@leave": Subscription,
        "docker": Container,
        "dns": Nameserver,
    }.get(kind)
    if cls is None:
        raise ElementError(f"no client handle for {kind!r} elements")
    el = cls(kernel, server_id, path)
    el.kind = kind
    return el
