"""A dial sends its HELLO and its first request in one go (``Peer.say_hello``,
``Peer.confirm``): the HELLO's answer is checked before any reply is used.
What a refused or wrong HELLO must still give: the error it gave when the
dialler waited for the answer, no lease left behind for the requests sent
behind it, and no runtime marked lost that was never reached."""

from __future__ import annotations

import gc

import pytest

from conftest import wait_until
from pycircuit.errors import StaleAddressError
from pycircuit.runtime._addr import WorkerAddr, new_worker_id
from pycircuit.runtime._runtime import HANDLE_ROOT


class Thing:
    def hello(self) -> str:
        return "hi"


def _impostor_of(rt) -> WorkerAddr:
    """The address of ``rt``'s port under another runtime's ID (the runtime
    that listened there once)."""
    return WorkerAddr(rt.addr.host, rt.addr.port, rt.addr.pid, new_worker_id())


def test_a_stale_address_fails_the_call_sent_behind_the_hello(runtimes):
    a, b = runtimes(), runtimes()
    gone = _impostor_of(b)
    x = a.local_ref(Thing(), perm=False)  # sent with the call: a lease for the holder
    with pytest.raises(StaleAddressError, match="stale address"):
        a.call_remote(gone, HANDLE_ROOT, "ping", (x,), {})
    del x
    gc.collect()
    assert a.counters()["leases_owned"] == 0  # the lease granted for the call went back
    assert not a.is_dead(gone.id)  # never reached: not known lost
    wait_until(lambda: a.counters()["connections"] == 0, 10, what="the connection closed")
    # the same port under its real ID works, over a new connection
    assert a.call_remote(b.addr, HANDLE_ROOT, "ping", (), {}) == b.id


def test_an_async_call_to_a_stale_address_raises_that_from_its_future(runtimes):
    a, b = runtimes(), runtimes()
    gone = _impostor_of(b)
    x = a.proxy(gone, HANDLE_ROOT, True)
    try:
        f = a.call_x_async(x, "ping", (), {})
    except StaleAddressError:
        pass  # the refusal had closed the connection before the call was sent
    else:
        with pytest.raises(StaleAddressError, match="stale address"):
            f.result(timeout=10)
    assert not a.is_dead(gone.id)


def test_concurrent_first_calls_share_one_dial(runtimes):
    import threading

    a, b = runtimes(), runtimes()
    got: list[str] = []
    ts = [
        threading.Thread(
            target=lambda: got.append(a.call_remote(b.addr, HANDLE_ROOT, "ping", (), {}))
        )
        for _ in range(8)
    ]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    assert got == [b.id] * 8
    assert a.counters()["connections"] == 1
