"""Settings of ``pycircuit web`` (one frozen record, passed down)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["WebConfig"]


@dataclass(frozen=True)
class WebConfig:
    host: str = "127.0.0.1"
    port: int = 0
    poll_every: float = 1.0  # seconds between polls of the circuit while a page is open
    key_path: str | None = None  # a cluster key: serve HTTPS with a certificate it signs
    # At rest (only figures move) polls slow down, to one every backoff × poll_every.
    backoff: int = 3
    # Seconds between SSE comments on a quiet stream, so proxies keep it open.
    keepalive: float = 15.0
    # Seconds between looks at the membership subscriptions when no page polls.
    events_every: float = 2.0
    # How long a worker's own stack dump may take before its server's
    # faulthandler dump is asked for (a worker stuck in C code never answers).
    stack_timeout: float = 3.0
