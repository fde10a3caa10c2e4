"""Direct, stateful tests of the owner-side lease table
(``pycircuit.xref._leases``). Pure: no sockets, threads or rpyc.

A ``RuleBasedStateMachine`` drives a ``LeaseTable`` and a plain-dict model
side by side; after every step the table must agree with the model and pass
its own index check. Handles come from a small cycling generator that also
yields 0 and collisions, to exercise the table's handle allocation.
"""

from __future__ import annotations

import itertools
from collections import Counter

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from pycircuit.xref._leases import LeaseTable

HOLDERS = ["Qa", "Qb", "Qc"]
N_OBJECTS = 4
HANDLE_SPACE = 24  # > 2 kinds × N_OBJECTS + MAX_STATIC
MAX_STATIC = 4


class Obj:
    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return f"Obj({self.name})"


class ModelEntry:
    def __init__(self, obj, perm):
        self.obj = obj
        self.perm = perm
        self.pins = 0
        self.leases: Counter = Counter()

    def alive(self) -> bool:
        return self.perm or self.pins > 0 or sum(self.leases.values()) > 0


class LeaseMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.objects = [Obj(i) for i in range(N_OBJECTS)]
        self.table = LeaseTable(new_handle=itertools.cycle(range(HANDLE_SPACE)).__next__)
        self.model: dict[int, ModelEntry] = {}
        self.by_obj: dict[tuple[int, bool], int] = {}
        self.ever: set[int] = set()
        self.perm_handles: set[int] = set()
        self.n_static = 0

    # -- helpers -------------------------------------------------------------
    def _free_if_dead(self, handle) -> bool:
        e = self.model[handle]
        if e.alive():
            return False
        del self.model[handle]
        del self.by_obj[(id(e.obj), e.perm)]
        return True

    def _any_handle(self, data):
        return data.draw(st.sampled_from(sorted(self.ever | {HANDLE_SPACE + 100})), label="handle")

    # -- rules ---------------------------------------------------------------
    @rule(i=st.integers(0, N_OBJECTS - 1), perm=st.booleans())
    def register(self, i, perm):
        obj = self.objects[i]
        h = self.table.register(obj, perm)
        assert h != 0
        key = (id(obj), perm)
        if key in self.by_obj:
            assert h == self.by_obj[key]  # once per object and kind
        else:
            assert h not in self.model  # a fresh handle never collides
            self.model[h] = ModelEntry(obj, perm)
            self.by_obj[key] = h
        self.model[h].pins += 1
        self.ever.add(h)
        if perm:
            self.perm_handles.add(h)

    @precondition(lambda self: self.n_static < MAX_STATIC)
    @rule(h=st.integers(1, HANDLE_SPACE - 1))
    def add_static(self, h):
        obj = Obj(f"static{h}")
        if h in self.model:
            with pytest.raises(KeyError):
                self.table.add_static(h, obj)
            return
        self.table.add_static(h, obj)
        self.n_static += 1
        self.model[h] = ModelEntry(obj, True)
        self.by_obj[(id(obj), True)] = h
        self.ever.add(h)
        self.perm_handles.add(h)

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def pin(self, data):
        h = data.draw(st.sampled_from(sorted(self.model)), label="handle")
        self.table.pin(h)
        self.model[h].pins += 1

    @rule(data=st.data())
    def unpin(self, data):
        h = self._any_handle(data)
        freed = self.table.unpin(h)
        e = self.model.get(h)
        if e is None or e.pins == 0:
            assert freed is False
            return
        e.pins -= 1
        assert freed == self._free_if_dead(h)

    @rule(data=st.data(), holder=st.sampled_from(HOLDERS), n=st.integers(1, 3))
    def grant(self, data, holder, n):
        h = self._any_handle(data)
        if h not in self.model:
            with pytest.raises(KeyError):
                self.table.grant(h, holder, n)
            return
        self.table.grant(h, holder, n)
        self.model[h].leases[holder] += n

    @rule(data=st.data(), holder=st.sampled_from(HOLDERS), n=st.integers(-1, 4))
    def release(self, data, holder, n):
        h = self._any_handle(data)
        freed = self.table.release(h, holder, n)
        e = self.model.get(h)
        if e is None:
            assert freed is False
            return
        take = min(n, e.leases[holder])  # over-release is clamped
        if take <= 0:
            assert freed is False
            return
        e.leases[holder] -= take
        assert freed == self._free_if_dead(h)

    @rule(holder=st.sampled_from(HOLDERS + ["Qnobody"]))
    def drop_holder(self, holder):
        freed = self.table.drop_holder(holder)
        expect = []
        for h in sorted(self.model):
            e = self.model[h]
            if e.leases.pop(holder, 0) and self._free_if_dead(h):
                expect.append(h)
        assert sorted(freed) == expect
        assert len(freed) == len(set(freed))
        assert self.table.lease_count() == sum(sum(e.leases.values()) for e in self.model.values())

    # -- invariants ----------------------------------------------------------
    @invariant()
    def agrees_with_model(self):
        t = self.table
        t.check()
        assert len(t) == len(self.model)
        for h, e in self.model.items():
            assert h in t
            assert t.get(h) is e.obj
            assert t.is_perm(h) == e.perm
            assert t.holders(h) == {k: v for k, v in e.leases.items() if v > 0}
        for h in self.ever - set(self.model):
            assert h not in t
            assert t.holders(h) == {}
            with pytest.raises(KeyError):
                t.get(h)
        assert t.lease_count() == sum(sum(e.leases.values()) for e in self.model.values())

    @invariant()
    def permanent_entries_are_never_freed(self):
        for h in self.perm_handles:
            assert h in self.table and self.table.is_perm(h)


LeaseMachine.TestCase.settings = settings(max_examples=100, stateful_step_count=40, deadline=None)
TestLeaseTable = LeaseMachine.TestCase


# -- examples ------------------------------------------------------------------------


def test_register_pins_and_unpin_frees():
    t = LeaseTable()
    o = object()
    h = t.register(o, perm=False)
    assert h in t and t.get(h) is o and len(t) == 1
    assert t.register(o, perm=False) == h  # same object, same kind: same entry
    assert t.unpin(h) is False  # one pin left
    assert t.unpin(h) is True
    assert h not in t and len(t) == 0
    assert t.unpin(h) is False  # unknown handle: harmless


def test_same_object_permanent_and_not_are_two_entries():
    t = LeaseTable()
    o = object()
    h1 = t.register(o, perm=False)
    h2 = t.register(o, perm=True)
    assert h1 != h2 and t.is_perm(h2) and not t.is_perm(h1)
    assert t.unpin(h2) is False  # permanent: kept with no pins
    assert t.unpin(h1) is True
    assert h2 in t and h1 not in t
    t.check()


def test_leases_keep_an_entry_alive_until_the_last_release():
    t = LeaseTable()
    h = t.register(object(), perm=False)
    t.grant(h, "Qa", 2)
    t.grant(h, "Qb")
    assert t.unpin(h) is False
    assert t.holders(h) == {"Qa": 2, "Qb": 1} and t.lease_count() == 3
    assert t.release(h, "Qa", 1) is False
    assert t.release(h, "Qa", 5) is False  # clamped to the 1 left; Qb still holds it
    assert t.holders(h) == {"Qb": 1}
    assert t.release(h, "Qc", 1) is False  # never held: nothing happens
    assert t.release(h, "Qb", 1) is True
    assert h not in t and t.lease_count() == 0
    with pytest.raises(KeyError):
        t.grant(h, "Qa")  # a released handle cannot be granted again


def test_a_dying_holder_frees_only_what_it_alone_kept():
    t = LeaseTable()
    a = t.register(object(), perm=False)
    b = t.register(object(), perm=False)
    p = t.register(object(), perm=True)
    for h in (a, b, p):
        t.grant(h, "Qdead", 3)
        t.unpin(h)
    t.grant(b, "Qalive")
    assert sorted(t.drop_holder("Qdead")) == [a]
    assert a not in t and b in t and p in t
    assert t.holders(b) == {"Qalive": 1} and t.holders(p) == {}
    assert t.drop_holder("Qdead") == []  # already gone
    t.check()


def test_static_entries():
    t = LeaseTable()
    svc = object()
    t.add_static(1, svc)
    assert t.get(1) is svc and t.is_perm(1)
    with pytest.raises(KeyError):
        t.add_static(1, object())
    assert t.register(svc, perm=True) == 1  # the static entry is found by object
    assert t.unpin(1) is False and 1 in t
    t.check()


def test_handle_allocation_skips_zero_and_taken_handles():
    seq = iter([0, 5, 0, 5, 6])
    t = LeaseTable(new_handle=seq.__next__)
    assert t.register(object(), perm=False) == 5
    assert t.register(object(), perm=False) == 6
    h = LeaseTable().register(object(), perm=False)
    assert 0 < h < 2**64
