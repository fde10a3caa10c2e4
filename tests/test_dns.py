"""The nameserver element through the CLI and the Python client, answered
over real UDP and TCP and checked with a real DNS client (dnslib)."""

from __future__ import annotations

import json
import socket

import pytest
from dnslib import QTYPE, RCODE, DNSRecord

import pycircuit
from conftest import cli


def ask(addr: str, name: str, qtype: str = "A", tcp: bool = False) -> DNSRecord:
    host, port = addr.rsplit(":", 1)
    raw = DNSRecord.question(name, qtype).send(host, int(port), tcp=tcp, timeout=10)
    return DNSRecord.parse(raw)


def ok(r):
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.fixture
def srv(servers):
    url = servers.start()
    return url, pycircuit.Client(url).server_id


def test_nameserver_from_the_cli(srv):
    url, x = srv
    path = f"/{x}/dns"
    addr = ok(cli("mkdns", path, url=url)).strip()
    assert addr.startswith("127.0.0.1:")
    ok(cli("set", path, "www 60 IN A 10.0.0.1", url=url))
    ok(cli("set", path, "www IN A 10.0.0.2", url=url))
    ok(cli("set", path, "www IN TXT \"hello\"", url=url))
    ok(cli("set", path, "mail IN MX 10 mx.example.com.", url=url))
    a = ask(addr, "www.")
    assert a.header.rcode == RCODE.NOERROR
    assert sorted(str(rr.rdata) for rr in a.rr) == ["10.0.0.1", "10.0.0.2"]
    assert {rr.ttl for rr in a.rr} == {60, 3600}
    assert [QTYPE[rr.rtype] for rr in ask(addr, "www.", "TXT").rr] == ["TXT"]
    assert [str(rr.rdata) for rr in ask(addr, "mail.", "MX").rr] == ["10 mx.example.com."]
    assert ask(addr, "nobody.here.").header.rcode == RCODE.NXDOMAIN
    for name, qtype in (("www.", "A"), ("www.", "ANY"), ("mail.", "MX"), ("nobody.here.", "A")):
        u, t = ask(addr, name, qtype), ask(addr, name, qtype, tcp=True)  # TCP on the same port
        assert (u.header.rcode, u.rr) == (t.header.rcode, t.rr), (name, qtype)
    ok(cli("set", path, "\n".join(f"many IN A 10.1.0.{i}" for i in range(40)), url=url))
    assert ask(addr, "many.").header.tc == 1 and len(ask(addr, "many.", tcp=True).rr) == 40
    conn = socket.create_connection(
        (addr.rsplit(":", 1)[0], int(addr.rsplit(":", 1)[1])), timeout=30
    )
    peek = json.loads(ok(cli("peek", path, url=url)))
    assert (
        peek["Address"] == addr and len(peek["Records"]["www."]) == 3 and len(peek["Records"]) == 3
    )
    ok(cli("unset", path, "www", url=url))
    assert ask(addr, "www.").header.rcode == RCODE.NXDOMAIN
    r = cli("set", path, "www IN A not-an-address", url=url)
    assert (
        r.returncode != 0
        and len(r.stderr.strip().splitlines()) == 1
        and "Traceback" not in r.stderr
    )
    ok(cli("scrub", path, url=url))
    try:
        assert conn.recv(1) == b""  # scrub closed the open TCP connection
    finally:
        conn.close()
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):  # the port was released, for both
        with socket.socket(socket.AF_INET, kind) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, kind == socket.SOCK_STREAM)
            s.bind(("127.0.0.1", int(addr.rsplit(":", 1)[1])))


def test_busy_port_is_a_clear_error(srv):
    url, x = srv
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    try:
        r = cli("mkdns", f"/{x}/busy", f"127.0.0.1:{s.getsockname()[1]}", url=url)
        assert r.returncode != 0 and "cannot listen" in r.stderr and "Traceback" not in r.stderr
        assert ok(cli("ls", f"/{x}/...", url=url)) == ""  # the anchor stayed free
    finally:
        s.close()


def test_nameserver_from_python(srv):
    url, x = srv
    with pycircuit.connect(url) as c:
        ns = c.walk([x, "py", "ns"]).make_nameserver()
        ns.set("api 30 IN AAAA ::1")
        addr = ns.peek()["Address"]
        assert [str(rr.rdata) for rr in ask(addr, "api.", "AAAA").rr] == ["::1"]
        assert [str(rr.rdata) for rr in ask(addr, "api.", "AAAA", tcp=True).rr] == ["::1"]
        assert (
            ask(addr, "api.", "A").header.rcode == RCODE.NOERROR and not ask(addr, "api.", "A").rr
        )
        assert isinstance(c.walk([x, "py", "ns"]).get(), pycircuit.Nameserver)
        ns.scrub()
        assert c.walk([x, "py", "ns"]).get() is None
