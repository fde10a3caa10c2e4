"""The nameserver element's sockets: one UDP socket and one TCP listener on
the same address and port, served by one thread with a selector. What each
message is answered with is the caller's ``answer`` function (the pure
``_dns_answer.respond`` over the element's records).

Over TCP (RFC 7766) each message carries a two-byte length, a connection may
carry many queries, pipelined (answered in order), and is closed once it made
no progress for ``DnsConfig.tcp_idle_timeout``; at most
``tcp_max_connections`` are open at once: beyond that, new connections wait
in the kernel's queue until one closes (silent ones do, after the timeout). A
client that does not read its answers is not read either once
``tcp_max_unsent`` bytes are queued for it. A TCP message that gets no answer
(not a query) closes its connection once the answers before it are sent.
"""

from __future__ import annotations

import errno
import logging
import selectors
import socket
import threading
import time
from typing import NamedTuple
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import ElementError
from ._dns_answer import TCP_MAX, UDP_MIN, Deframer, frame

__all__ = ["DnsConfig", "DnsSockets", "parse_addr", "join_hostport"]

log = logging.getLogger(__name__)

_READ, _WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE
_UDP, _LISTEN, _WAKE = "udp", "listen", "wake"  # selector tags of our own sockets
_BATCH = 32  # datagrams or accepts handled per wake-up, so neither starves the other
_ACCEPT_PAUSE = 0.1  # seconds without accepting after the process ran out of descriptors


@dataclass(frozen=True)
class DnsConfig:
    """Limits of one nameserver element."""

    tcp_idle_timeout: float = 10.0  # seconds a TCP connection may stay without progress
    tcp_max_connections: int = 64  # open TCP connections at once
    tcp_max_unsent: int = (
        256 * 1024
    )  # bytes queued for a client that does not read before we stop reading
    udp_max: int = 1232  # largest UDP response (and EDNS size we advertise): no fragments
    bind_attempts: int = 16  # tries to find a port free for both UDP and TCP (port 0)

    def __post_init__(self) -> None:
        if not self.tcp_idle_timeout > 0:
            raise ElementError("tcp_idle_timeout must be positive")
        for name in ("tcp_max_connections", "tcp_max_unsent", "bind_attempts"):
            if getattr(self, name) < 1:
                raise ElementError(f"{name} must be at least 1")
        if not UDP_MIN <= self.udp_max <= TCP_MAX:
            raise ElementError(f"udp_max must be in [{UDP_MIN}, {TCP_MAX}]")


def _one_line(s: object) -> str:
    return " ".join(str(s).split())


def parse_addr(addr: str | None) -> tuple[str, int, str]:
    """(host, port, text for error messages) of "HOST:PORT", "HOST", "[V6]:PORT"
    or ""/None (127.0.0.1, a free port). An empty host means 127.0.0.1."""
    if addr is None or addr == "":
        return "127.0.0.1", 0, "127.0.0.1:0"
    if not isinstance(addr, str):
        raise ElementError(f"cannot listen on {addr!r}: the address must be a string \"HOST:PORT\"")
    s = addr.strip()
    port_s = ""
    if s.startswith("["):
        end = s.find("]")
        if end < 0 or (s[end + 1 :] and not s[end + 1 :].startswith(":")):
            raise ElementError(f"cannot listen on {addr}: malformed address")
        host, port_s = s[1:end], s[end + 2 :]
    elif s.count(":") == 1:
        host, port_s = s.split(":")
    else:  # "HOST", or a bare IPv6 address
        host = s
    if port_s:
        if not port_s.isdigit() or int(port_s) > 65535:
            raise ElementError(f"cannot listen on {addr}: bad port {port_s!r}")
        port = int(port_s)
    else:
        port = 0
    return host or "127.0.0.1", port, addr


def join_hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _Conn:
    """One TCP client: what it sent that is not yet a whole message, what we
    owe it, and when it last made progress."""

    __slots__ = ("sock", "deframer", "out", "last", "eof", "events")

    def __init__(self, sock: socket.socket, now: float) -> None:
        self.sock = sock
        self.deframer = Deframer()
        self.out = bytearray()
        self.last = now
        self.eof = False  # the client sent EOF, or something that is not a query: read no more
        self.events = _READ


class _Socks(NamedTuple):
    udp: socket.socket
    tcp: socket.socket
    wake_r: socket.socket
    wake_w: socket.socket


class DnsSockets:
    """Serves ``answer(message, tcp) -> response or None`` on UDP and TCP."""

    def __init__(
        self, addr: str | None, config: DnsConfig, answer: Callable[[bytes, bool], bytes | None]
    ) -> None:
        self._host, self._port, self._addr_text = parse_addr(addr)
        self._cfg = config
        self._answer = answer
        self._socks: _Socks | None = None  # set while serving
        self._thread: threading.Thread | None = None
        self.address = join_hostport(self._host, self._port)
        # owned by the serving thread
        self._conns: set[_Conn] = set()
        self._accepting = True
        self._accept_paused_until: float | None = None  # out of descriptors: try again then

    def start(self) -> None:
        """Bind (ElementError if that fails) and serve in a daemon thread."""
        udp, tcp = self._bind()
        try:
            for s in (udp, tcp):
                s.setblocking(False)
            wake_r, wake_w = socket.socketpair()
        except OSError as e:
            udp.close()
            tcp.close()
            raise ElementError(f"cannot listen on {self._addr_text}: {_one_line(e)}") from None
        self._socks = socks = _Socks(udp, tcp, wake_r, wake_w)
        host, port = udp.getsockname()[:2]
        self.address = join_hostport(host, port)
        self._thread = threading.Thread(
            target=self._serve, args=(socks,), name=f"dns {self.address}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Close every socket (connections included); returns once the port is free."""
        socks = self._socks
        if self._thread is None or socks is None:
            return
        try:
            socks.wake_w.send(b"x")
        except OSError as e:  # the thread also ends on a closed wake socket
            log.debug("nameserver %s: wake failed: %s", self.address, e)
        if self._thread is not threading.current_thread():
            self._thread.join()
        for s in socks:
            s.close()
        self._thread = self._socks = None

    def _bind(self) -> tuple[socket.socket, socket.socket]:
        """UDP and TCP sockets bound to one port; with port 0 the OS picks
        the UDP port and we try again if TCP has that port taken."""

        def fail(reason: object) -> ElementError:
            return ElementError(f"cannot listen on {self._addr_text}: {_one_line(reason)}")

        try:
            infos = socket.getaddrinfo(
                self._host, self._port, socket.AF_UNSPEC, socket.SOCK_DGRAM, 0, socket.AI_PASSIVE
            )
        except (socket.gaierror, UnicodeError, OSError) as e:
            raise fail(e) from None
        if not infos:
            raise fail("no such address")
        family, _, _, _, sockaddr = infos[0]
        for _ in range(self._cfg.bind_attempts):
            try:
                udp = self._bind_one(family, socket.SOCK_DGRAM, sockaddr)
            except OSError as e:
                raise fail(e.strerror or e) from None
            try:
                port = udp.getsockname()[1]
                tcp = self._bind_one(family, socket.SOCK_STREAM, (sockaddr[0], port, *sockaddr[2:]))
            except OSError as e:
                udp.close()
                if self._port == 0 and e.errno == errno.EADDRINUSE:
                    log.debug("nameserver: TCP port %d taken, trying another", port)
                    continue
                raise fail(e.strerror or e) from None
            return udp, tcp
        raise fail(f"no port free for both UDP and TCP in {self._cfg.bind_attempts} tries")

    def _bind_one(self, family: int, type_: int, sockaddr: tuple) -> socket.socket:
        sock = socket.socket(family, type_)
        try:
            if type_ == socket.SOCK_STREAM:
                # our own closed connections (TIME_WAIT) must not keep the port
                # from a new element; a live listener still does
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(sockaddr)
            if type_ == socket.SOCK_STREAM:
                sock.listen()
        except OSError:
            sock.close()
            raise
        return sock

    def _serve(self, socks: _Socks) -> None:
        sel = selectors.DefaultSelector()
        try:
            sel.register(socks.udp, _READ, _UDP)
            sel.register(socks.tcp, _READ, _LISTEN)
            sel.register(socks.wake_r, _READ, _WAKE)
            while True:
                timeout = self._expire(sel, socks.tcp, time.monotonic())
                for key, mask in sel.select(timeout):
                    if key.data is _WAKE:
                        return
                    if key.data is _UDP:
                        self._udp_ready(socks.udp)
                    elif key.data is _LISTEN:
                        self._accept(sel, socks.tcp)
                    elif key.data in self._conns:  # not closed earlier in this round
                        self._conn_ready(sel, socks.tcp, key.data, mask)
        except Exception:
            log.exception("nameserver %s stopped serving", self.address)
        finally:
            for c in self._conns:
                c.sock.close()
            self._conns.clear()
            sel.close()

    def _udp_ready(self, udp: socket.socket) -> None:
        for _ in range(_BATCH):
            try:
                data, peer = udp.recvfrom(65535)
            except (
                BlockingIOError,
                InterruptedError,
            ):  # nothing more waiting: back to the selector
                return
            except OSError as e:  # e.g. an ICMP error for an earlier answer
                log.debug("nameserver %s: UDP receive: %s", self.address, e)
                continue
            reply = self._answer(data, False)
            if reply is not None:
                try:
                    udp.sendto(reply, peer)
                except OSError as e:  # the client's problem; UDP promises nothing
                    log.debug("nameserver %s: UDP send to %s: %s", self.address, peer, e)

    def _accept(self, sel: selectors.BaseSelector, tcp: socket.socket) -> None:
        for _ in range(_BATCH):
            if len(self._conns) >= self._cfg.tcp_max_connections:
                self._pause_accepting(sel, tcp)  # resumed by _close
                return
            try:
                sock, _ = tcp.accept()
            except (
                BlockingIOError,
                InterruptedError,
            ):  # nothing more waiting: back to the selector
                return
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # the connection stays queued and the listener readable: pause, not spin
                    log.warning("nameserver %s: cannot accept TCP: %s", self.address, e)
                    self._accept_paused_until = time.monotonic() + _ACCEPT_PAUSE
                    self._pause_accepting(sel, tcp)
                    return
                log.debug("nameserver %s: accept: %s", self.address, e)
                continue  # e.g. ECONNABORTED: that client gave up
            sock.setblocking(False)
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError as e:  # only latency of pipelined answers suffers
                log.debug("nameserver %s: TCP_NODELAY: %s", self.address, e)
            c = _Conn(sock, time.monotonic())
            self._conns.add(c)
            sel.register(sock, _READ, c)

    def _pause_accepting(self, sel: selectors.BaseSelector, tcp: socket.socket) -> None:
        if self._accepting:
            sel.unregister(tcp)
            self._accepting = False

    def _resume_accepting(
        self, sel: selectors.BaseSelector, tcp: socket.socket, now: float
    ) -> None:
        if self._accepting or len(self._conns) >= self._cfg.tcp_max_connections:
            return
        if self._accept_paused_until is not None:
            if now < self._accept_paused_until:
                return
            self._accept_paused_until = None
        sel.register(tcp, _READ, _LISTEN)
        self._accepting = True

    def _conn_ready(
        self, sel: selectors.BaseSelector, tcp: socket.socket, c: _Conn, mask: int
    ) -> None:
        now = time.monotonic()
        if mask & _READ and not c.eof:
            try:
                data = c.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                data = None
            except OSError as e:  # reset by the client
                log.debug("nameserver %s: TCP receive: %s", self.address, e)
                self._close(sel, tcp, c)
                return
            if data == b"":
                c.eof = True
            elif data:
                c.last = now
                c.deframer.feed(data)
        while True:  # answer what we may, send what we can, until either stops
            while len(c.out) < self._cfg.tcp_max_unsent and (msg := c.deframer.next()) is not None:
                reply = self._answer(msg, True)
                if reply is None:  # not a query: finish the answers before it, then close
                    c.eof = True
                    c.deframer.clear()
                    break
                c.out += frame(reply)
            if not c.out:
                break
            try:
                n = c.sock.send(c.out)
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError as e:
                log.debug("nameserver %s: TCP send: %s", self.address, e)
                self._close(sel, tcp, c)
                return
            if n:
                c.last = now
            del c.out[:n]
            if c.out:
                break  # the client's window is full: wait until it is writable
        if c.eof and not c.out:
            self._close(sel, tcp, c)  # whatever is left in the deframer is no whole message
            return
        events = _WRITE if c.out else 0
        if not c.eof and len(c.out) < self._cfg.tcp_max_unsent:
            events |= _READ  # a client that does not read its answers is not read either
        if events != c.events:
            sel.modify(c.sock, events, c)
            c.events = events

    def _expire(self, sel: selectors.BaseSelector, tcp: socket.socket, now: float) -> float | None:
        """Close connections idle too long; seconds until the next deadline."""
        self._resume_accepting(sel, tcp, now)
        deadlines = [self._accept_paused_until] if self._accept_paused_until is not None else []
        idle = self._cfg.tcp_idle_timeout
        for c in list(self._conns):
            if now - c.last >= idle:
                log.debug("nameserver %s: closing an idle TCP connection", self.address)
                self._close(sel, tcp, c)
            else:
                deadlines.append(c.last + idle)
        return max(0.0, min(deadlines) - now) if deadlines else None

    def _close(self, sel: selectors.BaseSelector, tcp: socket.socket, c: _Conn) -> None:
        self._conns.discard(c)
        sel.unregister(c.sock)
        c.sock.close()
        self._resume_accepting(sel, tcp, time.monotonic())
