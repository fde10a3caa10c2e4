"""Finding pycircuit servers on a LAN with zeroconf (mDNS / DNS-SD).

A server announces ``_pycircuit._tcp.local.`` with its circuit URL in the TXT
property ``url``; a client browses for that type.  Both use ONE interface
only (``Zeroconf(interfaces=[ip])``, IPv4): discovery never multicasts on
interfaces it was not asked to use.

Each call owns its own ``Zeroconf`` instance, so the functions are safe to
call from several threads at once; :class:`Announcement` is safe to close
from any thread, more than once.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from dataclasses import dataclass
from collections.abc import Callable

import psutil
from zeroconf import IPVersion, ServiceBrowser, ServiceInfo, ServiceStateChange, Zeroconf

from ..errors import CircuitError
from ..runtime._addr import WorkerAddr

__all__ = [
    "SERVICE_TYPE",
    "Announcement",
    "DiscoveryConfig",
    "DiscoveryLoop",
    "announce",
    "browse",
    "interface_address",
]

SERVICE_TYPE = "_pycircuit._tcp.local."

_log = logging.getLogger(__name__)


def interface_address(name_or_ip: str) -> str:
    """The IPv4 address of interface ``name_or_ip`` ("eth0", "lo", …); an IPv4
    address is returned as is.  Raises CircuitError for an unknown interface,
    one without an IPv4 address, or an IPv6 address."""
    try:
        addr = ipaddress.ip_address(name_or_ip)
    except ValueError:  # not an address: an interface name, looked up below
        pass
    else:
        if addr.version != 4:
            raise CircuitError(f"discovery is IPv4 only; got {name_or_ip}")
        return str(addr)
    ifaces = psutil.net_if_addrs()
    if name_or_ip not in ifaces:
        raise CircuitError(
            f"no network interface or IPv4 address {name_or_ip!r} "
            f"(interfaces here: {', '.join(sorted(ifaces)) or 'none'})"
        )
    for a in ifaces[name_or_ip]:
        if a.family == socket.AF_INET:
            return a.address
    raise CircuitError(f"network interface {name_or_ip!r} has no IPv4 address")


def _zeroconf(ip: str) -> Zeroconf:
    try:
        return Zeroconf(interfaces=[ip], ip_version=IPVersion.V4Only)
    except OSError as e:
        raise CircuitError(f"cannot start zeroconf on {ip}: {e}") from e


class Announcement:
    """A registered announcement; :meth:`close` unregisters it (sending the
    mDNS goodbye) and closes its zeroconf instance."""

    def __init__(self, zc: Zeroconf, info: ServiceInfo, url: str, ip: str):
        self.url = url
        self.ip = ip
        self.name = info.name
        self._zc = zc
        self._info = info
        self._lock = threading.Lock()
        self._closed = False

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._zc.unregister_service(self._info)
            finally:
                self._zc.close()

    def __enter__(self) -> Announcement:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Announcement({self.url} on {self.ip}{', closed' if self._closed else ''})"


def announce(url: str, ip: str) -> Announcement:
    """Announce the server at circuit URL ``url`` on the interface with
    address (or name) ``ip``.  The instance is named after the URL's runtime
    ID.  Blocks for mDNS probing (about a second)."""
    addr = WorkerAddr.parse(url)
    ip = interface_address(ip)
    label = f"pycircuit-{addr.id}"
    info = ServiceInfo(
        SERVICE_TYPE,
        f"{label}.{SERVICE_TYPE}",
        port=addr.port,
        addresses=[socket.inet_aton(ip)],
        properties={"url": addr.url},
        server=f"{label}.local.",
    )
    zc = _zeroconf(ip)
    try:
        zc.register_service(info, allow_name_change=True)
    except BaseException as e:
        zc.close()
        if isinstance(e, Exception) and not isinstance(e, CircuitError):
            raise CircuitError(f"cannot announce {addr.url} on {ip}: {e}") from e
        raise
    return Announcement(zc, info, addr.url, ip)


def browse(ip: str, timeout: float = 3.0, want: int = 1) -> list[str]:
    """Circuit URLs of the servers announced on the interface with address
    (or name) ``ip``, found within ``timeout`` seconds; returns as soon as
    ``want`` are found.  Raises CircuitError when none is found."""
    if want < 1:
        raise ValueError("want must be >= 1")
    ip = interface_address(ip)
    found = _browse_once(ip, timeout, want)
    if not found:
        raise CircuitError(f"discovery on {ip} found no pycircuit server within {timeout:g} s")
    return found


def _browse_once(ip: str, timeout: float, want: int) -> list[str]:
    """What :func:`browse` finds, [] when nothing; raises only when browsing
    itself fails (zeroconf cannot start on ``ip``, …)."""
    deadline = time.monotonic() + timeout
    cond = threading.Condition()
    pending: dict[str, None] = {}  # service names seen, not yet resolved (ordered)
    found: dict[str, str] = {}  # service name -> circuit URL

    def on_change(
        zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        with cond:
            if state_change is ServiceStateChange.Removed:
                pending.pop(name, None)
                found.pop(name, None)
            else:
                pending[name] = None
            cond.notify_all()

    zc = _zeroconf(ip)
    try:
        browser = ServiceBrowser(zc, SERVICE_TYPE, handlers=[on_change])
        try:
            while True:
                with cond:
                    if len(found) >= want:
                        break
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    if not pending:
                        cond.wait(left)
                        continue
                    name = next(iter(pending))
                # Resolve outside the lock (SRV/TXT usually arrive with the PTR: a cache hit).
                info = zc.get_service_info(
                    SERVICE_TYPE, name, timeout=max(1, int(min(left, 1.0) * 1000))
                )
                url = _url_of(info)
                with cond:
                    if name in pending:
                        del pending[name]
                        if url:
                            found[name] = url
                        elif info is None:
                            pending[name] = None  # not resolved yet: retry after the others
        finally:
            browser.cancel()
    finally:
        zc.close()
    return list(dict.fromkeys(found.values()))


def _url_of(info: ServiceInfo | None) -> str | None:
    if info is None:
        return None
    raw = info.properties.get(b"url")
    if not raw:
        return None
    try:
        return WorkerAddr.parse(raw.decode("utf-8", "replace")).url
    except (
        CircuitError
    ):  # a foreign or garbled announcement of our service type: not a server to join
        return None


@dataclass(frozen=True)
class DiscoveryConfig:
    every: float = 2.0  # one browse window, seconds
    backoff_min: float = 0.5  # first wait after browsing failed
    backoff_max: float = 60.0  # the wait doubles per failure up to this


class DiscoveryLoop:
    """A server's discovery: browse ``ip`` window after window and hand each
    URL not in ``known()`` to ``join``, until ``stop`` is set.

    When browsing fails (zeroconf cannot start on the interface, …) it waits
    ``backoff_min`` doubling up to ``backoff_max`` before the next try rather
    than spin, and logs why once per change of state (failing for another
    reason, recovered).  A URL that cannot be joined is logged once per
    reason.  ``attempts`` counts browse attempts."""

    def __init__(
        self,
        ip: str,
        join: Callable[[str], object],
        known: Callable[[], set],
        stop: threading.Event,
        cfg: DiscoveryConfig = DiscoveryConfig(),
    ):
        self.ip = ip
        self.cfg = cfg
        self.attempts = 0
        self._join = join
        self._known = known
        self._stop = stop
        self._failing: str | None = None  # the reason browsing fails now
        self._join_failed: dict[str, str] = {}  # url -> reason last logged

    def start(self) -> threading.Thread:
        t = threading.Thread(target=self.run, name="pycircuit-discover", daemon=True)
        t.start()
        return t

    def run(self) -> None:
        delay = self.cfg.backoff_min
        while not self._stop.is_set():
            self.attempts += 1
            try:
                urls = _browse_once(interface_address(self.ip), self.cfg.every, 1000)
            except Exception as e:  # anything: this loop must neither die nor spin
                self._failed(e, delay)
                self._stop.wait(delay)
                delay = min(delay * 2, self.cfg.backoff_max)
                continue
            delay = self.cfg.backoff_min
            if self._failing is not None:
                _log.warning("discovery on %s works again", self.ip)
                self._failing = None
            self._join_new(urls)

    def _failed(self, e: Exception, delay: float) -> None:
        reason = f"{type(e).__name__}: {e}"
        if reason != self._failing:
            _log.warning(
                "discovery on %s fails (%s); retrying with backoff from %g s up to %g s",
                self.ip,
                reason,
                delay,
                self.cfg.backoff_max,
                exc_info=not isinstance(e, CircuitError),
            )
            self._failing = reason

    def _join_new(self, urls: list[str]) -> None:
        known = self._known()
        for url in urls:
            if url in known:
                self._join_failed.pop(url, None)
                continue
            try:
                self._join(url)
            except CircuitError as e:
                if self._join_failed.get(url) != str(e):
                    _log.warning("discovery found %s but cannot join it: %s", url, e)
                    self._join_failed[url] = str(e)
            else:
                self._join_failed.pop(url, None)
