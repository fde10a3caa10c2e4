"""Direct, fuzzed tests of the value codec (``pycircuit.runtime._codec``).

Pure: no sockets, threads or rpyc. Cross-interfaces are played by ``FakeX``,
a stand-in whose own pickling refuses (as the real ``X`` does), so any
``FakeX`` that reaches the other side went through the codec's
``x_types``/``encode_x``/``decode_x`` hooks.
"""

from __future__ import annotations

import math
import pickle
import sys
import types
import uuid

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pycircuit.errors import CircuitError, ReleasedError, RemoteImportError, SerializationError
from pycircuit.runtime import _codec as codec

FUZZ = settings(max_examples=200, deadline=None)
ROUND = settings(max_examples=100, deadline=None)

SCALE = 3  # a module-level global read by a lambda under test


class FakeX:
    """A cross-interface stand-in: travels only through the codec's hooks."""

    def __init__(self, ident: int):
        self.ident = ident

    def __eq__(self, other):
        return type(other) is FakeX and other.ident == self.ident

    def __hash__(self):
        return hash(("FakeX", self.ident))

    def __repr__(self):
        return f"FakeX({self.ident})"

    def __reduce__(self):
        raise SerializationError("a FakeX must go through encode_x")


class Box:
    """An importable user class (pickled by reference, not with dill)."""

    def __init__(self, content):
        self.content = content

    def __eq__(self, other):
        return type(other) is Box and same(other.content, self.content)


class Hooks:
    """encode_x/decode_x pair that records what crossed."""

    def __init__(self):
        self.encoded: list[int] = []
        self.encoded_objs: list[FakeX] = []
        self.decoded: list[int] = []

    def encode_x(self, x: FakeX) -> tuple:
        self.encoded.append(x.ident)
        self.encoded_objs.append(x)
        return ("fake", x.ident)

    def decode_x(self, desc: tuple) -> FakeX:
        kind, ident = desc
        assert kind == "fake"
        self.decoded.append(ident)
        return FakeX(ident)


def roundtrip(value, hooks: Hooks | None = None):
    hooks = hooks or Hooks()
    blob = codec.dumps(value, (FakeX,), hooks.encode_x)
    assert isinstance(blob, bytes)
    return blob, codec.loads(blob, hooks.decode_x)


def same(a, b) -> bool:
    """Structural equality that also checks types (True is not 1, [] is not
    ()) and the sign of zero."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return a == b


def fake_xs_in(value) -> dict[int, FakeX]:
    """Distinct FakeX objects (by identity) inside lists/tuples/dicts/Boxes."""
    found: dict[int, FakeX] = {}
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, FakeX):
            found[id(v)] = v
        elif isinstance(v, (list, tuple)):
            stack.extend(v)
        elif isinstance(v, dict):
            stack.extend(v.values())
        elif isinstance(v, Box):
            stack.append(v.content)
    return found


# -- strategies -------------------------------------------------------------------

atoms = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.binary(max_size=20),
)
keys = st.one_of(
    st.text(max_size=8), st.integers(), st.booleans(), st.none(), st.binary(max_size=4)
)


def nested(leaves):
    return st.recursive(
        leaves,
        lambda kids: st.one_of(
            st.lists(kids, max_size=12),
            st.tuples(kids, kids),
            st.lists(kids, max_size=4).map(tuple),
            st.dictionaries(keys, kids, max_size=10),
        ),
        max_leaves=40,
    )


plain_values = nested(atoms)
fake_xs = st.builds(FakeX, st.integers(0, 10**6))
values_with_xs = nested(st.one_of(atoms, fake_xs, fake_xs.map(Box)))


# -- plain values ---------------------------------------------------------------


@ROUND
@given(plain_values)
@example(-0.0)
@example([0.0, -0.0, float("inf"), -float("inf")])
@example({"k": [1, 2, (3, b"4")]})
@example(list(range(100)))
def test_plain_values_round_trip_with_the_plain_tag(value):
    for x_types in ((), (FakeX,)):
        blob = codec.dumps(value, x_types)
        assert blob[:1] == codec.TAG_PLAIN
        out = codec.loads(blob)
        assert same(out, value), (value, out)
    # the plain tag is an ordinary pickle after one byte
    assert same(pickle.loads(codec.dumps(value)[1:]), value)


def test_deeply_nested_but_serialisable_value():
    v: list = []
    cur = v
    for _ in range(200):
        nxt: list = []
        cur.append(nxt)
        cur = nxt
    blob = codec.dumps(v)
    assert blob[:1] == codec.TAG_PLAIN
    assert codec.loads(blob) == v


def test_too_deeply_nested_value_is_a_serialization_error():
    v: list = []
    cur = v
    for _ in range(100_000):
        nxt: list = []
        cur.append(nxt)
        cur = nxt
    with pytest.raises(SerializationError, match="deep"):
        codec.dumps(v)


@ROUND
@given(st.frozensets(st.integers(), max_size=10))
def test_sets_and_importable_classes_round_trip(fs):
    for value in (fs, set(fs), Box(sorted(fs))):
        blob, out = roundtrip(value)
        assert blob[:1] == codec.TAG_PLAIN
        assert type(out) is type(value) and out == value


# -- dill: lambdas, closures, module references --------------------------------------


def make_adder(n):
    def add(x):
        return x + n

    return add


def make_counter():
    count = 0

    def bump():
        nonlocal count
        count += 1
        return count

    return bump


@ROUND
@given(st.integers(), st.integers())
def test_closures_travel_by_value(n, x):
    f = make_adder(n)
    blob, g = roundtrip(f)
    assert blob[:1] == codec.TAG_DILL
    assert g is not f and g(x) == n + x


@ROUND
@given(st.integers(-1000, 1000), st.text(max_size=10))
def test_lambdas_with_defaults_and_globals(k, s):
    f = lambda a, b=k: (a * SCALE + b, s)  # noqa: E731
    blob, g = roundtrip([f, {"f": f}])
    assert blob[:1] == codec.TAG_DILL
    assert g[0] is g[1]["f"]  # one function, memoised, not two copies
    assert g[0](2) == (2 * SCALE + k, s)


def test_closure_state_travels_with_the_closure():
    bump = make_counter()
    bump()
    bump()
    _, copy = roundtrip(bump)
    assert copy() == 3
    assert bump() == 3  # the original is unaffected


def test_a_referenced_module_travels_by_name_not_by_value():
    f = lambda v: math.sqrt(v) + len(codec.TAG_DILL)  # noqa: E731
    blob, g = roundtrip(f)
    assert blob[:1] == codec.TAG_DILL
    assert g(16.0) == 5.0
    assert g.__globals__["math"] is math
    assert g.__globals__["codec"] is codec  # the project module itself, not a copy of its __dict__
    assert len(blob) < 4000, len(blob)


# -- cross-interface descriptors ---------------------------------------------------


@ROUND
@given(values_with_xs)
@example(FakeX(1))
@example([[[[[[[[[[FakeX(2)]]]]]]]]]])
@example({"a": (FakeX(3), Box({"b": [FakeX(4)]}))})
def test_cross_interfaces_at_any_depth(value):
    hooks = Hooks()
    xs = fake_xs_in(value)
    blob, out = roundtrip(value, hooks)
    assert blob[:1] == (codec.TAG_PICKLE if xs else codec.TAG_PLAIN)
    assert same(out, value), (value, out)
    # exactly one encode and one decode per distinct cross-interface
    assert sorted(hooks.encoded) == sorted(x.ident for x in xs.values())
    assert sorted(hooks.decoded) == sorted(hooks.encoded)


def test_one_cross_interface_twice_is_encoded_once_and_stays_one_object():
    x = FakeX(9)
    hooks = Hooks()
    _, out = roundtrip([x, {"again": x}, (x,)], hooks)
    assert hooks.encoded == [9] and hooks.decoded == [9]
    assert out[0] is out[1]["again"] is out[2][0]


@ROUND
@given(st.lists(fake_xs, min_size=1, max_size=5), st.integers())
def test_cross_interfaces_inside_dill_values(xs, n):
    hooks = Hooks()
    captured = list(xs)
    f = lambda: (captured, n)  # noqa: E731
    blob, g = roundtrip(f, hooks)
    assert blob[:1] == codec.TAG_DILL
    assert g() == (xs, n)
    assert sorted(hooks.decoded) == sorted(x.ident for x in xs)


@ROUND
@given(st.lists(fake_xs, min_size=1, max_size=5, unique_by=lambda x: x.ident))
def test_fallback_to_dill_encodes_each_cross_interface_once(xs):
    # the fast pickler meets the Xs first, then the lambda and gives up; the
    # dill pass must not call encode_x again (the runtime grants a lease per
    # call, the receiver takes one per decoded descriptor)
    hooks = Hooks()
    blob, out = roundtrip([*xs, lambda: 1], hooks)
    assert blob[:1] == codec.TAG_DILL
    assert out[:-1] == xs and out[-1]() == 1
    assert sorted(hooks.encoded) == sorted(x.ident for x in xs)
    assert sorted(hooks.decoded) == sorted(hooks.encoded)


def test_encode_x_may_reenter_dumps():
    # encode_x that itself serialises (non-plain) values, several times in one dumps
    seen = []

    def encode_x(x):
        inner = codec.dumps({x.ident, -x.ident})  # a set: not the plain fast path
        seen.append(inner)
        return ("blob", inner)

    def decode_x(desc):
        _, inner = desc
        return FakeX(max(codec.loads(inner)))

    value = [FakeX(i) for i in range(1, 6)] + [Box([FakeX(7)])]
    blob = codec.dumps(value, (FakeX,), encode_x)
    assert len(seen) == 6
    assert codec.loads(blob, decode_x) == value
    # the per-thread pickler is still sound afterwards
    assert codec.loads(codec.dumps([{1, 2}, Box(3)])) == [{1, 2}, Box(3)]


def test_cross_interface_without_hooks_is_a_serialization_error():
    with pytest.raises(SerializationError):
        codec.dumps([FakeX(1)], (FakeX,))  # no encode_x
    with pytest.raises(SerializationError):
        codec.dumps([FakeX(1)])  # not declared as an X type: its own __reduce__ refuses
    blob = codec.dumps([FakeX(1)], (FakeX,), Hooks().encode_x)
    with pytest.raises(SerializationError):
        codec.loads(blob)  # no decode_x


def test_decode_x_errors():
    blob = codec.dumps([FakeX(1)], (FakeX,), Hooks().encode_x)

    def released(desc):
        raise ReleasedError("gone")

    def broken(desc):
        raise ValueError("bad descriptor")

    with pytest.raises(ReleasedError):  # a circuit error keeps its class
        codec.loads(blob, released)
    with pytest.raises(SerializationError, match="bad descriptor"):
        codec.loads(blob, broken)


# -- what cannot travel ---------------------------------------------------------------


def gen():
    yield 1


class RefusesToPickle:
    """Importable, but its pickling fails with a non-pickle error."""

    def __reduce__(self):
        raise ValueError("refuse")


class StateFails:
    def __getstate__(self):
        raise OSError("no state")


UNSERIALISABLE = {
    "generator": lambda: gen(),
    "genexpr": lambda: (i for i in range(3)),
    "frame": lambda: sys._getframe(),
    "reduce raises": lambda: RefusesToPickle(),
    "getstate raises": lambda: StateFails(),
}


@pytest.mark.parametrize("name", sorted(UNSERIALISABLE))
def test_unserialisable_values(name):
    with pytest.raises(SerializationError) as ei:
        codec.dumps(UNSERIALISABLE[name]())
    assert not isinstance(ei.value, RemoteImportError)


@FUZZ
@given(values_with_xs, st.sampled_from(sorted(UNSERIALISABLE)), st.data())
def test_poisoned_values_fail_cleanly_and_the_codec_recovers(value, poison, data):
    bad = UNSERIALISABLE[poison]()
    where = data.draw(st.sampled_from(["list", "dict", "tuple", "box", "lambda"]))
    wrapped = {
        "list": lambda: [value, bad],
        "dict": lambda: {"v": value, "bad": bad},
        "tuple": lambda: (bad, value),
        "box": lambda: Box([value, bad]),
        "lambda": lambda: lambda: (value, bad),
    }[where]()
    hooks = Hooks()
    with pytest.raises(SerializationError):
        codec.dumps(wrapped, (FakeX,), hooks.encode_x)
    ids = [id(x) for x in hooks.encoded_objs]
    assert len(ids) == len(set(ids))  # still at most once per X
    # the next encoding on this thread is unaffected
    blob, out = roundtrip([value])
    assert same(out, [value])


# -- a module missing on the decoding side ---------------------------------------------


@pytest.fixture
def vanishing_module():
    """A module that exists while encoding and is gone when decoding."""
    name = f"pyc_vanishing_{uuid.uuid4().hex}"
    mod = types.ModuleType(name)
    exec(
        "class Thing:\n    def __init__(self, v):\n        self.v = v\n",
        mod.__dict__,
    )
    mod.Thing.__module__ = name
    sys.modules[name] = mod
    yield name, mod
    sys.modules.pop(name, None)


def test_missing_module_is_a_remote_import_error_naming_it(vanishing_module):
    name, mod = vanishing_module
    hooks = Hooks()
    blobs = {
        codec.TAG_PLAIN: codec.dumps(mod.Thing(1)),
        codec.TAG_PICKLE: codec.dumps([mod.Thing(2), FakeX(5)], (FakeX,), hooks.encode_x),
        codec.TAG_DILL: codec.dumps([mod.Thing(3), lambda: 4], (FakeX,), hooks.encode_x),
    }
    for tag, blob in blobs.items():
        assert blob[:1] == tag
    # while the module is there, all three decode
    assert codec.loads(blobs[codec.TAG_PLAIN]).v == 1
    del sys.modules[name]
    for tag, blob in blobs.items():
        with pytest.raises(RemoteImportError) as ei:
            codec.loads(blob, hooks.decode_x)
        assert name in str(ei.value), tag
        assert isinstance(ei.value, SerializationError) and isinstance(ei.value, ImportError)


def test_missing_attribute_is_a_serialization_error(vanishing_module):
    name, mod = vanishing_module
    blob = codec.dumps(mod.Thing(1))
    del mod.Thing
    with pytest.raises(SerializationError) as ei:
        codec.loads(blob)
    assert not isinstance(ei.value, RemoteImportError)


def test_missing_submodule_of_an_existing_package():
    # a Box pickled as if its class lived in a missing submodule of pycircuit
    name = "pycircuit.no_such_module_" + uuid.uuid4().hex[:8]
    old = Box.__module__.encode()
    body = pickle.dumps(Box(1), codec._PROTO)
    i = body.index(old)
    assert body[i - 2] == 0x8C and body[i - 1] == len(old)  # SHORT_BINUNICODE
    body = body[: i - 1] + bytes([len(name)]) + name.encode() + body[i + len(old) :]
    blob = codec.TAG_PLAIN + body
    with pytest.raises(RemoteImportError, match=name.replace(".", r"\.")):
        codec.loads(blob)


# -- decoder fuzzing ---------------------------------------------------------------


def check_loads(data: bytes) -> None:
    hooks = Hooks()
    try:
        codec.loads(data, hooks.decode_x)
    except CircuitError:
        pass


def test_empty_and_unknown_tags():
    with pytest.raises(SerializationError, match="empty"):
        codec.loads(b"")
    with pytest.raises(SerializationError, match="tag"):
        codec.loads(b"x" + pickle.dumps(1))


@FUZZ
@given(st.binary(max_size=200))
def test_loads_on_arbitrary_bytes(data):
    check_loads(data)


@FUZZ
@given(
    st.sampled_from([codec.TAG_PLAIN, codec.TAG_PICKLE, codec.TAG_DILL]), st.binary(max_size=200)
)
def test_loads_on_arbitrary_bodies(tag, body):
    check_loads(tag + body)


@FUZZ
@given(values_with_xs, st.data())
def test_loads_on_damaged_streams(value, data):
    blob = codec.dumps(value, (FakeX,), Hooks().encode_x)
    cut = data.draw(st.integers(1, len(blob)), label="cut")
    check_loads(blob[:cut])
    flips = data.draw(st.lists(st.integers(8, len(blob) * 8 - 1), max_size=3), label="flips")
    buf = bytearray(blob)
    for bit in flips:
        buf[bit // 8] ^= 1 << (bit % 8)
    check_loads(bytes(buf))
