"""Nameserver elements: a small authoritative DNS server over UDP and TCP.

Standalone and thread-safe; the server's kernel service wraps it. What a
query is answered with is decided by the pure ``_dns_answer`` (see there);
the sockets are ``_dns_net``'s. Records accumulate per name; ``unset`` drops
every record of a name.
"""

from __future__ import annotations

import logging
import threading

from dnslib import RR, DNSLabel

from ..errors import ElementError
from ._dns_answer import parse_name, parse_records, respond, same_record, zone_line
from ._dns_net import DnsConfig, DnsSockets

__all__ = ["DnsElement", "DnsConfig"]

log = logging.getLogger(__name__)


class DnsElement:
    kind = "dns"

    def __init__(self, addr: str | None = None, config: DnsConfig | None = None) -> None:
        self._cfg = config or DnsConfig()
        self._net = DnsSockets(addr, self._cfg, self._answer)
        self._lock = threading.Lock()
        # name -> records, in the order they were set; DNSLabel compares and
        # hashes case-insensitively, so "WWW." and "www." are one name
        self._records: dict[DNSLabel, list[RR]] = {}
        self._started = False
        self._scrubbed = False

    # -- life cycle ---------------------------------------------------------

    def start(self) -> None:
        """Bind UDP and TCP on one port and serve in a daemon thread."""
        with self._lock:
            if self._scrubbed:
                raise ElementError("nameserver scrubbed")
            if self._started:
                raise ElementError("nameserver already started")
            self._net.start()
            self._started = True

    def scrub(self) -> None:
        """Stop serving, close the TCP listener and its connections and
        release the port. Idempotent; returns once the port is free."""
        with self._lock:
            if self._scrubbed:
                return
            self._scrubbed = True
        self._net.stop()  # outside the lock: the serving thread takes it to answer

    @property
    def address(self) -> str:
        """ "HOST:PORT" actually bound (the requested address before ``start``)."""
        return self._net.address

    # -- records ------------------------------------------------------------

    def set(self, rr: str) -> None:
        """Add the records of zone-file text ``rr`` (one or more lines)."""
        rrs = parse_records(rr)
        with self._lock:
            if self._scrubbed:
                raise ElementError("nameserver scrubbed")
            for r in rrs:
                have = self._records.setdefault(r.rname, [])
                for i, old in enumerate(have):
                    if same_record(old, r):
                        have[i] = r  # a duplicate only updates the TTL
                        break
                else:
                    have.append(r)

    def unset(self, name: str) -> None:
        """Remove every record of ``name``; an unknown name is no error."""
        label = parse_name(name)
        with self._lock:
            if self._scrubbed:
                raise ElementError("nameserver scrubbed")
            self._records.pop(label, None)

    def peek(self) -> dict:
        with self._lock:
            recs = {
                str(rrs[0].rname): [zone_line(r) for r in rrs]
                for rrs in self._records.values()
                if rrs
            }
            return {"Address": self._net.address, "Records": recs}

    def describe(self) -> dict:
        return {"kind": self.kind, **self.peek()}

    # -- answering ----------------------------------------------------------

    def _answer(self, msg: bytes, tcp: bool) -> bytes | None:
        try:
            with self._lock:
                return respond(msg, self._records, tcp=tcp, udp_max=self._cfg.udp_max)
        except Exception:  # a bug, not the client's fault; one message must not stop the server
            log.exception("nameserver %s: failed to answer a message", self._net.address)
            return None
