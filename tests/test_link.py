"""The link: pycircuit messages inside RPyC frames over a real socket pair,
served the way runtimes serve them (a ServeGroup per connection); RPyC's
own protocol is refused."""

from __future__ import annotations

import socket
import threading

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from rpyc.core import brine, consts
from rpyc.core.channel import Channel
from rpyc.core.stream import SocketStream

from pycircuit.errors import ProtocolError
from pycircuit.runtime import _link, _wire
from conftest import wait_until


class Side:
    def __init__(self, sock: socket.socket):
        self.conn = _link.make_connection(sock)
        self.closed = threading.Event()
        self.error: BaseException | None = None
        self.posted: list[bytes] = []
        self.conn.handlers = {
            _wire.OP_CALL: lambda b: b"echo:" + b,
            _wire.OP_HELLO: self._fail,
            _wire.OP_RELEASE: self.posted.append,
        }
        self.group = _link.ServeGroup(self.conn, "test", self._on_close)
        self.group.start()

    def _on_close(self, err: BaseException | None) -> None:
        self.error = err
        self.closed.set()

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
    assert left.conn.in_flight() == 0


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


def test_a_frame_that_is_not_a_pycircuit_message_fails_the_connection():
    """RPyC's own protocol does not run on a link: an RPyC request (a brine
    frame, as ``rpyc.connect`` would send) is a protocol error that closes
    the connection."""
    a, raw = socket.socketpair()
    side = Side(a)
    try:
        getroot = brine.dump((consts.MSG_REQUEST, 1, (consts.HANDLE_GETROOT, ())))
        Channel(SocketStream(raw), compress=False).send(getroot)
        assert side.closed.wait(10)
        assert isinstance(side.error, ProtocolError) and "not a pycircuit message" in str(
            side.error
        )
        assert side.conn.closed
        assert raw.recv(1) == b""  # closed on our side, nothing answered
    finally:
        side.conn.close()
        raw.close()


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


def test_the_link_uses_only_rpyc_public_stream_and_channel():
    """RPyC is the transport through its public classes only (so any 6.x
    does): nothing from ``rpyc.core.protocol`` or other RPyC internals."""
    import ast
    import pathlib

    allowed = {("rpyc.core.stream", "SocketStream"), ("rpyc.core.channel", "Channel")}
    runtime = pathlib.Path(_link.__file__).parent
    for name in ("_link", "_stream", "_connection", "_serve", "_threads"):
        tree = ast.parse((runtime / f"{name}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                assert not any(a.name.split(".")[0] == "rpyc" for a in node.names), name
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("rpyc"):
                assert {(node.module, a.name) for a in node.names} <= allowed, name
