"""Futures and deadlines (SPEC §7): ``x.call_async`` gives a standard
``concurrent.futures.Future``; ``pycircuit.call_within`` and
``pycircuit.acall`` bound a call; a stopped worker loses nothing."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import gc
import os
import signal
import threading
import time

import pytest

import pycircuit

from conftest import sigstop, wait_until


class Slow:
    def __init__(self):
        self.n = 0

    def sleep(self, s):
        time.sleep(s)
        return s

    def incr(self):
        self.n += 1
        return self.n

    def fail(self):
        raise KeyError("nope")

    def thing(self):
        return pycircuit.ref(Slow())

    def echo(self, v):
        return v

    def slow_thing(self, s):
        time.sleep(s)
        return pycircuit.ref(Slow())

    def table(self):
        from pycircuit.runtime._runtime import current

        return current().table_size()

    def hold(self, x):
        self.held = x  # a proxy of a third party's object

    def give(self):
        return self.held  # a reference this worker holds, not owns: sent, then acked

    def acks(self):
        from pycircuit.runtime._runtime import current

        return current().counters()["acks_awaited"]


def _serve():
    pycircuit.listen("slow", Slow())
    pycircuit.run_in_back(threading.Event().wait)
    return os.getpid()


@pytest.fixture(scope="module")
def client(server):
    with pycircuit.connect(server) as c:
        yield c


@pytest.fixture
def worker(client):
    pid, addr = client.spawn(client.hosts()[0], None, _serve)
    try:
        yield pycircuit.dial(addr, "slow"), pid
    finally:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass  # gone already
        pycircuit.kill(addr)


def test_a_future_is_a_concurrent_future_that_turns_done_by_itself(worker):
    x, _ = worker
    f = x.call_async("sleep", 0.2)
    assert isinstance(f, cf.Future) and isinstance(f, pycircuit.Future)
    assert not f.done()
    wait_until(f.done, 10, what="done() without anyone calling result()")
    assert f.result() == 0.2


def test_result_timeout_leaves_the_call_running(worker):
    x, _ = worker
    f = x.call_async("sleep", 1.0)
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        f.result(timeout=0.1)
    with pytest.raises(TimeoutError):
        f.exception(timeout=0.05)
    assert time.monotonic() - t0 < 0.9
    assert f.result(timeout=30) == 1.0  # it completed after all
    assert x.incr() >= 1  # the connection is fine


def test_callbacks_wait_as_completed_and_errors(worker):
    x, _ = worker
    seen = []
    done = threading.Event()
    f = x.call_async("sleep", 0.1)
    f.add_done_callback(lambda fut: (seen.append(fut.result()), done.set()))
    assert done.wait(10) and seen == [0.1]
    fs = [x.call_async("sleep", i / 20) for i in range(4)]
    finished, _ = cf.wait(fs, timeout=30)
    assert len(finished) == 4
    assert sorted(g.result() for g in cf.as_completed(fs, timeout=30)) == [0.0, 0.05, 0.1, 0.15]
    err = x.call_async("fail")
    assert isinstance(err.exception(timeout=30), KeyError)
    with pytest.raises(KeyError):
        err.result()
    assert not err.cancel()


def test_asyncio(worker):
    x, _ = worker

    async def main():
        a = await asyncio.wrap_future(x.call_async("echo", 7))
        b = await pycircuit.acall(x, "echo", 8)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(pycircuit.acall(x, "sleep", 2), 0.1)
        return a, b

    assert asyncio.run(main()) == (7, 8)


def test_call_within(worker):
    x, _ = worker
    assert pycircuit.call_within(10, x, "echo", 3) == 3
    with pytest.raises(TimeoutError, match="no reply within"):
        pycircuit.call_within(0.1, x, "sleep", 1.0)
    assert pycircuit.call_within(10, x, "incr") >= 1


def test_late_reply_with_references_is_released(worker):
    x, _ = worker
    base = x.table()
    with pytest.raises(TimeoutError):
        pycircuit.call_within(0.1, x, "slow_thing", 0.5)
    # the reply comes later with a reference in it: taken, then dropped with the Future
    wait_until(
        lambda: (gc.collect(), x.table())[1] == base, 15, what="the late reference is released"
    )
    y = x.thing()  # a reference still works the normal way
    assert x.table() == base + 1 and y.incr() == 1


def test_a_stopped_worker_times_out_then_completes_and_is_not_dead(worker, client):
    x, pid = worker
    other_pid, other = client.spawn(client.hosts()[0], None, _serve)
    try:
        y = pycircuit.dial(other, "slow")
        sigstop(pid)
        f = x.call_async("incr")
        with pytest.raises(TimeoutError):
            f.result(timeout=1)
        assert y.incr() == 1  # other workers stay callable meanwhile
        with pytest.raises(TimeoutError):
            pycircuit.call_within(0.5, x, "incr")
        os.kill(pid, signal.SIGCONT)
        assert f.result(timeout=30) >= 1  # the pending call completes
        assert x.incr() >= 2  # and the worker is not marked dead
    finally:
        os.kill(pid, signal.SIGCONT)
        pycircuit.kill(other)


def test_a_killed_worker_fails_its_futures(worker):
    x, pid = worker
    f = x.call_async("sleep", 30)
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(pycircuit.NetworkError):
        f.result(timeout=30)
    with pytest.raises(pycircuit.NetworkError):
        x.incr()


def test_a_worker_stopped_10_s_with_a_large_send_pending_loses_nothing(worker):
    x, pid = worker
    blob = os.urandom(64 << 20)
    sigstop(pid)
    stopped = time.monotonic()
    f = cf.ThreadPoolExecutor(1).submit(lambda: x.call_async("echo", blob).result(timeout=120))
    # the send blocks in the kernel while the worker is stopped
    wait_until(lambda: time.monotonic() - stopped > 10, 15, interval=0.5, what="10 s of stop")
    assert not f.done()
    os.kill(pid, signal.SIGCONT)
    assert f.result(timeout=120) == blob
    assert x.incr() >= 1 and pycircuit.dial(x.addr, "acid").ping() == "pong"


def test_a_stopped_server_keeps_its_workers(servers):
    url = servers.start()
    server_pid = pycircuit.WorkerAddr.parse(url).pid
    with pycircuit.connect(url) as c:
        pid, addr = c.spawn(c.hosts()[0], None, _serve)
        x = pycircuit.dial(addr, "slow")
        sigstop(server_pid)
        try:
            stopped = time.monotonic()
            while time.monotonic() - stopped < 10:  # the worker answers all along
                assert x.incr() >= 1
                time.sleep(0.5)
        finally:
            os.kill(server_pid, signal.SIGCONT)
        assert x.incr() >= 1
        assert addr in [w for w in _workers(c)]
        pycircuit.kill(addr)


def _workers(c) -> list:
    kernel = c.kernel(c.hosts()[0])
    return [pycircuit.WorkerAddr.parse(w["url"]) for w in kernel.workers()]


@pytest.mark.parametrize("drop", [False, True], ids=["kept-unread", "collected-unread"])
def test_an_unread_future_still_acks_a_third_partys_reference(client, worker, drop):
    """A reply carrying a reference the replier holds (a third party owns it)
    keeps the replier's hand-off open until the receiver acks; the ack must
    not wait for anyone to call result(), nor be lost with the Future."""
    x, _ = worker
    _, third = client.spawn(client.hosts()[0], None, _serve)
    try:
        x.hold(pycircuit.dial(third, "slow").thing())
        f = x.call_async("give")
        if drop:
            del f
            gc.collect()
        else:
            wait_until(f.done, 15, what="the reply to arrive")
        wait_until(lambda: x.acks() == 0, 15, what="the replier's hand-off to settle")
        if not drop:
            assert isinstance(f.result(), pycircuit.X)
    finally:
        pycircuit.kill(third)
