"""The RPyC link: the hand-built request frame equals RPyC's own encoding,
and a call over a real socket pair goes through it."""
from __future__ import annotations

import socket
import threading

import pytest
from hypothesis import given, settings, strategies as st
from rpyc.core import brine, consts

from pycircuit.runtime import _link


class Root(_link.rpyc.Service):
    def __call__(self, op, arg):
        return (op, arg)


@pytest.fixture(scope="module")
def pair():
    a, b = socket.socketpair()
    server = _link.make_connection(a, Root())
    client = _link.make_connection(b, _link.rpyc.Service())
    t = threading.Thread(target=lambda: _serve(server), daemon=True)
    t.start()
    try:
        yield client, client.root
    finally:
        client.close()
        server.close()


def _serve(conn):
    try:
        conn.serve_all()
    except Exception:
        pass


@settings(max_examples=200, deadline=None)
@given(seq=st.integers(0, 2**40), op=st.sampled_from(["hello", "call", "ack", "acquire", "release"]),
       arg=st.one_of(st.binary(max_size=300), st.integers(0, 2**63 - 1)))
def test_frame_equals_rpyc_encoding(pair, seq, op, arg):
    conn, root = pair
    expected = brine.I1.pack(consts.MSG_REQUEST) + brine.dump(
        (seq, (consts.HANDLE_CALL, conn._box((root, (op, arg), ())))))
    head = _link.endpoint_call_head(root.____id_pack__)
    assert _link.encode_endpoint_call(seq, head, op, arg) == expected


def test_endpoint_request_round_trip(pair):
    conn, root = pair
    assert conn.endpoint_request(root, "call", b"\x00frame").value == ("call", b"\x00frame")
    big = bytes(range(256)) * 5000
    assert conn.endpoint_request(root, "hello", big).value == ("hello", big)
