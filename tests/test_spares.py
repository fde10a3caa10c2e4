"""The spare pool: grows under a burst of spawns, a spawn that finds no
spare waits for one already on its way instead of forking another, and the
pool shrinks back after a quiet period. Policy tests drive ``SparePool``
with plain functions for making workers; the last test uses a real server."""

from __future__ import annotations

import threading
import time

import pycircuit
from pycircuit.server._spares import SpareConfig, SparePool
from pycircuit.spawn._spawner import WorkerRecord

from conftest import wait_until


class Maker:
    def __init__(self, delay: float = 0.0):
        self.made = 0
        self.retired: list[WorkerRecord] = []
        self.delay = delay
        self.lock = threading.Lock()

    def make(self) -> WorkerRecord:
        time.sleep(self.delay)  # the time a fork and boot take (not synchronisation)
        with self.lock:
            self.made += 1
            return WorkerRecord(token=f"t{self.made}", files="", anchors=[], spare=True)

    def assign(self, rec: WorkerRecord, paths: list) -> bool:
        rec.anchors, rec.assigned = paths, True
        return True

    def retire(self, rec: WorkerRecord) -> None:
        self.retired.append(rec)


def _pool(m: Maker, **cfg) -> SparePool:
    return SparePool(
        SpareConfig(refill_delay=0.0, **cfg), m.make, m.assign, m.retire, threading.Event()
    )


def test_a_burst_doubles_the_target_up_to_the_ceiling():
    m = Maker(delay=0.05)  # slower to make than to take: the burst drains the pool
    p = _pool(m, floor=2, ceiling=8)
    p.fill()
    wait_until(lambda: p.count() == 2, 5, what="the floor of spares")
    for _ in range(3):  # the third finds none ready
        assert p.take([], 5) is not None
    assert p.target() >= 4
    for _ in range(20):
        assert p.take([], 5) is not None
    assert p.target() <= 8
    wait_until(lambda: p.count() == p.target(), 5, what="the pool refilled to its target")


def test_a_spawn_that_finds_none_waits_for_one_on_its_way():
    m = Maker(delay=0.2)
    p = _pool(m, floor=1, ceiling=1)
    p.fill()  # one on its way, none ready
    rec = p.take([["a"]], 5)
    assert rec is not None and rec.anchors == [["a"]]
    assert m.made <= 2  # it waited for the coming one; it did not order an extra


def test_no_spares_at_all():
    m = Maker()
    p = _pool(m, floor=0, ceiling=0)
    p.fill()
    assert p.take([], 0.5) is None and m.made == 0


def test_the_pool_shrinks_after_a_quiet_period():
    m = Maker(delay=0.02)  # slower to make than to take: the burst drains the pool
    p = _pool(m, floor=1, ceiling=8, decay=0.3)
    p.fill()
    for _ in range(12):  # a burst: the target grows
        assert p.take([], 5) is not None
    grown = p.target()
    assert grown > 1
    wait_until(lambda: p.count() == grown, 5, what="refilled")
    time.sleep(0.4)  # the quiet period the policy measures (not synchronisation)
    assert p.take([], 5) is not None  # a hit after quiet: the target halves, extras retire
    assert p.target() == grown // 2 and m.retired


def test_a_batch_takes_the_spares_ready_and_grows_the_target():
    m = Maker()
    p = _pool(m, floor=2, ceiling=8)
    p.fill()
    wait_until(lambda: p.count() == 2, 5, what="the floor of spares")
    taken = p.take_ready([["b"]], 5)  # two ready: the batch forks the other three itself
    assert len(taken) == 2 and all(r.anchors == [["b"]] and r.assigned for r in taken)
    assert p.target() == 4  # it ran out: the next burst finds more
    wait_until(lambda: p.count() == 4, 5, what="the pool refilled to its new target")
    assert len(p.take_ready([], 1)) == 1  # enough ready: the target stays
    assert p.target() == 4


def test_a_server_grows_its_spares_under_a_burst(servers):
    url = servers.start("--spares", "1")
    with pycircuit.connect(url) as c:
        host = c.hosts()[0]
        kernel = c.kernel(host)
        wait_until(lambda: kernel.info()["spares"] == 1, 10, what="the one spare at rest")
        for _ in range(6):
            assert c.spawn(host, None, _one)[0] == 1
        wait_until(lambda: kernel.info()["spares"] >= 2, 15, what="more spares after a burst")


def _one() -> int:
    return 1
