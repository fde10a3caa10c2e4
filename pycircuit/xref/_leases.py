"""Owner-side reference-lease bookkeeping (pure: no sockets, threads or rpyc).

An owner keeps each object it has handed out in a table under a 64-bit handle.
An entry is kept alive by

* *pins*: live local ``X`` objects in the owner itself,
* *leases*: per holder (a remote runtime id), how many times the reference was
  sent to that holder and not yet released,
* being *permanent*.

Holders release what they received (counts, so a release racing a new send is
harmless); a holder that dies loses all its leases at once. An entry with no
pins, no leases and not permanent is freed. The caller serialises access.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from collections.abc import Callable


NOT_HELD = object()  # what LeaseTable.find returns for a handle it does not hold


@dataclass
class _Entry:
    obj: Any
    perm: bool
    pins: int = 0
    leases: Counter[str] = field(default_factory=Counter)


class LeaseTable:
    def __init__(self, new_handle: Callable[[], int] | None = None) -> None:
        self._new_handle = new_handle or (lambda: int.from_bytes(os.urandom(8), "big") or 1)
        self._entries: dict[int, _Entry] = {}
        self._by_obj: dict[tuple[int, bool], int] = {}
        self._by_holder: dict[str, Counter[int]] = {}

    # -- registration -----------------------------------------------------
    def register(self, obj: Any, perm: bool) -> int:
        """Enter ``obj`` (once per object and kind) and pin it once."""
        key = (id(obj), perm)
        h = self._by_obj.get(key)
        if h is None:
            h = self._new_handle()
            while h in self._entries or h == 0:
                h = self._new_handle()
            self._entries[h] = _Entry(obj, perm)
            self._by_obj[key] = h
        self._entries[h].pins += 1
        return h

    def add_static(self, handle: int, obj: Any) -> None:
        """A permanent entry at a fixed handle (built-in services)."""
        if handle in self._entries:
            raise KeyError(f"handle {handle:#x} taken")
        self._entries[handle] = _Entry(obj, True)
        self._by_obj[(id(obj), True)] = handle

    def pin(self, handle: int) -> None:
        self._entries[handle].pins += 1

    def unpin(self, handle: int) -> bool:
        e = self._entries.get(handle)
        if e is None or e.pins == 0:
            return False
        e.pins -= 1
        return self._maybe_free(handle)

    # -- leases -------------------------------------------------------------
    def grant(self, handle: int, holder: str, n: int = 1) -> None:
        e = self._entries[handle]  # KeyError: not (or no longer) here
        e.leases[holder] += n
        self._by_holder.setdefault(holder, Counter())[handle] += n

    def release(self, handle: int, holder: str, n: int) -> bool:
        """Returns True if the entry was freed. Over-release is clamped."""
        e = self._entries.get(handle)
        if e is None:
            return False
        have = e.leases.get(holder, 0)
        n = min(n, have)
        if n <= 0:
            return False
        if have == n:
            del e.leases[holder]
        else:
            e.leases[holder] = have - n
        hc = self._by_holder[holder]
        if hc[handle] == n:
            del hc[handle]
            if not hc:
                del self._by_holder[holder]
        else:
            hc[handle] -= n
        return self._maybe_free(handle)

    def drop_holder(self, holder: str) -> list[int]:
        """The holder died: forget all its leases; returns the freed handles."""
        freed = []
        for handle in list(self._by_holder.pop(holder, {})):
            e = self._entries.get(handle)
            if e is not None:
                e.leases.pop(holder, None)
                if self._maybe_free(handle):
                    freed.append(handle)
        return freed

    # -- queries ----------------------------------------------------------
    def get(self, handle: int) -> Any:
        return self._entries[handle].obj

    def find(self, handle: int) -> Any:
        """The object, or NOT_HELD. One dict lookup, so it may be called
        without the lock that guards changes (it sees before or after one)."""
        e = self._entries.get(handle)
        return NOT_HELD if e is None else e.obj

    def is_perm(self, handle: int) -> bool:
        return self._entries[handle].perm

    def __contains__(self, handle: int) -> bool:
        return handle in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def holders(self, handle: int) -> dict[str, int]:
        e = self._entries.get(handle)
        return dict(e.leases) if e else {}

    def lease_count(self) -> int:
        return sum(sum(c.values()) for c in self._by_holder.values())

    def check(self) -> None:
        """Assert the internal indexes agree (for tests and fuzzing)."""
        for holder, hc in self._by_holder.items():
            assert hc, holder
            for handle, n in hc.items():
                assert n > 0 and self._entries[handle].leases[holder] == n
        for handle, e in self._entries.items():
            for holder, n in e.leases.items():
                assert n > 0 and self._by_holder[holder][handle] == n
            assert e.perm or e.pins or e.leases, handle
            assert self._by_obj[(id(e.obj), e.perm)] == handle

    def _maybe_free(self, handle: int) -> bool:
        e = self._entries[handle]
        if e.perm or e.pins or e.leases:
            return False
        del self._entries[handle]
        self._by_obj.pop((id(e.obj), e.perm), None)
        return True
