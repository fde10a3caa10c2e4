"""A deterministic in-memory network of pure SWIM cores (tests only): a
virtual clock, per-datagram loss and latency from one seeded RNG, crashed
members that refuse or stay silent, and partitions."""

from __future__ import annotations

import heapq
import random

from pycircuit.server._members import Directory
from pycircuit.server._swim import Swim, SwimConfig

CFG = SwimConfig()


class Net:
    def __init__(
        self,
        n: int,
        seed: int = 0,
        loss: float = 0.0,
        cfg: SwimConfig = CFG,
        converged: bool = True,
        latency: tuple[float, float] = (0.001, 0.01),
    ) -> None:
        self.rng = random.Random(seed)
        self.cfg, self.loss, self.latency = cfg, loss, latency
        self.now = 0.0
        self.dir = Directory()
        self.nodes: dict[str, Swim] = {}
        self.url_of: dict[str, str] = {}
        self.down: dict[str, str] = {}  # url -> "refuse" | "silent"
        self.side: dict[str, int] = {}  # url -> partition side (absent: 0)
        self.events: list[tuple[float, str, tuple]] = []  # (time, observer id, event)
        self.sent = 0
        self._q: list = []
        self._n = 0
        ids = [f"X{i:016x}" for i in range(n)]
        for mid in ids:
            self.dir.intern(mid, f"u{mid}")
        for mid in ids:
            self._add(mid, converged)
        if not converged:
            for mid in ids[1:]:
                self.feed(f"u{mid}", self.nodes[f"u{mid}"].join(ids[0], f"u{ids[0]}", self.now))

    def _add(self, mid: str, start_alive: bool) -> Swim:
        url = f"u{mid}"
        node = Swim(
            mid,
            url,
            self.cfg,
            random.Random(self.rng.random()),
            self.now,
            self.dir if start_alive else None,
            start_alive,
        )
        self.nodes[url] = node
        self.url_of[mid] = url
        self._push(node.next_deadline(), ("tick", url))
        return node

    def add(self, mid: str, via: str) -> None:
        node = self._add(mid, False)
        self.feed(node.url, node.join(via, self.url_of[via], self.now))

    def _push(self, t: float, item: tuple) -> None:
        self._n += 1
        heapq.heappush(self._q, (t, self._n, item))

    def feed(self, url: str, out) -> None:
        node = self.nodes[url]
        for ev in out.events:
            self.events.append((self.now, node.id, ev))
        for dst, msg in out.sends:
            self.sent += 1
            if self.rng.random() < self.loss or self.side.get(url, 0) != self.side.get(dst, 0):
                continue
            lo, hi = self.latency
            self._push(self.now + self.rng.uniform(lo, hi), ("msg", dst, url, msg))
        self._push(node.next_deadline(), ("tick", url))

    def run_until(self, t_end: float) -> None:
        while self._q and self._q[0][0] <= t_end:
            t, _, item = heapq.heappop(self._q)
            self.now = max(self.now, t)
            if item[0] == "tick":
                url = item[1]
                node = self.nodes[url]
                if url in self.down or node.next_deadline() > self.now:
                    continue
                self.feed(url, node.tick(self.now))
            elif item[0] == "refused":
                _, at, dead = item
                if at not in self.down:
                    self.feed(at, self.nodes[at].on_refused(dead, self.now))
            else:
                _, dst, src, msg = item
                state = self.down.get(dst)
                if state == "refuse":
                    if src not in self.down:
                        self._push(self.now + 0.001, ("refused", src, dst))
                elif state != "silent" and dst in self.nodes:
                    self.feed(
                        dst, self.nodes[dst].on_message(self.nodes[src].id, src, msg, self.now)
                    )
        self.now = max(self.now, t_end)

    def views(self, live_only: bool = True) -> dict[str, list[str]]:
        return {
            n.id: [i for i, _ in n.alive()]
            for u, n in self.nodes.items()
            if not (live_only and u in self.down)
        }
