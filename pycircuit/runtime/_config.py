"""A runtime's configuration and its well-known handles. Layer: runtime."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Handles of the static table entries (``Runtime.add_static``). They share
# one handle space with the random handles of references, so they are
# allotted here, in one place, even the one an upper layer fills.
HANDLE_ROOT = 1  # the runtime's own service directory (dial, ping)
HANDLE_MAIN = 2  # the process's entry object, filled by ``spawn`` in a worker
# A server's kernel (also its service "circuit"): a worker it forked
# registers with one call, without dialling the service first.
HANDLE_KERNEL = 3


@dataclass(frozen=True)
class RuntimeConfig:
    host: str = "127.0.0.1"
    port: int = 0
    role: str = "client"  # client | worker | server
    runtime_id: str | None = None
    host_label: str = ""  # names the host in errors (server ID for workers)
    # Long enough for a loaded host across a LAN; a dial is attempted only
    # when a call needs it, so a caller never waits for this twice per peer.
    connect_timeout: float = 5.0
    tls: Any = None  # a ClusterKey (mutual TLS), or None: same-user secret (see _auth)
    # An accepted connection authenticates and says HELLO within this time,
    # or is closed; at most max_handshakes do so at once (more are closed).
    # They bound what an unauthenticated peer can hold: a thread and a
    # socket each, for a few seconds.
    handshake_timeout: float = 5.0
    max_handshakes: int = 64
    max_frame: int = 1 << 30  # largest message sent or accepted, in bytes
    # A request this large (bytes) may block in sendall, so the caller lets
    # the connection's pool threads read meanwhile (see Peer.invoke); below
    # it, one socket buffer takes it at once and the caller reads its own
    # reply. The default is a typical socket buffer.
    large_request: int = 1 << 16
    # A link is dead when its peer is known gone (EOF, RST, refused) or its
    # host was silent this long; only then are leases through it released.
    # Long enough that a stopped or swapped peer loses nothing.
    link_silence: float = 30.0
    # Runtimes known lost are remembered (calls to them fail at once, without
    # a dial); the oldest is forgotten beyond this many, which is safe
    # because dialling a lost runtime fails anyway. Bounds a long-lived
    # server's memory at a few hundred kB.
    max_dead: int = 10_000
    # A failing accept (EMFILE and friends) fails again at once until a
    # descriptor frees up: retry after a pause doubling from the first to
    # the second figure, so a full descriptor table costs no busy loop.
    accept_backoff: tuple[float, float] = (0.01, 1.0)
    # A refused dialer is told why as the answer to its HELLO; we wait this
    # long for its HELLO and for it to read the answer, then close.
    refusal_linger: float = 2.0
    # The thread that sends lease releases exits after this long with
    # none to send (started again by the next one).
    release_linger: float = 2.0
