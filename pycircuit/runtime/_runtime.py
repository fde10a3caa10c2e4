"""The runtime: one per process (client, worker or server).

It listens on a TCP port, keeps one RPyC connection per peer runtime, owns the
lease table of the objects it has handed out, the proxies it holds for other
runtimes' objects, and its named services. Every cross-call is one RPyC
request carrying one frame (see ``_wire``) whose payload is a value stream
(see ``_codec``).

Reference handoff: an ``X`` owned by B that A sends to C travels as (B's
address, handle). C acquires its own lease from B while decoding; A keeps its
proxy pinned until C has acquired (for a request, until the reply; for a
reply, until C's ack), so the object is never freed in between.
"""

from __future__ import annotations

import itertools
import logging
import os
import queue
import secrets
import socket
import threading
import time
import weakref
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any
from collections.abc import Callable


from ..errors import (
    CircuitError,
    NetworkError,
    NoSuchMethodError,
    ProtocolError,
    ReleasedError,
    RemoteImportError,
    SerializationError,
    StaleAddressError,
)
from ..xref._leases import NOT_HELD as _NOT_HELD, LeaseTable
from ..xref._x import X, XPerm
from . import _codec, _wire
from ._addr import WorkerAddr, is_loopback, new_worker_id
from ._auth import AuthRefused, SecretAuth, user_secret
from ._ctx import _DecodeCtx, _EncodeCtx
from ._future import Future
from ._link import WATCHDOG, refusal_frame
from ._peer import Peer
from ._remote_exc import decode_exception, encode_exception
from ._threads import THREADS, ThreadCounts

log = logging.getLogger(__name__)

MAX_DEAD = 10_000  # lost runtimes remembered (calls to them fail at once without a dial)

HANDLE_ROOT = 1  # the runtime's own service directory (dial, ping)
HANDLE_MAIN = 2  # a worker's main: runs the spawned function


@dataclass(frozen=True)
class RuntimeConfig:
    host: str = "127.0.0.1"
    port: int = 0
    role: str = "client"  # client | worker | server
    runtime_id: str | None = None
    host_label: str = ""  # names the host in errors (server ID for workers)
    connect_timeout: float = 5.0
    tls: Any = None  # a ClusterKey (mutual TLS), or None: same-user secret (see _auth)
    # An accepted connection authenticates and says HELLO within this time,
    # or is closed; at most max_handshakes do so at once (more are closed).
    handshake_timeout: float = 5.0
    max_handshakes: int = 64
    max_frame: int = 1 << 30  # largest message sent or accepted, in bytes
    # A link is dead when its peer is known gone (EOF, RST, refused) or its
    # host was silent this long; only then are leases through it released.
    link_silence: float = 30.0


def resolve_method(obj: Any, method: str) -> Callable:
    if not method or method.startswith("_"):
        raise NoSuchMethodError(
            f"no method {method!r} on type {type(obj).__qualname__} (private names are not remote)"
        )
    fn = getattr(obj, method, None)
    if fn is None or not callable(fn):
        raise NoSuchMethodError(f"no method {method!r} on type {type(obj).__qualname__}")
    return fn


def _or_abort(ctx: _EncodeCtx, step: Callable[..., Any], *args: Any) -> Any:
    """``step(*args)``; if it fails, the leases granted for the call go back."""
    try:
        return step(*args)
    except BaseException:
        ctx.abort()
        raise


class _Lifecycle:
    """A worker lives until its main function has been replied to and every
    run_in_back function has returned."""

    def __init__(self):
        self.lock = threading.Lock()
        self.main_started = False
        self.main_done = False
        self.background = 0
        self.serving = ThreadCounts()  # calls each thread served whose reply has not left yet
        self.handoffs = 0  # replies carrying third-party references, not yet acked
        self.finished = threading.Event()

    def check(self):
        # Without the inflight test, a call that makes the last background
        # function return (say, setting its event) would lose its reply.
        # Without the handoffs test, a worker returning a reference it holds
        # would drop its lease before the receiver acquired its own.
        if self.main_done and self.background == 0 and not self.serving and self.handoffs == 0:
            self.finished.set()


class _RefusalLog:
    """A server logs why it refused a connection (a peer without
    the cluster key, say): at most ``BURST`` lines a minute, so that a port
    scanner cannot fill the log (or a pipe nobody reads)."""

    BURST = 5
    WINDOW = 60.0

    def __init__(self):
        self._lock = threading.Lock()
        self._since = 0.0
        self._count = 0

    def note(self, why: str) -> None:
        now = time.monotonic()
        with self._lock:  # held while writing, too: lines from two handshakes do not interleave
            if now - self._since >= self.WINDOW:
                self._since, self._count = now, 0
            self._count += 1
            if self._count <= self.BURST:
                more = " (more in this minute are not logged)" if self._count == self.BURST else ""
                log.warning("refused a connection: %s%s", why, more)


class Runtime:
    def __init__(self, cfg: RuntimeConfig):
        self.cfg = cfg
        self.id = cfg.runtime_id or new_worker_id()
        self.pid = os.getpid()
        self._lock = threading.RLock()
        self._table = LeaseTable()
        self._peers: dict[str, Peer] = {}
        self._all_peers: set[Peer] = set()
        self._dead: dict[
            str, None
        ] = {}  # runtimes known lost, oldest first (bounded: see _peer_lost)
        self._dial_locks: dict[str, threading.Lock] = defaultdict(threading.Lock)
        self._proxies: weakref.WeakValueDictionary[tuple[str, int], X] = (
            weakref.WeakValueDictionary()
        )
        self._pending_acks: dict[int, tuple[str, list]] = {}
        self._services: dict[str, XPerm] = {}
        self._release_q: queue.SimpleQueue = queue.SimpleQueue()
        self._tl = threading.local()
        self.lifecycle = _Lifecycle()
        self.on_peer_lost: list[Callable[[Peer], None]] = []
        self._closed = False
        self._refusals = _RefusalLog()
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
        self._max_reply = cfg.max_frame - 64  # room for the frame and reply heads
        if cfg.role == "client" and self.is_open:
            log.warning(
                "this program listens on %s without a cluster key (its circuit is remote and has none): "
                "anyone who can reach that address can call into it",
                cfg.host,
            )

        self._sock = socket.create_server((cfg.host, cfg.port), backlog=512)
        host, port = self._sock.getsockname()[:2]
        self.addr = WorkerAddr(
            cfg.host if cfg.host not in ("0.0.0.0", "::") else host, port, self.pid, self.id
        )
        self.url = self.addr.url
        self._table.add_static(HANDLE_ROOT, _RootService(self))
        threading.Thread(target=self._accept_loop, name="pycircuit-accept", daemon=True).start()
        threading.Thread(target=self._release_loop, name="pycircuit-release", daemon=True).start()
        THREADS.warm()  # the first connections start their threads without waiting
        WATCHDOG.warm()

    @property
    def host_label(self) -> str:
        return self.cfg.host_label or self.url

    # -- connections ------------------------------------------------------
    @property
    def is_open(self) -> bool:
        """Does this runtime accept connections that prove nothing?"""
        return getattr(self._auth, "open", False)

    def _accept_loop(self) -> None:
        backoff = 0.0
        while not self._closed:
            try:
                sock, _ = self._sock.accept()
            except OSError as e:
                if self._closed:
                    return
                # EMFILE and friends: accept fails again at once until a
                # descriptor frees up; back off instead of spinning.
                backoff = min(max(2 * backoff, 0.01), 1.0)
                if backoff == 1.0 or backoff == 0.01:
                    log.warning("accepting connections failed: %s; retrying", e.strerror or e)
                time.sleep(backoff)
                continue
            backoff = 0.0
            if not self._handshakes.acquire(False):
                _close_quietly(sock)
                self._refused("too many connections authenticating at once")
                continue
            THREADS.start(lambda s=sock: self._adopt(s), "pycircuit-serve-peer")

    def _refused(self, why: str) -> None:
        if self.cfg.role == "server":
            self._refusals.note(why)
        else:
            log.info("refused a connection: %s", why)

    def _adopt(self, sock: socket.socket) -> None:
        """Authenticate an accepted connection and read its HELLO, both
        within ``handshake_timeout``; then serve it in this thread."""
        deadline = time.monotonic() + self.cfg.handshake_timeout
        try:
            try:
                sock = self._auth.wrap_server(sock)
            except AuthRefused as e:
                _refuse_hello(sock, f"refused: {e}")
                self._refused(str(e))
                return
            except Exception as e:
                _close_quietly(sock)
                self._refused(str(e))
                return
            peer = Peer(self, sock, self.cfg.max_frame, self.cfg.link_silence)
            with self._lock:
                self._all_peers.add(peer)
            if not peer.first_request(deadline) or peer.id is None:
                peer.conn.abort()
                self._peer_lost(peer, None)
                self._refused("no HELLO in time" if peer.id is None else "bad HELLO")
                return
        finally:
            self._handshakes.release()
        peer.group.run_here()  # this thread serves the connection: no second thread to wake

    def peer(self, addr: WorkerAddr) -> Peer:
        p = self._peers.get(addr.id)
        if p is not None and not p.dead:
            if p.addr is not None and p.addr.pid != addr.pid:
                raise StaleAddressError(f"{addr}: stale address: runtime {addr.id} is {p.addr}")
            return p
        if addr.id in self._dead:
            raise NetworkError(f"runtime {addr} is dead (its connection was lost)")
        with self._dial_locks[addr.id]:
            p = self._peers.get(addr.id)
            if p is not None and not p.dead:
                return p
            if addr.id in self._dead:
                raise NetworkError(f"runtime {addr} is dead (its connection was lost)")
            return self._dial(addr)

    def _dial(self, addr: WorkerAddr) -> Peer:
        try:
            sock = socket.create_connection(
                (addr.host, addr.port), timeout=self.cfg.connect_timeout
            )
            sock = self._auth.wrap_client(sock)
        except OSError as e:
            raise NetworkError(f"cannot reach {addr}: {e.strerror or e}") from None
        except CircuitError as e:
            raise NetworkError(f"cannot reach {addr}: {e}") from None
        peer = Peer(self, sock, self.cfg.max_frame, self.cfg.link_silence)
        peer.addr = addr
        with self._lock:
            self._all_peers.add(peer)
        peer.group.start()
        hello = _wire.Hello(
            _wire.WIRE_VERSION, self.id, self.url, self.cfg.role, addr.id, str(addr.pid)
        )
        try:
            answer = peer.invoke(_wire.OP_HELLO, _wire.encode_hello(hello))
        except NetworkError as e:
            raise NetworkError(f"cannot reach {addr}: {e}") from None
        if isinstance(answer, bytes) and answer.startswith(b"!"):
            peer.dead = True
            peer.conn.abort()
            msg = answer[1:].decode("utf-8", "replace")
            if msg.startswith("stale"):
                raise StaleAddressError(f"{addr}: {msg}")
            if msg.startswith("refused"):
                raise NetworkError(f"cannot reach {addr}: {msg}")
            raise ProtocolError(f"{addr} refused us: {msg}")
        theirs = _wire.decode_hello(answer)
        _wire.check_version(_wire.WIRE_VERSION, theirs.version)
        if theirs.runtime_id != addr.id:
            peer.dead = True
            peer.conn.abort()
            raise StaleAddressError(
                f"{addr}: stale address: this port is now runtime {theirs.runtime_id}"
            )
        peer.id, peer.role = theirs.runtime_id, theirs.role
        with self._lock:
            self._peers[peer.id] = peer
        return peer

    def _on_hello(self, peer: Peer, frame: bytes) -> bytes:
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

    def _peer_lost(self, peer: Peer, err) -> None:
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
            self._dead[peer.id] = None
            if (
                len(self._dead) > MAX_DEAD
            ):  # forgetting the oldest is safe: dialling them fails anyway
                del self._dead[next(iter(self._dead))]
            self._dial_locks.pop(peer.id, None)
            self._table.drop_holder(peer.id)
            gone = [t for t, (pid, _) in self._pending_acks.items() if pid == peer.id]
            for token in gone:
                del self._pending_acks[token]
        if gone:
            self._handoffs_settled(len(gone))
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
            self._peer_lost(p, None)

    # -- references -------------------------------------------------------
    def local_ref(self, obj: Any, perm: bool) -> X:
        if obj is None:
            raise TypeError("cannot make a cross-interface to None")
        with self._lock:
            h = self._table.register(obj, perm)
        return self._wrap_local(h, obj, perm)

    def _wrap_local(self, h: int, obj: Any, perm: bool) -> X:
        x = (XPerm if perm else X)(self, self.addr, h, obj)
        weakref.finalize(x, self._unpin, h)
        return x

    def _unpin(self, h: int) -> None:
        with self._lock:
            self._table.unpin(h)

    def _local_x(self, handle: int, perm: bool) -> X:
        with self._lock:
            if handle not in self._table:
                raise ReleasedError(
                    f"reference H{handle:016x} was released by its owner {self.url}"
                )
            obj = self._table.get(handle)
            self._table.pin(handle)
        return self._wrap_local(handle, obj, perm)

    def _proxy(self, owner: WorkerAddr, handle: int, perm: bool) -> X:
        key = (owner.id, handle)
        with self._lock:
            p = self._proxies.get(key)
            if p is None:
                p = (XPerm if perm else X)(self, owner, handle, None, [0])
                self._proxies[key] = p
                weakref.finalize(p, self._release_q.put, (owner, handle, p._cell))
            return p

    def proxy_count(self) -> int:
        return len(self._proxies)

    def table_size(self) -> int:
        with self._lock:
            return len(self._table)

    def table_has(self, handle: int) -> bool:
        with self._lock:
            return handle in self._table

    def _release_loop(self) -> None:
        while True:
            items = [self._release_q.get()]
            while True:
                try:
                    items.append(self._release_q.get_nowait())
                except queue.Empty:  # drained: send this batch
                    break
            stop = None in items  # close()
            try:
                self._send_releases([i for i in items if i is not None])
            except Exception:  # never die: every later release would be lost
                log.exception("sending lease releases failed")
            if stop:
                return

    def _send_releases(self, items: list) -> None:
        batches: dict[str, Counter] = defaultdict(Counter)
        for owner, handle, cell in items:
            with self._lock:
                n, cell[0] = cell[0], 0
            if n:
                batches[owner.id][handle] += n
        for oid, counts in batches.items():
            p = self._peers.get(oid)
            if p is not None and not p.dead:
                p.post(_wire.OP_RELEASE, _wire.encode_leases(list(counts.items())))

    def _on_release(self, peer: Peer, frame: bytes) -> None:
        if peer.id is None:
            return
        items = _wire.decode_leases(frame)
        with self._lock:
            for handle, n in items:
                self._table.release(handle, peer.id, n)

    def _on_acquire(self, peer: Peer, frame: bytes) -> bytes:
        if peer.id is None:
            return _wire.encode_leases([])
        granted = []
        with self._lock:
            for handle, n in _wire.decode_leases(frame):
                if handle in self._table and not self._table.is_perm(handle):
                    self._table.grant(handle, peer.id, n)
                    granted.append((handle, n))
        return _wire.encode_leases(granted)

    def _on_ack(self, peer: Peer, token: int) -> None:
        with self._lock:
            settled = self._pending_acks.pop(token, None) is not None
        if settled:
            self._handoffs_settled(1)

    def _handoffs_settled(self, n: int) -> None:
        lc = self.lifecycle
        with lc.lock:
            lc.handoffs -= n
            lc.check()

    # -- calls --------------------------------------------------------------
    def call_x(self, x: X, method: str, args: tuple, kwargs: dict) -> Any:
        if x._local is not None:
            return resolve_method(x._local, method)(*args, **kwargs)
        return self.call_remote(x._owner, x._handle, method, args, kwargs)

    def call_remote(
        self, addr: WorkerAddr, handle: int, method: str, args: tuple, kwargs: dict
    ) -> Any:
        peer, ctx, frame = self._call_frame(addr, handle, method, args, kwargs)
        return self._reply_value(peer, ctx, _or_abort(ctx, peer.invoke, _wire.OP_CALL, frame))

    def post_remote(self, addr: WorkerAddr, handle: int, method: str, *args: Any) -> None:
        """Send a call without waiting for (or reading) its reply. Raises
        NetworkError only if the connection is already known to be lost."""
        # peer() raises for a runtime already known to be lost; post() sends
        # nothing on a connection lost since.
        self.peer(addr).post(
            _wire.OP_CALL, _wire.call_parts(handle, method, _codec.dumps((args, {})))
        )

    def call_x_async(self, x: X, method: str, args: tuple, kwargs: dict) -> Future:
        """Send a cross-call now; its Future gives the value (or raises)."""
        if x._local is not None:
            return Future.settled(lambda: self.call_x(x, method, args, kwargs))
        peer, ctx, frame = self._call_frame(x._owner, x._handle, method, args, kwargs)
        pending = _or_abort(ctx, peer.invoke_async, _wire.OP_CALL, frame)
        return Future.of_call(
            peer, pending, lambda raw: self._reply_value(peer, ctx, raw), _reply_is_plain
        )

    def _call_frame(
        self, addr: WorkerAddr, handle: int, method: str, args: tuple, kwargs: dict
    ) -> tuple[Peer, _EncodeCtx, tuple]:
        peer = self.peer(addr)
        ctx = _EncodeCtx(self, peer)
        return peer, ctx, _wire.call_parts(handle, method, ctx.dumps((args, kwargs)))

    def _reply_value(self, peer: Peer, ctx: _EncodeCtx, raw: bytes) -> Any:
        reply = _wire.decode_reply(raw)
        if reply.status == _wire.STATUS_ERROR:
            raise decode_exception(reply.payload)
        if reply.payload[:1] == _codec.TAG_PLAIN:  # no references inside: nothing to acquire or ack
            return _codec.loads(reply.payload)
        dctx = _DecodeCtx(self, peer)
        value = dctx.loads(reply.payload)
        dctx.finish()
        if reply.ack:
            peer.post(_wire.OP_ACK, _wire.encode_token(reply.ack))
        del ctx  # the pins of third-party references die only now
        return value

    def _on_call(self, peer: Peer, frame: bytes) -> bytes | tuple:
        # Counted until _after_reply(OP_CALL), which follows every call.
        self.lifecycle.serving.up()
        self._calls_served += 1
        if peer.id is None:
            return _wire.encode_reply(
                _wire.STATUS_ERROR,
                0,
                encode_exception(ProtocolError("call before hello"), self.url),
            )
        peer.group.enter_call()
        call = None
        try:
            try:
                call = _wire.decode_call(frame)
                obj = self._table.find(call.handle)  # one dict lookup: no lock needed
                if obj is _NOT_HELD:
                    raise ReleasedError(
                        f"reference H{call.handle:016x} is not (or no longer) held by {self.url}"
                    )
                method = resolve_method(
                    obj, call.method
                )  # before a byte of the arguments is unpickled
                try:
                    if call.payload[:1] == _codec.TAG_PLAIN:  # no references inside
                        args, kwargs = _codec.loads(call.payload)
                    else:
                        dctx = _DecodeCtx(self, peer)
                        args, kwargs = dctx.loads(call.payload)
                        dctx.finish()
                except RemoteImportError as e:
                    raise RemoteImportError(f"{e} on host {self.host_label}") from None
                result = method(*args, **kwargs)
            except BaseException as e:  # application errors travel back; the runtime serves on
                if call is not None and call.handle == HANDLE_MAIN:
                    self._tl.main_replied = True  # a worker whose function cannot start is done
                return _wire.encode_reply(_wire.STATUS_ERROR, 0, encode_exception(e, self.url))
            if _codec.is_plain(result):  # nothing to grant or pin
                payload = _codec.dumps(result)
                if len(payload) > self._max_reply:
                    return self._too_large(payload)
                return _wire.reply_parts(_wire.STATUS_OK, 0, payload)
            ectx = _EncodeCtx(self, peer)
            try:
                payload = ectx.dumps(result)
            except BaseException as e:
                return _wire.encode_reply(_wire.STATUS_ERROR, 0, encode_exception(e, self.url))
            if len(payload) > self._max_reply:
                ectx.abort()
                return self._too_large(payload)
            token = 0
            if ectx.pins:
                token = secrets.randbits(63) or 1
                with self.lifecycle.lock:  # counted first: the ack may come at once
                    self.lifecycle.handoffs += 1
                with self._lock:
                    self._pending_acks[token] = (peer.id, ectx.pins)
            return _wire.reply_parts(_wire.STATUS_OK, token, payload)
        finally:
            peer.group.exit_call()

    def _too_large(self, payload: bytes) -> bytes:
        e = SerializationError(
            f"the reply of {len(payload)} bytes exceeds the maximum message size of "
            f"{self.cfg.max_frame} bytes (RuntimeConfig.max_frame)"
        )
        return _wire.encode_reply(_wire.STATUS_ERROR, 0, encode_exception(e, self.url))

    def _after_reply(self, op: int) -> None:
        """Runs in the serving thread once the reply to a request it served
        (of operation ``op``) has left, or could not."""
        if op != _wire.OP_CALL:
            return
        lc = self.lifecycle
        lc.serving.down()
        tl = self._tl
        main = getattr(tl, "main_replied", False)
        if main:
            tl.main_replied = False
        # Deleted first, then main_done read: whichever of this thread and
        # the one finishing main or a background function comes last sees
        # the other's change and finishes the worker.
        if main or lc.main_done:
            with lc.lock:
                if main:
                    lc.main_done = True
                lc.check()

    # -- services -----------------------------------------------------------
    def listen(self, name: str, receiver: Any) -> XPerm:
        from ..errors import ServiceError

        if not isinstance(name, str) or not name:
            raise ServiceError("a service name is a non-empty str")
        with self._lock:
            if name in self._services:
                raise ServiceError(f"service {name!r} is already listened to in {self.url}")
            x = self.local_ref(receiver, perm=True)
            self._services[name] = x
        return x

    def dial(self, addr: WorkerAddr, name: str) -> X:
        if addr.id == self.id:
            return self._root_dial(name)
        return self.call_remote(addr, HANDLE_ROOT, "dial", (name,), {})

    def _root_dial(self, name: str) -> X:
        from ..errors import ServiceError

        x = self._services.get(name)
        if x is None:
            raise ServiceError(f"no service {name!r} in {self.url}")
        return x

    # -- export -------------------------------------------------------------
    def export(self, payload: tuple, stack: str) -> bytes:
        def encode_x(x: X) -> tuple:
            if not isinstance(x, XPerm):
                raise CircuitError(
                    f"only permanent references can be exported; {x!r} is not (use perm_ref)"
                )
            o = x._owner
            return (o.host, o.port, o.pid, o.id, x._handle, True)

        return _wire.encode_export(_codec.dumps((tuple(payload), stack), (X,), encode_x))

    def import_(self, blob: bytes) -> tuple[tuple, str]:
        def decode_x(desc: tuple) -> X:
            try:
                host, port, pid, oid, handle, _perm = desc
                owner = WorkerAddr(str(host), int(port), int(pid), str(oid))
            except (TypeError, ValueError):
                raise SerializationError(f"malformed cross-interface descriptor {desc!r}") from None
            if oid == self.id:
                return self._local_x(handle, True)
            return self._proxy(owner, int(handle), True)

        payload, stack = _codec.loads(_wire.decode_export(blob), decode_x)
        return payload, stack

    def close(self) -> None:
        """Stop listening, close every connection (without a close
        handshake: a stalled peer must not hold us) and stop the release
        thread. Proxies of other runtimes' objects are dead afterwards."""
        self._closed = True
        _close_quietly(self._sock)
        with self._lock:
            peers = list(self._all_peers)
        for p in peers:
            p.conn.abort()
        self._release_q.put(None)

    _calls_served = 0  # per instance from the first call on; a rare lost increment (a race) is fine for monitoring

    def counters(self) -> dict[str, int]:
        """Figures of this runtime for monitoring: calls served, open
        connections, objects it owns with leases granted on them, and
        proxies (leases) it holds on others' objects."""
        with self._lock:
            return {
                "calls_served": self._calls_served,
                "connections": len(self._all_peers),
                "objects_owned": len(self._table),
                "leases_owned": self._table.lease_count(),
                "leases_held": len(self._proxies),
            }


class _RootService:
    def __init__(self, rt: Runtime):
        self._rt = rt

    def dial(self, name: str) -> X:
        return self._rt._root_dial(name)

    def ping(self) -> str:
        return self._rt.id


_REPLY_TAG = _wire.REPLY_HEAD_SIZE


def _reply_is_plain(raw: Any) -> bool:
    """Can this reply be decoded without network I/O (an error, or a value
    with no references inside)? Peeks at the head; a malformed reply fails
    at once in decoding, no I/O either."""
    return raw[:1] != b"\x00" or raw[_REPLY_TAG : _REPLY_TAG + 1] == _codec.TAG_PLAIN


def _close_quietly(sock: socket.socket) -> None:
    try:
        sock.close()
    except OSError:
        pass  # already broken: nothing left to release


def _refuse_hello(sock: socket.socket, why: str, linger: float = 2.0) -> None:
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
        _close_quietly(sock)


_current: Runtime | None = None
_current_lock = threading.Lock()
_counter = itertools.count()


def current(create: bool = True, host: str = "127.0.0.1", tls: Any = None) -> Runtime | None:
    """This process's runtime (a client runtime is made on first need)."""
    global _current
    if _current is None and create:
        with _current_lock:
            if _current is None:
                _current = Runtime(RuntimeConfig(host=host, role="client", tls=tls))
                from ..acid import install as _install_acid

                _install_acid(_current)
    return _current


def install(rt: Runtime) -> Runtime:
    """Make ``rt`` this process's runtime (servers and workers)."""
    global _current
    with _current_lock:
        if _current is not None:
            raise CircuitError("this process already has a pycircuit runtime")
        _current = rt
    from ..acid import install as _install_acid

    _install_acid(rt)
    return rt
