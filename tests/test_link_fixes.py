"""Link fixes of SPEC §7, each on real runtimes over loopback: two runtimes
sending each other large calls at once, dropping a link to a stalled peer,
sequence numbers that wrap, and the bounded memory of lost runtimes."""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import gc
import itertools
import os
import signal
import threading
import time

import pytest

import pycircuit
from pycircuit.runtime import _runtime
from pycircuit.runtime._reactor import REACTOR
from pycircuit.runtime._runtime import Runtime, RuntimeConfig

from conftest import sigstop, wait_until


class Sink:
    def size(self, blob):
        return len(blob)

    def sleep(self, s):
        time.sleep(s)
        return s


@pytest.fixture
def pair():
    a, b = Runtime(RuntimeConfig()), Runtime(RuntimeConfig())
    a.listen("sink", Sink())
    b.listen("sink", Sink())
    try:
        yield a, b
    finally:
        b.close()
        a.close()


def test_two_runtimes_send_each_other_large_calls_at_once(pair):
    a, b = pair
    sa, sb = b.dial(a.addr, "sink"), a.dial(b.addr, "sink")  # one connection, used both ways
    assert sa.size(b"x") == 1 and sb.size(b"y") == 1
    blob = os.urandom(32 << 20)  # far more than the socket buffers
    start = threading.Barrier(2)

    def send(x):
        start.wait()
        return x.size(blob)

    with cf.ThreadPoolExecutor(2) as ex:
        fs = [ex.submit(send, sa), ex.submit(send, sb)]
        done, _ = cf.wait(fs, timeout=60)
        assert len(done) == 2, "both sides sat in sendall"
        assert [f.result() for f in fs] == [len(blob)] * 2


def test_drop_does_not_wait_for_a_stalled_peer(client_pair):
    c, addr, pid = client_pair
    x = pycircuit.dial(addr, "sink")
    assert x.size(b"ab") == 2
    sigstop(pid)
    try:
        rt = _runtime.current()
        t0 = time.monotonic()
        rt.drop(addr.id)  # RPyC's close() would wait for the stopped peer's answer forever
        assert time.monotonic() - t0 < 5
        with pytest.raises(pycircuit.NetworkError):
            x.size(b"ab")
    finally:
        os.kill(pid, signal.SIGCONT)


def _serve():
    pycircuit.listen("sink", Sink())
    pycircuit.run_in_back(threading.Event().wait)
    return os.getpid()


@pytest.fixture
def client_pair(server):
    with pycircuit.connect(server) as c:
        pid, addr = c.spawn(c.hosts()[0], None, _serve)
        try:
            yield c, addr, pid
        finally:
            pycircuit.kill(addr)


def test_sequence_numbers_wrap_without_reusing_one_in_flight(pair):
    a, b = pair
    x = b.dial(a.addr, "sink")
    peer = b.peer(a.addr)
    slow = x.call_async("sleep", 1.0)  # in flight across the wrap
    held = [s for s, p in peer.conn._pending.items()]
    assert len(held) == 1
    # the next numbers run up to 2**32 - 1, wrap to 0 (never used), then
    # reach the number still in flight, which must be skipped
    peer.conn._seq = itertools.chain(
        [2**32 - 2, 2**32 - 1, 2**32, 2**32 + held[0]], itertools.count(held[0] + 1)
    )
    assert [x.size(bytes(i)) for i in range(4)] == [0, 1, 2, 3]
    assert slow.result(30) == 1.0


def test_lost_runtimes_are_remembered_within_a_bound(pair, monkeypatch):
    a, b = pair
    monkeypatch.setattr(a, "cfg", dataclasses.replace(a.cfg, max_dead=3))
    ids = []
    for _ in range(5):
        r = Runtime(RuntimeConfig())
        try:
            r.listen("sink", Sink())
            assert a.dial(r.addr, "sink").size(b"") == 0
            ids.append(r.id)
        finally:
            r.close()
        wait_until(lambda: a.is_dead(ids[-1]), 5, what="the closed runtime is known lost")
    assert [a.is_dead(i) for i in ids] == [False, False, True, True, True]
    assert not any(i in a._dial_locks for i in ids)


def test_the_release_loop_survives_an_error(pair, caplog):
    a, b = pair
    x = b.dial(a.addr, "sink")
    real = b._send_releases
    calls = []

    def flaky(items):
        calls.append(len(items))
        if len(calls) == 1:
            raise RuntimeError("injected")
        return real(items)

    b._send_releases = flaky
    with caplog.at_level("ERROR", logger="pycircuit.runtime._runtime"):
        one = x.call("size", b"")  # warm: nothing to release yet
        assert one == 0
        a.listen("maker", _Maker(a))
        m = b.dial(a.addr, "maker")
        first = m.make()
        del first  # its release hits the injected error
        wait_until(lambda: (gc.collect(), calls)[1], 5, what="a release attempt")
        second = m.make()
        before = a.table_size()
        del second
        wait_until(
            lambda: (gc.collect(), a.table_size() < before)[1],
            5,
            what="a later release still lands",
        )
    assert "sending lease releases failed" in caplog.text


class _Maker:
    def __init__(self, rt):
        self.rt = rt

    def make(self):
        return self.rt.local_ref(Sink(), False)


def test_accept_backs_off_when_it_fails(pair, caplog, monkeypatch):
    import errno

    a, _ = pair
    attempts = []

    class Failing:
        def accept(self):
            attempts.append(time.monotonic())
            raise OSError(errno.EMFILE, "Too many open files")

        def close(self):
            pass  # nothing to release

    with caplog.at_level("WARNING", logger="pycircuit.runtime._runtime"):
        r = Runtime(RuntimeConfig())
        real = r._sock
        r.stop_accepting()
        r._sock = Failing()
        REACTOR.call_later(0, r._accept_ready)  # as when the socket turns readable
        real.close()
        wait_until(lambda: len(attempts) >= 3, 10, what="accept retried")
        time.sleep(0.5)  # a window in which a spinning loop would retry thousands of times
        n = len(attempts)
        r.close()
    assert n < 60, n
    assert "accepting connections failed" in caplog.text


def test_closing_a_link_under_a_blocked_writer_fails_it_cleanly(client_pair):
    c, addr, pid = client_pair
    x = pycircuit.dial(addr, "sink")
    assert x.size(b"a") == 1
    sigstop(pid)  # its socket buffer fills: our send blocks
    try:
        with cf.ThreadPoolExecutor(1) as ex:
            f = ex.submit(x.size, os.urandom(64 << 20))
            wait_until(
                lambda: _runtime.current().peer(addr).conn._sendlock.locked(),
                10,
                what="the writer holds the send lock",
            )
            _runtime.current().drop(addr.id)
            with pytest.raises(pycircuit.NetworkError) as e:
                f.result(timeout=30)
        assert "release unlocked lock" not in str(
            e.value
        )  # RPyC's cleanup released a lock held by the writer
    finally:
        os.kill(pid, signal.SIGCONT)
