"""The nameserver element over TCP (RFC 7766) and its UDP truncation, asked
on loopback with dnslib's client and with raw sockets for what no client
library does on purpose (pipelining, silence, half-close, garbage)."""

from __future__ import annotations

import errno
import selectors
import socket
import struct
import threading
import time

import pytest
from dnslib import EDNS0, QTYPE, RCODE, DNSRecord

from conftest import wait_until
from pycircuit.errors import ElementError
from pycircuit.server._dns import DnsConfig, DnsElement
from pycircuit.server._dns_answer import Deframer

IDLE = 0.5  # the idle timeout of the fixture's element: short so tests see it expire


def hostport(el: DnsElement) -> tuple[str, int]:
    host, port = el.address.rsplit(":", 1)
    return host, int(port)


def ask(
    el: DnsElement, name: str, qtype: str = "A", *, tcp: bool, edns: int | None = None
) -> DNSRecord:
    q = DNSRecord.question(name, qtype)
    if edns is not None:
        q.add_ar(EDNS0(udp_len=edns))
    r = DNSRecord.parse(q.send(*hostport(el), tcp=tcp, timeout=10))
    assert r.header.id == q.header.id and r.header.qr == 1
    return r


def connect(el: DnsElement) -> socket.socket:
    s = socket.create_connection(hostport(el), timeout=10)
    return s


def recv_exact(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise EOFError(f"closed after {len(buf)} of {n} bytes")
        buf += chunk
    return buf


def read_msg(s: socket.socket) -> DNSRecord:
    (n,) = struct.unpack("!H", recv_exact(s, 2))
    return DNSRecord.parse(recv_exact(s, n))


def framed(q: DNSRecord) -> bytes:
    data = q.pack()
    return struct.pack("!H", len(data)) + data


def closed_by_server(s: socket.socket) -> bool:
    """Blocks (up to the socket's timeout) until the server closes ``s``."""
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True


@pytest.fixture
def ns():
    el = DnsElement(
        config=DnsConfig(tcp_idle_timeout=IDLE, tcp_max_connections=4, tcp_max_unsent=4096)
    )
    el.start()
    try:
        yield el
    finally:
        el.scrub()


def forty(el: DnsElement) -> set[str]:
    addrs = {f"10.0.0.{i}" for i in range(1, 41)}
    for a in sorted(addrs):
        el.set(f"big 60 IN A {a}")
    return addrs


def test_udp_and_tcp_share_the_port_and_the_answers(ns):
    ns.set("www IN A 10.0.0.1\nwww IN A 10.0.0.2\nwww IN TXT \"hi\"\nalias IN CNAME www")
    ns.set("mail IN MX 10 mx.example.com.")
    for name, qtype in [
        ("www.", "A"),
        ("www.", "TXT"),
        ("www.", "ANY"),
        ("alias.", "A"),
        ("mail.", "MX"),
        ("mail.", "A"),
        ("nobody.", "A"),
    ]:
        u, t = ask(ns, name, qtype, tcp=False), ask(ns, name, qtype, tcp=True)
        assert (u.header.rcode, u.header.aa, u.rr) == (t.header.rcode, t.header.aa, t.rr), (
            name,
            qtype,
        )
    assert ask(ns, "nobody.", tcp=True).header.rcode == RCODE.NXDOMAIN
    assert [str(r.rdata) for r in ask(ns, "alias.", tcp=True).rr] == [
        "www.",
        "10.0.0.1",
        "10.0.0.2",
    ]


def test_forty_records_truncated_over_udp_whole_over_tcp(ns):
    addrs = forty(ns)
    u = ask(ns, "big.", tcp=False)
    got = [str(r.rdata) for r in u.rr]
    assert u.header.tc == 1 and 0 < len(got) < 40 and set(got) <= addrs and not u.ar
    assert len(u.pack()) <= 512
    t = ask(ns, "big.", tcp=True)
    assert t.header.tc == 0 and {str(r.rdata) for r in t.rr} == addrs and len(t.rr) == 40
    e = ask(ns, "big.", tcp=False, edns=1232)  # fits in an EDNS buffer
    assert e.header.tc == 0 and len(e.rr) == 40 and [a.rtype for a in e.ar] == [QTYPE.OPT]
    small = ask(ns, "big.", tcp=False, edns=200)  # less than 512 counts as 512
    assert small.header.tc == 1 and len(small.rr) <= len(got) and len(small.pack()) <= 512


def test_many_queries_on_one_connection_pipelined_and_split(ns):
    ns.set("www IN A 10.0.0.1")
    forty(ns)
    qs = [DNSRecord.question("www." if i % 2 else "big.") for i in range(10)]
    with connect(ns) as s:
        s.sendall(b"".join(framed(q) for q in qs))  # all at once, before reading
        late = DNSRecord.question("nobody.")
        for b in framed(late):  # one byte per segment
            s.sendall(bytes([b]))
        answers = [read_msg(s) for _ in range(11)]
    assert [a.header.id for a in answers] == [q.header.id for q in qs + [late]]
    assert [len(a.rr) for a in answers[:10]] == [40, 1] * 5
    assert answers[10].header.rcode == RCODE.NXDOMAIN


def test_half_closed_connection_gets_its_answers_then_eof(ns):
    ns.set("www IN A 10.0.0.1")
    q1, q2 = DNSRecord.question("www."), DNSRecord.question("www.", "TXT")
    with connect(ns) as s:
        s.sendall(framed(q1) + framed(q2))
        s.shutdown(socket.SHUT_WR)
        assert [read_msg(s).header.id for _ in range(2)] == [q1.header.id, q2.header.id]
        assert s.recv(1) == b""


def test_a_message_that_is_not_a_query_closes_after_earlier_answers(ns):
    ns.set("www IN A 10.0.0.1")
    q = DNSRecord.question("www.")
    with connect(ns) as s:
        s.sendall(framed(q) + framed(DNSRecord.question("www.").reply()) + framed(q))
        assert read_msg(s).header.id == q.header.id
        assert closed_by_server(s)
    with connect(ns) as s:
        s.sendall(b"\x00\x03abc")
        assert closed_by_server(s)
    assert ask(ns, "www.", tcp=True).rr  # the server goes on


def test_silent_client_is_closed_after_the_timeout_others_unaffected(ns):
    ns.set("www IN A 10.0.0.1")
    t0 = time.monotonic()
    silent = connect(ns)
    partial = connect(ns)
    try:
        partial.sendall(framed(DNSRecord.question("www."))[:5])  # never finished
        for _ in range(3):  # served meanwhile, over both transports
            assert ask(ns, "www.", tcp=True).rr and ask(ns, "www.", tcp=False).rr
        assert closed_by_server(silent) and closed_by_server(partial)
        assert time.monotonic() - t0 >= IDLE  # not before the timeout
    finally:
        silent.close()
        partial.close()
    assert ask(ns, "www.", tcp=True).rr


def server_conns(el: DnsElement) -> list[tuple[int, int]] | None:
    """(unsent bytes, selector events) of each open TCP connection, or None
    when the serving thread changed the set while we copied it."""
    try:
        return [(len(c.out), c.events) for c in list(el._net._conns)]
    except RuntimeError:
        return None


def test_connection_bound_holds_new_clients_until_one_closes():
    el = DnsElement(config=DnsConfig(tcp_idle_timeout=60, tcp_max_connections=3))
    el.start()
    held = []
    try:
        el.set("www IN A 10.0.0.1")
        held = [connect(el) for _ in range(3)]  # the bound, silent
        wait_until(lambda: len(server_conns(el) or ()) == 3, what="three connections accepted")
        extra = connect(el)  # the kernel completes the handshake; the server does not accept
        held.append(extra)
        q = DNSRecord.question("www.")
        extra.sendall(framed(q))
        extra.settimeout(0.5)
        with pytest.raises(socket.timeout):
            extra.recv(1)  # not answered while the bound is reached
        assert len(server_conns(el) or ()) == 3
        assert ask(el, "www.", tcp=False).rr  # UDP is not held up
        held[0].close()  # one leaves: the waiting one is accepted and answered
        extra.settimeout(10)
        assert read_msg(extra).header.id == q.header.id
    finally:
        for s in held:
            s.close()
        el.scrub()


def test_a_client_that_does_not_read_is_not_read_and_blocks_nobody():
    unsent = 4096
    el = DnsElement(config=DnsConfig(tcp_max_unsent=unsent))
    el.start()
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        for i in range(240):  # an answer of about 60 KB
            el.set(f'huge IN TXT "{i:03d}{"x" * 240}"')
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.settimeout(10)
        s.connect(hostport(el))
        n = 300  # about 18 MB of answers: beyond what socket buffers hold
        s.sendall(framed(DNSRecord.question("huge.", "TXT")) * n)
        # it does not read: the server stops reading it once its answers back up...
        wait_until(
            lambda: any(not ev & selectors.EVENT_READ for _, ev in server_conns(el) or ()),
            what="the server to stop reading the client",
        )
        assert all(out < unsent + 65537 for out, _ in server_conns(el) or ())  # ...holding little
        assert len(ask(el, "huge.", "TXT", tcp=True).rr) == 240  # and serves others
        d, got, last = Deframer(), 0, None
        while got < n:  # now it reads: every answer comes
            data = s.recv(1 << 20)
            assert data, f"closed after {got} answers"
            d.feed(data)
            while (m := d.next()) is not None:
                got, last = got + 1, m
        assert len(DNSRecord.parse(last).rr) == 240
    finally:
        s.close()
        el.scrub()


def test_scrub_closes_the_listener_and_connections():
    el = DnsElement()
    el.start()
    host, port = hostport(el)
    s = connect(el)
    try:
        el.scrub()
        assert closed_by_server(s)
    finally:
        s.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((host, port), timeout=5).close()
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):  # the port is free for others
        with socket.socket(socket.AF_INET, kind) as probe:
            if kind == socket.SOCK_STREAM:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))


def test_port_zero_retries_when_tcp_has_the_udp_port_taken():
    el = DnsElement()
    blockers: list[socket.socket] = []
    real = el._net._bind_one

    def bind_one(family, type_, sockaddr):
        if type_ == socket.SOCK_STREAM and len(blockers) < 2:
            b = socket.socket(family, socket.SOCK_STREAM)  # someone else's TCP on "our" port
            b.bind(sockaddr)
            b.listen()
            blockers.append(b)
        return real(family, type_, sockaddr)

    el._net._bind_one = bind_one
    try:
        el.start()
        port = hostport(el)[1]
        assert len(blockers) == 2 and port not in {b.getsockname()[1] for b in blockers}
        el.set("www IN A 10.0.0.1")
        assert ask(el, "www.", tcp=True).rr and ask(el, "www.", tcp=False).rr
    finally:
        el.scrub()
        for b in blockers:
            b.close()


def test_port_zero_gives_up_after_the_configured_tries():
    el = DnsElement(config=DnsConfig(bind_attempts=3))
    real, tries = el._net._bind_one, []

    def bind_one(family, type_, sockaddr):
        if type_ == socket.SOCK_STREAM:
            tries.append(sockaddr[1])
            raise OSError(errno.EADDRINUSE, "Address already in use")
        return real(family, type_, sockaddr)

    el._net._bind_one = bind_one
    with pytest.raises(
        ElementError, match=r"^cannot listen on 127.0.0.1:0: no port free .* 3 tries$"
    ):
        el.start()
    assert len(tries) == 3
    el.scrub()


def test_explicit_port_with_tcp_taken_is_an_error_and_holds_no_udp():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ElementError, match=f"^cannot listen on 127.0.0.1:{port}: "):
            DnsElement(f"127.0.0.1:{port}").start()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", port))  # the UDP half was released


def test_concurrent_tcp_clients(ns):
    forty(ns)
    errors: list[BaseException] = []

    def client():
        try:
            for _ in range(10):
                assert len(ask(ns, "big.", tcp=True).rr) == 40
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=client) for _ in range(8)]  # more than the bound of 4
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def test_bad_config_is_an_element_error():
    for bad in (
        dict(tcp_idle_timeout=0),
        dict(tcp_max_connections=0),
        dict(udp_max=100),
        dict(udp_max=70000),
        dict(bind_attempts=0),
        dict(tcp_max_unsent=0),
    ):
        with pytest.raises(ElementError):
            DnsConfig(**bad)
    with pytest.raises(Exception):
        DnsConfig().tcp_idle_timeout = 1  # frozen
