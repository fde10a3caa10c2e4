"""Membership in motion: probes other servers and feeds ``_members``.

One prober thread per known server calls its kernel's ``gossip`` every
``PERIOD``; a ticker expires members not heard of within ``TTL`` and then
closes the connection to them, so a probe stuck on a partitioned peer
returns (with NetworkError) instead of hanging forever. Layer: server.
"""
from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from ..errors import CircuitError
from ..runtime._addr import WorkerAddr
from ._members import JOIN, LEAVE, Event, Members


@dataclass(frozen=True)
class ClusterConfig:
    period: float = 0.4  # between probes of one server
    ttl: float = 2.0  # unheard for this long: gone (the original: 4 s)
    forget_after: float = 3600.0  # stop probing a departed server
    mesh_size: int = 10  # up to this many members, period and ttl as given


class Cluster:
    def __init__(self, rt: Any, server_id: str, on_event: Callable[[Event], None],
                 cfg: ClusterConfig = ClusterConfig()) -> None:
        self._rt = rt
        self.id = server_id
        self.url = rt.url
        self._cfg = cfg
        self._on_event = on_event
        self._lock = threading.Lock()
        self.members = Members(server_id, rt.url, cfg.ttl, cfg.forget_after)
        self._probers: dict[str, threading.Thread] = {}
        self._stop = threading.Event()
        self._kernels: dict[str, Any] = {}

    def start(self) -> None:
        threading.Thread(target=self._tick_loop, name="pycircuit-members", daemon=True).start()

    def stop(self) -> None:
        """Tell the others we are going (best effort), then stop probing."""
        self._stop.set()
        with self._lock:
            others = [url for _, url in self.members.alive() if url != self.url]
        threads = [threading.Thread(target=self._say_bye, args=(url,), daemon=True) for url in others]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 1.0
        for t in threads:  # bounded: a partitioned member must not delay our exit
            t.join(max(0.0, deadline - time.monotonic()))

    def _say_bye(self, url: str) -> None:
        try:
            self._kernel(url).bye(self.id)
        except CircuitError:
            pass

    # -- what the kernel calls --------------------------------------------------
    def join(self, url: str) -> str:
        """Probe ``url`` now; raises if it does not answer. Returns its ID."""
        their_id = self._probe(url)
        self._ensure_probers()
        return their_id

    def gossip_in(self, from_id: str, from_url: str) -> tuple[str, str, list]:
        with self._lock:
            self.members.learn(from_id, from_url, time.monotonic())
            alive = self.members.alive()
        self._ensure_probers()
        return self.id, self.url, alive

    def bye(self, member_id: str) -> None:
        with self._lock:
            events = self.members.forget(member_id, time.monotonic())
        self._emit(events)

    def alive(self) -> list[tuple[str, str]]:
        with self._lock:
            return self.members.alive()

    # -- machinery -------------------------------------------------------------
    def _scaled(self, seconds: float) -> float:
        """Probing is a full mesh: beyond ``mesh_size`` members, stretch the
        period and the TTL with the member count, so each server's probe
        load stays flat as the cluster grows (detection slows instead)."""
        n = len(self.members)  # no iteration: probers call this without the lock
        return seconds * max(1.0, n / self._cfg.mesh_size)

    def _kernel(self, url: str) -> Any:
        addr = WorkerAddr.parse(url)
        if self._rt.is_dead(addr.id):
            self._rt.revive(addr.id)  # servers come back after a partition heals
            self._kernels.pop(addr.id, None)
        k = self._kernels.get(addr.id)
        if k is None:
            k = self._kernels[addr.id] = self._rt.dial(addr, "circuit")
        return k

    def _probe(self, url: str) -> str:
        their_id, their_url, alive = self._kernel(url).gossip(self.id, self.url)
        now = time.monotonic()
        with self._lock:
            events = self.members.heard(their_id, their_url, now)
            for mid, murl in alive:
                self.members.learn(mid, murl, now)
        self._emit(events)
        return their_id

    def _ensure_probers(self) -> None:
        with self._lock:
            targets = self.members.targets()
            for mid, _ in targets:
                t = self._probers.get(mid)
                if t is None or not t.is_alive():
                    t = threading.Thread(target=self._probe_loop, args=(mid,), name=f"pycircuit-probe-{mid}",
                                         daemon=True)
                    self._probers[mid] = t
                    t.start()

    def _probe_loop(self, member_id: str) -> None:
        while not self._stop.is_set():
            with self._lock:
                url = self.members.url(member_id)
            if url is None:
                return  # forgotten
            try:
                self._probe(url)
            except CircuitError:
                pass  # the ticker decides when silence means gone
            self._stop.wait(self._scaled(self._cfg.period))

    def _tick_loop(self) -> None:
        while not self._stop.wait(self._scaled(self._cfg.period) / 2):
            with self._lock:
                self.members.ttl = self._scaled(self._cfg.ttl)
                events = self.members.tick(time.monotonic())
            for ev in events:
                try:
                    self._rt.drop(WorkerAddr.parse(ev.url).id)  # unblocks a stuck probe
                except CircuitError:
                    pass
            self._emit(events)
            self._ensure_probers()

    def _emit(self, events: list[Event]) -> None:
        for ev in events:
            try:
                self._on_event(ev)
            except Exception as e:  # a subscriber's failure must not stop membership
                print(f"pycircuit: membership event handler failed: {e!r}", file=sys.stderr)


__all__ = ["Cluster", "ClusterConfig", "JOIN", "LEAVE", "Event"]
