"""Identifiers and circuit URLs (pure)."""

from __future__ import annotations

import functools
import ipaddress
import os
import re
from dataclasses import dataclass

from ..errors import CircuitError

_URL_RE = re.compile(r"^circuit://(\[[0-9a-fA-F:.]+\]|[^/:\[\]]+):(\d{1,5})/(\d+)/(Q[0-9a-f]{16})$")
_QID_RE = re.compile(r"^Q[0-9a-f]{16}$")
_XID_RE = re.compile(r"^X[0-9a-f]{16}$")


def new_worker_id() -> str:
    return "Q" + os.urandom(8).hex()


def new_server_id() -> str:
    return "X" + os.urandom(8).hex()


@functools.lru_cache(maxsize=64)
def is_loopback(host: str) -> bool:
    """Is ``host`` (an address or ``localhost``) on the loopback network?
    Cached: each runtime asks for its own host as it starts, and a forked
    worker finds the zygote's answer instead of parsing again."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def is_worker_id(s: str) -> bool:
    return isinstance(s, str) and bool(_QID_RE.match(s))


def is_server_id(s: str) -> bool:
    return isinstance(s, str) and bool(_XID_RE.match(s))


@dataclass(frozen=True, order=True)
class WorkerAddr:
    """The address of a runtime (server, worker or client): host, port, pid
    and its Q-ID. Prints as its circuit URL."""

    host: str
    port: int
    pid: int
    id: str

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"circuit://{host}:{self.port}/{self.pid}/{self.id}"

    def __str__(self) -> str:
        return self.url

    @classmethod
    def parse(cls, url: str | WorkerAddr) -> WorkerAddr:
        if isinstance(url, WorkerAddr):
            return url
        if not isinstance(url, str):
            raise CircuitError(f"not a circuit URL: {url!r}")
        m = _URL_RE.match(url.strip())
        if not m:
            raise CircuitError(
                f"not a circuit URL (want circuit://HOST:PORT/PID/Q<16 hex>): {url!r}"
            )
        host, port, pid, qid = m.groups()
        port_i = int(port)
        if not 0 < port_i < 65536:
            raise CircuitError(f"bad port in circuit URL: {url!r}")
        return cls(host.strip("[]"), port_i, int(pid), qid)
