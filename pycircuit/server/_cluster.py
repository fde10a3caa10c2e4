"""Membership in motion: the shell around the pure SWIM core (``_swim``).

One UDP socket, bound to the server's own address and TCP port number, and
one thread per server: it receives datagrams, feeds them to the core, calls
its ``tick`` when due and sends what it returns. A refusal (ICMP port
unreachable, read from the socket's error queue with ``IP_RECVERR``) is
passed to the core as proof that the process is gone. Joining uses the
runtime link once (a ``hello`` kernel call learns the member's ID and checks
its version); the steady state is datagrams only.

Datagrams are sealed with AES-GCM under a key derived from the cluster
key's private key; without a cluster key, on loopback, under one derived
from the same-user secret; between hosts without a key (``--insecure``)
they are plain. Datagrams that fail to decode or authenticate are dropped
and counted, and never change state. A drop from presence does not close
links or release leases (that is link death's business). Layer: server.
"""

from __future__ import annotations

import errno
import functools
import logging
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from collections.abc import Callable

from ..errors import CircuitError, ProtocolError
from ..runtime._addr import WorkerAddr, is_loopback, is_server_id
from ..runtime._auth import user_secret
from ._members import DIED, JOIN, LEAVE_KINDS, LEFT_EV, Event, Message, Out
from ._swim import Swim, SwimConfig
from ._swim_wire import MAX_DATAGRAM, MEMBERS_VERSION, Sealer, decode, derive_key, encode

_log = logging.getLogger(__name__)
_IP_RECVERR = getattr(socket, "IP_RECVERR", 11)
_IPV6_RECVERR = getattr(socket, "IPV6_RECVERR", 25)
_MSG_ERRQUEUE = getattr(socket, "MSG_ERRQUEUE", 0x2000)
_EXT_ERR = struct.Struct("=IBBBBII")  # struct sock_extended_err


@dataclass(frozen=True)
class ClusterConfig:
    swim: SwimConfig = field(default_factory=SwimConfig)
    max_wait: float = 2.0  # the loop looks at least this often (timers set by other threads)
    drop_log_lines: int = 5  # at most this many lines a minute about dropped datagrams


class Cluster:
    def __init__(
        self,
        rt: Any,
        server_id: str,
        on_event: Callable[[Event], None],
        cfg: ClusterConfig = ClusterConfig(),
        key: Any = None,
    ) -> None:
        self._rt = rt
        self.id, self.url = server_id, rt.url
        self._cfg = cfg
        self._on_event = on_event
        self._lock = threading.Lock()
        self._stop = threading.Event()
        host, port = rt.addr.host, rt.addr.port
        if key is not None:
            self._sealer: Sealer | None = Sealer(derive_key(key.datagram_secret()))
        elif is_loopback(host):
            self._sealer = Sealer(derive_key(user_secret()))
        else:
            self._sealer = None  # --insecure between hosts: plain
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            self._sock.bind((host, port))
        except OSError as e:
            self._sock.close()
            raise CircuitError(
                f"cannot bind the membership UDP port {host}:{port}: {e.strerror or e}"
            ) from None
        self._sock.setsockopt(
            *(
                (socket.IPPROTO_IPV6, _IPV6_RECVERR)
                if family == socket.AF_INET6
                else (socket.IPPROTO_IP, _IP_RECVERR)
            ),
            1,
        )
        self._sock.setblocking(False)
        self._addrs: dict[str, tuple[str, int]] = {}  # URL -> UDP address
        self._urls: dict[tuple[str, int], str] = {}
        self._core = Swim(server_id, self.url, cfg.swim, now=time.monotonic())
        self.dropped = 0
        self._drop_log: list[float] = []
        self._thread = threading.Thread(target=self._loop, name="pycircuit-members", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Announce our leave to a few members, then stop."""
        with self._lock:
            out = self._core.leave(time.monotonic())
        self._send_all(out.sends)
        self._stop.set()
        self._thread.join(2.0)
        self._sock.close()

    # -- what the kernel and the server call ----------------------------------------
    def join(self, url: str) -> str:
        """Join the circuit of the server at ``url``; raises if it does not
        answer. Returns its ID."""
        addr = WorkerAddr.parse(url)
        if self._rt.is_dead(addr.id):
            self._rt.revive(addr.id)  # a server we lost comes back: let the runtime dial it again
        their_id, their_url, version = self._rt.dial(addr, "circuit").hello(
            self.id, self.url, MEMBERS_VERSION
        )
        _check_version(version)
        self._feed_core(lambda now: self._core.join(str(their_id), str(their_url), now))
        return str(their_id)

    def hello(self, from_id: str, from_url: str, version: int) -> tuple[str, str, int]:
        """A server joins through us: learn of it, and sync with it too."""
        _check_version(version)
        if not is_server_id(from_id):
            raise CircuitError(f"not a server ID: {from_id!r}")
        WorkerAddr.parse(from_url)
        self._feed_core(lambda now: self._core.join(from_id, from_url, now))
        return self.id, self.url, MEMBERS_VERSION

    def alive(self) -> list[tuple[str, str]]:
        with self._lock:
            return self._core.alive()

    # -- machinery --------------------------------------------------------------------
    def _feed_core(self, step: Callable[[float], Out]) -> None:
        with self._lock:
            out = step(time.monotonic())
        self._send_all(out.sends)
        self._emit(out.events)

    def _loop(self) -> None:
        sock = self._sock
        while not self._stop.is_set():
            with self._lock:
                wait = self._core.next_deadline() - time.monotonic()
            try:
                ready = select.select([sock], [], [], min(max(wait, 0.0), self._cfg.max_wait))[0]
                if ready:
                    self._receive()
                now = time.monotonic()
                with self._lock:
                    out = self._core.tick(now) if self._core.next_deadline() <= now else None
                if out is not None:
                    self._send_all(out.sends)
                    self._emit(out.events)
            except (OSError, ValueError):
                if self._stop.is_set():
                    return  # the socket was closed under us: we are stopping
                _log.exception("membership loop: unexpected error (continuing)")
                self._stop.wait(0.1)
            except Exception:  # a bug must not end presence silently
                _log.exception("membership loop: unexpected error (continuing)")
                self._stop.wait(0.1)

    def _receive(self) -> None:
        for _ in range(256):  # bounded: timers get their turn under a flood
            try:
                data, src = self._sock.recvfrom(MAX_DATAGRAM)
            except BlockingIOError:  # drained: back to the loop
                return
            except ConnectionRefusedError:
                self._refusals()
                continue
            try:
                src_id, src_url, msg = decode(data, self._sealer)
            except ProtocolError as e:
                self._dropped(src, str(e))
                continue
            self._feed_core(functools.partial(self._core.on_message, src_id, src_url, msg))

    def _refusals(self) -> None:
        """Drain the error queue: each port-unreachable names the address a
        datagram of ours was refused at."""
        while True:
            try:
                _, anc, _, dst = self._sock.recvmsg(1, 512, _MSG_ERRQUEUE)
            except (BlockingIOError, InterruptedError):  # no more refusals queued
                return
            except OSError:  # an unreadable error queue (closed socket): refusals are only a hint
                return
            for _lvl, _typ, raw in anc:
                if len(raw) >= _EXT_ERR.size and _EXT_ERR.unpack_from(raw)[0] == errno.ECONNREFUSED:
                    url = self._urls.get(dst[:2])
                    if url is not None:
                        self._feed_core(functools.partial(self._core.on_refused, url))

    def _send_all(self, sends: list[tuple[str, Message]]) -> None:
        for url, msg in sends:
            addr = self._addrs.get(url)
            if addr is None:
                try:
                    a = WorkerAddr.parse(url)
                except CircuitError:  # a member with a malformed URL: nothing to reach
                    continue
                addr = self._addrs[url] = (a.host, a.port)
                self._urls[addr] = url
            try:
                self._sock.sendto(encode(self.id, self.url, msg, self._sealer), addr)
            except ConnectionRefusedError:
                self._refusals()  # an earlier datagram's refusal, reported here
            except OSError as e:  # unreachable or filtered: for the core, silence
                _log.debug("membership datagram to %s not sent: %s", url, e)

    def _dropped(self, src: Any, why: str) -> None:
        self.dropped += 1
        now = time.monotonic()
        self._drop_log = [t for t in self._drop_log if now - t < 60.0]
        if len(self._drop_log) < self._cfg.drop_log_lines:
            self._drop_log.append(now)
            _log.warning(
                "dropped a membership datagram from %s: %s (%d dropped so far)",
                src,
                why,
                self.dropped,
            )

    def _emit(self, events: list[Event]) -> None:
        for ev in events:
            if ev.kind == JOIN or ev.kind in LEAVE_KINDS:
                try:
                    self._on_event(ev)
                except Exception:  # a subscriber's failure must not stop membership
                    _log.exception("membership event handler failed")


def _check_version(theirs: Any) -> None:
    if theirs != MEMBERS_VERSION:
        raise ProtocolError(
            f"incompatible pycircuit membership protocol: this side speaks version "
            f"{MEMBERS_VERSION}, the peer speaks version {theirs}"
        )


__all__ = ["Cluster", "ClusterConfig", "Event", "JOIN", "DIED", "LEFT_EV", "LEAVE_KINDS"]
