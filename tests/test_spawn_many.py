"""``Client.spawn_many``: one function over many argument tuples, a worker
for each, the batch started by the server in one request."""

from __future__ import annotations

import os
import threading

import pytest

import pycircuit
from conftest import wait_until
from pycircuit import _batch


def _square(x: int) -> tuple[int, int]:
    return x * x, os.getpid()


def _fails_on(x: int, bad: int) -> int:
    if x == bad:
        raise ValueError(f"no {x}")
    return x


def _stays(i: int) -> int:
    pycircuit.run_in_back(threading.Event().wait)
    return i


def test_each_call_runs_in_a_new_worker_and_results_keep_their_order(client, host):
    before = client.kernel(host).metrics()["spawns"]
    out = client.spawn_many(host, None, _square, [(i,) for i in range(12)])
    assert [v[0] for v, _ in out] == [i * i for i in range(12)]
    pids = {v[1] for v, _ in out}
    assert len(pids) == 12 and os.getpid() not in pids
    assert [a.pid for _, a in out] == [v[1] for v, _ in out]
    assert client.kernel(host).metrics()["spawns"] - before == 12


def test_the_workers_of_a_batch_are_listed_under_its_anchor(client, host):
    out = client.spawn_many(host, "many", _stays, [(i,) for i in range(3)])
    many = client.walk(f"/{host.id}/many")
    try:
        assert [v for v, _ in out] == [0, 1, 2]
        assert set(many.view()) == {a.id for _, a in out}
        assert many.view()[out[1][1].id].get() == out[1][1]
    finally:
        for _, a in out:
            client.kill(a)
    wait_until(lambda: not many.view(), 10, what="the workers unlisted")


def test_the_first_error_is_raised_once_all_have_answered(client, host):
    with pytest.raises(ValueError, match="no 2"):
        client.spawn_many(host, None, _fails_on, [(i, 2) for i in range(5)] + [(7, 7)])
    out = client.spawn_many(
        host, None, _fails_on, [(i, 2) for i in range(4)], return_exceptions=True
    )
    values = [v for v, _ in out]
    assert values[:2] == [0, 1] and values[3] == 3
    assert isinstance(values[2], ValueError) and str(values[2]) == "no 2"


def test_an_argument_that_cannot_be_sent_fails_its_item_and_its_worker_goes(client, host):
    out = client.spawn_many(
        host, None, _fails_on, [(1, 0), ((i for i in range(3)), 0)], return_exceptions=True
    )
    assert out[0][0] == 1
    err, addr = out[1]
    assert isinstance(err, pycircuit.SerializationError)
    kernel = client.kernel(host)
    wait_until(lambda: addr.id not in {w["id"] for w in kernel.workers()}, 10, what="worker gone")


def test_a_batch_bigger_than_one_request_is_split(client, host, monkeypatch):
    monkeypatch.setattr(_batch, "BATCH", 3)
    out = client.spawn_many(host, None, _square, [(i,) for i in range(7)])
    assert [v[0] for v, _ in out] == [i * i for i in range(7)]
    assert len({a.id for _, a in out}) == 7


def test_bad_batches_are_refused_before_any_worker_starts(client, host):
    kernel = client.kernel(host)
    before = kernel.metrics()["spawns"]
    assert client.spawn_many(host, None, _square, []) == []
    with pytest.raises(TypeError, match="argument tuples"):
        client.spawn_many(host, None, _square, [1, 2])
    with pytest.raises(TypeError, match="argument tuples"):
        client.spawn_many(host, None, _square, 3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="callable"):
        client.spawn_many(host, None, 3, [(1,)])  # type: ignore[arg-type]
    for count in (0, -1, 10**6, "3", 2.0):
        with pytest.raises(ValueError, match="count"):
            kernel.spawn_many([], count)
    assert kernel.metrics()["spawns"] == before


def test_the_module_function_uses_the_default_client(client, host):
    out = pycircuit.spawn_many(host, None, _square, [(3,), (4,)])
    assert [v[0] for v, _ in out] == [9, 16]
