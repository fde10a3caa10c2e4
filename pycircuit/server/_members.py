"""Who is in the cluster, as one server sees it (pure: no sockets or threads).

Every server probes every server it knows of, directly (a full mesh: fine
for the tens of hosts pycircuit is for, and it makes a partition visible on
both sides at once). A member is *alive* while this server's own probes of
it succeed; one unheard of for ``ttl`` seconds leaves. Departed members are
still probed (for ``forget_after`` seconds), so a healed partition is seen
again without anyone re-joining by hand. Gossip only introduces members; it
never vouches for them.

States of a member other than ourselves::

    learned --heard--> alive --ttl passes--> departed --heard--> alive
       \\______________ forget_after passes ______________/--> forgotten
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

__all__ = ["Members", "Event", "JOIN", "LEAVE"]

JOIN, LEAVE = "join", "leave"
LEARNED, ALIVE, DEPARTED = "learned", "alive", "departed"


class Event(NamedTuple):
    kind: str  # JOIN or LEAVE
    id: str
    url: str


@dataclass
class _Member:
    url: str
    state: str
    since: float  # when it entered its state
    last_ok: float


class Members:
    def __init__(self, self_id: str, self_url: str, ttl: float = 2.0,
                 forget_after: float = 3600.0) -> None:
        if ttl <= 0 or forget_after <= 0:
            raise ValueError("ttl and forget_after must be positive")
        self.self_id, self.self_url = self_id, self_url
        self.ttl, self.forget_after = ttl, forget_after
        self._m: dict[str, _Member] = {}

    def learn(self, member_id: str, url: str, now: float) -> None:
        """Heard of ``member_id`` at ``url`` (from a join order or gossip)."""
        if member_id == self.self_id:
            return
        m = self._m.get(member_id)
        if m is None:
            self._m[member_id] = _Member(url, LEARNED, now, 0.0)
        elif m.url != url and m.state != ALIVE:
            m.url = url  # a restarted server on a new port: try the newer URL

    def heard(self, member_id: str, url: str, now: float) -> list[Event]:
        """A probe of ``member_id`` succeeded just now."""
        if member_id == self.self_id:
            return []
        m = self._m.get(member_id)
        if m is None:
            m = self._m[member_id] = _Member(url, LEARNED, now, now)
        m.url = url
        m.last_ok = now
        if m.state == ALIVE:
            return []
        m.state, m.since = ALIVE, now
        return [Event(JOIN, member_id, url)]

    def tick(self, now: float) -> list[Event]:
        """Expire members not heard of in time; forget long-gone ones."""
        events = []
        for mid in sorted(self._m):
            m = self._m[mid]
            if m.state == ALIVE and now - m.last_ok > self.ttl:
                m.state, m.since = DEPARTED, now
                events.append(Event(LEAVE, mid, m.url))
            elif m.state != ALIVE and now - m.since > self.forget_after:
                del self._m[mid]
        return events

    def forget(self, member_id: str, now: float) -> list[Event]:
        """Drop a member at once (it said it is stopping)."""
        m = self._m.pop(member_id, None)
        if m is not None and m.state == ALIVE:
            return [Event(LEAVE, member_id, m.url)]
        return []

    def alive(self) -> list[tuple[str, str]]:
        """(id, url) of live servers, this one included, sorted by ID."""
        out = [(self.self_id, self.self_url)]
        out += [(mid, m.url) for mid, m in self._m.items() if m.state == ALIVE]
        return sorted(out)

    def targets(self) -> list[tuple[str, str]]:
        """Every other server to probe: alive, learned and departed."""
        return sorted((mid, m.url) for mid, m in self._m.items())

    def url(self, member_id: str) -> str | None:
        """Where ``member_id`` is probed; None once it is forgotten."""
        m = self._m.get(member_id)
        return None if m is None else m.url

    def __len__(self) -> int:
        """Other servers known (alive, learned or departed)."""
        return len(self._m)
