"""The membership table (pure), driven by hypothesis against a model."""
from __future__ import annotations

import pytest
from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from pycircuit.server._members import JOIN, LEAVE, Members

IDS = ["Xa", "Xb", "Xc", "Xd"]
TTL, FORGET = 2.0, 30.0


class MembersMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.now = 0.0
        self.m = Members("Xself", "u-self", TTL, FORGET)
        self.last_ok: dict[str, float] = {}  # model: alive members and when last heard
        self.known: set[str] = set()
        self.events: dict[str, list[str]] = {i: [] for i in IDS}

    def _record(self, events):
        for ev in events:
            self.events[ev.id].append(ev.kind)

    @rule(dt=st.floats(0, 5))
    def advance(self, dt):
        self.now += dt
        events = self.m.tick(self.now)
        expected = sorted(i for i, t in self.last_ok.items() if self.now - t > TTL)
        assert sorted(e.id for e in events if e.kind == LEAVE) == expected
        assert all(e.kind == LEAVE for e in events)
        for i in expected:
            del self.last_ok[i]
        self._record(events)

    @rule(i=st.sampled_from(IDS))
    def heard(self, i):
        events = self.m.heard(i, f"u-{i}", self.now)
        was_alive = i in self.last_ok
        assert [e.kind for e in events] == ([] if was_alive else [JOIN])
        self.last_ok[i] = self.now
        self.known.add(i)
        self._record(events)

    @rule(i=st.sampled_from(IDS + ["Xself"]))
    def learn(self, i):
        self.m.learn(i, f"u-{i}", self.now)
        if i != "Xself":
            self.known.add(i)

    @rule(i=st.sampled_from(IDS))
    def bye(self, i):
        events = self.m.forget(i, self.now)
        assert [e.kind for e in events] == ([LEAVE] if i in self.last_ok else [])
        self.last_ok.pop(i, None)
        self.known.discard(i)
        self._record(events)

    @invariant()
    def alive_matches_model(self):
        alive = self.m.alive()
        assert alive == sorted([("Xself", "u-self")] + [(i, f"u-{i}") for i in self.last_ok])
        assert "Xself" not in dict(self.m.targets())

    @invariant()
    def events_alternate(self):
        for kinds in self.events.values():
            assert all(a != b for a, b in zip(kinds, kinds[1:]))
            assert not kinds or kinds[0] == JOIN


TestMembers = MembersMachine.TestCase
TestMembers.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


def test_departed_member_is_probed_again_and_rejoins():
    m = Members("Xself", "u", ttl=2.0, forget_after=100.0)
    assert m.heard("Xa", "ua", 0.0)[0].kind == JOIN
    assert [e.kind for e in m.tick(3.0)] == [LEAVE]
    assert ("Xa", "ua") in m.targets()  # still probed, so a healed partition is seen
    assert m.heard("Xa", "ua", 4.0)[0].kind == JOIN
    assert m.tick(200.0)[0].kind == LEAVE
    m.tick(400.0)
    assert m.targets() == []  # forgotten after forget_after


def test_bad_config_raises():
    with pytest.raises(ValueError):
        Members("Xself", "u", ttl=0)
