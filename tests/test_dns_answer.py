"""The nameserver's pure core (``_dns_answer``): responses built from a query's
bytes and a zone, fuzzed with hypothesis; TCP framing; and that the module
stays pure."""

from __future__ import annotations

import ast
import pathlib
import struct

import pytest
from dnslib import EDNS0, QTYPE, RCODE, DNSHeader, DNSQuestion, DNSRecord
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pycircuit.server import _dns_answer
from pycircuit.server._dns_answer import (
    TCP_MAX,
    UDP_MIN,
    Deframer,
    frame,
    lookup,
    parse_records,
    same_record,
    respond,
)
from test_purity import FORBIDDEN, imported_modules, root

UDP_MAX = 1232
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

labels = st.sampled_from(["www", "a", "b", "mail", "x-y", "big"])
names = st.lists(labels, min_size=1, max_size=3).map(lambda ls: ".".join(ls) + ".")
octet = st.integers(0, 255)
record = st.one_of(
    st.tuples(octet, octet).map(lambda t: f"IN A 10.{t[0]}.{t[1]}.1"),
    octet.map(lambda b: f"IN AAAA fd00::{b:x}"),
    st.text("abcdefgh ", min_size=0, max_size=255).map(lambda t: f'IN TXT "{t}"'),
    st.tuples(octet, names).map(lambda t: f"IN MX {t[0]} {t[1]}"),
    names.map(lambda n: f"IN CNAME {n}"),
)
zone_lines = st.lists(st.tuples(names, st.integers(0, 86400), record), max_size=40)


def make_zone(lines) -> dict:
    zone: dict = {}
    for name, ttl, rest in lines:
        for rr in parse_records(f"{name} {ttl} {rest}"):
            have = zone.setdefault(rr.rname, [])
            if not any(same_record(rr, o) for o in have):
                have.append(rr)
    return zone


@st.composite
def queries(draw):
    qtype = draw(st.sampled_from(["A", "AAAA", "TXT", "MX", "CNAME", "ANY"]))
    q = DNSRecord(
        DNSHeader(id=draw(st.integers(0, 0xFFFF)), rd=draw(st.integers(0, 1))),
        q=DNSQuestion(draw(names), getattr(QTYPE, qtype)),
    )
    edns = draw(st.none() | st.integers(0, 0xFFFF))
    if edns is not None:
        q.add_ar(EDNS0(udp_len=edns, flags=draw(st.sampled_from(["", "do"]))))
    return q, edns


@FUZZ
@given(zone_lines, queries())
def test_udp_answer_is_the_tcp_answer_cut_to_the_clients_size(lines, query):
    zone = make_zone(lines)
    q, edns = query
    udp_raw = respond(q.pack(), zone, tcp=False, udp_max=UDP_MAX)
    tcp_raw = respond(q.pack(), zone, tcp=True, udp_max=UDP_MAX)
    limit = UDP_MIN if edns is None else max(UDP_MIN, min(edns, UDP_MAX))
    assert len(udp_raw) <= limit and len(tcp_raw) <= TCP_MAX
    udp, tcp = DNSRecord.parse(udp_raw), DNSRecord.parse(tcp_raw)
    qq = q.questions[0]
    rcode, answers = lookup(zone, qq.qname, qq.qtype, qq.qclass)
    for r in (udp, tcp):
        assert r.header.id == q.header.id and r.header.qr == 1 and r.header.aa == 1
        assert r.header.rd == q.header.rd and r.header.rcode == rcode
        assert r.questions == q.questions
        opts = [a for a in r.ar if a.rtype == QTYPE.OPT]
        assert len(opts) == (edns is not None) and len(r.ar) == len(opts)
        if opts:
            assert opts[0].rclass == UDP_MAX and (opts[0].ttl & 0x8000) == (q.ar[0].ttl & 0x8000)
    assert tcp.rr == answers and tcp.header.tc == 0  # a 40-record zone always fits in 64 KiB
    assert udp.rr == answers[: len(udp.rr)]  # whole records, in order
    assert udp.header.tc == (len(udp.rr) < len(answers))
    if udp.header.tc:  # no room for even one more record
        more = DNSRecord(udp.header, q=udp.q)
        more.rr, more.ar = answers[: len(udp.rr) + 1], udp.ar
        assert len(more.pack()) > limit


@FUZZ
@given(zone_lines, st.binary(max_size=600))
def test_garbage_never_raises(lines, data):
    zone = make_zone(lines)
    for tcp in (False, True):
        out = respond(data, zone, tcp=tcp, udp_max=UDP_MAX)
        if out is not None:
            r = DNSRecord.parse(out)
            assert r.header.qr == 1 and len(out) <= (TCP_MAX if tcp else UDP_MAX)


@FUZZ
@given(zone_lines, queries(), st.data())
def test_mutated_queries_never_raise(lines, query, data):
    raw = bytearray(query[0].pack())
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(octet)
    cut = data.draw(st.integers(0, len(raw)))
    for msg in (bytes(raw), bytes(raw[:cut])):
        out = respond(msg, make_zone(lines), tcp=False, udp_max=UDP_MAX)
        assert out is None or DNSRecord.parse(out).header.qr == 1


def test_answers_beyond_64k_are_truncated_over_tcp_too():
    zone = make_zone([("big.", 60, f'IN TXT "{i:03d}{"x" * 250}"') for i in range(300)])
    q = DNSRecord.question("big.", "TXT")
    r = DNSRecord.parse(respond(q.pack(), zone, tcp=True, udp_max=UDP_MAX))
    assert r.header.tc == 1 and 200 < len(r.rr) < 300


def test_edns_rules():
    zone = make_zone([("www.", 60, "IN A 10.0.0.1")])

    def ask(q: DNSRecord) -> DNSRecord:
        return DNSRecord.parse(respond(q.pack(), zone, tcp=False, udp_max=UDP_MAX))

    small = DNSRecord.question("www.")
    small.add_ar(EDNS0(udp_len=100))  # below 512 counts as 512 (RFC 6891 6.2.5)
    assert ask(small).rr and ask(small).header.rcode == RCODE.NOERROR
    twice = DNSRecord.question("www.")
    twice.add_ar(EDNS0(udp_len=1232))
    twice.add_ar(EDNS0(udp_len=1232))
    assert ask(twice).header.rcode == RCODE.FORMERR
    v1 = DNSRecord.question("www.")
    v1.add_ar(EDNS0(udp_len=1232, version=1))
    r = ask(v1)
    opt = [a for a in r.ar if a.rtype == QTYPE.OPT][0]
    assert (opt.ttl >> 24) << 4 | r.header.rcode == 16 and not r.rr  # BADVERS
    assert (opt.ttl >> 16) & 0xFF == 0  # we speak version 0


def test_non_queries_get_no_answer_and_other_opcodes_notimp():
    zone = make_zone([("www.", 60, "IN A 10.0.0.1")])
    response = DNSRecord.question("www.").reply()
    assert respond(response.pack(), zone, tcp=True, udp_max=UDP_MAX) is None
    assert respond(b"\x00" * 5, zone, tcp=True, udp_max=UDP_MAX) is None
    notify = DNSRecord.question("www.")
    notify.header.opcode = 4
    r = DNSRecord.parse(respond(notify.pack(), zone, tcp=True, udp_max=UDP_MAX))
    assert r.header.rcode == RCODE.NOTIMP and not r.rr


def take_all(d: Deframer) -> list[bytes]:
    out = []
    while (m := d.next()) is not None:
        out.append(m)
    return out


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.binary(max_size=300), max_size=8),
    st.lists(st.integers(0, 3000), max_size=10),
    st.booleans(),
)
def test_deframer_reassembles_any_split(messages, cuts, lazy):
    stream = b"".join(frame(m) for m in messages)
    points = sorted({min(c, len(stream)) for c in cuts} | {0, len(stream)})
    d = Deframer()
    got = []
    for a, b in zip(points, points[1:]):
        d.feed(stream[a:b])
        if not lazy:  # a lazy reader takes messages only at the end (backpressure)
            got += take_all(d)
    got += take_all(d)
    assert got == messages and d.pending == 0


def test_deframer_keeps_a_partial_message():
    d = Deframer()
    d.feed(struct.pack("!H", 5) + b"abc")
    assert d.next() is None and d.pending == 5
    d.feed(b"de" + b"\x00")
    assert d.next() == b"abcde" and d.next() is None and d.pending == 1
    d.feed(b"\x00" + b"\x00\x01z")
    assert d.next() == b""  # an empty message is a message (the server closes on it)
    d.clear()
    assert d.pending == 0 and d.next() is None
    with pytest.raises(ValueError):
        frame(b"x" * (TCP_MAX + 1))


def test_module_is_pure():
    # the rules of test_purity, applied to this module
    name = "pycircuit.server._dns_answer"
    tree = ast.parse(pathlib.Path(_dns_answer.__file__).read_text(encoding="utf-8"))
    assert "pure" in (ast.get_docstring(tree) or "").lower()
    imports = imported_modules(name, tree)
    assert "dnslib" in {root(n) for n, _ in imports}  # the scanner sees the imports
    assert not [n for n, _ in imports if root(n) in FORBIDDEN]
    assert {n for n, _ in imports if root(n) == "pycircuit"} <= {
        "pycircuit.errors",
        "pycircuit.errors.ElementError",
    }
