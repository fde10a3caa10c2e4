"""Cross-interfaces: calls, printed form, by-value arguments, nested and
caller-side references, remote exceptions, handoff and garbage collection
(issue 2, points 4-7), observed in real worker processes."""

from __future__ import annotations

import gc
import os
import re
import signal

import pytest

import pycircuit
from circuit_helpers import AppError, Box, Counter
from conftest import wait_until

X_RE = re.compile(r"^X://H[0-9a-f]{16}@circuit://127\.0\.0\.1:\d+/\d+/Q[0-9a-f]{16}$")


def test_call_and_sugar(served):
    x, addr = served
    assert x.call("incr", 2) == 2
    assert x.incr(by=3) == 5
    assert x.get() == 5
    assert x.addr == addr


def test_printed_form(served):
    x, addr = served
    assert X_RE.match(str(x)) and str(addr) in repr(x)
    p = pycircuit.perm_ref(Counter())
    assert str(p).startswith("XPERM://H")


def test_ref_rules():
    x = pycircuit.ref(Counter())
    p = pycircuit.perm_ref(Counter())
    assert isinstance(p, pycircuit.XPerm) and isinstance(p, pycircuit.X)
    with pytest.raises(pycircuit.CircuitError):
        pycircuit.ref(p)
    with pytest.raises(pycircuit.CircuitError):
        pycircuit.perm_ref(x)


def test_arguments_travel_by_value(client, host):
    data = {"k": [1, 2]}

    def mutate(d):
        d["k"].append(3)
        return d

    res, _ = client.spawn(host, None, mutate, data)
    assert res == {"k": [1, 2, 3]} and data == {"k": [1, 2]}


def test_nested_references_including_caller_objects(client, host, served):
    x, _ = served
    mine = Counter()
    payload = {"remote": [x], "local": Box("box", pycircuit.ref(mine)), "t": (1, {"deep": {x}})}

    def use(p):
        a = p["remote"][0].incr(10)
        b = p["local"].ref.incr(5)  # calls back into the test process
        c = next(iter(p["t"][1]["deep"])).incr(1)
        return a, b, c, p["local"].label

    out, _ = client.spawn(host, None, use, payload)
    assert out == (10, 5, 11, "box")
    assert mine.n == 5


def test_remote_exception_own_class_with_traceback(served):
    x, _ = served
    with pytest.raises(AppError) as ei:
        x.fail()
    notes = "\n".join(getattr(ei.value, "__notes__", []))
    assert "counter says no" in str(ei.value)
    assert "in fail" in notes and "circuit://" in notes
    assert x.incr() == 1  # keeps serving


def test_unimportable_remote_exception_becomes_remote_error(client, host):
    def main():
        import importlib
        import shutil
        import sys
        import tempfile

        d = tempfile.mkdtemp()
        with open(d + "/remote_only_mod.py", "w") as f:
            f.write("class RemoteOnly(Exception):\n    pass\n")
        sys.path.insert(0, d)
        mod = importlib.import_module("remote_only_mod")
        shutil.rmtree(d)  # imported: the worker no longer needs the file
        raise mod.RemoteOnly("private trouble")

    with pytest.raises(pycircuit.RemoteError) as ei:
        client.spawn(host, None, main)
    assert ei.value.remote_type.endswith("RemoteOnly")
    assert "private trouble" in str(ei.value)
    assert "in main" in "\n".join(ei.value.__notes__)


def test_unknown_method_names_method_and_type(served):
    x, _ = served
    with pytest.raises(pycircuit.errors.NoSuchMethodError) as ei:
        x.nosuch()
    assert "nosuch" in str(ei.value) and "Counter" in str(ei.value)
    with pytest.raises(pycircuit.errors.NoSuchMethodError):
        x.call("_secret")
    assert x.get() == 0


def test_unserializable_argument_fails_before_sending(served):
    x, _ = served
    with pytest.raises(pycircuit.SerializationError):
        x.incr(i for i in range(3))
    assert x.get() == 0


def test_handoff_survives_the_middle_worker(client, host, served):
    """B owns x; A receives it and hands it to C, then exits; C keeps using x."""
    x, _ = served

    def middle(xr, host_id):
        import pycircuit

        def holder(r):
            import threading
            import pycircuit

            class User:
                def use(self):
                    return r.incr(100)

            pycircuit.run_in_back(threading.Event().wait)
            return pycircuit.ref(User())

        user, caddr = pycircuit.spawn(host_id, None, holder, xr)
        return user, caddr

    (user, caddr), aaddr = client.spawn(host, None, middle, x, host.id)
    try:
        wait_until(
            lambda: (
                not os.path.exists(f"/proc/{aaddr.pid}")
                or open(f"/proc/{aaddr.pid}/stat").read().split()[2] == "Z"
            ),
            what="A exits",
        )
        assert user.use() == 100
        assert x.get() == 100
    finally:
        client.kill(caddr)


def test_gc_after_holder_drops_proxy(served):
    x, _ = served
    probe = pycircuit.dial(x.addr, "probe")
    factory = pycircuit.dial(x.addr, "factory")
    base = probe.table_size()
    many = factory.make(20)
    assert probe.table_size() == base + 20
    assert many[3].incr() == 1
    del many
    gc.collect()
    wait_until(lambda: probe.table_size() == base, what="owner frees dropped references")


def test_gc_after_holder_is_killed(client, host, served):
    x, _ = served
    probe = pycircuit.dial(x.addr, "probe")
    factory = pycircuit.dial(x.addr, "factory")
    base = probe.table_size()

    def holder(f):
        import threading
        import pycircuit

        held = f.make(7)
        pycircuit.run_in_back(lambda: (threading.Event().wait(), held))
        return len(held)

    n, haddr = client.spawn(host, None, holder, factory)
    assert n == 7
    assert probe.table_size() == base + 7
    os.kill(haddr.pid, signal.SIGKILL)
    wait_until(lambda: probe.table_size() == base, what="owner frees leases of a killed holder")


def test_permanent_references_are_never_freed(served):
    x, _ = served
    probe = pycircuit.dial(x.addr, "probe")
    factory = pycircuit.dial(x.addr, "factory")
    base = probe.table_size()
    perm = factory.make_perm()
    plain = factory.make(1)
    handle = perm.handle
    assert isinstance(perm, pycircuit.XPerm) and probe.table_size() == base + 2
    del perm, plain
    gc.collect()
    # the plain reference's release is processed; the permanent one stays
    wait_until(lambda: probe.table_size() == base + 1, what="plain reference freed")
    assert probe.has(handle)


def callback_server(cb):
    import threading
    import pycircuit

    class Caller:
        def hit_back(self, n, size):
            blob = b"y" * size
            return sum(len(cb.echo(blob)) for _ in range(n))

    pycircuit.run_in_back(threading.Event().wait)
    return pycircuit.ref(Caller())


def test_concurrent_nested_callbacks_do_not_deadlock(client, host):
    """Two caller threads; the worker calls back into the caller while
    serving each (the first callback on a fresh connection used to take a
    lock that a nested request on the same thread wanted again)."""
    import threading

    class Echo:
        def echo(self, b):
            return b

    x, addr = client.spawn(host, None, callback_server, pycircuit.ref(Echo()))
    try:
        results, errors = [], []

        def run(size):
            try:
                results.append(x.hit_back(20, size))
            except Exception as e:  # reported below
                errors.append(e)

        threads = [threading.Thread(target=run, args=(s,)) for s in (10, 100_000, 10, 1000)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not any(t.is_alive() for t in threads), "deadlocked"
        assert not errors and sorted(results) == sorted([200, 2_000_000, 200, 20_000])
    finally:
        client.kill(addr)


def test_a_waiting_caller_is_not_taken_hostage_by_a_callback(client, host):
    """A request that arrives while this thread waits for its own reply runs
    in another thread: a long callback cannot stall the caller, and the
    caller's thread never runs foreign code."""
    import threading

    class Recorder:
        def where(self):
            return threading.current_thread().name

    def main(r):
        return r.where()

    out, _ = client.spawn(host, None, main, pycircuit.ref(Recorder()))
    assert out != threading.current_thread().name and out.startswith("pycircuit-serve")


def test_call_async_many_in_flight(served):
    x, _ = served
    base = x.get()
    futures = [x.call_async("incr", 1) for _ in range(300)]  # all sent before any is awaited
    assert isinstance(futures[0], pycircuit.Future)
    values = [f.result() for f in futures]
    assert values == list(range(base + 1, base + 301))  # one connection keeps them in order
    assert futures[0].done() and futures[0].result() == base + 1  # a result can be read again
    with pytest.raises(pycircuit.CircuitError, match="no_such_method"):
        x.call_async("no_such_method").result()
    err = x.call_async("fail")
    with pytest.raises(AppError):
        err.result()
    assert x.get() == base + 300  # and the worker keeps serving


def test_call_async_of_a_local_object_and_of_a_dead_worker(client, host):
    from circuit_helpers import daemon

    local = pycircuit.ref(Counter())
    assert local.call_async("incr", 5).result() == 5
    x, addr = client.spawn(host, None, daemon)
    sleeper = pycircuit.dial(addr, "sleeper")
    pending = sleeper.call_async("sleep", 30)
    client.kill(addr)
    with pytest.raises(pycircuit.NetworkError):
        pending.result()
    with pytest.raises(pycircuit.NetworkError):
        x.call_async("get").result()
