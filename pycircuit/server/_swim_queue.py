"""The SWIM core's broadcast queue (pure): pending updates, one per member,
each sent a bounded number of times, least-sent and newest first.

Updates sit in buckets by how many times they were sent, so taking the
least-sent ones costs no sort; a dict keeps insertion order, so the newest
update of a bucket is its last. When the queue is over its bound, the most-
sent update goes first: it has had the most chances to spread already.
"""

from __future__ import annotations

from ._members import Update

__all__ = ["Broadcasts"]


class Broadcasts:
    __slots__ = ("_sent", "_buckets", "_max")

    def __init__(self, buckets: int, max_pending: int) -> None:
        self._sent: dict[int, int] = {}  # member -> times its pending update was sent
        self._buckets: list[dict[int, Update]] = [{} for _ in range(buckets)]
        self._max = max_pending

    def __bool__(self) -> bool:
        return bool(self._sent)

    def __len__(self) -> int:
        return len(self._sent)

    def put(self, member: int, u: Update) -> None:
        """Queue ``u`` as member's news, replacing any older news of it."""
        self.forget(member)
        self._sent[member] = 0
        self._buckets[0][member] = u
        if len(self._sent) > self._max:
            for b in reversed(self._buckets):
                if b:
                    oldest = next(iter(b))
                    del self._sent[oldest]
                    del b[oldest]
                    break

    def forget(self, member: int) -> None:
        n = self._sent.pop(member, None)
        if n is not None:
            del self._buckets[n][member]

    def take(self, want: int, limit: int) -> tuple[Update, ...]:
        """Up to ``want`` updates, least sent and newest first; each leaves the
        queue once it has been taken ``limit`` times."""
        if not self._sent:
            return ()
        while len(self._buckets) <= limit:
            self._buckets.append({})
        picked: list[tuple[int, int]] = []
        for n, b in enumerate(self._buckets):
            for i in reversed(b):
                picked.append((n, i))
                if len(picked) == want:
                    break
            if len(picked) == want:
                break
        ups = []
        for n, i in picked:
            u = self._buckets[n].pop(i)
            ups.append(u)
            if n + 1 >= limit:
                del self._sent[i]
            else:
                self._sent[i] = n + 1
                self._buckets[n + 1][i] = u
        return tuple(ups)
