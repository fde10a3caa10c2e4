"""What membership reports and knows (pure): member states, update records,
events, the messages of the SWIM core (``_swim``), its suspicion timer, and
the directory that names members by small integers.

The SWIM core (``_swim``) keeps its view of every member in flat arrays
indexed through a :class:`Directory`, so a view of 10,000 members costs tens
of kilobytes, not a dictionary of objects; a simulator may share one
directory between many cores (member IDs and URLs are facts, not views).
"""

from __future__ import annotations

import math
from typing import NamedTuple

__all__ = [
    "UNKNOWN",
    "ALIVE",
    "SUSPECT",
    "DEAD",
    "LEFT",
    "STATE_NAMES",
    "Update",
    "Event",
    "Directory",
    "JOIN",
    "BACK",
    "SUSPECTED",
    "DIED",
    "LEFT_EV",
    "LEAVE_KINDS",
    "Ping",
    "Ack",
    "PingReq",
    "Nack",
    "Sync",
    "Gossip",
    "Message",
    "Out",
    "Suspicion",
]

UNKNOWN, ALIVE, SUSPECT, DEAD, LEFT = 0, 1, 2, 3, 4
STATE_NAMES = {UNKNOWN: "unknown", ALIVE: "alive", SUSPECT: "suspect", DEAD: "dead", LEFT: "left"}

# Event kinds: "join" (a member became alive from unknown, dead or left),
# "alive" (a suspect refuted), "suspect", "dead", "left".
JOIN, BACK, SUSPECTED, DIED, LEFT_EV = "join", "alive", "suspect", "dead", "left"
LEAVE_KINDS = frozenset({DIED, LEFT_EV})


class Update(NamedTuple):
    """One fact about one member, as gossiped and as exchanged in full-state
    syncs. ``frm`` names the suspecting member of a SUSPECT update ("" else)."""

    state: int
    id: str
    url: str
    inc: int
    frm: str = ""


class Event(NamedTuple):
    kind: str
    id: str
    url: str


class Directory:
    """Member ID <-> small integer, with each member's URL (the latest one
    heard of: a restarted server may come back on another port)."""

    __slots__ = ("ids", "urls", "index", "by_url")

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.urls: list[str] = []
        self.index: dict[str, int] = {}
        self.by_url: dict[str, int] = {}

    def intern(self, member_id: str, url: str) -> int:
        i = self.index.get(member_id)
        if i is None:
            i = self.index[member_id] = len(self.ids)
            self.ids.append(member_id)
            self.urls.append(url)
            self.by_url[url] = i
        elif url and self.urls[i] != url:
            self.urls[i] = url
            self.by_url[url] = i
        return i

    def __len__(self) -> int:
        return len(self.ids)


# -- the messages of the SWIM core ----------------------------------------------------
class Ping(NamedTuple):
    seq: int
    # the member ID meant: a new process at an old address does not answer for the old one
    target: str
    updates: tuple[Update, ...]


class Ack(NamedTuple):
    seq: int
    updates: tuple[Update, ...]


class PingReq(NamedTuple):
    seq: int
    target: str
    target_url: str
    updates: tuple[Update, ...]


class Nack(NamedTuple):
    seq: int


class Sync(NamedTuple):
    reply: bool  # an answer to a sync (not answered again)
    first: bool  # the first chunk of a state: answered with ours
    entries: tuple[Update, ...]


class Gossip(NamedTuple):
    updates: tuple[Update, ...]


Message = Ping | Ack | PingReq | Nack | Sync | Gossip


class Out:
    __slots__ = ("sends", "events")

    def __init__(self) -> None:
        self.sends: list[tuple[str, Message]] = []
        self.events: list[Event] = []


class Suspicion:
    """A suspicion's timer: from ``hi`` down to ``lo`` as ``k`` independent
    confirmations arrive (Lifeguard)."""

    __slots__ = ("start", "inc", "lo", "hi", "k", "confirmers", "deadline")

    def __init__(self, start: float, inc: int, lo: float, hi: float, k: int, frm: str) -> None:
        self.start, self.inc, self.lo, self.hi, self.k = start, inc, lo, hi, k
        self.confirmers = {frm}
        self.deadline = start + (lo if k <= 0 else hi)

    def confirm(self, frm: str) -> bool:
        if frm in self.confirmers:
            return False
        self.confirmers.add(frm)
        c = len(self.confirmers) - 1
        if self.k > 0:
            frac = math.log(c + 1) / math.log(self.k + 1)
            self.deadline = self.start + max(self.lo, self.hi - (self.hi - self.lo) * frac)
        return True
