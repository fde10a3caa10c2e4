"""References: the lease table of the objects a runtime owns, the proxies it
holds for other runtimes' objects, and the release loop that gives leases
back. Layer: runtime (the bottom of the ``Runtime`` class: ``_conns``
builds on it, ``_calls`` on that).

Handoff rule: an ``X`` owned by B that A sends to C travels as (B's
address, handle). C acquires its own lease from B while decoding; A keeps
its proxy pinned until C has acquired (for a request, until the reply; for
a reply, until C's ack), so the object is never freed in between.
"""

from __future__ import annotations

import logging
import queue
import threading
import weakref
from collections import Counter, defaultdict
from typing import TYPE_CHECKING, Any

from ..errors import ReleasedError
from ..xref._leases import LeaseTable
from ..xref._x import X, XPerm, lease_cell
from . import _wire
from ._addr import WorkerAddr
from ._config import RuntimeConfig
from ._hooks import NO_OBSERVER, CallObserver
from ._threads import THREADS

if TYPE_CHECKING:
    from ._peer import Peer

log = logging.getLogger(__name__)

# What the release queue carries: a collected proxy's owner, handle and
# lease count; None tells the loop to stop.
_Release = tuple[WorkerAddr, int, list[int]]


class RefsCore:
    # Set by Runtime.__init__ once its socket is bound.
    id: str
    addr: WorkerAddr
    url: str

    def __init__(self, cfg: RuntimeConfig) -> None:
        self.cfg = cfg
        # One lock for the table, the proxies and the peers, so that a lost
        # peer's leases, pending acks and connection go in one step.
        self._lock = threading.RLock()
        self._table = LeaseTable()
        self._peers: dict[str, Peer] = {}
        self._all_peers: set[Peer] = set()
        self._proxies: weakref.WeakValueDictionary[tuple[str, int], X] = (
            weakref.WeakValueDictionary()
        )
        self._pending_acks: dict[int, tuple[str, list[X]]] = {}
        self._release_q: queue.SimpleQueue[_Release | None] = queue.SimpleQueue()
        # Is a thread running _release_loop? Changed under _release_lock; the
        # loop exits after cfg.release_linger with nothing to send.
        self._releasing = False
        self._release_lock = threading.Lock()
        self._observer: CallObserver = NO_OBSERVER

    def observe_calls(self, observer: CallObserver) -> None:
        """Install the one observer of the calls this runtime serves (see
        ``_hooks``); before it serves anything."""
        self._observer = observer

    def add_static(self, handle: int, obj: Any) -> None:
        """Serve ``obj`` at a well-known handle (see ``_config``), forever."""
        with self._lock:
            self._table.add_static(handle, obj)

    # -- objects of ours ----------------------------------------------------
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

    def local_x(self, handle: int, perm: bool) -> X:
        """A new ``X`` for an object of ours that came back to us."""
        with self._lock:
            if handle not in self._table:
                raise ReleasedError(
                    f"reference H{handle:016x} was released by its owner {self.url}"
                )
            obj = self._table.get(handle)
            self._table.pin(handle)
        return self._wrap_local(handle, obj, perm)

    def grant_lease(self, handle: int, holder: str) -> None:
        """``holder`` gets a lease on our object at ``handle`` (it is being sent there)."""
        with self._lock:
            self._table.grant(handle, holder)

    def return_leases(self, handles: list[int], holder: str) -> None:
        """Take back leases granted for a message that was never sent."""
        with self._lock:
            for h in handles:
                self._table.release(h, holder, 1)

    def table_size(self) -> int:
        with self._lock:
            return len(self._table)

    def table_has(self, handle: int) -> bool:
        with self._lock:
            return handle in self._table

    # -- others' objects ----------------------------------------------------
    def proxy(self, owner: WorkerAddr, handle: int, perm: bool) -> X:
        """Our one proxy of ``owner``'s object at ``handle``; it releases
        the leases it holds (``count_leases``) once collected."""
        key = (owner.id, handle)
        with self._lock:
            p = self._proxies.get(key)
            if p is None:
                cell = [0]
                p = (XPerm if perm else X)(self, owner, handle, None, cell)
                self._proxies[key] = p
                weakref.finalize(p, self._queue_release, (owner, handle, cell))
            return p

    def count_leases(self, proxy: X, n: int) -> None:
        """``proxy`` holds ``n`` more leases from its owner."""
        with self._lock:
            lease_cell(proxy)[0] += n

    def proxy_count(self) -> int:
        return len(self._proxies)

    def _queue_release(self, item: _Release | None) -> None:
        # Runs in whichever thread collected the proxy (a finalizer), so it
        # only queues and, if need be, starts the loop in a pool thread.
        # The queue first, then the flag: the loop, before it exits, looks
        # at the queue after it cleared the flag.
        self._release_q.put(item)
        if self._releasing:  # unlocked (GIL: one load); checked again below
            return
        with self._release_lock:
            if self._releasing:
                return
            self._releasing = True
        THREADS.start(self._release_loop, "pycircuit-release")

    def stop_releasing(self) -> None:
        """Send what is queued, then stop (the runtime is closing)."""
        self._queue_release(None)

    def _next_release(self) -> list[_Release | None] | None:
        """The next item to release, in a list; None once the loop should exit."""
        linger = self.cfg.release_linger
        while True:
            try:
                return [self._release_q.get(timeout=linger)]
            except queue.Empty:  # nothing for a while: this thread may go
                pass
            with self._release_lock:
                self._releasing = False
            if self._release_q.empty():
                return None
            with self._release_lock:  # queued meanwhile: stay, unless another loop started
                if self._releasing:
                    return None
                self._releasing = True

    def _release_loop(self) -> None:
        while True:
            items = self._next_release()
            if items is None:
                return
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
                with self._release_lock:
                    self._releasing = False
                return

    def _send_releases(self, items: list[_Release]) -> None:
        batches: dict[str, Counter[int]] = defaultdict(Counter)
        for owner, handle, cell in items:
            with self._lock:
                n, cell[0] = cell[0], 0
            if n:
                batches[owner.id][handle] += n
        for oid, counts in batches.items():
            p = self._peers.get(oid)
            if p is not None and not p.dead:
                p.post(_wire.OP_RELEASE, _wire.encode_leases(list(counts.items())))

    # -- lease messages from peers ----------------------------------------
    def handle_release(self, peer: Peer, frame: bytes) -> None:
        if peer.id is None:
            return
        items = _wire.decode_leases(frame)
        with self._lock:
            for handle, n in items:
                self._table.release(handle, peer.id, n)

    def handle_acquire(self, peer: Peer, frame: bytes) -> bytes:
        if peer.id is None:
            return _wire.encode_leases([])
        granted = []
        with self._lock:
            for handle, n in _wire.decode_leases(frame):
                if handle in self._table and not self._table.is_perm(handle):
                    self._table.grant(handle, peer.id, n)
                    granted.append((handle, n))
        return _wire.encode_leases(granted)

    def await_ack(self, token: int, holder: str, pins: list[X]) -> None:
        """Keep ``pins`` until ``holder`` acknowledges the reply carrying ``token``."""
        self._observer.handoffs(1)  # counted first: the ack may come at once
        with self._lock:
            self._pending_acks[token] = (holder, pins)

    def acks_awaited(self) -> int:
        with self._lock:
            return len(self._pending_acks)

    def handle_ack(self, peer: Peer, token: int) -> None:
        with self._lock:
            settled = self._pending_acks.pop(token, None) is not None
        if settled:
            self._observer.handoffs(-1)

    def _forget_holder(self, holder: str) -> int:
        """A holder is known lost: drop its leases and the acks it owed;
        returns how many acks. Holding the lock."""
        self._table.drop_holder(holder)
        gone = [t for t, (h, _) in self._pending_acks.items() if h == holder]
        for token in gone:
            del self._pending_acks[token]
        return len(gone)
