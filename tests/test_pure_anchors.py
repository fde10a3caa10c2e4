"""Direct, stateful tests of a server's anchor tree
(``pycircuit.server._anchors``). Pure: no sockets, threads or rpyc.

The model is a dict ``path tuple → element``; the anchors that exist are
exactly the non-empty prefixes of its keys (an anchor left empty disappears).
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from pycircuit.errors import ElementError
from pycircuit.server._anchors import AnchorTree, check_name, parse_path

NAMES = ["a", "b", "c"]
BAD_NAMES = ["", ".", "..", "x/y", " a", "a ", "\t", 7, None]
paths = st.lists(st.sampled_from(NAMES), min_size=1, max_size=3).map(tuple)


class Element:
    def __init__(self, n):
        self.n = n

    def __repr__(self):
        return f"E{self.n}"


class AnchorMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.tree = AnchorTree()
        self.model: dict[tuple, Element] = {}
        self.count = 0

    def _new(self) -> Element:
        self.count += 1
        return Element(self.count)

    def _anchors(self) -> set[tuple]:
        return {p[:i] for p in self.model for i in range(1, len(p) + 1)}

    @rule(path=paths)
    def set(self, path):
        el = self._new()
        if path in self.model:
            with pytest.raises(ElementError, match="already"):
                self.tree.set(list(path), el)
            assert self.tree.get(list(path)) is self.model[path]
        else:
            self.tree.set(list(path), el)
            self.model[path] = el

    @rule(path=paths, bad=st.sampled_from(BAD_NAMES), data=st.data())
    def set_bad_name(self, path, bad, data):
        at = data.draw(st.integers(0, len(path)), label="at")
        bad_path = list(path[:at]) + [bad] + list(path[at:])
        with pytest.raises(ElementError):
            self.tree.set(bad_path, self._new())
        # nothing changed: checked by the invariants

    @rule()
    def set_refused(self):
        with pytest.raises(ElementError):
            self.tree.set([], self._new())  # the server anchor itself
        with pytest.raises(ValueError):
            self.tree.set(["a"], None)

    @rule(path=paths)
    def remove(self, path):
        assert self.tree.remove(list(path)) is self.model.pop(path, None)

    @rule(path=paths)
    def remove_if_other_element(self, path):
        assert self.tree.remove(list(path), Element(-1)) is None  # not the one there

    @rule(path=paths)
    def remove_if_same_element(self, path):
        el = self.model.get(path)
        if el is None:
            return
        assert self.tree.remove(list(path), el) is el
        del self.model[path]

    @rule(path=paths)
    def get(self, path):
        assert self.tree.get(list(path)) is self.model.get(path)

    @invariant()
    def tree_matches_model(self):
        self.tree.check()
        walked = list(self.tree.walk())
        expect = [(list(p), self.model[p]) for p in sorted(self.model)]
        assert [p for p, _ in walked] == [p for p, _ in expect]
        assert all(a is b for (_, a), (_, b) in zip(walked, expect))

    @invariant()
    def children_and_anchor_existence(self):
        anchors = self._anchors()
        for parent in [()] + sorted(anchors) + [("a", "b", "c", "a")]:
            kids = self.tree.children(list(parent))
            names = sorted(
                {
                    p[len(parent)]
                    for p in anchors
                    if len(p) == len(parent) + 1 and p[: len(parent)] == parent
                }
            )
            assert list(kids) == names  # sorted, and only anchors that exist
            for name in names:
                assert kids[name] is self.model.get(parent + (name,))
        # every anchor below a missing one is missing too
        for p in [("a",), ("b", "c"), ("c", "c", "c")]:
            if p not in anchors:
                assert self.tree.children(list(p)) == {} and self.tree.get(list(p)) is None


AnchorMachine.TestCase.settings = settings(max_examples=100, stateful_step_count=40, deadline=None)
TestAnchorTree = AnchorMachine.TestCase


# -- examples ------------------------------------------------------------------------


def test_empty_anchors_disappear_up_to_the_first_nonempty_one():
    t = AnchorTree()
    e1, e2 = object(), object()
    t.set(["srv", "a"], e1)
    t.set(["srv", "a", "b", "c"], e2)
    assert t.children(["srv", "a"]) == {"b": None}
    assert t.remove(["srv", "a", "b", "c"]) is e2
    assert t.children(["srv", "a"]) == {}  # b and c went away
    assert t.children(["srv"]) == {"a": e1}  # a holds e1: kept
    assert t.remove(["srv", "a"]) is e1
    assert t.children([]) == {}
    t.check()


def test_a_bad_name_leaves_no_anchor_behind():
    t = AnchorTree()
    with pytest.raises(ElementError):
        t.set(["fresh", "bad/name"], object())
    assert t.children([]) == {}
    t.check()


def test_remove_of_missing_paths_is_harmless():
    t = AnchorTree()
    assert t.remove(["nope"]) is None
    assert t.remove([]) is None
    t.set(["a", "b"], 1)
    assert t.remove(["a"]) is None  # an anchor without element
    assert t.get(["a", "b"]) == 1


# -- parse_path / check_name -----------------------------------------------------------

valid_names = st.text(min_size=1, max_size=12).filter(
    lambda s: "/" not in s and s not in (".", "..") and s.strip() == s
)


@settings(max_examples=200, deadline=None)
@given(st.lists(valid_names, max_size=6))
def test_parse_path_round_trips_valid_names(names):
    assert parse_path("/" + "/".join(names)) == names
    assert parse_path(names) == names
    assert parse_path(tuple(names)) == names
    assert parse_path("//" + "//".join(names) + "/") == names  # empty segments are skipped
    for n in names:
        assert check_name(n) is n


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(max_size=12), st.integers(), st.none(), st.binary(max_size=4)))
def test_check_name_accepts_exactly_the_valid_names(name):
    ok = (
        isinstance(name, str)
        and name != ""
        and "/" not in name
        and name not in (".", "..")
        and name.strip() == name
    )
    if ok:
        assert check_name(name) == name
    else:
        with pytest.raises(ElementError):
            check_name(name)


@pytest.mark.parametrize(
    "path, expect",
    [
        ("/", []),
        ("/X0123456789abcdef", ["X0123456789abcdef"]),
        ("/X1/a/b", ["X1", "a", "b"]),
        ("/X1//a/", ["X1", "a"]),
        (["X1", "a"], ["X1", "a"]),
        (("X1",), ["X1"]),
        ([], []),
    ],
)
def test_parse_path_valid(path, expect):
    assert parse_path(path) == expect


@pytest.mark.parametrize(
    "path",
    [
        "",
        "X1/a",
        "a",
        "/X1/../a",
        "/X1/./a",
        "/X1/ a",
        "/X1/a ",
        ["X1", "a/b"],
        ["X1", ""],
        ["X1", ".."],
        ["X1", 3],
        [None],
        None,
        42,
        {"X1": "a"},
        b"/X1",
    ],
)
def test_parse_path_invalid(path):
    with pytest.raises(ElementError):
        parse_path(path)
