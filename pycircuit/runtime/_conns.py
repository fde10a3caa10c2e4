"""Connections of a runtime: accepting (authentication and HELLO within a
deadline), dialling, the peers by runtime ID, and what happens when one is
lost. Layer: runtime (``_refs`` below it in the ``Runtime`` class,
``_calls`` above)."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Callable

from ..errors import CircuitError, NetworkError, ProtocolError, StaleAddressError
from . import _wire
from ._limits import describe_os_error
from ._addr import WorkerAddr, is_loopback, new_worker_id
from ._auth import AuthRefused, SecretAuth, user_secret
from ._config import RuntimeConfig
from ._link import refusal_frame
from ._peer import Peer
from ._refs import RefsCore
from ._reactor import REACTOR
from ._threads import THREADS

log = logging.getLogger(__name__)


def _host_arg(host: str) -> str | bytes:
    """An ASCII host as bytes: getaddrinfo encodes a str host with the idna
    codec, whose import (with stringprep and unicodedata) a client's start-up
    and every worker's first dial would pay."""
    return host.encode("ascii") if host.isascii() else host


def _log_refusal(why: str) -> None:
    log.info("refused a connection: %s", why)


class ConnsCore(RefsCore):
    def __init__(self, cfg: RuntimeConfig, on_refused: Callable[[str], None] | None = None) -> None:
        super().__init__(cfg)
        self.id = cfg.runtime_id or new_worker_id()
        self.pid = os.getpid()
        # Runtimes known lost, oldest first (bounded by cfg.max_dead).
        self._dead: dict[str, None] = {}
        self._dial_locks: dict[str, threading.Lock] = defaultdict(threading.Lock)
        self.on_peer_lost: list[Callable[[Peer], object]] = []
        self._closed = False
        self._on_refused = on_refused or _log_refusal
        # Without a key, a runtime on loopback accepts only this user's
        # runtimes; one listening elsewhere (`start --insecure`, or a client
        # of a remote insecure circuit) accepts anyone who proves nothing.
        self._auth = (
            cfg.tls
            if cfg.tls is not None
            else SecretAuth(
                user_secret(), open=not is_loopback(cfg.host), timeout=cfg.handshake_timeout
            )
        )
        self._handshakes = threading.BoundedSemaphore(cfg.max_handshakes)
        self._accept_backoff = 0.0  # the pause after a failed accept (see _accept_ready)
        self._sock = socket.create_server((cfg.host, cfg.port), backlog=512)
        host, port = self._sock.getsockname()[:2]
        self.addr = WorkerAddr(
            cfg.host if cfg.host not in ("0.0.0.0", "::") else host, port, self.pid, self.id
        )
        self.url = self.addr.url

    @property
    def is_open(self) -> bool:
        """Does this runtime accept connections that prove nothing?"""
        return bool(getattr(self._auth, "open", False))

    # -- accepting ----------------------------------------------------------
    def start_accepting(self) -> None:
        """Accept in the reactor thread from now on (no thread of its own)."""
        self._sock.setblocking(False)
        REACTOR.listen(self._sock, self._accept_ready)

    def stop_accepting(self) -> None:
        REACTOR.unwatch(self._sock)

    def _accept_ready(self) -> None:
        """In the reactor thread: accept what is waiting, hand each
        connection's handshake to a pool thread; never blocks."""
        first, most = self.cfg.accept_backoff
        while not self._closed:
            try:
                sock, _ = self._sock.accept()
            except BlockingIOError:
                self._accept_backoff = 0.0
                return  # all taken
            except OSError as e:
                if self._closed:
                    return
                # EMFILE and friends fail again at once: stop watching for
                # a pause doubling from the first figure to the second
                backoff = self._accept_backoff = min(max(2 * self._accept_backoff, first), most)
                if backoff in (first, most):
                    log.warning("accepting connections failed: %s; retrying", e.strerror or e)
                REACTOR.unwatch(self._sock)
                REACTOR.call_later(backoff, self._resume_accepting)
                return
            sock.setblocking(True)
            if not self._handshakes.acquire(False):
                close_quietly(sock)
                self._on_refused("too many connections authenticating at once")
                continue
            THREADS.start(self._adopter(sock), "pycircuit-serve-peer")

    def _resume_accepting(self) -> None:
        if not self._closed:
            REACTOR.listen(self._sock, self._accept_ready)

    def _adopter(self, sock: socket.socket) -> Callable[[], None]:
        return lambda: self._adopt(sock)

    def _adopt(self, sock: socket.socket) -> None:
        """Authenticate an accepted connection and read its HELLO, both
        within ``handshake_timeout``; then serve it in this thread."""
        deadline = time.monotonic() + self.cfg.handshake_timeout
        try:
            try:
                sock = self._auth.wrap_server(sock)
            except AuthRefused as e:
                _refuse_hello(sock, f"refused: {e}", self.cfg.refusal_linger)
                self._on_refused(str(e))
                return
            except Exception as e:  # any failed handshake is a refusal, said why
                close_quietly(sock)
                self._on_refused(str(e))
                return
            peer = Peer(self, sock)  # type: ignore[arg-type]  # self is the Runtime this core is part of
            with self._lock:
                self._all_peers.add(peer)
            if not peer.first_request(deadline) or peer.id is None:
                peer.conn.abort()
                self.peer_lost(peer, None)
                self._on_refused("no HELLO in time" if peer.id is None else "bad HELLO")
                return
        finally:
            self._handshakes.release()
        peer.group.run_here()  # this thread serves the connection: no second thread to wake

    def adopt_link(self, sock: socket.socket) -> None:
        """Serve our end of a socketpair whose other end went to a process
        we started (a worker forked for us): nobody else holds it, so it
        proves nothing; the process says HELLO first, once it runs, however
        long its start takes, and no thread waits for it meanwhile."""
        peer = Peer(self, sock)  # type: ignore[arg-type]  # as in _adopt
        with self._lock:
            self._all_peers.add(peer)
        peer.group.start_parked()

    def handle_hello(self, peer: Peer, frame: bytes) -> bytes:
        if peer.id is not None:  # one identity per connection: leases are bound to it
            return b"!protocol error: a second HELLO on one connection"
        try:
            h = _wire.decode_hello(frame)
            _wire.check_version(_wire.WIRE_VERSION, h.version)
        except ProtocolError as e:
            return b"!" + str(e).encode()
        if (h.want_id and h.want_id != self.id) or (h.want_pid and h.want_pid != str(self.pid)):
            return b"!" + f"stale address: this port is now runtime {self.url}".encode()
        try:
            addr = WorkerAddr.parse(h.url)
        except CircuitError as e:
            return b"!" + str(e).encode()
        peer.id, peer.addr, peer.role = h.runtime_id, addr, h.role
        with self._lock:
            cur = self._peers.get(peer.id)
            if cur is None or cur.dead:
                self._peers[peer.id] = peer
        me = _wire.Hello(_wire.WIRE_VERSION, self.id, self.url, self.cfg.role)
        return _wire.encode_hello(me)

    # -- dialling -----------------------------------------------------------
    def peer(self, addr: WorkerAddr) -> Peer:
        # The fast path reads _peers and _dead without the lock: a dict or set
        # lookup is atomic under the GIL, and a stale answer is checked again
        # under the dial lock. A free-threaded (PEP 703) build keeps dict reads
        # safe too (per-object locks), but _dead's bounded eviction would need
        # the lock here.
        p = self._peers.get(addr.id)
        if p is not None and not p.dead:
            if p.addr is not None and p.addr.pid != addr.pid:
                raise StaleAddressError(f"{addr}: stale address: runtime {addr.id} is {p.addr}")
            return p
        if addr.id in self._dead:
            raise NetworkError(f"runtime {addr} is dead (its connection was lost)")
        return self._dial_once(addr)

    def dial_link(self, addr: WorkerAddr, sock: socket.socket) -> Peer:
        """Connect to ``addr`` over ``sock``, a socketpair end the runtime
        at ``addr`` made and handed to this process as it started it (see
        ``adopt_link``): no TCP, no authentication; the HELLO as usual."""
        return self._dial_once(addr, sock)

    def _dial_once(self, addr: WorkerAddr, sock: socket.socket | None = None) -> Peer:
        """Under ``addr``'s dial lock: the live connection to it, else a new
        one (over ``sock`` if given; it is closed if not needed)."""
        with self._dial_locks[addr.id]:
            p = self._peers.get(addr.id)
            live = p is not None and not p.dead
            if not live and addr.id not in self._dead:
                return self._dial(addr, sock)
        if sock is not None:
            close_quietly(sock)
        if not live:
            raise NetworkError(f"runtime {addr} is dead (its connection was lost)")
        assert p is not None
        return p

    def _dial(self, addr: WorkerAddr, sock: socket.socket | None = None) -> Peer:
        if sock is None:
            try:
                sock = socket.create_connection(
                    (_host_arg(addr.host), addr.port),  # type: ignore[arg-type]  # getaddrinfo takes bytes too
                    timeout=self.cfg.connect_timeout,
                )
                sock = self._auth.wrap_client(sock)
            except OSError as e:
                raise NetworkError(f"cannot reach {addr}: {describe_os_error(e)}") from None
            except CircuitError as e:
                raise NetworkError(f"cannot reach {addr}: {e}") from None
        peer = Peer(self, sock)  # type: ignore[arg-type]  # as in _adopt
        peer.addr = addr
        peer.id = addr.id  # the runtime we dialled; its HELLO's answer confirms it
        with self._lock:
            self._all_peers.add(peer)
        peer.group.start()
        hello = _wire.Hello(
            _wire.WIRE_VERSION, self.id, self.url, self.cfg.role, addr.id, str(addr.pid)
        )
        # Not waiting for the answer: the first requests follow the HELLO
        # in the same round trip, and whoever reads a reply checks the
        # answer first (Peer.confirm, hello_answered).
        try:
            peer.say_hello(_wire.encode_hello(hello))
        except NetworkError as e:
            raise NetworkError(f"cannot reach {addr}: {e}") from None
        with self._lock:
            self._peers[addr.id] = peer
        return peer

    def hello_answered(self, peer: Peer, answer: bytes) -> CircuitError | None:
        """Check the answer to the HELLO of a connection we dialled: None
        if it is the runtime we dialled (the connection is then confirmed);
        else the error its callers raise, and the connection is closed."""
        addr = peer.addr
        try:
            if isinstance(answer, bytes) and answer.startswith(b"!"):
                msg = answer[1:].decode("utf-8", "replace")
                if msg.startswith("stale"):
                    raise StaleAddressError(f"{addr}: {msg}")
                if msg.startswith("refused"):
                    raise NetworkError(f"cannot reach {addr}: {msg}")
                raise ProtocolError(f"{addr} refused us: {msg}")
            theirs = _wire.decode_hello(answer)
            _wire.check_version(_wire.WIRE_VERSION, theirs.version)
            if addr is None or theirs.runtime_id != addr.id:
                raise StaleAddressError(
                    f"{addr}: stale address: this port is now runtime {theirs.runtime_id}"
                )
        except CircuitError as e:
            return self.hello_failed(peer, e)
        peer.role = theirs.role
        peer.confirmed = True
        return None

    def hello_failed(self, peer: Peer, err: CircuitError) -> CircuitError:
        """A dialled connection's HELLO got no good answer (``err`` says
        why): close it and forget it (the runtime dialled is not known
        lost: it was never known reached). Returns ``err``."""
        peer.conn.abort()
        self.peer_lost(peer, err)
        return err

    # -- losing -------------------------------------------------------------
    def peer_lost(self, peer: Peer, err: BaseException | None) -> None:
        """``peer``'s connection is gone: if no other connection speaks for
        its runtime, that runtime is known lost (its leases go)."""
        with self._lock:
            if peer.dead and peer not in self._all_peers:
                return
            peer.dead = True
            self._all_peers.discard(peer)
            if peer.id is None:
                return
            if self._peers.get(peer.id) is peer:
                del self._peers[peer.id]
            # Another live connection says it is the same runtime (a dial
            # race; or a peer claiming its ID): that runtime is not known
            # gone, so it keeps its leases and stays reachable.
            twin = next((p for p in self._all_peers if p.id == peer.id and not p.dead), None)
            if twin is not None:
                self._peers.setdefault(peer.id, twin)
                return
            if peer.confirmed:  # an unconfirmed dial reached nobody known: not a lost runtime
                self._dead[peer.id] = None
                if len(self._dead) > self.cfg.max_dead:
                    del self._dead[next(iter(self._dead))]
                self._dial_locks.pop(peer.id, None)
            # leases granted to it with requests sent behind its HELLO go too
            acks = self._forget_holder(peer.id)
        if acks:
            self._observer.handoffs(-acks)
        if not peer.confirmed:
            return
        for cb in list(self.on_peer_lost):
            try:
                cb(peer)
            except Exception:  # one subscriber's bug must not keep the others from hearing
                log.exception("a lost-peer callback failed")

    def is_dead(self, runtime_id: str) -> bool:
        return runtime_id in self._dead

    def revive(self, runtime_id: str) -> None:
        """Allow dialling a runtime again after its connection was lost.
        Only for servers (membership heals partitions): a worker that was
        lost stays dead for this process, as the API promises."""
        with self._lock:
            self._dead.pop(runtime_id, None)

    def drop(self, runtime_id: str) -> None:
        """Close the connection to a runtime judged unreachable; calls
        waiting on it raise NetworkError."""
        with self._lock:
            p = self._peers.get(runtime_id)
        if p is not None:
            p.conn.abort()
            self.peer_lost(p, None)


def close_quietly(sock: socket.socket) -> None:
    try:
        sock.close()
    except OSError:
        pass  # already broken: nothing left to release


def _refuse_hello(sock: socket.socket, why: str, linger: float) -> None:
    """Tell a dialer that was refused why, as the answer to its HELLO (the
    first request of every connection, sent right after its proof). The
    answer waits for the HELLO: sent earlier, the dialer could read it, and
    our close, before it has a request to match it with. Then close once
    the dialer has read it (closing with its bytes unread would reset the
    connection and lose the answer)."""
    try:
        sock.settimeout(linger)
        head = b""
        while len(head) < 5:
            chunk = sock.recv(5 - len(head))
            if not chunk:
                return
            head += chunk
        left = int.from_bytes(head[:4], "big") + 1  # the body and RPyC's flusher byte
        if left > 1 << 16:  # not a HELLO: nothing to answer
            return
        while left > 0:
            chunk = sock.recv(min(left, 1 << 16))
            if not chunk:
                return
            left -= len(chunk)
        sock.sendall(refusal_frame(1, _wire.OP_HELLO, b"!" + why.encode()))
        sock.shutdown(socket.SHUT_WR)
        end = time.monotonic() + linger
        while time.monotonic() < end and sock.recv(1 << 16):
            pass  # discard what the dialer sends until it closes
    except OSError:
        pass  # the dialer went first or stalled: nothing more to tell it
    finally:
        close_quietly(sock)
