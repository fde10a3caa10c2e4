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
import os
import queue
import secrets
import socket
import sys
import threading
import time
import weakref
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any, Callable


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
from ._addr import WorkerAddr, new_worker_id
from ._ctx import _DecodeCtx, _EncodeCtx
from ._link import WATCHDOG
from ._peer import Peer
from ._remote_exc import decode_exception, encode_exception
from ._threads import THREADS, ThreadCounts

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
    tls: Any = None  # a pycircuit.runtime TLS pair (server ctx, client ctx) or None


def resolve_method(obj: Any, method: str) -> Callable:
    if not method or method.startswith("_"):
        raise NoSuchMethodError(f"no method {method!r} on type {type(obj).__qualname__} (private names are not remote)")
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


class Future:
    """The result of ``X.call_async``: ``result()`` waits for the reply (or
    raises what the call raised); safe to call from several threads."""

    __slots__ = ("_finish", "_lock", "_done", "_value", "_error")

    def __init__(self, finish: Callable[[], Any]):
        self._finish = finish
        self._lock = threading.Lock()
        self._done = False
        self._value: Any = None
        self._error: BaseException | None = None

    @classmethod
    def settled(cls, fn: Callable[[], Any]) -> "Future":
        f = cls(fn)
        f._settle()
        return f

    def _settle(self) -> None:
        try:
            self._value = self._finish()
        except BaseException as e:  # kept for every result() call
            self._error = e
        self._done = True
        self._finish = None

    def result(self) -> Any:
        with self._lock:
            if not self._done:
                self._settle()
        if self._error is not None:
            raise self._error
        return self._value

    def done(self) -> bool:
        return self._done

    def __repr__(self) -> str:
        return f"<pycircuit.Future {'done' if self._done else 'pending'}>"


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
    """A server says on stderr why it refused a connection (a peer without
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
                sys.stderr.write(f"pycircuit: refused a connection: {why}{more}\n")
                sys.stderr.flush()


class Runtime:
    def __init__(self, cfg: RuntimeConfig):
        self.cfg = cfg
        self.id = cfg.runtime_id or new_worker_id()
        self.pid = os.getpid()
        self._lock = threading.RLock()
        self._table = LeaseTable()
        self._peers: dict[str, Peer] = {}
        self._all_peers: set[Peer] = set()
        self._dead: set[str] = set()
        self._dial_locks: dict[str, threading.Lock] = defaultdict(threading.Lock)
        self._proxies: "weakref.WeakValueDictionary[tuple[str, int], X]" = weakref.WeakValueDictionary()
        self._pending_acks: dict[int, tuple[str, list]] = {}
        self._services: dict[str, XPerm] = {}
        self._release_q: "queue.SimpleQueue" = queue.SimpleQueue()
        self._tl = threading.local()
        self.lifecycle = _Lifecycle()
        self.on_peer_lost: list[Callable[[Peer], None]] = []
        self._closed = False
        self._refusals = _RefusalLog()

        self._sock = socket.create_server((cfg.host, cfg.port), backlog=512)
        host, port = self._sock.getsockname()[:2]
        self.addr = WorkerAddr(cfg.host if cfg.host not in ("0.0.0.0", "::") else host, port, self.pid, self.id)
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
    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                sock, _ = self._sock.accept()
            except OSError:
                if self._closed:
                    return
                continue
            THREADS.start(lambda s=sock: self._adopt(s), "pycircuit-serve-peer")

    def _adopt(self, sock: socket.socket) -> None:
        try:
            if self.cfg.tls is not None:
                sock = self.cfg.tls.wrap_server(sock)
            peer = Peer(self, sock)
        except Exception as e:
            try:
                sock.close()
            except OSError:
                pass
            if self.cfg.role == "server":
                self._refusals.note(str(e))
            return
        with self._lock:
            self._all_peers.add(peer)
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
            sock = socket.create_connection((addr.host, addr.port), timeout=self.cfg.connect_timeout)
            if self.cfg.tls is not None:
                sock = self.cfg.tls.wrap_client(sock)
        except OSError as e:
            raise NetworkError(f"cannot reach {addr}: {e.strerror or e}") from None
        except CircuitError:
            raise
        peer = Peer(self, sock)
        peer.addr = addr
        with self._lock:
            self._all_peers.add(peer)
        peer.group.start()
        hello = _wire.Hello(_wire.WIRE_VERSION, self.id, self.url, self.cfg.role, addr.id, str(addr.pid))
        try:
            answer = peer.invoke(_wire.OP_HELLO, _wire.encode_hello(hello))
        except NetworkError as e:
            # A server with a cluster key drops a plain peer at its first bytes.
            hint = "" if self.cfg.tls is not None else \
                " (if the circuit uses a cluster key, this process needs it too: key=, --key or $CIRCUIT_KEY)"
            raise NetworkError(f"cannot reach {addr}: {e}{hint}") from None
        if isinstance(answer, bytes) and answer.startswith(b"!"):
            peer.dead = True
            peer.conn.close()
            msg = answer[1:].decode("utf-8", "replace")
            if msg.startswith("stale"):
                raise StaleAddressError(f"{addr}: {msg}")
            raise ProtocolError(f"{addr} refused us: {msg}")
        theirs = _wire.decode_hello(answer)
        _wire.check_version(_wire.WIRE_VERSION, theirs.version)
        peer.id, peer.role = theirs.runtime_id, theirs.role
        with self._lock:
            self._peers[peer.id] = peer
        return peer

    def _on_hello(self, peer: Peer, frame: bytes) -> bytes:
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
            self._dead.add(peer.id)
            if self._peers.get(peer.id) is peer:
                del self._peers[peer.id]
            self._table.drop_holder(peer.id)
            gone = [t for t, (pid, _) in self._pending_acks.items() if pid == peer.id]
            for token in gone:
                del self._pending_acks[token]
        if gone:
            self._handoffs_settled(len(gone))
        for cb in list(self.on_peer_lost):
            try:
                cb(peer)
            except Exception:
                pass

    def is_dead(self, runtime_id: str) -> bool:
        return runtime_id in self._dead

    def revive(self, runtime_id: str) -> None:
        """Allow dialling a runtime again after its connection was lost.
        Only for servers (membership heals partitions): a worker that was
        lost stays dead for this process, as the API promises."""
        with self._lock:
            self._dead.discard(runtime_id)

    def drop(self, runtime_id: str) -> None:
        """Close the connection to a runtime judged unreachable; calls
        waiting on it raise NetworkError."""
        with self._lock:
            p = self._peers.get(runtime_id)
        if p is not None:
            try:
                p.conn.close()
            except Exception:
                pass
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
                raise ReleasedError(f"reference H{handle:016x} was released by its owner {self.url}")
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
                except queue.Empty:
                    break
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

    def call_remote(self, addr: WorkerAddr, handle: int, method: str, args: tuple, kwargs: dict) -> Any:
        peer, ctx, frame = self._call_frame(addr, handle, method, args, kwargs)
        return self._reply_value(peer, ctx, _or_abort(ctx, peer.invoke, _wire.OP_CALL, frame))

    def post_remote(self, addr: WorkerAddr, handle: int, method: str, *args: Any) -> None:
        """Send a call without waiting for (or reading) its reply. Raises
        NetworkError only if the connection is already known to be lost."""
        # peer() raises for a runtime already known to be lost; post() sends
        # nothing on a connection lost since.
        self.peer(addr).post(_wire.OP_CALL, _wire.call_parts(handle, method, _codec.dumps((args, {}))))

    def call_x_async(self, x: X, method: str, args: tuple, kwargs: dict) -> "Future":
        """Send a cross-call now; its Future gives the value (or raises)."""
        if x._local is not None:
            return Future.settled(lambda: self.call_x(x, method, args, kwargs))
        peer, ctx, frame = self._call_frame(x._owner, x._handle, method, args, kwargs)
        pending = _or_abort(ctx, peer.invoke_async, _wire.OP_CALL, frame)
        return Future(lambda: self._reply_value(peer, ctx, _or_abort(ctx, peer.wait, _wire.OP_CALL, pending)))

    def _call_frame(self, addr: WorkerAddr, handle: int, method: str, args: tuple,
                    kwargs: dict) -> tuple[Peer, _EncodeCtx, tuple]:
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

    def _on_call(self, peer: Peer, frame: bytes) -> "bytes | tuple":
        # Counted until _after_reply(OP_CALL), which follows every call.
        self.lifecycle.serving.up()
        self._calls_served += 1
        if peer.id is None:
            return _wire.encode_reply(_wire.STATUS_ERROR, 0, encode_exception(ProtocolError("call before hello"), self.url))
        peer.group.enter_call()
        call = None
        try:
            try:
                call = _wire.decode_call(frame)
                obj = self._table.find(call.handle)  # one dict lookup: no lock needed
                if obj is _NOT_HELD:
                    raise ReleasedError(f"reference H{call.handle:016x} is not (or no longer) held by {self.url}")
                try:
                    if call.payload[:1] == _codec.TAG_PLAIN:  # no references inside
                        args, kwargs = _codec.loads(call.payload)
                    else:
                        dctx = _DecodeCtx(self, peer)
                        args, kwargs = dctx.loads(call.payload)
                        dctx.finish()
                except RemoteImportError as e:
                    raise RemoteImportError(f"{e} on host {self.host_label}") from None
                result = resolve_method(obj, call.method)(*args, **kwargs)
            except BaseException as e:  # application errors travel back; the runtime serves on
                if call is not None and call.handle == HANDLE_MAIN:
                    self._tl.main_replied = True  # a worker whose function cannot start is done
                return _wire.encode_reply(_wire.STATUS_ERROR, 0, encode_exception(e, self.url))
            if _codec.is_plain(result):  # nothing to grant or pin
                return _wire.reply_parts(_wire.STATUS_OK, 0, _codec.dumps(result))
            ectx = _EncodeCtx(self, peer)
            try:
                payload = ectx.dumps(result)
            except BaseException as e:
                return _wire.encode_reply(_wire.STATUS_ERROR, 0, encode_exception(e, self.url))
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
                raise CircuitError(f"only permanent references can be exported; {x!r} is not (use perm_ref)")
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
        self._closed = True
        try:
            self._sock.close()
        except OSError:
            pass

    _calls_served = 0  # per instance from the first call on; a rare lost increment (a race) is fine for monitoring

    def counters(self) -> dict[str, int]:
        """Figures of this runtime for monitoring: calls served, open
        connections, objects it owns with leases granted on them, and
        proxies (leases) it holds on others' objects."""
        with self._lock:
            return {"calls_served": self._calls_served, "connections": len(self._all_peers),
                    "objects_owned": len(self._table), "leases_owned": self._table.lease_count(),
                    "leases_held": len(self._proxies)}


class _RootService:
    def __init__(self, rt: Runtime):
        self._rt = rt

    def dial(self, name: str) -> X:
        return self._rt._root_dial(name)

    def ping(self) -> str:
        return self._rt.id


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
