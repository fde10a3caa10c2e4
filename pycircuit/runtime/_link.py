"""Connections between runtimes, over RPyC.

One RPyC connection per pair of runtimes, used in both directions. RPyC
frames the stream (its channel header) and guards reading (its receive
lock), but runtimes exchange pycircuit messages (``_wire.MSG_*``: request,
reply, fault, with a sequence number and an operation) inside those frames,
so brine, boxing and RPyC's handler tables never run on a call; RPyC's own
requests reach nothing (``_peer._NoService``). Configured for this use:
no compression (compressed frames are refused), no request timeout (death
is detected by the socket: EOF/RST, TCP keepalive and TCP_USER_TIMEOUT),
TCP_NODELAY, blocking sockets, buffered reads (one ``recv`` a small frame)
and no copies of large bodies either way.

Each connection is served by a small elastic group of threads
(``ServeGroup``): a thread waiting for a reply reads for itself; otherwise a
pool thread reads and runs requests inline, and a watchdog appoints another
reader when one runs long, so a slow call never blocks the rest of the
connection. Threads are taken from ``_threads`` so that starting one costs
no wait.
"""

from __future__ import annotations

import itertools
import logging
import os
import select
import socket
import ssl
import struct
import threading
import time
from threading import get_ident
from collections.abc import Callable

import rpyc
from rpyc.core.channel import Channel
from rpyc.core.protocol import DEFAULT_CONFIG, Connection
from rpyc.core.stream import SocketStream

from ..errors import ProtocolError, SerializationError
from . import _wire
from ._threads import THREADS, ThreadCounts

RPYC_CONFIG = dict(
    DEFAULT_CONFIG,
    allow_public_attrs=False,
    allow_all_attrs=False,
    allow_setattr=False,
    allow_delattr=False,
    allow_pickle=False,
    import_custom_exceptions=False,
    instantiate_custom_exceptions=False,
    include_local_traceback=False,
    include_local_version=False,
    log_exceptions=False,
    sync_request_timeout=None,
    propagate_KeyboardInterrupt_locally=True,
    bind_threads=False,  # the fast request path below assumes unbound frames
)

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
_FRAME_HEADER = (
    Channel.FRAME_HEADER
)  # !LB: length, compressed; a flusher byte b"\n" follows the body
# The frame header, then _wire's message head, packed in one go.
_FRAME_AND_MESSAGE = struct.Struct(_FRAME_HEADER.format + _wire.MSG_HEAD_FORMAT)
assert Channel.FLUSHER == b"\n"


class _Stream(SocketStream):
    """SocketStream with a read buffer and linear-time large reads and writes.

    One ``recv`` usually brings a whole small frame (header, body, flusher),
    so a frame costs one system call instead of RPyC's two reads."""

    _FILL = 1 << 16

    def __init__(self, sock, max_frame: int = 1 << 30):
        super().__init__(sock)
        self._rbuf = b""
        self.max_frame = max_frame

    def write(self, data):
        try:
            self.sock.sendall(data)
        except (OSError, ValueError) as e:
            self.close()
            raise EOFError(e) from None

    def poll(self, timeout):
        if self._rbuf:
            return True
        if timeout is not None and not isinstance(timeout, (int, float)):
            timeout = timeout.timeleft()  # rpyc passes its Timeout object
        sock = self.sock
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return True
        try:
            r, _, _ = select.select([sock], [], [], timeout)
        except (OSError, ValueError) as e:
            raise EOFError(e) from None
        return bool(r)

    def read(self, count):
        buf = self._rbuf
        have = len(buf)
        if have >= count:
            self._rbuf = buf[count:]
            return buf[:count]
        if count - have < self._FILL:
            parts = [buf]
            while have < count:
                chunk = self._recv(self._FILL)
                parts.append(chunk)
                have += len(chunk)
            data = b"".join(parts)
            self._rbuf = data[count:]
            return data[:count]
        # A large frame: read in place into one growing buffer (returned as
        # it is: a bytearray). Its length comes from the peer, so the buffer
        # doubles as data arrives: six stray bytes cannot make us reserve
        # gigabytes.
        self._rbuf = b""
        size = min(count, 2 * _CHUNK)
        out = bytearray(size)
        out[:have] = buf
        got = have
        while True:
            got = self._fill(out, got, size)
            if size == count:
                return out
            grow = min(count, 2 * size) - size
            out.extend(bytes(grow))
            size += grow

    def _fill(self, out: bytearray, got: int, end: int) -> int:
        view = memoryview(out)
        try:
            while got < end:
                got += self._io(self.sock.recv_into, view[got:end], end - got)
            return got
        finally:
            view.release()

    def recv_frame(self) -> bytes:
        """The body of the next RPyC frame (``!LB`` header, body, one
        flusher byte); usually sliced out of what one ``recv`` brought."""
        buf = self._rbuf
        while len(buf) < 5:
            buf += self._recv(self._FILL)
        length, compressed = _FRAME_HEADER.unpack_from(buf)
        if compressed:
            self.close()
            raise EOFError("compressed frame refused")
        if length > self.max_frame:
            self.close()
            log.warning(
                "closed a connection: a frame of %d bytes exceeds the maximum of %d (RuntimeConfig.max_frame)",
                length,
                self.max_frame,
            )
            raise EOFError(f"a frame of {length} bytes exceeds the maximum of {self.max_frame}")
        end = 6 + length
        if len(buf) >= end:
            self._rbuf = buf[end:]
            return buf[5 : end - 1]
        self._rbuf = buf[5:]
        data = self.read(length)
        self.read(1)
        return data

    def write_frame(self, parts: tuple | list) -> None:
        """One frame whose body is ``parts`` joined."""
        n = 0
        for p in parts:
            n += len(p)
        self.write_message(_FRAME_HEADER.pack(n, 0), parts, n)

    def write_message(self, head: bytes, parts: tuple | list, n: int) -> None:
        """``head`` (the frame header, and whatever else starts the body)
        and ``parts`` (the rest, ``n`` bytes of body in all), without copying
        the large parts: small ones are joined and sent, large ones sent as
        they are."""
        if n < self._FILL:
            self.write(b"".join((head, *parts, b"\n")))
            return
        pending = [head]
        for p in parts:
            if len(p) < self._FILL:
                pending.append(p)
            else:
                self.write(b"".join(pending))
                pending = []
                self.write(p)
        pending.append(b"\n")
        self.write(b"".join(pending))

    def _recv(self, n: int) -> bytes:
        return self._io(self.sock.recv, n)

    def _io(self, receive: Callable, *args):
        """``receive(*args)``; a closed or broken socket is an EOFError."""
        while True:
            try:
                got = receive(*args)
            except TimeoutError:  # a timeout someone set on the socket: reading goes on
                continue
            except (OSError, ValueError) as e:
                self.close()
                raise EOFError(e) from None
            if not got:
                self.close()
                raise EOFError("connection closed by peer")
            return got


class _Channel(Channel):
    """RPyC's framing read and written by the buffered stream, without
    copies of large frames and without zlib (a compressed frame could be a
    decompression bomb: we never send one)."""

    def recv(self):
        return self.stream.recv_frame()

    def send(self, data):
        # RPyC's own _send drains the same queue as ours: items are its
        # frames (bytes) or our messages (head, parts, length).
        if type(data) is tuple:
            self.stream.write_message(*data)
        else:
            self.stream.write_frame((data,))


def tune_socket(sock: socket.socket, silence: float = 30.0) -> None:
    """Blocking, no Nagle, and a link declared dead only when the peer is
    known gone (EOF, RST) or its host has been silent for about ``silence``
    seconds: unacknowledged data (TCP_USER_TIMEOUT) or unanswered keepalive
    probes. A stopped or busy process still has its kernel acknowledge both,
    so a stall within that time loses nothing (SPEC §7)."""
    sock.settimeout(None)
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        idle = max(1, int(silence / 3))
        interval = max(1, int(silence / 6))
        count = max(1, int((silence - idle) / interval))
        for opt, val in (
            ("TCP_KEEPIDLE", idle),
            ("TCP_KEEPINTVL", interval),
            ("TCP_KEEPCNT", count),
            ("TCP_USER_TIMEOUT", int(silence * 1000)),
        ):
            if hasattr(socket, opt):
                try:
                    sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, opt), val)
                except OSError:  # an option this kernel lacks: the others still bound the silence
                    log.debug("cannot set %s on a link", opt)


class Pending:
    """A request's reply to come: ``conn.wait(pending)`` gives its body.
    ``on_ready`` (if set) runs in the thread that delivers it, after it
    released the receive lock; it must not block on this connection."""

    __slots__ = ("ready", "is_exc", "obj", "on_ready")

    def __init__(self):
        self.ready = False
        self.is_exc = False
        self.obj = None
        self.on_ready: Callable[[], None] | None = None

    def settle(self, is_exc: bool, obj) -> None:
        """Mark the reply in; the caller then runs ``on_ready``."""
        self.is_exc = is_exc
        self.obj = obj
        self.ready = True

    def __call__(self, is_exc: bool, obj) -> None:
        """Settle and run ``on_ready`` (for replies that never came: the
        link failed, or a reader gave up)."""
        self.settle(is_exc, obj)
        cb = self.on_ready
        if cb is not None:
            cb()


class _Until:
    """RPyC's ``waiting()`` callback, read as a Pending's ``ready``."""

    __slots__ = ("_waiting",)

    def __init__(self, waiting: Callable[[], bool]):
        self._waiting = waiting

    @property
    def ready(self) -> bool:
        return not self._waiting()


class RequestFailed(ProtocolError):
    """The peer's handler for a request raised; the message is its text."""


# A message body: bytes, or a tuple of bytes-like parts sent one after the
# other (so a large payload is never copied into a joined frame).
Body = "bytes | tuple"
Handler = Callable[[bytes], "Body | None"]


class _Connection(Connection):
    """RPyC's connection carrying pycircuit messages (``_wire.MSG_*``).

    RPyC still frames the stream, guards reading with its receive lock and
    lets any waiting thread read for all; but a pycircuit request skips
    brine, boxing, netrefs and RPyC's handler tables, and a reader blocks
    in ``recv`` instead of selecting first. Requests read by a thread that
    waits for its own reply run in a thread of their own (see ServeGroup).
    """

    group: ServeGroup | None = None
    handlers: dict[int, Handler] = {}
    after_reply: Callable[[int], None] = staticmethod(
        lambda op: None
    )  # runs once a request's reply has left (or failed to)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._seq = itertools.count(1)
        self._pending: dict[int, Pending] = {}
        self._recv_waiters = 0  # threads in _wait_for_reader (changed under _recv_event)

    # -- sending ------------------------------------------------------------
    def request(self, op: int, body: Body) -> Pending:
        pending = Pending()
        seq = next(self._seq) & _wire.MAX_SEQ
        while not seq or seq in self._pending:  # wrapped round to 0, or to a call still in flight
            seq = next(self._seq) & _wire.MAX_SEQ
        self._pending[seq] = pending
        try:
            self._send_message(_wire.MSG_REQUEST, seq, op, body)
        except BaseException:
            self._pending.pop(seq, None)
            raise
        return pending

    def post(self, op: int, body: Body) -> None:
        self._send_message(_wire.MSG_REQUEST, 0, op, body)

    def _send_message(self, kind: int, seq: int, op: int, body: Body) -> None:
        parts = body if type(body) is tuple else (body,)
        n = _wire.MSG_HEAD_SIZE
        for p in parts:
            n += len(p)
        if n > self._channel.stream.max_frame:
            raise SerializationError(
                f"a message of {n} bytes exceeds the maximum of "
                f"{self._channel.stream.max_frame} (RuntimeConfig.max_frame)"
            )
        # kind, seq and op come from this module: packed unchecked
        self._send_frame((_FRAME_AND_MESSAGE.pack(n, 0, kind, seq, op), parts, n))

    def _send_frame(self, frame: tuple) -> None:
        queue = self._send_queue
        if not queue and self._sendlock.acquire(False):
            try:
                self._channel.stream.write_message(*frame)
            finally:
                self._sendlock.release()
            if not queue:
                return
        else:
            queue.append(frame)
        # The tail of Connection._send: a thread holding the send lock sends
        # what others queued meanwhile.
        while self._send_queue:
            if not self._sendlock.acquire(False):
                return
            try:
                if not self._send_queue:
                    continue
                self._channel.send(self._send_queue.pop(0))
            finally:
                self._sendlock.release()

    def close(self) -> None:
        """Close the socket at once; readers see EOF and clean up. Not
        RPyC's ``close``: that sends a close request and waits for its
        answer with no deadline (a stalled peer would hang us), and its
        ``_cleanup`` releases the send and receive locks whoever holds them
        (a writer then fails with "release unlocked lock", and a third
        thread could write into the middle of a frame)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._channel.close()
        except Exception:
            log.debug("closing a channel failed", exc_info=True)

    abort = close

    # -- receiving ----------------------------------------------------------
    def serve_first(self, timeout: float) -> bool:
        """Read and serve one frame if it starts arriving within ``timeout``
        (an accepted connection's HELLO); False if none came."""
        if timeout <= 0 or not self._channel.stream.poll(timeout):
            return False
        self.serve_one()
        return True

    def wait(self, pending: Pending, deadline: float | None = None) -> bytes:
        """The reply's body; raises RequestFailed or EOFError, or
        TimeoutError once ``deadline`` (``time.monotonic()``) has passed."""
        while not pending.ready:
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError
            self.serve_one(pending, deadline)
        if pending.is_exc:
            raise pending.obj
        return pending.obj

    def fail_pending(self, exc: BaseException) -> None:
        """The connection is gone: every request still waiting fails with
        ``exc`` (a caller reading for itself learns it anyway; a Future
        whose caller does not read learns it only here)."""
        for seq in list(self._pending):
            p = self._pending.pop(seq, None)
            if p is not None and not p.ready:
                p(True, exc)

    def serve(self, timeout=1, wait_for_lock=True, waiting=lambda: True):
        # RPyC's own requests (none in normal use: see _NoService) wait the
        # way ours do, so that both kinds of waiter are woken.
        self.serve_one(_Until(waiting))
        return True

    def serve_one(
        self, pending: Pending | _Until | None = None, deadline: float | None = None
    ) -> None:
        """Read and dispatch one frame, or wait while another thread reads.

        RPyC's ``serve`` minus its select: the caller either waits for a
        reply (which must come) or has just seen the socket readable. With
        a ``deadline``, it returns when that passes with nothing read."""
        if not self._recvlock.acquire(False) and not self._wait_for_reader(pending, deadline):
            return
        try:
            if pending is not None and pending.ready:  # dispatched meanwhile
                self._recvlock.release()
                return
            try:
                if deadline is not None and not self._channel.stream.poll(
                    max(0.0, deadline - time.monotonic())
                ):
                    self._recvlock.release()
                    return
                data = self._channel.recv()
            except BaseException as exc:
                self._recvlock.release()
                if isinstance(exc, EOFError):
                    self.close()
                raise
            self._dispatch(data)
        finally:
            if self._recv_waiters:  # unlocked read: see _wait_for_reader
                with self._recv_event:
                    self._recv_event.notify_all()

    def _wait_for_reader(
        self, pending: Pending | _Until | None, deadline: float | None = None
    ) -> bool:
        """Another thread is reading: wait until it has dispatched a frame.
        True if the receive lock came free meanwhile (and is now ours).

        A reader reads ``_recv_waiters`` after releasing the lock, without
        taking ``_recv_event``: so count first, then try the lock again;
        a reader that missed the count released the lock before it."""
        ev = self._recv_event
        with ev:
            self._recv_waiters += 1
            try:
                if self._recvlock.acquire(False):
                    return True
                if pending is None or not pending.ready:
                    ev.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
                return False
            finally:
                self._recv_waiters -= 1

    def _dispatch(self, data: bytes) -> None:
        # Called holding the receive lock; must release it.
        if data[:1] < b"\x50":
            return Connection._dispatch(self, data)
        try:
            kind, seq, op = _wire.decode_message_head(data)
        except BaseException:
            self._recvlock.release()
            raise
        # A large frame arrives as a bytearray: view its body, do not copy it.
        body = (
            data[_wire.MSG_HEAD_SIZE :]
            if type(data) is bytes
            else memoryview(data)[_wire.MSG_HEAD_SIZE :]
        )
        if kind == _wire.MSG_REQUEST:
            self._recvlock.release()
            g = self.group
            if g is not None and g.waiting_here():
                g.hand_off(lambda: self._serve_request(seq, op, body))
            else:
                self._serve_request(seq, op, body)
            return
        pending = self._pending.pop(seq, None)
        if pending is None:
            self._recvlock.release()
            return
        if kind == _wire.MSG_REPLY:
            pending.settle(False, body)
        else:
            pending.settle(True, RequestFailed(bytes(body).decode("utf-8", "replace")))
        # Released once the reply is marked ready (a waiter that then takes
        # the lock sees it: RPyC's #527), but before on_ready runs, which
        # may decode a value: other readers need not wait for that.
        self._recvlock.release()
        cb = pending.on_ready
        if cb is not None:
            cb()

    def _serve_request(self, seq: int, op: int, body: bytes) -> None:
        try:
            try:
                handler = self.handlers.get(op)
                if handler is None:
                    raise ProtocolError(f"no handler for operation {_wire.OP_NAMES.get(op, op)}")
                out = handler(body)
            except Exception as e:
                if seq:
                    self._send_message(
                        _wire.MSG_FAULT, seq, op, f"{type(e).__name__}: {e}".encode()
                    )
                return
            if seq:
                self._send_message(_wire.MSG_REPLY, seq, op, b"" if out is None else out)
        finally:
            self.after_reply(op)


def make_connection(
    sock: socket.socket, service: rpyc.Service, max_frame: int = 1 << 30, silence: float = 30.0
) -> Connection:
    tune_socket(sock, silence)
    return _Connection(
        service, _Channel(_Stream(sock, max_frame), compress=False), config=RPYC_CONFIG
    )


def refusal_frame(seq: int, op: int, body: bytes) -> bytes:
    """A whole REPLY frame, written on a raw socket to answer a request the
    link never got to read (see ``_runtime._refuse_hello``)."""
    n = _wire.MSG_HEAD_SIZE + len(body)
    return _FRAME_AND_MESSAGE.pack(n, 0, _wire.MSG_REPLY, seq, op) + body + Channel.FLUSHER


class Watchdog:
    """Appoints a new reader for a connection whose reading thread has been
    running a request for longer than ``DELAY``. Lazy on purpose: waking a
    follower for every request costs more than the request (GIL hand-offs).

    It looks every ``PERIOD`` while some connection is active, so a request
    queued behind a blocked one waits at most about ``PERIOD + DELAY``. The
    period is long on purpose: with a look every 2 ms, caller and worker of
    a stream of short calls ended up on different CPUs in 5 runs of 6
    (round trip 45–70 µs instead of 32 µs on this 2-vCPU VM)."""

    DELAY = 0.002
    PERIOD = 0.016
    IDLE_LOOKS = 4  # looks that found a connection idle before it is dropped

    def __init__(self):
        self._cond = threading.Condition()
        self._groups: set[ServeGroup] = set()
        self._thread: threading.Thread | None = None

    def watch(self, group: ServeGroup) -> None:
        if group in self._groups:  # racy read on purpose: the loop re-checks
            return
        with self._cond:
            if group in self._groups:
                return
            self._groups.add(group)
            self._start()
            self._cond.notify()

    def warm(self) -> None:
        """Start the thread now, not in the first request (which waits for it)."""
        with self._cond:
            self._start()

    def _start(self) -> None:  # holding _cond
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._loop, name="pycircuit-watchdog", daemon=True
            )
            self._thread.start()

    def _after_fork(self) -> None:
        self._cond = threading.Condition()
        self._groups = set()
        self._thread = None

    def _loop(self) -> None:
        idle: dict[ServeGroup, int] = {}
        while True:
            with self._cond:
                while not self._groups:
                    self._cond.wait()
                until = time.monotonic() + self.PERIOD
                while (left := until - time.monotonic()) > 0:  # a new group does not cut it short
                    self._cond.wait(left)
                groups = list(self._groups)
            now = time.monotonic()
            for g in groups:
                if g.maybe_appoint(now, self.DELAY):
                    idle.pop(g, None)
                    continue
                looks = idle.get(g, 0) + 1
                if looks < self.IDLE_LOOKS:
                    idle[g] = looks
                    continue
                idle.pop(g, None)
                with self._cond:
                    self._groups.discard(g)
                    # watch() skips the lock when it sees g listed; a call
                    # that began meanwhile must not go unwatched.
                    if g._running:
                        self._groups.add(g)


WATCHDOG = Watchdog()
os.register_at_fork(after_in_child=WATCHDOG._after_fork)


class ServeGroup:
    """The threads that read one connection.

    Rules, chosen to keep thread wake-ups off the hot path:

    * a thread waiting for a reply reads the connection itself (RPyC's
      ``AsyncResult.wait``); pool threads stay off the socket while callers
      wait and for ``GRACE`` after the last call, so they do not race them;
    * otherwise one pool thread, the *poller*, waits for data without holding
      RPyC's receive lock and runs each request it reads inline;
    * if a request runs longer than the watchdog's delay, another pool thread
      becomes poller (one is started if none is idle).
    """

    GRACE = 0.002
    MAX_NAP = 0.016
    MAX_IDLE = 2

    def __init__(
        self, conn: Connection, name: str, on_close: Callable[[BaseException | None], None]
    ):
        self._conn = conn
        conn.group = self
        self._stream = conn._channel.stream
        self._name = name
        self._on_close = on_close
        self._cond = threading.Condition(threading.Lock())
        self._tl = threading.local()
        self._waiting = ThreadCounts()  # replies each thread waits for
        self._last_call = 0.0
        self._poller = False
        self._wanted = False
        self._idle = 0
        self._threads = 0
        # {thread id: when its request started}; one request per thread
        # (a thread waiting for a reply hands requests it reads to others).
        self._running: dict[int, float] = {}
        self._closed = False

    def start(self) -> None:
        self._spawn()

    def run_here(self) -> None:
        """Serve in the calling thread, as the group's first pool thread
        (a connection accepted by a thread needs no second one to start)."""
        with self._cond:
            if self._closed:
                return
            self._threads += 1
        self._loop()

    def _spawn(self) -> None:
        with self._cond:
            if self._closed:
                return
            self._threads += 1
        THREADS.start(self._loop, f"pycircuit-serve-{self._name}")

    # -- callers ------------------------------------------------------------
    def call_begin(self) -> None:
        self._waiting.up()

    def call_end(self) -> None:
        self._waiting.down()
        self._last_call = time.monotonic()

    def waiting_here(self) -> bool:
        """Is this thread waiting for a reply on this connection?"""
        return self._waiting.mine()

    def hand_off(self, run: Callable[[], None]) -> None:
        """Run a request a waiting caller read, in a thread of its own: a
        caller is never taken hostage by an unrelated (maybe long) request."""
        THREADS.start(run, f"pycircuit-serve-{self._name}")

    # -- requests -----------------------------------------------------------
    def enter_call(self) -> None:
        """A request starts running in this thread, which therefore stops
        reading; RPyC released its receive lock but wakes a caller waiting
        for it only after the dispatch, so wake one now."""
        tl = self._tl
        if getattr(tl, "poller", False):
            tl.poller = False
            self._poller = False  # a plain store: readers under _cond only decide whom to wake
        self._running[get_ident()] = time.monotonic()
        WATCHDOG.watch(self)
        if self._waiting:
            ev = self._conn._recv_event
            with ev:
                ev.notify_all()

    def exit_call(self) -> None:
        self._running.pop(get_ident(), None)

    def _oldest_call(self) -> float | None:
        # min() over the values runs in C without a thread switch: no
        # "dict changed size during iteration" from the serving threads.
        return min(self._running.values(), default=None)

    def maybe_appoint(self, now: float, delay: float) -> bool:
        """Called by the watchdog; returns False once nothing is running."""
        spawn = False
        with self._cond:
            oldest = self._oldest_call()
            if self._closed or oldest is None:
                return False
            if self._poller or self._wanted or now - oldest < delay:
                return True
            self._wanted = True
            if self._idle:
                self._cond.notify()
            else:
                spawn = True
        if spawn:
            self._spawn()
        return True

    # -- pool threads -------------------------------------------------------
    def _take_role(self) -> bool:
        """Wait until this thread may poll; False if it should exit.

        While callers keep the connection busy, the wait doubles up to
        ``MAX_NAP``: a wake-up every 2 ms costs little CPU, but it made the
        scheduler put caller and peer on different CPUs (measured: a round
        trip 31 µs on one CPU, 45–60 µs across two, on this VM). The price:
        a request from the peer arriving just after a long burst of calls
        (not during it: a waiting caller reads those) may wait up to
        ``MAX_NAP`` for its reader."""
        nap = self.GRACE
        with self._cond:
            while True:
                if self._closed:
                    return False
                quiet = not self._waiting and time.monotonic() - self._last_call >= self.GRACE
                if not self._poller and (self._wanted or quiet):
                    self._poller = True
                    self._wanted = False
                    self._tl.poller = True
                    return True
                if self._idle >= self.MAX_IDLE and self._poller:
                    self._threads -= 1
                    return False
                self._idle += 1
                try:
                    if self._cond.wait(None if self._poller else nap) is False:
                        nap = min(2 * nap, self.MAX_NAP)  # timed out, still busy
                finally:
                    self._idle -= 1

    def _drop_role(self) -> None:
        if getattr(self._tl, "poller", False):
            self._tl.poller = False
            with self._cond:
                self._poller = False

    def _loop(self) -> None:
        err: BaseException | None = None
        try:
            while self._take_role():
                while getattr(self._tl, "poller", False):
                    self._stream.poll(None)  # without RPyC's lock: a waiting caller may read it
                    if (
                        self._waiting and not self._wanted
                    ):  # unlocked reads: a stale answer only costs a hand-over
                        break  # yield to callers
                    self._conn.serve_one()
                self._drop_role()
        except BaseException as e:  # EOF, reset, closed: the peer is gone
            err = e
        else:
            return
        with self._cond:
            self._threads -= 1
            first = not self._closed
            self._closed = True
            self._cond.notify_all()
        if first:
            self._on_close(err)
