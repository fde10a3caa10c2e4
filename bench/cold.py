#!/usr/bin/env python
"""A cold first spawn, in a fresh interpreter (run by metrics/spawn.py).

    python bench/cold.py pycircuit|pycircuit-running|mp|mitogen|execnet

Sets up what the peer needs before its first spawn (pycircuit:
``connect()``, which starts an embedded server; mitogen: a broker and
router; the others: nothing), then times the first spawn to its first
result and, for comparison, a second one. Prints one JSON line:
``{"setup_ns", "first_ns", "second_ns"}``. Everything it starts is stopped
before it exits.
"""

from __future__ import annotations

import json
import os
import sys

import common  # noqa: F401 - sets sys.path and the environment
from common import Tracker, clock


def pycircuit_cold(url: str | None = None) -> dict:
    import bench_helpers as H
    import pycircuit

    t0 = clock()
    c = pycircuit.connect(url)
    try:
        host = c.hosts()[0]
        t1 = clock()
        v, _ = c.spawn(host, None, H.one)
        t2 = clock()
        v2, _ = c.spawn(host, None, H.one)
        t3 = clock()
    finally:
        c.close()
    assert v == v2 == 1
    return {"setup_ns": t1 - t0, "first_ns": t2 - t1, "second_ns": t3 - t2}


def mp_cold() -> dict:
    from peers import mp_peer

    return {"setup_ns": 0, "first_ns": mp_peer.spawn_once(), "second_ns": mp_peer.spawn_once()}


def mitogen_cold() -> dict:
    from peers import mitogen_peer

    t0 = clock()
    s = mitogen_peer.Spawner(Tracker())
    try:
        t1 = clock()
        first = s.once("fork")
        second = s.once("fork")
    finally:
        s.close()
    return {"setup_ns": t1 - t0, "first_ns": first, "second_ns": second}


def execnet_cold() -> dict:
    from peers import execnet_peer

    return {
        "setup_ns": 0,
        "first_ns": execnet_peer.spawn_once(),
        "second_ns": execnet_peer.spawn_once(),
    }


if __name__ == "__main__":
    fn = {
        "pycircuit": pycircuit_cold,
        # a server that runs already (its URL from the parent): no embedded server to start
        "pycircuit-running": lambda: pycircuit_cold(os.environ["BENCH_CIRCUIT_URL"]),
        "mp": mp_cold,
        "mitogen": mitogen_cold,
        "execnet": execnet_cold,
    }[sys.argv[1]]
    print(json.dumps(fn()), flush=True)
