"""Nameserver elements: a small authoritative DNS server over UDP.

Standalone and thread-safe; the server's kernel service wraps it.

Records are given in zone-file syntax (parsed by dnslib), relative names are
qualified against the root origin ``.`` and a record without a TTL gets 3600.
Records accumulate per name; ``unset`` drops every record of a name.

Queries are answered by type (the original answered the first record of a
name whatever the type, and nothing at all for unknown names): all records of
the name and type, every record of the name for ``ANY``, NOERROR with an
empty answer for a name without records of that type and NXDOMAIN for a name
that does not exist. Every answer is authoritative. A name whose only
matching record is a CNAME answers with the CNAME, followed through this
server's own records. Packets that are not well-formed queries are ignored.
"""
from __future__ import annotations

import selectors
import socket
import threading

from dnslib import CLASS, EDNS0, QTYPE, RCODE, RR, DNSBuffer, DNSHeader, DNSLabel, DNSRecord

from ..errors import ElementError

__all__ = ["DnsElement"]

DEFAULT_TTL = 3600
_ORIGIN = DNSLabel(".")
_OPCODE_QUERY = 0
_UDP_MIN = 512          # the most a client without EDNS can take
_UDP_MAX = 4096         # the most we send to an EDNS client (and advertise)
_CNAME_HOPS = 8         # longest CNAME chain followed inside our own records


def _one_line(s: object) -> str:
    return " ".join(str(s).split())


def _parse_addr(addr: str | None) -> tuple[str, int, str]:
    """(host, port, text for error messages) of "HOST:PORT", "HOST", "[V6]:PORT"
    or ""/None (127.0.0.1, a free port). An empty host means 127.0.0.1."""
    if addr is None or addr == "":
        return "127.0.0.1", 0, "127.0.0.1:0"
    if not isinstance(addr, str):
        raise ElementError(f"cannot listen on {addr!r}: the address must be a string \"HOST:PORT\"")
    s = addr.strip()
    port_s = ""
    if s.startswith("["):
        end = s.find("]")
        if end < 0 or (s[end + 1:] and not s[end + 1:].startswith(":")):
            raise ElementError(f"cannot listen on {addr}: malformed address")
        host, port_s = s[1:end], s[end + 2:]
    elif s.count(":") == 1:
        host, port_s = s.split(":")
    else:  # "HOST", or a bare IPv6 address
        host = s
    if port_s:
        if not port_s.isdigit() or int(port_s) > 65535:
            raise ElementError(f"cannot listen on {addr}: bad port {port_s!r}")
        port = int(port_s)
    else:
        port = 0
    return host or "127.0.0.1", port, addr


def _join_hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _zone_line(rr: RR) -> str:
    """One record as zone text that ``set`` accepts again."""
    return f"{rr.rname} {rr.ttl} {CLASS[rr.rclass]} {QTYPE[rr.rtype]} {rr.rdata.toZone()}"


def _below(name: DNSLabel, parent: DNSLabel) -> bool:
    """Whether ``name`` is strictly below ``parent`` (case-insensitively)."""
    n = len(parent.label)
    return len(name.label) > n and (n == 0 or DNSLabel(name.label[-n:]) == parent)


def _parse_records(text: str) -> list[RR]:
    if not isinstance(text, str):
        raise ElementError(f"bad resource record {text!r}: records are zone-file text")
    try:
        rrs = RR.fromZone(text, origin=_ORIGIN, ttl=DEFAULT_TTL)
        for rr in rrs:
            if rr.rtype == QTYPE.OPT:
                raise ValueError("OPT is not a record type for zones")
            rr.pack(DNSBuffer())  # it must also go on the wire
            rr.rdata.toZone()     # and print back for peek
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


def _parse_name(name: str) -> DNSLabel:
    if not isinstance(name, str):
        raise ElementError(f"bad name {name!r}: names are strings")
    name = name.strip()
    try:
        if name in ("", "@", "."):
            return _ORIGIN
        return DNSLabel(name) if name.endswith(".") else _ORIGIN.add(name)
    except Exception as e:
        raise ElementError(f"bad name {name!r}: {_one_line(e)}") from None


class DnsElement:
    kind = "dns"

    def __init__(self, addr: str | None = None) -> None:
        self._host, self._port, self._addr_text = _parse_addr(addr)
        self._lock = threading.Lock()
        # name -> records, in the order they were set; DNSLabel compares and
        # hashes case-insensitively, so "WWW." and "www." are one name
        self._records: dict[DNSLabel, list[RR]] = {}
        self._sock: socket.socket | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._address = _join_hostport(self._host, self._port)
        self._scrubbed = False

    # -- life cycle ---------------------------------------------------------

    def start(self) -> None:
        """Bind the UDP socket and serve in a daemon thread."""
        with self._lock:
            if self._scrubbed:
                raise ElementError("nameserver scrubbed")
            if self._sock is not None:
                raise ElementError("nameserver already started")
            sock = self._bind()
            try:
                sock.setblocking(False)
                self._wake_r, self._wake_w = socket.socketpair()
            except OSError:
                sock.close()
                raise
            self._sock = sock
            host, port = sock.getsockname()[:2]
            self._address = _join_hostport(host, port)
            self._thread = threading.Thread(target=self._serve, name=f"dns {self._address}",
                                            daemon=True)
            self._thread.start()

    def _bind(self) -> socket.socket:
        try:
            infos = socket.getaddrinfo(self._host, self._port, socket.AF_UNSPEC,
                                       socket.SOCK_DGRAM, 0, socket.AI_PASSIVE)
        except (socket.gaierror, UnicodeError, OSError) as e:
            raise ElementError(f"cannot listen on {self._addr_text}: {_one_line(e)}") from None
        if not infos:
            raise ElementError(f"cannot listen on {self._addr_text}: no such address")
        family, type_, proto, _, sockaddr = infos[0]
        try:
            sock = socket.socket(family, type_, proto)
        except OSError as e:
            raise ElementError(f"cannot listen on {self._addr_text}: {_one_line(e.strerror or e)}") from None
        try:
            sock.bind(sockaddr)
        except OSError as e:
            sock.close()
            raise ElementError(f"cannot listen on {self._addr_text}: {_one_line(e.strerror or e)}") from None
        return sock

    def scrub(self) -> None:
        """Stop serving and release the port. Idempotent; returns once the
        port is free."""
        with self._lock:
            if self._scrubbed:
                return
            self._scrubbed = True
            thread, sock = self._thread, self._sock
            wake_r, wake_w = self._wake_r, self._wake_w
        if thread is None:
            return  # never started
        try:
            wake_w.send(b"x")
        except OSError:
            pass
        if thread is not threading.current_thread():
            thread.join()
        for s in (sock, wake_r, wake_w):
            try:
                s.close()
            except OSError:
                pass

    @property
    def address(self) -> str:
        """"HOST:PORT" actually bound (the requested address before ``start``)."""
        return self._address

    # -- records ------------------------------------------------------------

    def set(self, rr: str) -> None:
        """Add the records of zone-file text ``rr`` (one or more lines)."""
        rrs = _parse_records(rr)
        with self._lock:
            if self._scrubbed:
                raise ElementError("nameserver scrubbed")
            for r in rrs:
                have = self._records.setdefault(r.rname, [])
                for i, old in enumerate(have):
                    if old == r:  # same name, class, type and data (dnslib ignores the TTL)
                        have[i] = r  # a duplicate only updates the TTL
                        break
                else:
                    have.append(r)

    def unset(self, name: str) -> None:
        """Remove every record of ``name``; an unknown name is no error."""
        label = _parse_name(name)
        with self._lock:
            if self._scrubbed:
                raise ElementError("nameserver scrubbed")
            self._records.pop(label, None)

    def peek(self) -> dict:
        with self._lock:
            recs = {str(rrs[0].rname): [_zone_line(r) for r in rrs]
                    for rrs in self._records.values() if rrs}
            return {"Address": self._address, "Records": recs}

    def describe(self) -> dict:
        return {"kind": self.kind, **self.peek()}

    # -- serving ------------------------------------------------------------

    def _serve(self) -> None:
        sock, wake = self._sock, self._wake_r
        sel = selectors.DefaultSelector()
        try:
            sel.register(sock, selectors.EVENT_READ)
            sel.register(wake, selectors.EVENT_READ)
            while True:
                ready = {key.fileobj for key, _ in sel.select()}
                if wake in ready:
                    return
                try:
                    data, peer = sock.recvfrom(65535)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    if self._scrubbed:
                        return
                    continue  # e.g. an ICMP error reported on the socket
                try:
                    reply = self._answer(data)
                except Exception:
                    reply = None  # never let one packet stop the server
                if reply is not None:
                    try:
                        sock.sendto(reply, peer)
                    except OSError:
                        pass
        finally:
            sel.close()

    def _answer(self, data: bytes) -> bytes | None:
        """The reply to one datagram, or None to ignore it."""
        try:
            req = DNSRecord.parse(data)
        except Exception:
            return None
        h = req.header
        if h.qr:
            return None  # a response: answering it could loop between servers
        opt = next((r for r in req.ar if r.rtype == QTYPE.OPT), None)
        limit = _UDP_MIN if opt is None else max(_UDP_MIN, min(int(opt.rclass), _UDP_MAX))
        reply = DNSRecord(DNSHeader(id=h.id, qr=1, opcode=h.opcode, rd=h.rd, ra=0), q=req.q)
        if opt is not None:
            reply.add_ar(EDNS0(udp_len=_UDP_MAX))
        if h.opcode != _OPCODE_QUERY:
            reply.header.rcode = RCODE.NOTIMP
        elif len(req.questions) != 1:
            reply.header.rcode = RCODE.FORMERR
        else:
            q = req.questions[0]
            reply.header.aa = 1
            rcode, answers = self._lookup(q.qname, q.qtype, q.qclass)
            reply.header.rcode = rcode
            for rr in answers:
                reply.add_answer(rr)
        out = reply.pack()
        if len(out) > limit:  # the client must ask again over a bigger channel
            reply.rr = []
            reply.header.tc = 1
            out = reply.pack()
        return out

    def _lookup(self, qname: DNSLabel, qtype: int, qclass: int) -> tuple[int, list[RR]]:
        def fits(r: RR, want_type: int) -> bool:
            return ((qclass == QTYPE.ANY or r.rclass == qclass)
                    and (want_type == QTYPE.ANY or r.rtype == want_type))

        with self._lock:
            rrs = self._records.get(qname)
            if rrs is None:
                # an empty non-terminal (a name with records below it) exists
                exists = any(_below(name, qname) for name in self._records)
                return (RCODE.NOERROR if exists else RCODE.NXDOMAIN), []
            answers = [r for r in rrs if fits(r, qtype)]
            if answers or qtype in (QTYPE.CNAME, QTYPE.ANY):
                return RCODE.NOERROR, answers
            # no record of the type: answer an alias and follow it through our records
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
                rrs = self._records.get(target)
                if rrs is None:
                    break  # the alias leaves our records; the client goes on elsewhere
                found = [r for r in rrs if fits(r, qtype)]
                if found:
                    answers.extend(found)
                    break
            return RCODE.NOERROR, answers
