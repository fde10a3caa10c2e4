"""``pycircuit.connect``, loaded without the client's modules: a program
that needs an embedded local server starts it first, and imports the
runtime (RPyC and the rest: as long as the server's own start on a small
machine) while the server starts, instead of before."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._client import Client
    from ._embedded import EmbeddedServer

__all__ = ["ClientConfig", "connect"]


@dataclass(frozen=True)
class ClientConfig:
    """Bounds of a client's set-up. ``embedded_start_timeout``: how long an
    embedded local server may take to print its URL (a cold start imports
    the whole server and forks its zygote). ``discover_timeout``: how long
    to wait for a server to answer multicast DNS."""

    embedded_start_timeout: float = 30.0
    discover_timeout: float = 3.0


def connect(
    url: str | None = None,
    *,
    discover: str | None = None,
    key: str | None = None,
    cfg: ClientConfig = ClientConfig(),
) -> Client:
    """Connect to a circuit. Without ``url``: ``$CIRCUIT`` (a file holding a
    URL), then ``$CIRCUIT_DISCOVER``/``discover``; otherwise, outside a
    worker, an embedded local server owned by this process."""
    early: EmbeddedServer | None = None
    if _surely_embedded(url, discover, key):
        from ._embedded import EmbeddedServer

        early = EmbeddedServer(None, cfg.embedded_start_timeout)
    try:
        from ._client import connect_to

        return connect_to(url, discover, key, cfg, early)
    except BaseException:
        if early is not None:
            early.stop()
        raise


def _surely_embedded(url: str | None, discover: str | None, key: str | None) -> bool:
    """Will this connect start an embedded server, keyless, for a process
    without a runtime yet? (Anything else takes the ordinary way: with a
    key, it is checked before any server starts.) A guess from the same
    names ``_dialin.url_from_env`` reads; ``connect_to`` still resolves
    them, and stops the server if they name a circuit after all."""
    env = os.environ
    if url is not None or discover or key:
        return False
    if env.get("CIRCUIT") or env.get("CIRCUIT_DISCOVER") or env.get("CIRCUIT_KEY"):
        return False
    runtime = sys.modules.get("pycircuit.runtime._runtime")
    return runtime is None or runtime.current(create=False) is None
