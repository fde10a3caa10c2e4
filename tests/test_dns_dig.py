"""The nameserver element asked by ``dig`` (BIND's client, Debian package
bind9-dnsutils), a client nobody here wrote: truncation and its automatic TCP
retry, every record type over TCP, ANY, NXDOMAIN, and a silent TCP client.
Without dig the tests skip, except in CI (``CI=true``) where they fail."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass

import pytest
from dnslib import RR
from dnslib.dns import RDMAP

from pycircuit.server._dns import DnsConfig, DnsElement
from pycircuit.server._dns_answer import same_record

IDLE = 1.0


@pytest.fixture(scope="module")
def dig_path() -> str:
    path = shutil.which("dig")
    if path is None:
        msg = "dig is not installed (Debian: apt-get install bind9-dnsutils)"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return path


@pytest.fixture
def ns():
    el = DnsElement(config=DnsConfig(tcp_idle_timeout=IDLE))
    el.start()
    try:
        yield el
    finally:
        el.scrub()


@dataclass
class Dug:
    status: str
    flags: set[str]
    answers: list[str]  # the answer section's lines
    transport: str  # "UDP" or "TCP": of the response dig shows
    text: str


def dig(path: str, el: DnsElement, *args: str) -> Dug:
    host, port = el.address.rsplit(":", 1)
    r = subprocess.run(
        [path, f"@{host}", "-p", port, "+tries=1", "+time=10", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    status = re.search(r"status: (\w+)", out)
    flags = re.search(r";; flags: ([a-z ]*);", out)
    server = re.search(r";; SERVER: .*\((UDP|TCP)\)", out)
    assert status and flags and server, out
    answers, in_answers = [], False
    for line in out.splitlines():
        if line.startswith(";; ANSWER SECTION:"):
            in_answers = True
        elif in_answers and (not line.strip() or line.startswith(";")):
            in_answers = False
        elif in_answers:
            answers.append(line)
    return Dug(status.group(1), set(flags.group(1).split()), answers, server.group(1), out)


def forty(el: DnsElement) -> set[str]:
    addrs = {f"10.0.0.{i}" for i in range(1, 41)}
    for a in addrs:
        el.set(f"big 60 IN A {a}")
    return addrs


def rdata(line: str) -> str:
    return line.split(None, 4)[4]


def test_forty_a_records_without_edns(dig_path, ns):
    addrs = forty(ns)
    udp = dig(dig_path, ns, "+noedns", "+ignore", "big.", "A")  # +ignore: show the UDP answer
    assert udp.transport == "UDP" and "tc" in udp.flags and "aa" in udp.flags
    assert 0 < len(udp.answers) < 40 and {rdata(a) for a in udp.answers} <= addrs
    assert "OPT PSEUDOSECTION" not in udp.text
    tcp = dig(dig_path, ns, "+noedns", "+tcp", "big.", "A")
    assert tcp.transport == "TCP" and "tc" not in tcp.flags
    assert sorted(rdata(a) for a in tcp.answers) == sorted(addrs)
    retried = dig(dig_path, ns, "+noedns", "big.", "A")  # what every resolver does
    assert "Truncated, retrying in TCP mode" in retried.text and retried.transport == "TCP"
    assert sorted(rdata(a) for a in retried.answers) == sorted(addrs) and "tc" not in retried.flags
    edns = dig(dig_path, ns, "big.", "A")  # EDNS: 40 fit in dig's 1232 bytes
    assert edns.transport == "UDP" and "tc" not in edns.flags and len(edns.answers) == 40
    assert re.search(r"EDNS: version: 0, flags:.*; udp: 1232", edns.text), edns.text


# one record of every type dnslib (so the element) reads from zone text
RECORDS = {
    "A": "t 60 IN A 10.0.0.1",
    "AAAA": "t 60 IN AAAA fd00::1",
    "CAA": 't 60 IN CAA 0 issue "letsencrypt.org"',
    "CNAME": "c 60 IN CNAME t.example.",
    "DNSKEY": "t 60 IN DNSKEY 257 3 13 mdsswUyr3DPW132mOi8V9xESWE8jTo0dxCjjnopKl+GqJxpVXckHAeF+Kkx"
    "LbxILfDLUT0rAK9iUzy1L53eKGQ==",
    "DS": "t 60 IN DS 2371 13 2 1F987CC6583E92DF0890718C42C05B5E70D8E9A5DF63FEB8F3CC1C9E2C38B7F7",
    "HTTPS": "t 60 IN HTTPS 1 . alpn=h2,h3 port=443",
    "LOC": "t 60 IN LOC 51 30 12.748 N 0 7 39.611 W 0.00m 1m 10000m 10m",
    "MX": "t 60 IN MX 10 mx.example.",
    "NAPTR": 't 60 IN NAPTR 100 10 "S" "SIP+D2U" "" _sip._udp.example.',
    "NS": "t 60 IN NS ns1.example.",
    "NSEC": "t 60 IN NSEC next.example. A MX RRSIG NSEC",
    "PTR": "t 60 IN PTR host.example.",
    "RP": "t 60 IN RP admin.example. info.example.",
    "RRSIG": "t 60 IN RRSIG A 13 1 60 20300101000000 20200101000000 2371 example. "
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/abcdefghijklmnopqrstuvwxyzABCDEF==",
    "SOA": "t 60 IN SOA ns1.example. hostmaster.example. 2024010101 7200 3600 1209600 300",
    "SRV": "t 60 IN SRV 10 5 5060 sip.example.",
    "SSHFP": "t 60 IN SSHFP 4 2 123456789abcdef67890123456789abcdef67890123456789abcdef123456789",
    "TLSA": "t 60 IN TLSA 3 1 1 0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF",
    "TXT": 't 60 IN TXT "hello world" "two"',
}


def test_every_record_type_over_tcp(dig_path, ns):
    assert set(RECORDS) == set(RDMAP)  # a type dnslib learns gets a line here
    for line in RECORDS.values():
        ns.set(line)
    for qtype, line in RECORDS.items():
        d = dig(dig_path, ns, "+tcp", "c." if qtype == "CNAME" else "t.", qtype)
        assert d.transport == "TCP" and d.status == "NOERROR" and "aa" in d.flags, d.text
        assert len(d.answers) == 1, d.text
        shown = (
            d.answers[0].replace('"', "") if qtype == "HTTPS" else d.answers[0]
        )  # dig quotes alpn
        got = RR.fromZone(shown)
        assert len(got) == 1 and same_record(got[0], RR.fromZone(line)[0]), (qtype, d.answers)
        assert got[0].ttl == 60


def test_several_queries_on_one_kept_open_connection(dig_path, ns):
    ns.set("a IN A 10.0.0.1\nb IN TXT \"bee\"\nalias IN CNAME a")
    host, port = ns.address.rsplit(":", 1)
    d = subprocess.run(
        [
            dig_path,
            f"@{host}",
            "-p",
            port,
            "+tcp",
            "+keepopen",
            "+tries=1",
            "+time=10",
            "+noall",
            "+answer",
            "a.",
            "A",
            "b.",
            "TXT",
            "alias.",
            "A",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert d.returncode == 0, d.stderr
    lines = [line.split() for line in d.stdout.splitlines() if line.strip()]
    assert [(f[0], f[3], f[4]) for f in lines] == [
        ("a.", "A", "10.0.0.1"),
        ("b.", "TXT", '"bee"'),
        ("alias.", "CNAME", "a."),
        ("a.", "A", "10.0.0.1"),
    ]


def test_any(dig_path, ns):
    ns.set('h IN A 10.0.0.1\nh IN AAAA fd00::1\nh IN MX 10 mx.example.\nh IN TXT "x"')
    for args in ((), ("+tcp",), ("+notcp",), ("+noedns", "+notcp")):
        d = dig(dig_path, ns, *args, "h.", "ANY")
        assert d.status == "NOERROR" and "tc" not in d.flags, (args, d.text)
        assert sorted(a.split()[3] for a in d.answers) == ["A", "AAAA", "MX", "TXT"], (args, d.text)
        if "+tcp" in args:
            assert d.transport == "TCP"
        if "+notcp" in args:
            assert d.transport == "UDP"


def test_nxdomain_and_empty_answers_over_tcp(dig_path, ns):
    ns.set("www IN A 10.0.0.1")
    nx = dig(dig_path, ns, "+tcp", "nobody.here.", "A")
    assert nx.transport == "TCP" and nx.status == "NXDOMAIN" and "aa" in nx.flags and not nx.answers
    empty = dig(dig_path, ns, "+tcp", "www.", "MX")
    assert empty.status == "NOERROR" and not empty.answers
    alias = dig(dig_path, ns, "+tcp", "www.", "A")
    assert [rdata(a) for a in alias.answers] == ["10.0.0.1"]


def test_silent_client_is_closed_and_others_are_served(dig_path, ns):
    ns.set("www IN A 10.0.0.1")
    t0 = time.monotonic()
    host, port = ns.address.rsplit(":", 1)
    silent = socket.create_connection((host, int(port)), timeout=30)
    try:
        tcp = dig(dig_path, ns, "+tcp", "www.", "A")  # served while the silent one is open
        udp = dig(dig_path, ns, "www.", "A")
        assert [rdata(a) for a in tcp.answers] == [rdata(a) for a in udp.answers] == ["10.0.0.1"]
        assert tcp.transport == "TCP" and udp.transport == "UDP"
        try:
            closed = silent.recv(1) == b""
        except ConnectionResetError:
            closed = True
        assert closed and time.monotonic() - t0 >= IDLE
    finally:
        silent.close()
    assert dig(dig_path, ns, "+tcp", "www.", "A").answers
