"""The handshake (SPEC §5): the pure authentication messages, fuzzed; and, on
real runtimes over loopback, its deadline, the bound on connections
authenticating at once, one identity per connection (a spoofed HELLO ID
changes nothing), and the maximum frame size."""

from __future__ import annotations

import os
import socket
import sys

import psutil
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pycircuit
from pycircuit.errors import NetworkError, ProtocolError, SerializationError
from pycircuit.runtime import _auth
from pycircuit.runtime._runtime import HANDLE_ROOT, Runtime

from conftest import wait_until

# -- pure messages -----------------------------------------------------------


@given(st.binary(max_size=200))
@settings(max_examples=300)
def test_greeting_decoder_raises_only_protocol_errors(data):
    try:
        g = _auth.decode_greeting(data)
    except ProtocolError:
        return
    assert len(g.nonce) == _auth.NONCE


@given(st.binary(min_size=32, max_size=32), st.booleans())
def test_greeting_round_trip(nonce, open_):
    g = _auth.decode_greeting(_auth.encode_greeting(nonce, open_))
    assert (g.nonce, g.open, g.version) == (nonce, open_, _auth.VERSION)


@given(
    st.binary(min_size=32, max_size=32),
    st.binary(min_size=32, max_size=32),
    st.binary(min_size=32, max_size=32),
    st.binary(max_size=40),
)
def test_only_the_secret_proves(secret, nd, na, junk):
    assert _auth.check_proof(secret, _auth.encode_proof(secret, nd, na), nd, na)
    assert not _auth.check_proof(secret, _auth.encode_proof(None, nd, na), nd, na)
    assert not _auth.check_proof(secret, junk, nd, na)
    other = bytes(b ^ 1 for b in secret)
    assert not _auth.check_proof(secret, _auth.encode_proof(other, nd, na), nd, na)
    # the acceptor's proof, reflected back, is not a dialer's proof
    assert not _auth.check_proof(secret, b"+" + _auth.mac(secret, _auth.LABEL_A, nd, na), nd, na)


def test_an_old_version_is_named():
    data = bytearray(_auth.encode_greeting(bytes(32), False))
    data[4] = 7
    with pytest.raises(ProtocolError, match="ours 1, theirs 7"):
        _auth.decode_greeting(bytes(data))


# -- runtimes ----------------------------------------------------------------


class Thing:
    def ping(self):
        return "pong"


class Maker:
    def __init__(self, rt):
        self.rt = rt

    def make(self):
        return self.rt.local_ref(Thing(), False)

    def echo(self, v):
        return v

    def big(self, n):
        return b"x" * n


def _owner(make, **kw):
    a = make(**kw)
    a.listen("maker", Maker(a))
    return a


def _peers_of(rt: Runtime) -> int:
    with rt._lock:
        return len(rt._all_peers)


def _closed_by_peer(sock: socket.socket, within: float) -> bool:
    sock.settimeout(within)
    try:
        return sock.recv(100) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


@pytest.mark.parametrize("spoofer_first", [False, True])
def test_a_spoofed_hello_id_neither_frees_leases_nor_kills(runtimes, spoofer_first):
    a = _owner(runtimes)
    holder = runtimes()
    spoofer = runtimes(runtime_id=holder.id)  # says it is the holder
    if spoofer_first:
        spoofer.dial(a.addr, "maker")
    x = holder.dial(a.addr, "maker").make()
    if not spoofer_first:
        spoofer.dial(a.addr, "maker")
    assert a.table_has(x._handle)
    wait_until(lambda: _peers_of(a) == 2, 5, what="both connections at the owner")
    spoofer.drop(a.id)  # the spoofer goes away
    wait_until(lambda: _peers_of(a) == 1, 5, what="the owner sees the spoofer gone")
    assert a.table_has(x._handle) and not a.is_dead(holder.id)
    assert x.ping() == "pong"  # the holder is untouched
    # and the owner still reaches the holder, on the holder's own connection
    assert a.call_remote(holder.addr, HANDLE_ROOT, "ping", (), {}) == holder.id


def test_a_second_hello_on_one_connection_is_refused(runtimes):
    a = _owner(runtimes)
    b = runtimes()
    b.dial(a.addr, "maker")
    from pycircuit.runtime import _wire

    peer = b.peer(a.addr)
    hello = _wire.Hello(_wire.WIRE_VERSION, "Q" + "1" * 16, b.url, "client")
    answer = peer.invoke(_wire.OP_HELLO, _wire.encode_hello(hello))
    assert bytes(answer).startswith(b"!") and b"second HELLO" in bytes(answer)


def _links_of(pid: int, port: int) -> int:
    return sum(
        1
        for cn in psutil.Process(pid).net_connections()
        if cn.status == psutil.CONN_ESTABLISHED and cn.laddr.port == port
    )


def test_a_spoofed_server_id_does_not_make_a_worker_exit(servers, runtimes):
    url = servers.start()
    with pycircuit.connect(url) as c:
        _, w = c.spawn(c.hosts()[0], ["w"], _serve_forever)
        before = _links_of(w.pid, w.port)
        spoofer = runtimes(
            runtime_id=pycircuit.WorkerAddr.parse(url).id
        )  # says it is the worker's server
        assert spoofer.dial(w, "acid").ping() == "pong"
        assert _links_of(w.pid, w.port) == before + 1
        spoofer.close()
        wait_until(
            lambda: _links_of(w.pid, w.port) == before, 5, what="the worker sees the spoofer gone"
        )
        assert psutil.Process(w.pid).status() != psutil.STATUS_ZOMBIE
        assert pycircuit.dial(w, "acid").ping() == "pong"
        pycircuit.kill(w)


def _serve_forever():
    import threading

    pycircuit.run_in_back(threading.Event().wait)


def test_silent_and_garbage_connections_are_closed_in_time(runtimes):
    a = _owner(runtimes, handshake_timeout=1.0, max_handshakes=2)
    silent = [socket.create_connection((a.addr.host, a.addr.port)) for _ in range(2)]
    wait_until(lambda: a._handshakes._value == 0, 5, what="two handshakes pending")
    extra = socket.create_connection((a.addr.host, a.addr.port))
    assert _closed_by_peer(extra, 5)  # over the bound: closed at once
    for s in silent:
        assert _closed_by_peer(s, 5)  # the deadline closes them
    http = socket.create_connection((a.addr.host, a.addr.port))
    http.sendall(b"GET / HTTP/1.0\r\n\r\n" + bytes(40))
    assert _closed_by_peer(http, 5)
    # authenticated, then no HELLO: closed at the deadline too
    quiet = _auth.SecretAuth(_auth.user_secret()).wrap_client(
        socket.create_connection((a.addr.host, a.addr.port))
    )
    assert _closed_by_peer(quiet, 5)
    for s in silent + [extra, http, quiet]:
        s.close()
    b = runtimes()
    assert b.dial(a.addr, "maker").make().ping() == "pong"  # still serving


def test_maximum_frame_size(runtimes):
    a = _owner(runtimes, max_frame=1 << 20)
    small = runtimes(max_frame=1 << 20)
    m = small.dial(a.addr, "maker")
    with pytest.raises(SerializationError, match="exceeds the maximum"):
        m.echo(b"x" * (2 << 20))  # refused before sending: the connection lives on
    assert m.echo(b"ok") == b"ok"
    with pytest.raises(SerializationError, match="exceeds the maximum"):
        m.big(2 << 20)  # the reply would be too large
    assert m.echo(b"ok") == b"ok"
    big = runtimes()  # allows more than the owner accepts: the owner closes the link
    mb = big.dial(a.addr, "maker")
    with pytest.raises(NetworkError):
        mb.echo(b"x" * (2 << 20))
    assert m.echo(b"still") == b"still"  # other links unaffected


def test_open_runtime_accepts_strangers_but_a_closed_one_does_not(runtimes):
    stranger_auth = _auth.SecretAuth(os.urandom(32), open=True)
    closed = _owner(runtimes)
    s = runtimes()
    s._auth = stranger_auth  # another user's secret, and it does not check us
    with pytest.raises(NetworkError, match="refused"):
        s.dial(closed.addr, "maker")
    if sys.platform != "linux":
        return
    opened = runtimes(host="127.0.0.1")
    opened._auth = _auth.SecretAuth(_auth.user_secret(), open=True)  # as `start --insecure`
    opened.listen("maker", Maker(opened))
    assert s.dial(opened.addr, "maker").make().ping() == "pong"
