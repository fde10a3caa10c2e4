"""Distributed GC churn.

An owner worker hands out references in batches (1000; quick 500) until N
have been made (10⁵; quick 10⁴). This process receives each batch and
passes it on to one of four holder workers (the handoff: the holder takes
its own leases from the owner), which keeps 10 % of it and drops the rest;
this process drops its copies. After every fifth batch one holder is
killed with SIGKILL while it holds references and a new one takes its
place. At the end the surviving holders drop what they kept.

Reported: the owner's lease-table size once things settle, less its
permanent entries (services) counted before the churn; it must be 0, else
the run prints FAIL. The owner's RSS drift (after minus before, both after
a gc.collect() in the owner; a warm-up batch goes first). Churn time and
references per second for information.
"""

from __future__ import annotations

import gc
import os
import signal
import time

import bench_helpers as H
from common import Section, Target, clock, log

HOLDERS = 4
KEEP = 0.10
KILL_EVERY = 5
SETTLE_TIMEOUT = 60.0


def run(ctx) -> Section:
    sec = Section("gc")
    circuit = ctx.circuit()
    pycircuit = circuit.pycircuit
    total, batch = ctx.n(100_000, 10_000), ctx.n(1000, 500)
    keep = int(batch * KEEP)
    owner_pid, oaddr = circuit.spawn(H.gc_owner)
    holders = []
    try:
        factory = pycircuit.dial(oaddr, "factory")
        probe = pycircuit.dial(oaddr, "probe")

        def new_holder():
            h, addr = circuit.spawn(H.gc_holder)
            holders.append((h, addr))

        for _ in range(HOLDERS):
            new_holder()
        base = probe.table_size()

        def settle(what):
            deadline = time.monotonic() + SETTLE_TIMEOUT
            while True:
                gc.collect()
                size = probe.table_size()
                if size == base or time.monotonic() > deadline:
                    return size
                time.sleep(0.05)

        # warm-up: one batch the whole way, so the "before" RSS has the code paths loaded
        refs = factory.make(batch)
        holders[0][0].take(refs, 0)
        del refs
        settle("warm-up")
        probe.collect()
        rss0 = probe.rss()

        log(
            f"gc: {total} references in batches of {batch}, a holder killed every {KILL_EVERY} batches …"
        )
        kills = 0
        peak = 0
        t0 = clock()
        for i in range(total // batch):
            refs = factory.make(batch)
            h, _ = holders[i % len(holders)]
            if h.take(refs, keep) != batch:
                raise AssertionError("a holder did not take the whole batch")
            del refs
            if (i + 1) % KILL_EVERY == 0:
                peak = max(peak, probe.table_size() - base)
                _, victim = holders.pop(0)
                os.kill(victim.pid, signal.SIGKILL)
                circuit.kept.remove(victim)
                kills += 1
                new_holder()
        churn_ns = clock() - t0
        for h, _ in holders:
            h.drop_all()
        left = settle("the end") - base
        settled_ns = clock() - t0
        probe.collect()
        rss1 = probe.rss()
        client_proxies = circuit.c._rt.proxy_count() if hasattr(circuit.c, "_rt") else None
    finally:
        for _, addr in holders:
            circuit.kill(addr)
        circuit.kill(oaddr)
    sec.raw = {
        "references": total,
        "batch": batch,
        "kept_per_batch": keep,
        "holders_killed": kills,
        "table_base": base,
        "table_left": left,
        "table_peak_over_base": peak,
        "owner_rss_before": rss0,
        "owner_rss_after": rss1,
        "churn_s": churn_ns / 1e9,
        "settled_s": settled_ns / 1e9,
        "client_proxies_left": client_proxies,
    }
    if left != 0:
        sec.failures.append(
            f"GC churn: the owner's lease table holds {left} entries after settling (must be 0)"
        )
    m = f"GC churn: {total:,} refs owner → here → holder, {kills} holders SIGKILLed"
    sec.add(
        m,
        "owner lease-table size at the end (must be 0)",
        left,
        None,
        unit="count",
        target=Target("= 0", limit=0),
    )
    sec.add(m, "owner RSS drift (after − before)", (rss1 - rss0) / 2**20, None, unit="MB")
    sec.add(m, "(info) owner RSS before", rss0 / 2**20, None, unit="MB", info=True)
    sec.add(m, "(info) time until the table is back to its base", settled_ns / 1e3, None, info=True)
    sec.add(
        m,
        "(info) references per second (through the holder)",
        total / (churn_ns / 1e9),
        None,
        unit="calls/s",
        info=True,
    )
    sec.add(m, "(info) peak live leases seen (at a kill)", peak, None, unit="count", info=True)
    return sec
