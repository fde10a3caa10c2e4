#!/usr/bin/env python
"""Deterministic simulator of the membership core (pycircuit.server._swim).

    python bench/sim_members.py [--sizes 100,1000,10000] [--fp-periods 1000,1000,40] [--seeds 3]

Many pure cores on a virtual clock and a virtual network (per-datagram loss,
latency uniform in 1-10 ms), no sockets or threads; the default config is
the one the servers use (period 0.5 s). Prints, per cluster size:

* crash, refused: a member's process dies on a live host (probes to it are
  refused); periods until no live member lists it.
* crash, silent: a member vanishes (nothing answers); the same.
* msgs/member/period: datagrams sent per member per period, idle (no churn).
* false positives: live members declared dead by anyone, over P periods,
  seeds 1..S, at 0, 5 and 10 % loss (P is smaller at 10,000 to stay within
  minutes; the header says how many).
* newcomer: a member joins through one random member; periods until every
  member lists it.

Clusters start converged (every member knows every other, alive).
"""

from __future__ import annotations

import argparse
import heapq
import os
import random
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from pycircuit.server._members import ALIVE, DIED, LEFT_EV, SUSPECT, Directory
from pycircuit.server._swim import Swim, SwimConfig

CFG = SwimConfig()
LATENCY = (0.001, 0.010)


class Sim:
    def __init__(self, n: int, seed: int, loss: float = 0.0, cfg: SwimConfig = CFG) -> None:
        self.rng = random.Random(seed)
        self.loss, self.cfg = loss, cfg
        self.now = 0.0
        self.dir = Directory()
        for i in range(n):
            self.dir.intern(f"X{i:016x}", f"u{i}")
        self.nodes = [
            Swim(f"X{i:016x}", f"u{i}", cfg, random.Random(self.rng.random()), 0.0, self.dir, True)
            for i in range(n)
        ]
        self.index = {f"u{i}": i for i in range(n)}
        self.down: dict[int, str] = {}
        self.sent = 0
        self.false_dead: set[str] = set()
        self.dead_events = 0
        self._q: list = []
        self._k = 0
        self._wake = [0.0] * n
        for i, node in enumerate(self.nodes):
            self._schedule(i, node.next_deadline())

    def _schedule(self, i: int, t: float) -> None:
        self._wake[i] = t
        self._k += 1
        heapq.heappush(self._q, (t, self._k, 0, i, None, None))

    def add(self, via: int) -> int:
        i = len(self.nodes)
        mid, url = f"X{i:016x}", f"u{i}"
        node = Swim(mid, url, self.cfg, random.Random(self.rng.random()), self.now)
        self.nodes.append(node)
        self.index[url] = i
        self._wake.append(0.0)
        self._feed(i, node.join(self.nodes[via].id, self.nodes[via].url, self.now))
        return i

    def _feed(self, i: int, out) -> None:
        rng, loss, down = self.rng, self.loss, self.down
        for ev in out.events:
            if ev.kind in (DIED, LEFT_EV):
                self.dead_events += 1
                j = self.index.get(ev.url)
                if j is not None and j not in down:
                    self.false_dead.add(ev.id)
        for dst, msg in out.sends:
            self.sent += 1
            if loss and rng.random() < loss:
                continue
            self._k += 1
            heapq.heappush(
                self._q, (self.now + rng.uniform(*LATENCY), self._k, 1, self.index[dst], i, msg)
            )
        t = self.nodes[i].next_deadline()
        if t < self._wake[i] or self._wake[i] <= self.now:
            self._schedule(i, t)

    def run_until(self, t_end: float) -> None:
        q, nodes, down = self._q, self.nodes, self.down
        while q and q[0][0] <= t_end:
            t, _, kind, i, src, msg = heapq.heappop(q)
            self.now = t
            if i in down:
                if kind == 1 and down[i] == "refuse" and src not in down:
                    self._k += 1
                    heapq.heappush(q, (t + 0.001, self._k, 2, src, i, None))
                continue
            node = nodes[i]
            if kind == 0:
                if t != self._wake[i]:
                    continue
                if node.next_deadline() <= t:
                    self._feed(i, node.tick(t))
                else:
                    self._schedule(i, node.next_deadline())
            elif kind == 1:
                s = nodes[src]
                self._feed(i, node.on_message(s.id, s.url, msg, t))
            else:
                self._feed(i, node.on_refused(nodes[src].url, t))
        self.now = t_end

    def listed_by(self, j: int) -> int:
        """How many live members list member ``j`` as alive or suspect."""
        mid = self.nodes[j].id
        return sum(
            1
            for i, n in enumerate(self.nodes)
            if i not in self.down and i != j and n.state(mid) in (ALIVE, SUSPECT)
        )

    def periods_until(self, cond, limit: float, step: float = 1.0) -> float | None:
        t0 = self.now
        while self.now - t0 < limit * self.cfg.period:
            self.run_until(self.now + step * self.cfg.period)
            if cond():
                return (self.now - t0) / self.cfg.period
        return None


def crash(n: int, how: str, seed: int) -> float | None:
    sim = Sim(n, seed)
    sim.run_until(5 * CFG.period)
    victim = sim.rng.randrange(n)
    sim.down[victim] = how
    return sim.periods_until(lambda: sim.listed_by(victim) == 0, 400)


def idle(n: int, seed: int, periods: int) -> float:
    sim = Sim(n, seed)
    sim.run_until(2 * CFG.period)
    s0 = sim.sent
    sim.run_until(sim.now + periods * CFG.period)
    return (sim.sent - s0) / n / periods


def false_positives(n: int, seed: int, loss: float, periods: int) -> tuple[int, int]:
    sim = Sim(n, seed, loss)
    sim.run_until(periods * CFG.period)
    return len(sim.false_dead), sim.dead_events


def newcomer(n: int, seed: int) -> float | None:
    sim = Sim(n, seed)
    sim.run_until(2 * CFG.period)
    j = sim.add(sim.rng.randrange(n))
    return sim.periods_until(lambda: sim.listed_by(j) == n, 400, step=0.5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="100,1000,10000")
    ap.add_argument(
        "--fp-periods", default="1000,1000,40", help="periods of the false-positive runs, per size"
    )
    ap.add_argument("--seeds", type=int, default=3)
    a = ap.parse_args()
    sizes = [int(x) for x in a.sizes.split(",")]
    fpp = [int(x) for x in a.fp_periods.split(",")]
    fpp += [fpp[-1]] * (len(sizes) - len(fpp))
    seeds = range(1, a.seeds + 1)
    print(
        f"config: period {CFG.period} s, probe timeout {CFG.probe_timeout} s, {CFG.indirect} indirect, "
        f"suspicion {CFG.suspicion_mult:g}*max(1,log10 N) periods (up to x{CFG.suspicion_max_mult:g}), "
        f"gossip {CFG.gossip_fanout} every {CFG.gossip_interval} s; latency {LATENCY[0] * 1e3:g}-{LATENCY[1] * 1e3:g} ms"
    )
    print(
        "| members | crash, refused: periods | crash, silent: periods | msgs/member/period | "
        "false positives (0/5/10 % loss) | periods | newcomer: periods | wall s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for n, periods in zip(sizes, fpp):
        t0 = time.monotonic()
        ref = [crash(n, "refuse", s) for s in seeds]
        sil = [crash(n, "silent", s) for s in seeds]
        msgs = idle(n, 1, 20 if n >= 10000 else 100)
        fps = []
        for loss in (0.0, 0.05, 0.10):
            fps.append(sum(false_positives(n, s, loss, periods)[0] for s in seeds))
        new = [newcomer(n, s) for s in seeds]

        def span(xs):
            xs = [x for x in xs if x is not None]
            miss = "" if len(xs) == len(seeds) else f" ({len(seeds) - len(xs)} never)"
            return (f"{min(xs):.1f}-{max(xs):.1f}" if xs else "-") + miss

        print(
            f"| {n:,} | {span(ref)} | {span(sil)} | {msgs:.2f} | {'/'.join(map(str, fps))} | "
            f"{periods} x {len(seeds)} seeds | {span(new)} | {time.monotonic() - t0:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
