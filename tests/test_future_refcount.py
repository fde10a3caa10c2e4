"""A settled Future is freed by reference counting: its Pending does not
point back at it (a cycle per call left every Future to the cyclic
collector, which cost the async call path a fifth of its throughput)."""

from __future__ import annotations

import gc
import weakref

from pycircuit.runtime._future import Future
from pycircuit.runtime._link import Pending


class _Peer:
    def failure(self, op: int, e: BaseException) -> BaseException:
        return e


def _freed_without_collector(settle) -> bool:
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        p = Pending()
        f = Future.of_call(_Peer(), p, lambda body: body, lambda body: True)  # type: ignore[arg-type]
        settle(p)
        f.exception(0)
        ref = weakref.ref(f)
        del f, p
        return ref() is None
    finally:
        if enabled:
            gc.enable()


def test_a_reply_frees_its_future_by_refcount():
    def reply(p: Pending) -> None:
        p.settle(False, b"v")
        assert p.on_ready is not None
        p.on_ready()

    assert _freed_without_collector(reply)


def test_a_failed_link_frees_its_future_by_refcount():
    assert _freed_without_collector(lambda p: p(True, EOFError("gone")))
