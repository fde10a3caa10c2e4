"""SWIM membership with Lifeguard local health, as a pure state machine.

Inputs: ``on_message(src_id, src_url, msg, now)``, ``on_refused(url, now)``
(the host answered that nothing listens there), ``tick(now)``, ``join``,
``leave``. Each returns an :class:`Out`: messages to send (destination URL,
message) and membership events; ``next_deadline()`` says when to call
``tick`` next. No sockets, threads or clocks: time is passed in.

Each period a member probes one other, in a shuffled round-robin order
(an incremental Fisher-Yates shuffle). No ack within the probe timeout: it
asks ``indirect`` others to probe (they answer with an ack or a nack); no
ack by the end of the period: the member is *suspected*, which is gossiped;
a suspect that hears of it refutes with a higher incarnation; an unrefuted
suspicion becomes *dead* after a timeout that shrinks as independent
suspicions confirm it (Lifeguard). A refusal is proof: dead at once.
Updates ride on every message (at most ``retransmit_mult*ceil(log10(N+1))``
times each, least-sent first), and go out on their own to ``gossip_fanout``
members while any are pending. Every ``push_pull`` seconds (stretched with
N so the bytes per member stay flat) a member exchanges its full state with
one random member; now and then it pings a dead member and, if answered,
syncs with it, so a healed partition is seen again. Local health
(``awareness``) rises when our own probes fail without the helpers' nacks
or when we must refute, and stretches our timeouts.
"""

from __future__ import annotations

import math
import random
from array import array
from typing import Any

from ._members import (
    ALIVE,
    DEAD,
    LEFT,
    SUSPECT,
    UNKNOWN,
    Ack,
    Directory,
    Gossip,
    Message,
    Nack,
    Out,
    Ping,
    PingReq,
    Sync,
    Update,
)
from ._swim_view import LIVE, SwimConfig, View

__all__ = ["SwimConfig", "Swim", "Out", "Ping", "Ack", "PingReq", "Nack", "Sync", "Gossip"]


class _Probe:
    __slots__ = (
        "target",
        "start",
        "direct_deadline",
        "end",
        "stage",
        "nacks",
        "expected",
        "relay",
        "reconnect",
    )

    def __init__(self, target: int, start: float, direct_deadline: float, end: float) -> None:
        self.target, self.start = target, start
        self.direct_deadline, self.end = direct_deadline, end
        self.stage = 0  # 0: direct ping out; 1: indirect pings out
        self.nacks = self.expected = 0
        # (requester URL, its seq) when we probe for another
        self.relay: tuple[str, int] | None = None
        self.reconnect = False  # a ping to a dead member: an ack leads to a sync


class Swim(View):
    def __init__(
        self,
        self_id: str,
        self_url: str,
        cfg: SwimConfig = SwimConfig(),
        rng: random.Random | None = None,
        now: float = 0.0,
        directory: Directory | None = None,
        start_alive: bool = False,
    ) -> None:
        """``start_alive``: every member already in ``directory`` is known alive
        at incarnation 0 (a converged cluster: the simulator's starting point)."""
        super().__init__(self_id, self_url, cfg, rng, directory, start_alive)
        self._probes: dict[int, _Probe] = {}
        self._seq = 0
        self._joins: dict[str, list[Any]] = {}  # url -> [tries, deadline]
        r = self.rng.random
        self._next_probe = now + cfg.period * r()  # spread the members' periods
        self._next_gossip = now + cfg.gossip_interval
        self._next_sync = now + self._push_pull_interval() * (0.5 + r())
        self._next_reconnect = now + self._reconnect_interval() * (0.5 + r())

    def next_deadline(self) -> float:
        if self.leaving:
            return math.inf
        t = min(self._next_probe, self._next_sync, self._next_reconnect)
        if self._queue:
            t = min(t, self._next_gossip)
        for p in self._probes.values():
            t = min(t, p.direct_deadline if p.stage == 0 and p.relay is None else p.end)
        for s in self._susp.values():
            t = min(t, s.deadline)
        for _, deadline in self._joins.values():
            t = min(t, deadline)
        return t

    # -- inputs --------------------------------------------------------------------
    def join(self, member_id: str, url: str, now: float) -> Out:
        """Join through a member (its ID learned out of band): sync with it,
        retrying a few times until it answers."""
        out = Out()
        if member_id == self.id or self.leaving:
            return out
        self._apply(Update(ALIVE, member_id, url, 0), now, out)
        self._joins[url] = [1, now + self.cfg.join_retry]
        self._sync_to(url, False, out)
        return out

    def leave(self, now: float) -> Out:
        """Announce that we go: a LEFT update to a few members at once."""
        out = Out()
        if self.leaving:
            return out
        self.inc += 1
        self.leaving = True
        u = Update(LEFT, self.id, self.url, self.inc)
        for i in self._random_live(max(3, self.retransmit_limit()), ()):
            out.sends.append((self.dir.urls[i], Gossip((u,))))
        return out

    def on_refused(self, url: str, now: float) -> Out:
        out = Out()
        i = self.dir.by_url.get(url)
        self._joins.pop(url, None)
        if (
            i is not None
            and i != self.me
            and i < len(self._st)
            and self._st[i] in LIVE
            and self.dir.urls[i] == url
        ):
            self._apply(Update(DEAD, self.dir.ids[i], url, self._inc[i]), now, out)
        return out

    def on_message(self, src_id: str, src_url: str, msg: Message, now: float) -> Out:
        out = Out()
        if self.leaving:
            return out
        if isinstance(msg, Ping):
            self._merge(msg.updates, now, out)
            if msg.target == self.id:
                out.sends.append((src_url, Ack(msg.seq, self._take())))
        elif isinstance(msg, Ack):
            self._merge(msg.updates, now, out)
            p = self._probes.pop(msg.seq, None)
            if p is not None:
                if p.relay is not None:
                    out.sends.append((p.relay[0], Ack(p.relay[1], self._take())))
                elif p.reconnect:
                    self._sync_to(self.dir.urls[p.target], False, out)
                else:
                    self.awareness = max(0, self.awareness - 1)
        elif isinstance(msg, PingReq):
            self._merge(msg.updates, now, out)
            if msg.target == self.id:
                out.sends.append((src_url, Ack(msg.seq, self._take())))
                return out
            t = self.dir.intern(msg.target, msg.target_url)
            self._ensure(t)
            seq = self._new_probe(t, now, relay=(src_url, msg.seq))
            out.sends.append((msg.target_url, Ping(seq, msg.target, self._take())))
        elif isinstance(msg, Nack):
            p = self._probes.get(msg.seq)
            if p is not None and p.relay is None:
                p.nacks += 1
        elif isinstance(msg, Sync):
            self._merge(msg.entries, now, out)
            self._joins.pop(src_url, None)
            if msg.first and not msg.reply:
                self._sync_to(src_url, True, out)
        elif isinstance(msg, Gossip):
            self._merge(msg.updates, now, out)
        return out

    def tick(self, now: float) -> Out:
        out = Out()
        if self.leaving:
            return out
        cfg, scale = self.cfg, self.awareness + 1
        for seq in [
            s
            for s, p in self._probes.items()
            if now >= (p.direct_deadline if p.stage == 0 and p.relay is None else p.end)
        ]:
            self._probe_due(seq, now, out)
        for i in [i for i, s in self._susp.items() if now >= s.deadline]:
            s = self._susp.pop(i)
            if self._st[i] == SUSPECT and self._inc[i] == s.inc:
                self._apply(Update(DEAD, self.dir.ids[i], self.dir.urls[i], s.inc), now, out)
        for url in [u for u, (_, d) in self._joins.items() if now >= d]:
            j = self._joins[url]
            if j[0] >= cfg.join_tries:
                del self._joins[url]
            else:
                j[0] += 1
                j[1] = now + cfg.join_retry
                self._sync_to(url, False, out)
        if now >= self._next_probe:
            self._next_probe = max(now, self._next_probe + cfg.period * scale)
            self._probe_next(now, out)
        if now >= self._next_gossip:
            self._next_gossip = now + cfg.gossip_interval
            if self._queue:
                for i in self._random_live(cfg.gossip_fanout, ()):
                    out.sends.append((self.dir.urls[i], Gossip(self._take())))
        if now >= self._next_sync:
            self._next_sync = now + self._push_pull_interval()
            for i in self._random_live(1, ()):
                self._sync_to(self.dir.urls[i], False, out)
        if now >= self._next_reconnect:
            self._next_reconnect = now + self._reconnect_interval()
            self._reconnect(now, out)
        return out

    # -- probing -------------------------------------------------------------------
    def _new_probe(self, target: int, now: float, relay: tuple[str, int] | None = None) -> int:
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        scale = self.awareness + 1
        p = _Probe(target, now, now + self.cfg.probe_timeout * scale, now + self.cfg.period * scale)
        if relay is not None:
            p.end = p.direct_deadline
            p.relay = relay
        self._probes[self._seq] = p
        return self._seq

    def _probe_next(self, now: float, out: Out) -> None:
        st, order = self._st, self._order
        for _ in range(len(order) + 1):
            if self._pos >= len(order):
                self._order = order = array("I", [i for i in range(len(st)) if st[i] in LIVE])
                self._pos = 0
                if not order:
                    return
            j = self.rng.randrange(self._pos, len(order))
            order[self._pos], order[j] = order[j], order[self._pos]
            i = order[self._pos]
            self._pos += 1
            if st[i] in LIVE and not any(
                p.target == i and p.relay is None for p in self._probes.values()
            ):
                seq = self._new_probe(i, now)
                out.sends.append((self.dir.urls[i], Ping(seq, self.dir.ids[i], self._take())))
                return

    def _probe_due(self, seq: int, now: float, out: Out) -> None:
        p = self._probes[seq]
        if p.relay is not None:
            del self._probes[seq]
            out.sends.append((p.relay[0], Nack(p.relay[1])))
            return
        i = p.target
        if p.stage == 0 and not p.reconnect:
            p.stage = 1
            helpers = self._random_live(self.cfg.indirect, (i,))
            p.expected = len(helpers)
            tid, turl = self.dir.ids[i], self.dir.urls[i]
            for h in helpers:
                out.sends.append((self.dir.urls[h], PingReq(seq, tid, turl, self._take())))
            # and once more directly (a lost datagram is likelier)
            out.sends.append((turl, Ping(seq, tid, ())))
            return
        del self._probes[seq]
        if p.reconnect:
            return
        # Lifeguard: helpers that did not even nack suggest the fault is ours
        miss = p.expected - p.nacks if p.expected else 1
        self.awareness = min(self.cfg.max_awareness - 1, self.awareness + max(0, miss))
        if self._st[i] in LIVE:  # a suspect already: our failure confirms it
            self._apply(
                Update(SUSPECT, self.dir.ids[i], self.dir.urls[i], self._inc[i], self.id), now, out
            )

    def _reconnect(self, now: float, out: Out) -> None:
        dead = [i for i, _ in self._since.items() if self._st[i] == DEAD]
        for i, t in list(self._since.items()):
            if now - t > self.cfg.forget_after:
                del self._since[i]
                self._st[i] = UNKNOWN
                self._queue.forget(i)
        if dead:
            i = self.rng.choice(dead)
            if self._st[i] == DEAD:
                seq = self._new_probe(i, now)
                self._probes[seq].reconnect = True
                out.sends.append((self.dir.urls[i], Ping(seq, self.dir.ids[i], ())))

    def _random_live(self, k: int, exclude: tuple[int, ...]) -> list[int]:
        st, order = self._st, self._order
        if k <= 0 or self._live == 0:
            return []
        if self._live <= 4 * k:
            pool = [i for i in range(len(st)) if st[i] in LIVE and i not in exclude]
            return self.rng.sample(pool, min(k, len(pool)))
        got: list[int] = []
        for _ in range(8 * k):
            if not order:
                break
            i = order[self.rng.randrange(len(order))]
            if st[i] in LIVE and i not in exclude and i not in got:
                got.append(i)
                if len(got) == k:
                    break
        return got

    def _push_pull_interval(self) -> float:
        return self.cfg.push_pull * max(1.0, (self._live + 1) / self.cfg.push_pull_n)

    def _reconnect_interval(self) -> float:
        return self.cfg.reconnect * max(1.0, (self._live + 1) / 32)
