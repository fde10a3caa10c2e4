"""The threads that serve a connection, and the watchdog that keeps one
slow request from blocking the rest. Layer: runtime (drives a
``_connection.Connection``; threads come from ``_threads``).

Each connection is served by a small elastic group of threads
(``ServeGroup``): a thread waiting for a reply reads for itself; otherwise a
pool thread reads and runs requests inline, and a watchdog appoints another
reader when one runs long, so a slow call never blocks the rest of the
connection. Threads are taken from ``_threads`` so that starting one costs
no wait. A connection with nothing to read for ``ServeConfig.idle_after``
holds no thread: its poller hands the socket to the reactor (``_reactor``)
and returns to the reservoir; the reactor starts a poller again when the
socket turns readable (data, EOF or an error).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from threading import get_ident

from ._connection import Connection
from ._reactor import REACTOR
from ._threads import THREADS, ThreadCounts
from ._watchdog import Watchdog


@dataclass(frozen=True)
class ServeConfig:
    """How the threads of a connection share reading it (seconds).

    ``grace``: pool threads stay off the socket this long after the last
    call, so they do not race a caller about to read its next reply.
    ``max_nap``: while callers keep the connection busy, an idle pool
    thread's wait doubles from ``grace`` up to this; frequent wake-ups made
    the scheduler put caller and peer on different CPUs (bench/README.md,
    call path). The price: a request from the peer arriving just after a
    long burst of calls (not during it: a waiting caller reads those) may
    wait up to ``max_nap`` for its reader. ``max_idle``: idle pool threads
    kept per connection.

    The watchdog appoints a new reader when a request has run for
    ``watchdog_delay``, looking every ``watchdog_period`` while some
    connection is active, so a request queued behind a blocked one waits at
    most about their sum. The period is long on purpose, for the same
    reason as ``max_nap``. A connection found idle ``watchdog_idle_looks``
    times in a row is no longer looked at; with no connection to look at
    for ``watchdog_linger``, its thread exits (restarted on demand).

    ``idle_after``: a poller that has read nothing for this long, with no
    caller waiting, parks the connection in the reactor and leaves: an idle
    connection holds no thread. Short enough that a burst's threads go
    soon; long enough that a connection in steady use keeps its poller
    (each park and wake-up costs a reactor round)."""

    grace: float = 0.002
    max_nap: float = 0.016
    max_idle: int = 2
    watchdog_delay: float = 0.002
    watchdog_period: float = 0.016
    watchdog_idle_looks: int = 4
    watchdog_linger: float = 2.0
    idle_after: float = 0.1


WATCHDOG = Watchdog(ServeConfig())
os.register_at_fork(after_in_child=WATCHDOG._after_fork)


class ServeGroup:
    """The threads that read one connection.

    Rules, chosen to keep thread wake-ups off the hot path:

    * a thread waiting for a reply reads the connection itself
      (``Connection.wait``); pool threads stay off the socket while callers
      wait and for ``grace`` after the last call, so they do not race them;
    * otherwise one pool thread, the *poller*, waits for data without holding
      the connection's receive lock and runs each request it reads inline;
    * if a request runs longer than the watchdog's delay, another pool thread
      becomes poller (one is started if none is idle);
    * a poller that read nothing for ``idle_after`` *parks* the connection
      (the reactor watches it) and leaves with every idle pool thread; a
      waiting caller still reads for itself, and the reactor starts a
      poller when the socket turns readable.
    """

    def __init__(
        self,
        conn: Connection,
        name: str,
        on_close: Callable[[BaseException | None], None],
        config: ServeConfig = ServeConfig(),
    ):
        self._cfg = config
        self._conn = conn
        conn.group = self
        self._name = name
        self._on_close = on_close
        self._cond = threading.Condition(threading.Lock())
        self._tl = threading.local()
        # Read without _cond by pool threads and the connection (GIL: see
        # ThreadCounts), and _last_call, _poller and _wanted below are read
        # without it too: each is one object's load, whole under the GIL, and
        # a stale value only makes a thread wait one more nap or hand over
        # one more time. A free-threaded build reads them whole as well, but
        # the decisions they feed are only as fresh as its memory order.
        self._waiting = ThreadCounts()  # replies each thread waits for
        self._last_call = 0.0
        self._poller = False
        self._wanted = False
        self._idle = 0
        self._threads = 0
        # {thread id: when its request started}; one request per thread
        # (a thread waiting for a reply hands requests it reads to others).
        # Each thread sets and pops its own key without a lock (GIL: single
        # dict operations are atomic; see _oldest_call for the reader).
        self._running: dict[int, float] = {}
        self._closed = False
        # The reactor watches the socket instead of a poller (no thread
        # here). _park_gen tells a reactor wake-up of this parking from a
        # stale one; both change under _cond, _parked is also read without
        # it as a hint (GIL: as above).
        self._parked = False
        self._park_gen = 0
        self._park_sock: object = None

    def start(self) -> None:
        """Serve in a pool thread."""
        self._spawn()

    def start_parked(self) -> None:
        """Serve from the reactor: no thread until the peer sends something
        (a link made ahead of its peer, which speaks first once it runs)."""
        with self._cond:
            if self._closed:
                return
            self._parked = True
            self._park_gen += 1
            self._park_sock = sock = self._conn.socket()
            REACTOR.watch(sock, partial(self._readable, self._park_gen))

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
        """This thread waits for a reply (and reads for it) from now on."""
        self._waiting.up()

    def call_end(self) -> None:
        """This thread has its reply."""
        self._waiting.down()
        self._last_call = time.monotonic()
        # A caller's read may have brought more than its reply (a request
        # behind it) into the stream's buffer: the socket then looks idle
        # to the reactor. _park checks the buffer after it set _parked,
        # this after the read filled it: under the GIL one of the two sees
        # the other (a free-threaded build needs both orders kept).
        if self._parked and self._conn.buffered():
            self._unpark()

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
        reading; the connection released its receive lock but wakes a
        caller waiting for it only after the dispatch, so wake one now."""
        tl = self._tl
        if getattr(tl, "poller", False):
            tl.poller = False
            # A plain store without _cond (GIL: atomic): readers under _cond
            # only use it to decide whom to wake.
            self._poller = False
        self._running[get_ident()] = time.monotonic()
        WATCHDOG.watch(self)
        if self._waiting:
            self._conn.wake_readers()

    def exit_call(self) -> None:
        """The request that ``enter_call`` announced has been answered."""
        self._running.pop(get_ident(), None)

    def busy(self) -> bool:
        """Is a request running (read without a lock: a snapshot)?"""
        return bool(self._running)

    def _oldest_call(self) -> float | None:
        # GIL: min() over the values of a dict of floats runs in C and calls
        # no Python code, so no thread switch can happen in it and the
        # serving threads cannot change the dict mid-iteration. A
        # free-threaded build has no such guarantee ("dictionary changed
        # size during iteration"): it would need _running guarded by a lock
        # (enter_call/exit_call are once per request, off the reply path).
        return min(self._running.values(), default=None)

    def maybe_appoint(self, now: float, delay: float) -> bool:
        """Called by the watchdog; returns False once nothing is running."""
        spawn = False
        with self._cond:
            oldest = self._oldest_call()
            if self._closed or oldest is None:
                return False
            if self._poller or self._wanted or self._parked or now - oldest < delay:
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
        ``ServeConfig.max_nap`` (see there why)."""
        cfg = self._cfg
        nap = cfg.grace
        with self._cond:
            while True:
                if self._closed:
                    return False
                if self._parked:  # the reactor watches for us
                    self._threads -= 1
                    return False
                quiet = not self._waiting and time.monotonic() - self._last_call >= cfg.grace
                if not self._poller and (self._wanted or quiet):
                    self._poller = True
                    self._wanted = False
                    self._tl.poller = True
                    return True
                if self._idle >= cfg.max_idle and self._poller:
                    self._threads -= 1
                    return False
                self._idle += 1
                try:
                    if self._cond.wait(None if self._poller else nap) is False:
                        nap = min(2 * nap, cfg.max_nap)  # timed out, still busy
                finally:
                    self._idle -= 1

    def _drop_role(self) -> None:
        if getattr(self._tl, "poller", False):
            self._tl.poller = False
            with self._cond:
                self._poller = False

    # -- parking --------------------------------------------------------------
    def _park(self) -> bool:
        """The poller read nothing for ``idle_after``: give the socket to
        the reactor and leave (True), unless a caller or the watchdog
        needs this thread as it is (False)."""
        with self._cond:
            if self._closed or self._waiting or self._wanted or self._conn.closed:
                return False
            self._tl.poller = False
            self._poller = False
            self._parked = True
            self._park_gen += 1
            self._park_sock = sock = self._conn.socket()
            self._threads -= 1
            self._cond.notify_all()  # idle pool threads leave too
            # under _cond: the reactor gets watch and unwatch in order
            REACTOR.watch(sock, partial(self._readable, self._park_gen))
        if self._conn.buffered():  # read ahead by a caller: see call_end
            self._unpark()
        return True

    def _readable(self, gen: int) -> None:
        # In the reactor thread: hand the socket to a pool thread at once.
        # Unlocked reads (GIL): a stale answer starts a thread that _resume
        # turns away.
        if self._parked and gen == self._park_gen:
            THREADS.start(partial(self._resume, gen), f"pycircuit-serve-{self._name}")

    def _resume(self, gen: int) -> None:
        with self._cond:
            if self._closed or not self._parked or gen != self._park_gen:
                return  # unparked meanwhile by someone else
            self._parked = False  # the reactor dropped its one-shot watch
            self._park_sock = None
            self._threads += 1
        self._loop()

    def _unpark(self) -> None:
        """Take the socket back from the reactor and serve it in a pool thread."""
        with self._cond:
            if not self._parked or self._closed:
                return
            self._parked = False
            REACTOR.unwatch(self._park_sock)
            self._park_sock = None
            self._threads += 1
        THREADS.start(self._loop, f"pycircuit-serve-{self._name}")

    def parked(self) -> bool:
        """Is the connection parked: watched by the reactor, read by no thread?"""
        return self._parked

    def describe(self) -> dict[str, object]:
        """A snapshot of who reads the connection, for diagnostics."""
        with self._cond:
            return {
                "threads": self._threads,
                "idle": self._idle,
                "poller": self._poller,
                "wanted": self._wanted,
                "waiting": dict(self._waiting),
                "running": len(self._running),
                "parked": self._parked,
                "closed": self._closed,
                "conn_closed": self._conn.closed,
                "buffered": self._conn.buffered(),
                "since_last_call": time.monotonic() - self._last_call,
            }

    def conn_closed(self) -> None:
        """The connection was closed: a parked one gets a thread that sees
        EOF and fails it as a reader would (the reactor may never see a
        socket closed under it)."""
        if self._parked:
            self._unpark()

    def _loop(self) -> None:
        idle_after = self._cfg.idle_after
        err: BaseException | None = None
        try:
            while self._take_role():
                while getattr(self._tl, "poller", False):
                    # without the receive lock: a waiting caller may read it
                    if not self._conn.poll(idle_after):
                        if self._park():
                            return  # this thread is the reservoir's again
                        continue
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
