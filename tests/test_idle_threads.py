"""Idle connections hold no thread (issue #15): an idle worker settles at a
few threads, a client holding connections to many workers stays under a
small bound, and calls in both directions still work once the connections
went idle (the reactor hands a readable socket back to a thread).

Real processes: a server, its workers, and a client program of its own (a
child process, so that the count is not the test runner's threads)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import psutil
import pytest

import pycircuit
from pycircuit.acid import thread_stacks
from pycircuit.runtime import _runtime
from circuit_helpers import daemon
from conftest import child_env, wait_until

IDLE_WORKER_MAX = 4  # MainThread, run_in_back's thread, the reactor, one parked thread


def test_an_idle_worker_settles_at_four_threads_and_still_serves(client, host):
    x, addr = client.spawn(host, None, daemon)
    try:
        proc = psutil.Process(addr.pid)
        wait_until(
            lambda: proc.num_threads() <= IDLE_WORKER_MAX,
            timeout=20,
            what=f"the idle worker to settle at <= {IDLE_WORKER_MAX} threads",
        )
        # A request on a parked connection is served (the reactor wakes a thread).
        assert x.incr(2) == 2
        assert pycircuit.dial(addr, "probe").pid() == addr.pid
        wait_until(lambda: proc.num_threads() <= IDLE_WORKER_MAX, timeout=20, what="settling again")
        assert x.incr(3) == 5
    finally:
        client.kill(addr)


def test_the_death_of_a_worker_on_a_parked_connection_is_noticed(client, host):
    x, addr = client.spawn(host, None, daemon)
    try:
        assert x.incr() == 1
        peer = _runtime.current().peer(addr)
        try:
            wait_until(peer.group.parked, timeout=20, what="the connection to park")
        except AssertionError as e:
            raise AssertionError(f"{e}: {peer.group.describe()}\n{thread_stacks()}") from None
        os.kill(addr.pid, signal.SIGKILL)
        # no call in flight: only the reactor can see the EOF
        wait_until(lambda: peer.dead, timeout=10, what="the lost worker noticed")
        with pytest.raises(pycircuit.NetworkError):
            x.incr()
    finally:
        client.kill(addr)


# The client program: spawns N daemon workers, calls each once, waits for its
# threads to settle, then calls every worker again and has every worker call
# back into it after a pause longer than the idle threshold.
_CLIENT = textwrap.dedent(
    """
    import sys, threading, time
    import psutil
    import pycircuit
    from pycircuit.runtime._serve import ServeConfig
    from circuit_helpers import daemon

    url, n, bound = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    me = psutil.Process()

    def settle(what):
        deadline = time.monotonic() + 30
        while me.num_threads() > bound:
            if time.monotonic() > deadline:
                names = sorted(t.name for t in threading.enumerate())
                sys.exit(f"{what}: {me.num_threads()} threads > {bound}: {names}")
            time.sleep(0.05)

    class Hits:
        def __init__(self):
            self.cond = threading.Condition()
            self.n = 0

        def hit(self):
            with self.cond:
                self.n += 1
                self.cond.notify_all()

    def call_back_later(x, pause):
        def later():
            time.sleep(pause)  # the scenario: a pause, not synchronisation
            x.hit()
        pycircuit.run_in_back(later)
        return True

    with pycircuit.connect(url) as c:
        host = c.hosts()[0]
        xs, addrs = [], []
        for _ in range(n):
            x, addr = c.spawn(host, None, daemon)
            xs.append(x)
            addrs.append(addr)
        try:
            assert [x.incr() for x in xs] == [1] * n
            settle("after one call each")
            peak = me.num_threads()
            # requests on idle connections (client to worker)
            assert [x.incr() for x in xs] == [2] * n
            settle("after the second calls")
            # requests on idle connections (worker to client), after a pause
            hits = Hits()
            ref = pycircuit.ref(hits)
            pause = 3 * ServeConfig().idle_after
            for a in addrs:
                c.spawn(host, None, call_back_later, ref, pause)
            with hits.cond:
                if not hits.cond.wait_for(lambda: hits.n == n, 30):
                    sys.exit(f"only {hits.n} of {n} workers called back")
            settle("after the call-backs")
            print("ok", peak, me.num_threads())
        finally:
            for a in addrs:
                c.kill(a)
    """
)


def test_a_client_of_many_idle_workers_holds_few_threads(server, tmp_path):
    script = tmp_path / "many.py"
    script.write_text(_CLIENT)
    n, bound = 60, 32
    out = subprocess.run(
        [sys.executable, str(script), server, str(n), str(bound)],
        capture_output=True,
        text=True,
        timeout=240,
        env=child_env(),
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.startswith("ok"), out.stdout
