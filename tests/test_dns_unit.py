"""The nameserver element on its own (no server process), asked over real
UDP on loopback with a real DNS client (dnslib)."""

from __future__ import annotations

import json
import socket
import threading

import pytest
from dnslib import EDNS0, QTYPE, RCODE, DNSRecord

from pycircuit.errors import ElementError
from pycircuit.server._dns import DnsConfig, DnsElement


def hostport(el: DnsElement) -> tuple[str, int]:
    host, port = el.address.rsplit(":", 1)
    return host.strip("[]"), int(port)


def ask(el: DnsElement, name: str, qtype: str = "A") -> DNSRecord:
    host, port = hostport(el)
    q = DNSRecord.question(name, qtype)
    r = DNSRecord.parse(q.send(host, port, timeout=2, ipv6=":" in host))
    assert r.header.id == q.header.id and r.header.qr == 1
    return r


def rdatas(r: DNSRecord) -> list[str]:
    return sorted(str(rr.rdata) for rr in r.rr)


@pytest.fixture
def ns():
    el = DnsElement()
    el.start()
    try:
        yield el
    finally:
        el.scrub()


def test_address_forms():
    for addr in (None, "", "127.0.0.1", "127.0.0.1:0"):
        el = DnsElement(addr)
        try:
            el.start()
            host, port = el.address.rsplit(":", 1)
            assert host == "127.0.0.1" and 0 < int(port) < 65536, (addr, el.address)
            assert el.peek()["Address"] == el.address
        finally:
            el.scrub()


def test_ipv6_loopback():
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        probe = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        probe.bind(("::1", 0))
        probe.close()
    except OSError:
        pytest.skip("no IPv6 loopback")
    el = DnsElement("[::1]:0")
    el.start()
    try:
        assert el.address.startswith("[::1]:")
        el.set("v6 IN A 10.0.0.6")
        assert rdatas(ask(el, "v6.")) == ["10.0.0.6"]
        host, port = hostport(el)
        tcp = DNSRecord.question("v6.").send(host, port, tcp=True, timeout=10, ipv6=True)
        assert rdatas(DNSRecord.parse(tcp)) == ["10.0.0.6"]  # TCP on the same IPv6 port
    finally:
        el.scrub()


def test_a_with_two_records_returns_both_with_their_ttls(ns):
    ns.set("www 60 IN A 10.0.0.1")
    ns.set("www IN A 10.0.0.2")
    r = ask(ns, "www.")
    assert r.header.rcode == RCODE.NOERROR and r.header.aa == 1
    assert rdatas(r) == ["10.0.0.1", "10.0.0.2"]
    assert {str(rr.rdata): rr.ttl for rr in r.rr} == {"10.0.0.1": 60, "10.0.0.2": 3600}
    assert all(rr.rtype == QTYPE.A for rr in r.rr)


def test_answers_by_type(ns):
    ns.set("host IN A 10.0.0.1")
    ns.set("host 120 IN AAAA ::1")
    ns.set("host IN MX 10 mx.example.com.")
    ns.set('host IN TXT "hello world"')
    assert rdatas(ask(ns, "host.", "A")) == ["10.0.0.1"]
    aaaa = ask(ns, "host.", "AAAA")
    assert rdatas(aaaa) == ["::1"] and aaaa.rr[0].ttl == 120
    mx = ask(ns, "host.", "MX")
    assert [(QTYPE[rr.rtype], str(rr.rdata)) for rr in mx.rr] == [("MX", "10 mx.example.com.")]
    txt = ask(ns, "host.", "TXT")
    assert [(QTYPE[rr.rtype], str(rr.rdata)) for rr in txt.rr] == [("TXT", '"hello world"')]
    anything = ask(ns, "host.", "ANY")
    assert sorted(QTYPE[rr.rtype] for rr in anything.rr) == ["A", "AAAA", "MX", "TXT"]


def test_unknown_name_is_nxdomain(ns):
    ns.set("www IN A 10.0.0.1")
    r = ask(ns, "nobody.here.")
    assert r.header.rcode == RCODE.NXDOMAIN == 3 and r.rr == [] and r.header.aa == 1
    empty = DnsElement()
    empty.start()
    try:
        assert ask(empty, "www.").header.rcode == RCODE.NXDOMAIN
    finally:
        empty.scrub()


def test_name_with_other_types_only_is_noerror_and_empty(ns):
    ns.set("mail IN MX 10 mx.example.com.")
    for qtype in ("A", "AAAA", "TXT"):
        r = ask(ns, "mail.", qtype)
        assert r.header.rcode == RCODE.NOERROR and r.rr == [], qtype


def test_empty_non_terminal_exists(ns):
    ns.set("a.b.example IN A 10.0.0.1")
    r = ask(ns, "b.example.")
    assert r.header.rcode == RCODE.NOERROR and r.rr == []
    assert ask(ns, "c.example.").header.rcode == RCODE.NXDOMAIN


def test_names_are_case_insensitive(ns):
    ns.set("MixedCase IN A 10.0.0.1")
    assert rdatas(ask(ns, "mixedcase.")) == ["10.0.0.1"]
    assert rdatas(ask(ns, "MIXEDCASE.")) == ["10.0.0.1"]
    ns.unset("mixedCASE")
    assert ask(ns, "mixedcase.").header.rcode == RCODE.NXDOMAIN


def test_unset_removes_all_records_of_a_name(ns):
    ns.set("www IN A 10.0.0.1")
    ns.set("www IN A 10.0.0.2")
    ns.set('www IN TXT "x"')
    ns.set("other IN A 10.0.0.9")
    ns.unset("www")
    assert ask(ns, "www.").header.rcode == RCODE.NXDOMAIN
    assert ask(ns, "www.", "TXT").header.rcode == RCODE.NXDOMAIN
    assert rdatas(ask(ns, "other.")) == ["10.0.0.9"]
    ns.unset("other.")  # absolute names too
    assert ask(ns, "other.").header.rcode == RCODE.NXDOMAIN
    ns.unset("never-set")  # no error
    ns.unset("never.set.")
    assert ns.peek()["Records"] == {}
    ns.set("www IN A 10.0.0.3")  # a name can come back
    assert rdatas(ask(ns, "www.")) == ["10.0.0.3"]


def test_default_and_explicit_ttl(ns):
    ns.set("d IN A 10.0.0.1")
    ns.set("e 7 IN A 10.0.0.2")
    ns.set("z 0 IN A 10.0.0.3")
    assert [rr.ttl for rr in ask(ns, "d.").rr] == [3600]
    assert [rr.ttl for rr in ask(ns, "e.").rr] == [7]
    assert [rr.ttl for rr in ask(ns, "z.").rr] == [0]


def test_relative_and_absolute_names(ns):
    ns.set("rel.example.com IN A 10.0.0.1")  # relative to "." : rel.example.com.
    ns.set("abs.example.com. IN A 10.0.0.2")
    ns.set("short A 10.0.0.3")  # class omitted too
    assert rdatas(ask(ns, "rel.example.com.")) == ["10.0.0.1"]
    assert rdatas(ask(ns, "abs.example.com.")) == ["10.0.0.2"]
    assert rdatas(ask(ns, "short.")) == ["10.0.0.3"]
    assert set(ns.peek()["Records"]) == {"rel.example.com.", "abs.example.com.", "short."}
    # a relative name is not qualified against some other origin
    assert ask(ns, "rel.example.com.example.com.").header.rcode == RCODE.NXDOMAIN


def test_several_records_in_one_set_and_exact_duplicates(ns):
    ns.set("multi IN A 10.0.0.1\nmulti IN A 10.0.0.2\nother IN A 10.0.0.3")
    assert rdatas(ask(ns, "multi.")) == ["10.0.0.1", "10.0.0.2"]
    ns.set("multi IN A 10.0.0.1")  # exact duplicate: not added twice
    assert rdatas(ask(ns, "multi.")) == ["10.0.0.1", "10.0.0.2"]
    ns.set("multi 42 IN A 10.0.0.1")  # same data, new TTL: updated, still one record
    r = ask(ns, "multi.")
    assert {str(rr.rdata): rr.ttl for rr in r.rr} == {"10.0.0.1": 42, "10.0.0.2": 3600}
    assert len(r.rr) == 2


def test_duplicates_of_every_kind_of_record(ns):
    # LOC's dnslib equality raises: records are compared by their wire form
    loc = "t IN LOC 51 30 12.748 N 0 7 39.611 W 0.00m 1m 10000m 10m"
    ns.set(loc)
    ns.set(loc.replace("t IN", "t 9 IN"))
    assert [rr.ttl for rr in ask(ns, "t.", "LOC").rr] == [9]


def test_bad_records_are_clear_errors_and_change_nothing(ns):
    ns.set("keep IN A 10.0.0.1")
    before = ns.peek()
    for bad in (
        "www IN A not-an-address",
        "www",
        "www IN",
        "www IN NOSUCHTYPE 1",
        "www IN A 300.1.1.1",
        "www IN AAAA zz::zz::",
        "",
        "; only a comment",
        "ok IN A 10.0.0.5\nbroken IN A nope",
        "www IN MX mx.example.com.",
    ):
        with pytest.raises(ElementError) as ei:
            ns.set(bad)
        msg = str(ei.value)
        assert msg.startswith("bad resource record ") and "\n" not in msg, msg
        assert msg.split(": ", 1)[1].strip(), msg  # a reason follows
    with pytest.raises(ElementError, match="bad resource record"):
        ns.set(None)  # type: ignore[arg-type]
    assert ns.peek() == before  # a bad line anywhere adds nothing
    assert ask(ns, "ok.").header.rcode == RCODE.NXDOMAIN


def test_bad_addresses():
    for addr in ("127.0.0.1:99999", "127.0.0.1:http", "[::1"):
        with pytest.raises(ElementError, match="cannot listen on"):
            DnsElement(addr).start()


def test_busy_port_is_an_error():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    try:
        port = s.getsockname()[1]
        el = DnsElement(f"127.0.0.1:{port}")
        with pytest.raises(ElementError) as ei:
            el.start()
        assert str(ei.value).startswith(f"cannot listen on 127.0.0.1:{port}: ")
        el.scrub()  # harmless on an element that never started
    finally:
        s.close()


def test_scrub_releases_the_port_and_is_idempotent():
    a = DnsElement()
    a.start()
    a.set("x IN A 10.0.0.1")
    host, port = hostport(a)
    assert rdatas(ask(a, "x.")) == ["10.0.0.1"]
    a.scrub()
    a.scrub()
    assert a.peek()["Address"] == f"{host}:{port}"  # peek still works
    with pytest.raises(ElementError, match="scrubbed"):
        a.set("y IN A 10.0.0.2")
    with pytest.raises(ElementError, match="scrubbed"):
        a.start()
    b = DnsElement(f"127.0.0.1:{port}")  # the very same port binds again
    b.start()
    try:
        assert b.address == f"127.0.0.1:{port}"
        b.set("x IN A 10.0.0.7")
        assert rdatas(ask(b, "x.")) == ["10.0.0.7"]
    finally:
        b.scrub()


def test_start_twice_is_an_error(ns):
    with pytest.raises(ElementError, match="already started"):
        ns.start()


def test_garbage_does_not_stop_the_server(ns):
    ns.set("www IN A 10.0.0.1")
    host, port = hostport(ns)
    real = DNSRecord.question("www.", "A")
    response = DNSRecord.question("www.", "A").reply()  # a response, not a query
    garbage = [
        b"",
        b"\x00",
        b"garbage!",
        b"\xff" * 12,
        b"\x12\x34\x01\x00\x00\x01\x00\x00",
        real.pack()[:-3],
        real.pack()[:12] + b"\xc0\x0c" + b"\x00" * 4,
        bytes(range(256)) * 4,
        response.pack(),
    ]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        for g in garbage:
            s.sendto(g, (host, port))
        s.sendto(real.pack(), (host, port))
        # datagrams are handled in order, so had any garbage been answered,
        # that answer would arrive before this one
        r = DNSRecord.parse(s.recvfrom(65535)[0])
    assert r.header.id == real.header.id and rdatas(r) == ["10.0.0.1"]
    assert rdatas(ask(ns, "www.")) == ["10.0.0.1"]


def test_non_query_opcode_is_not_implemented(ns):
    q = DNSRecord.question("www.", "A")
    q.header.opcode = 2  # STATUS
    host, port = hostport(ns)
    r = DNSRecord.parse(q.send(host, port, timeout=2))
    assert r.header.id == q.header.id and r.header.rcode == RCODE.NOTIMP


def test_cname_is_answered_and_followed(ns):
    ns.set("www IN A 10.0.0.1")
    ns.set("alias IN CNAME www")
    ns.set("outside IN CNAME somewhere.example.org.")
    r = ask(ns, "alias.", "A")
    assert r.header.rcode == RCODE.NOERROR
    assert [(QTYPE[rr.rtype], str(rr.rdata)) for rr in r.rr] == [
        ("CNAME", "www."),
        ("A", "10.0.0.1"),
    ]
    assert [QTYPE[rr.rtype] for rr in ask(ns, "alias.", "CNAME").rr] == ["CNAME"]
    r = ask(ns, "outside.", "A")
    assert r.header.rcode == RCODE.NOERROR
    assert [str(rr.rdata) for rr in r.rr] == ["somewhere.example.org."]
    ns.set("loop1 IN CNAME loop2")
    ns.set("loop2 IN CNAME loop1")
    assert len(ask(ns, "loop1.", "A").rr) == 2  # a loop ends


def test_oversized_answers_are_truncated_unless_edns(ns):
    for i in range(4):
        ns.set(f'big IN TXT "{str(i) * 200}"')
    r = ask(ns, "big.", "TXT")
    # two 200-byte strings fit in 512 bytes, three do not
    assert r.header.tc == 1 and len(r.rr) == 2 and not r.ar
    q = DNSRecord.question("big.", "TXT")
    q.add_ar(EDNS0(udp_len=4096))
    host, port = hostport(ns)
    r = DNSRecord.parse(q.send(host, port, timeout=2))
    assert r.header.tc == 0 and len(r.rr) == 4
    assert [a.rtype for a in r.ar] == [QTYPE.OPT] and r.ar[0].rclass == DnsConfig().udp_max


def test_peek_and_describe(ns):
    ns.set("www 60 IN A 10.0.0.1")
    ns.set("www IN A 10.0.0.2")
    ns.set('txt IN TXT "hello world"')
    ns.set("mail IN MX 10 mx.example.com.")
    p = ns.peek()
    assert json.loads(json.dumps(p)) == p
    assert p["Address"] == ns.address
    assert p["Records"] == {
        "www.": ["www. 60 IN A 10.0.0.1", "www. 3600 IN A 10.0.0.2"],
        "txt.": ['txt. 3600 IN TXT "hello world"'],
        "mail.": ["mail. 3600 IN MX 10 mx.example.com."],
    }
    assert ns.describe() == {"kind": "dns", **p}
    assert DnsElement.kind == "dns"
    for lines in p["Records"].values():  # peek's lines are valid input again
        for line in lines:
            ns.set(line)
    assert ns.peek() == p


def test_concurrent_set_while_querying(ns):
    n = 25  # small enough for one unextended UDP answer
    errors: list[BaseException] = []

    def writer():
        try:
            for i in range(n):
                ns.set(f"grow IN A 10.1.0.{i}")
                ns.set(f"churn{i} IN A 10.2.0.{i}")
                ns.set(f'churn{i} IN TXT "t{i}"')
                if i % 2:
                    ns.unset(f"churn{i - 1}")
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    def reader(seen: list[int]):
        try:
            done = False
            while not done:
                done = not w.is_alive()  # one more round after the writer ends
                r = ask(ns, "grow.")
                if r.header.rcode == RCODE.NOERROR:
                    assert r.header.tc == 0
                    got = rdatas(r)
                    assert len(set(got)) == len(got)
                    seen.append(len(got))
                else:
                    assert r.header.rcode == RCODE.NXDOMAIN and not seen
                for i in (0, n // 2, n - 1):
                    c = ask(ns, f"churn{i}.", "ANY")
                    assert c.header.rcode in (RCODE.NOERROR, RCODE.NXDOMAIN)
                    assert len(c.rr) in (0, 1, 2)
        except BaseException as e:
            errors.append(e)

    w = threading.Thread(target=writer)
    seens: list[list[int]] = [[] for _ in range(3)]
    readers = [threading.Thread(target=reader, args=(s,)) for s in seens]
    w.start()
    for t in readers:
        t.start()
    w.join()
    for t in readers:
        t.join()
    assert not errors, errors
    for seen in seens:
        assert seen == sorted(seen)  # records only accumulate
        assert seen and seen[-1] == n
    assert len(rdatas(ask(ns, "grow."))) == n
    assert len(ns.peek()["Records"]["grow."]) == n
