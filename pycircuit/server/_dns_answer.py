"""The nameserver's pure core: zone text in, records out; a query's bytes and
a zone in, the response's bytes out. No sockets, threads or clocks; the
socket side (``_dns``) decides what to do with the bytes.

Records are given in zone-file syntax (parsed by dnslib), relative names are
qualified against the root origin ``.`` and a record without a TTL gets 3600.

Queries are answered by type: all records of the name and type, every record
of the name for ``ANY``, NOERROR with an empty answer for a name without
records of that type and NXDOMAIN for a name that does not exist. Every
answer is authoritative. A name whose only matching record is a CNAME answers
with the CNAME, followed through the zone's own records. Messages that are not
well-formed queries get no response.

Sizes (RFC 1035, 6891, 7766): over UDP a response fits in 512 bytes, or in
the client's EDNS buffer size clamped to [512, ``udp_max``]; over TCP in
65535. A response that does not fit carries TC and as many whole answer
records as fit, so the client retries over TCP. A query with an OPT record is
answered with one (advertising ``udp_max``, DO copied); more than one OPT is
FORMERR and an EDNS version other than 0 is BADVERS.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence

from dnslib import CLASS, EDNS0, QTYPE, RCODE, RR, DNSBuffer, DNSHeader, DNSLabel, DNSRecord

from ..errors import ElementError

__all__ = [
    "DEFAULT_TTL",
    "UDP_MIN",
    "TCP_MAX",
    "Zone",
    "parse_records",
    "parse_name",
    "zone_line",
    "same_record",
    "lookup",
    "respond",
    "frame",
    "Deframer",
]

DEFAULT_TTL = 3600
UDP_MIN = 512  # the most a client without EDNS can take (RFC 1035 4.2.1)
TCP_MAX = 65535  # the two-byte length prefix (RFC 1035 4.2.2)
_ORIGIN = DNSLabel(".")
_OPCODE_QUERY = 0
_BADVERS = 16  # an extended RCODE: its upper 8 bits travel in the OPT record
_CNAME_HOPS = 8  # longest CNAME chain followed inside the zone
_DO = 0x8000  # the DNSSEC OK flag in the OPT record's TTL field

Zone = Mapping[DNSLabel, Sequence[RR]]  # name -> records; DNSLabel compares case-insensitively


def _one_line(s: object) -> str:
    return " ".join(str(s).split())


def zone_line(rr: RR) -> str:
    """One record as zone text that ``parse_records`` accepts again."""
    return f"{rr.rname} {rr.ttl} {CLASS[rr.rclass]} {QTYPE[rr.rtype]} {rr.rdata.toZone()}"


def _rdata_wire(rr: RR) -> bytes:
    buf = DNSBuffer()
    rr.rdata.pack(buf)
    return bytes(buf.data)


def same_record(a: RR, b: RR) -> bool:
    """Same name, class, type and data, whatever the TTL. By wire form:
    dnslib's own ``==`` raises for some types (LOC)."""
    return (a.rname, a.rtype, a.rclass) == (b.rname, b.rtype, b.rclass) and _rdata_wire(
        a
    ) == _rdata_wire(b)


def _below(name: DNSLabel, parent: DNSLabel) -> bool:
    """Whether ``name`` is strictly below ``parent`` (case-insensitively)."""
    n = len(parent.label)
    return len(name.label) > n and (n == 0 or DNSLabel(name.label[-n:]) == parent)


def parse_records(text: str) -> list[RR]:
    """The records of zone-file text; ElementError (one line) if any is bad."""
    if not isinstance(text, str):
        raise ElementError(f"bad resource record {text!r}: records are zone-file text")
    try:
        rrs: list[RR] = RR.fromZone(text, origin=_ORIGIN, ttl=DEFAULT_TTL)
        for rr in rrs:
            if rr.rtype == QTYPE.OPT:
                raise ValueError("OPT is not a record type for zones")
            rr.pack(DNSBuffer())  # it must also go on the wire
            rr.rdata.toZone()  # and print back for peek
    except ElementError:
        raise
    except IndexError:
        raise ElementError(f"bad resource record {text!r}: incomplete record") from None
    except Exception as e:  # dnslib raises many types for bad input
        reason = _one_line(e) or type(e).__name__
        raise ElementError(f"bad resource record {text!r}: {reason}") from None
    if not rrs:
        raise ElementError(f"bad resource record {text!r}: no record")
    return rrs


def parse_name(name: str) -> DNSLabel:
    """A name as ``unset`` takes it: relative to the root, ``""``/``@`` is the root."""
    if not isinstance(name, str):
        raise ElementError(f"bad name {name!r}: names are strings")
    name = name.strip()
    try:
        if name in ("", "@", "."):
            return _ORIGIN
        return DNSLabel(name) if name.endswith(".") else _ORIGIN.add(name)
    except Exception as e:
        raise ElementError(f"bad name {name!r}: {_one_line(e)}") from None


def lookup(zone: Zone, qname: DNSLabel, qtype: int, qclass: int) -> tuple[int, list[RR]]:
    """(RCODE, answer records) for one question."""

    def fits(r: RR, want_type: int) -> bool:
        return bool(qclass == QTYPE.ANY or r.rclass == qclass) and bool(
            want_type == QTYPE.ANY or r.rtype == want_type
        )

    rrs = zone.get(qname)
    if rrs is None:
        # an empty non-terminal (a name with records below it) exists
        exists = any(_below(name, qname) for name in zone)
        return (RCODE.NOERROR if exists else RCODE.NXDOMAIN), []
    answers = [r for r in rrs if fits(r, qtype)]
    if answers or qtype in (QTYPE.CNAME, QTYPE.ANY):
        return RCODE.NOERROR, answers
    # no record of the type: answer an alias and follow it through the zone
    seen = {qname}
    for _ in range(_CNAME_HOPS):
        cnames = [r for r in rrs if fits(r, QTYPE.CNAME)]
        if not cnames:
            break
        answers.append(cnames[0])
        target = cnames[0].rdata.label
        if target in seen:
            break
        seen.add(target)
        rrs = zone.get(target)
        if rrs is None:
            break  # the alias leaves the zone; the client goes on elsewhere
        found = [r for r in rrs if fits(r, qtype)]
        if found:
            answers.extend(found)
            break
    return RCODE.NOERROR, answers


def respond(query: bytes, zone: Zone, *, tcp: bool, udp_max: int) -> bytes | None:
    """The response to one DNS message, or None when it deserves none (not a
    parsable query). ``udp_max`` is the largest UDP response we send."""
    try:
        req = DNSRecord.parse(query)
    except Exception:  # dnslib raises many types for garbage
        return None
    h = req.header
    if h.qr:
        return None  # a response: answering it could loop between servers
    opts = [r for r in req.ar if r.rtype == QTYPE.OPT]
    reply = DNSRecord(DNSHeader(id=h.id, qr=1, opcode=h.opcode, rd=h.rd, ra=0), q=req.q)
    if opts:
        do = "do" if opts[0].ttl & _DO else ""
        reply.add_ar(EDNS0(udp_len=udp_max, flags=do))
    if tcp:
        limit = TCP_MAX
    elif opts:
        limit = max(UDP_MIN, min(opts[0].rclass, udp_max))  # RFC 6891 6.2.5: < 512 means 512
    else:
        limit = UDP_MIN
    answers: list[RR] = []
    if h.opcode != _OPCODE_QUERY:
        reply.header.rcode = RCODE.NOTIMP
    elif len(req.questions) != 1 or len(opts) > 1 or any(o.rname != _ORIGIN for o in opts):
        reply.header.rcode = RCODE.FORMERR
    elif opts and (opts[0].ttl >> 16) & 0xFF != 0:
        reply.ar[0].ttl |= (_BADVERS >> 4) << 24  # the low 4 bits (0) stay in the header
    else:
        q = req.questions[0]
        reply.header.aa = 1
        reply.header.rcode, answers = lookup(zone, q.qname, q.qtype, q.qclass)
    return _fit(reply, answers, limit)


def _fit(reply: DNSRecord, answers: list[RR], limit: int) -> bytes:
    """``reply`` with the most leading ``answers`` that fit in ``limit``
    bytes, TC set if any were left out."""

    def packed(n: int) -> bytes:
        reply.rr = answers[:n]
        wire: bytes = reply.pack()
        return wire

    out = packed(len(answers))
    if len(out) <= limit:
        return out
    reply.header.tc = 1
    best = packed(0)
    if len(best) > limit:  # not even the question fits (a huge one): header (and OPT) only
        reply.questions = []
        return packed(0)
    # the size only grows with the number of records: find the largest count that fits
    lo, hi = 0, len(answers)  # packed(lo) fits, packed(hi) does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        out = packed(mid)
        if len(out) <= limit:
            lo, best = mid, out
        else:
            hi = mid
    return best


def frame(message: bytes) -> bytes:
    """One message as it travels over TCP: a two-byte length, then the bytes."""
    if len(message) > TCP_MAX:
        raise ValueError(f"a DNS message over TCP has at most {TCP_MAX} bytes")
    return struct.pack("!H", len(message)) + message


class Deframer:
    """Cuts a TCP byte stream into the messages it carries, one at a time, so
    the reader can stop taking messages (backpressure) and resume later."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0  # start of the first message not yet taken

    def feed(self, data: bytes) -> None:
        if self._pos:  # drop taken messages once per feed: pipelining costs no quadratic copying
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def next(self) -> bytes | None:
        """The next whole message, or None until more bytes come."""
        buf, pos = self._buf, self._pos
        if len(buf) - pos < 2:
            return None
        end = pos + 2 + ((buf[pos] << 8) | buf[pos + 1])
        if len(buf) < end:
            return None
        self._pos = end
        return bytes(buf[pos + 2 : end])

    def clear(self) -> None:
        """Forget everything not yet taken."""
        self._buf.clear()
        self._pos = 0

    @property
    def pending(self) -> int:
        """Bytes received and not yet taken as messages."""
        return len(self._buf) - self._pos
