"""The SWIM core's view of the members (pure): its configuration, the
member table in flat arrays, the rules that merge a gossiped fact into it
(incarnation numbers decide; a refuted suspicion is dropped; a dead or left
member comes back only as alive at a higher incarnation), the events a change
makes, and the queue of news to gossip on. ``_swim.Swim`` adds the protocol:
probing, gossip, joins and syncs.
"""

from __future__ import annotations

import math
import random
from array import array
from dataclasses import dataclass

from ._members import (
    ALIVE,
    BACK,
    DEAD,
    DIED,
    JOIN,
    LEFT,
    LEFT_EV,
    SUSPECT,
    SUSPECTED,
    UNKNOWN,
    Directory,
    Event,
    Out,
    Suspicion,
    Sync,
    Update,
)
from ._swim_queue import Broadcasts

__all__ = ["SwimConfig", "View", "LIVE"]


@dataclass(frozen=True)
class SwimConfig:
    period: float = 0.5  # one probe per period
    probe_timeout: float = 0.2  # direct ack wait, then indirect probes until the period ends
    indirect: int = 3
    suspicion_mult: float = 4.0  # min suspicion = mult * max(1, log10 N) * period
    suspicion_max_mult: float = 3.0  # max suspicion (no confirmations) = this * min
    retransmit_mult: int = 4
    max_piggyback: int = 16  # updates per message (~80 bytes each)
    gossip_interval: float = 0.2
    gossip_fanout: int = 3
    # full-state sync with one member, every this * max(1, N / push_pull_n) s
    push_pull: float = 30.0
    push_pull_n: int = 100
    reconnect: float = 2.0  # ping a dead member every this * max(1, N / 32) s
    join_retry: float = 1.0
    join_tries: int = 4
    max_awareness: int = 8
    sync_chunk: int = 20  # entries per sync message (keeps a datagram under ~1,400 bytes)
    max_queue: int = 512  # pending updates kept; the most-sent go first
    forget_after: float = 3600.0

    def presence_bound(self, n: int) -> float:
        """Seconds within which a member that falls silent is dropped by every
        member of a cluster of ``n`` (a refused member goes sooner): a few
        periods to be probed, the longest suspicion, and dissemination."""
        suspicion = self.suspicion_mult * max(1.0, math.log10(max(1, n))) * self.suspicion_max_mult
        return self.period * (4 + suspicion + 2 * math.ceil(math.log2(n + 1)))


LIVE = (ALIVE, SUSPECT)


class View:
    def __init__(
        self,
        self_id: str,
        self_url: str,
        cfg: SwimConfig,
        rng: random.Random | None,
        directory: Directory | None,
        start_alive: bool,
    ) -> None:
        self.cfg, self.rng = cfg, rng or random.Random()
        self.dir = directory if directory is not None else Directory()
        self.id, self.url = self_id, self_url
        self.me = self.dir.intern(self_id, self_url)
        n = len(self.dir)
        self._st = bytearray([ALIVE]) * n if start_alive else bytearray(n)
        self._st[self.me] = UNKNOWN  # our own state is ``inc``/``leaving``, not in the table
        self._inc = array("I", bytes(4 * n))
        self._live = n - 1 if start_alive else 0
        self._order = array("I", range(n)) if start_alive else array("I")
        if start_alive:
            self._order.remove(self.me)
        self._pos = 0
        self.inc = 0
        self.leaving = False
        self.awareness = 0
        self._since: dict[int, float] = {}  # dead/left members: when
        self._susp: dict[int, Suspicion] = {}
        self._queue = Broadcasts(cfg.retransmit_mult * 6, cfg.max_queue)

    # -- queries -----------------------------------------------------------------
    def state(self, member_id: str) -> int:
        i = self.dir.index.get(member_id)
        if i is None or i >= len(self._st):
            return UNKNOWN
        return self._st[i]

    def alive(self) -> list[tuple[str, str]]:
        """(id, url) of live members (suspects included), this one too, sorted."""
        ids, urls, st = self.dir.ids, self.dir.urls, self._st
        out = [(ids[i], urls[i]) for i in range(len(st)) if st[i] in LIVE]
        if not self.leaving:
            out.append((self.id, self.url))
        return sorted(out)

    def live_count(self) -> int:
        return self._live + 1

    def retransmit_limit(self) -> int:
        return self.cfg.retransmit_mult * max(1, math.ceil(math.log10(self._live + 2)))

    # -- state -----------------------------------------------------------------------
    def _sync_to(self, url: str, reply: bool, out: Out) -> None:
        ids, urls, st, inc = self.dir.ids, self.dir.urls, self._st, self._inc
        entries = [Update(ALIVE, self.id, self.url, self.inc)]
        for i in range(len(st)):
            s = st[i]
            if s != UNKNOWN:
                frm = ""
                if s == SUSPECT:
                    sp = self._susp.get(i)
                    frm = min(sp.confirmers) if sp is not None else self.id
                entries.append(Update(s, ids[i], urls[i], inc[i], frm))
        n = self.cfg.sync_chunk
        for k in range(0, len(entries), n):
            out.sends.append((url, Sync(reply, k == 0, tuple(entries[k : k + n]))))

    def _ensure(self, i: int) -> None:
        short = i + 1 - len(self._st)
        if short > 0:
            self._st.extend(bytes(short))
            self._inc.extend([0] * short)

    def _merge(self, updates: tuple[Update, ...], now: float, out: Out) -> None:
        for u in updates:
            self._apply(u, now, out)

    def _apply(self, u: Update, now: float, out: Out) -> None:
        """Merge one fact; gossip it on if it changed our view."""
        if u.id == self.id:
            if u.state != ALIVE and u.inc >= self.inc and not self.leaving:
                self.inc = u.inc + 1  # refute
                self.awareness = min(self.cfg.max_awareness - 1, self.awareness + 1)
                self._enqueue(self.me, Update(ALIVE, self.id, self.url, self.inc))
            return
        i = self.dir.index.get(u.id)
        if i is None:
            if u.state != ALIVE:
                return  # news of the death of a stranger
            i = self.dir.intern(u.id, u.url)
        self._ensure(i)
        cur, inc = self._st[i], self._inc[i]
        if u.state == ALIVE:
            if cur != UNKNOWN and u.inc <= inc:
                return
            if u.url and u.url != self.dir.urls[i]:
                self.dir.intern(u.id, u.url)
            self._set(i, ALIVE, u.inc, now, out)
            self._enqueue(i, u)
        elif u.state == SUSPECT:
            if cur == UNKNOWN or u.inc < inc or cur in (DEAD, LEFT):
                return
            if cur == SUSPECT and u.inc == inc:
                s = self._susp.get(i)
                if s is not None and s.confirm(u.frm):
                    self._enqueue(i, u)
                return
            self._set(i, SUSPECT, u.inc, now, out)
            lo = (
                self.cfg.suspicion_mult
                * max(1.0, math.log10(max(1, self._live + 1)))
                * self.cfg.period
            )
            k = int(self.cfg.suspicion_mult - 2)
            if self._live + 1 - 2 < k:
                k = 0
            self._susp[i] = Suspicion(now, u.inc, lo, lo * self.cfg.suspicion_max_mult, k, u.frm)
            self._enqueue(i, u)
        else:
            if cur in (UNKNOWN, DEAD, LEFT) or u.inc < inc:
                return
            self._set(i, u.state, u.inc, now, out)
            self._enqueue(i, u)

    def _set(self, i: int, state: int, inc: int, now: float, out: Out) -> None:
        was = self._st[i]
        self._st[i], self._inc[i] = state, inc
        if state != SUSPECT:
            self._susp.pop(i, None)
        mid, url = self.dir.ids[i], self.dir.urls[i]
        if state in LIVE and was not in LIVE:
            self._live += 1
            self._since.pop(i, None)
            self._order.insert(self.rng.randrange(self._pos, len(self._order) + 1), i)
            out.events.append(Event(JOIN, mid, url))
        elif state not in LIVE and was in LIVE:
            self._live -= 1
            self._since[i] = now
            out.events.append(Event(DIED if state == DEAD else LEFT_EV, mid, url))
        elif state == SUSPECT:
            out.events.append(Event(SUSPECTED, mid, url))
        elif state == ALIVE and was == SUSPECT:
            out.events.append(Event(BACK, mid, url))

    def _enqueue(self, i: int, u: Update) -> None:
        self._queue.put(i, u)

    def _take(self) -> tuple[Update, ...]:
        return self._queue.take(self.cfg.max_piggyback, self.retransmit_limit())
