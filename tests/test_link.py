"""The link: pycircuit messages inside RPyC frames over a real socket pair,
served the way runtimes serve them (a ServeGroup per connection)."""

from __future__ import annotations

import socket
import threading

import pytest
import rpyc
from hypothesis import HealthCheck, given, settings, strategies as st

from pycircuit.runtime import _link, _wire
from conftest import wait_until


class Side:
    def __init__(self, sock: socket.socket):
        self.conn = _link.make_connection(sock, rpyc.Service())
        self.closed = threading.Event()
        self.posted: list[bytes] = []
        self.conn.handlers = {
            _wire.OP_CALL: lambda b: b"echo:" + b,
            _wire.OP_HELLO: self._fail,
            _wire.OP_RELEASE: self.posted.append,
        }
        self.group = _link.ServeGroup(self.conn, "test", lambda err: self.closed.set())
        self.group.start()

    @staticmethod
    def _fail(body: bytes) -> bytes:
        raise ValueError(f"bad hello {body!r}")

    def call(self, op: int, body: bytes) -> bytes:
        self.group.call_begin()
        try:
            return self.conn.wait(self.conn.request(op, body))
        finally:
            self.group.call_end()


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    left, right = Side(a), Side(b)
    try:
        yield left, right
    finally:
        left.conn.close()
        right.conn.close()


def test_request_and_reply_both_ways(pair):
    left, right = pair
    assert left.call(_wire.OP_CALL, b"x") == b"echo:x"
    assert right.call(_wire.OP_CALL, b"y") == b"echo:y"
    big = bytes(range(256)) * 8000  # 2 MB: several reads
    assert left.call(_wire.OP_CALL, big) == b"echo:" + big


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.binary(max_size=3000))
def test_bodies_arrive_unchanged(pair, body):  # one link for all examples, on purpose
    left, _ = pair
    assert left.call(_wire.OP_CALL, body) == b"echo:" + body


def test_a_handler_error_comes_back_as_request_failed_and_the_link_serves_on(pair):
    left, _ = pair
    with pytest.raises(_link.RequestFailed, match=r"ValueError: bad hello b'hi'"):
        left.call(_wire.OP_HELLO, b"hi")
    with pytest.raises(_link.RequestFailed, match="no handler for operation acquire"):
        left.call(_wire.OP_ACQUIRE, b"")
    assert left.call(_wire.OP_CALL, b"still") == b"echo:still"


def test_posts_get_no_reply_and_arrive_in_order(pair):
    left, right = pair
    for i in range(50):
        left.conn.post(_wire.OP_RELEASE, b"%d" % i)
    assert left.call(_wire.OP_CALL, b"after") == b"echo:after"  # served after the posts
    wait_until(lambda: len(right.posted) == 50)
    assert right.posted == [b"%d" % i for i in range(50)]
    assert not left.conn._pending


def test_concurrent_callers_each_get_their_own_reply(pair):
    left, _ = pair
    got: dict[int, list[bytes]] = {}

    def caller(n: int) -> None:
        got[n] = [left.call(_wire.OP_CALL, b"%d-%d" % (n, i)) for i in range(200)]

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert all(got[n] == [b"echo:%d-%d" % (n, i) for i in range(200)] for n in range(6))


def test_rpyc_requests_find_nothing_exposed(pair):
    left, _ = pair
    with pytest.raises(AttributeError):
        left.conn.root.handlers  # RPyC's own messages still work: and reach nothing


def test_a_closed_peer_fails_a_waiting_caller_with_eof(pair):
    left, right = pair
    started = threading.Event()
    right.conn.handlers[_wire.OP_ACK] = lambda b: (started.set(), threading.Event().wait(30))
    errors: list[BaseException] = []

    def caller() -> None:
        try:
            left.call(_wire.OP_ACK, b"")
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=caller)
    t.start()
    assert started.wait(10)
    right.conn._channel.stream.sock.shutdown(socket.SHUT_RDWR)
    t.join(10)
    assert not t.is_alive() and len(errors) == 1 and isinstance(errors[0], EOFError)
    assert left.closed.wait(10)
