"""Direct, fuzzed tests of the wire format (``pycircuit.runtime._wire``).

Pure: no sockets, threads or rpyc. Every decoder, fed anything at all, either
succeeds or raises the project's protocol error (``WireError`` is a
``ProtocolError``); a successful decode always re-encodes to the very same
bytes (the encoding is canonical).
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pycircuit.errors import CircuitError, ProtocolError
from pycircuit.runtime import _wire as w

FUZZ = settings(max_examples=200, deadline=None)
ROUND = settings(max_examples=100, deadline=None)

handles = st.integers(0, w.MAX_HANDLE)
short_text = st.text(max_size=40)
payloads = st.binary(max_size=200)

hellos = st.builds(
    w.Hello,
    version=st.integers(0, 0xFFFF),
    runtime_id=short_text,
    url=short_text,
    role=short_text,
    want_id=short_text,
    want_pid=short_text,
)
calls = st.builds(w.Call, handle=handles, method=short_text, payload=payloads)
replies = st.builds(
    w.Reply, status=st.sampled_from([w.STATUS_OK, w.STATUS_ERROR]), ack=handles, payload=payloads
)
messages = st.tuples(
    st.sampled_from([w.MSG_REQUEST, w.MSG_REPLY, w.MSG_FAULT]),
    st.integers(0, w.MAX_SEQ),
    st.sampled_from(sorted(w.OP_NAMES)),
    payloads,
)
tokens = st.integers(1, 2**64 - 1)
lease_lists = st.lists(st.tuples(handles, st.integers(1, 2**32 - 1)), max_size=20)


# -- helpers ------------------------------------------------------------------


def enc_call(c):
    return w.encode_call(c.handle, c.method, c.payload)


def enc_reply(r):
    return w.encode_reply(r.status, r.ack, r.payload)


def reencode_hello(v):
    return w.encode_hello(v)


def reencode_call(v):
    return w.encode_call(*v)


def reencode_reply(v):
    return w.encode_reply(*v)


def reencode_leases(v):
    return w.encode_leases(v)


def reencode_export(v):
    return w.encode_export(v)


def decode_message(v):
    return (*w.decode_message_head(v), bytes(v[w.MSG_HEAD_SIZE :]))


def reencode_message(v):
    return w.encode_message(*v)


# (decoder, re-encoder of a decoded value)
DECODERS = {
    "message": (decode_message, reencode_message),
    "token": (w.decode_token, w.encode_token),
    "hello": (w.decode_hello, reencode_hello),
    "call": (w.decode_call, reencode_call),
    "reply": (w.decode_reply, reencode_reply),
    "leases": (w.decode_leases, reencode_leases),
    "export": (w.decode_export, reencode_export),
}


def check_decoder(name: str, data) -> None:
    """Decode ``data``: only ProtocolError may escape, and a decoded value must
    re-encode to exactly the input."""
    decode, reencode = DECODERS[name]
    try:
        value = decode(data)
    except ProtocolError:
        return
    assert reencode(value) == bytes(data), (name, data, value)


# -- round trips ------------------------------------------------------------------


def test_wire_errors_are_protocol_errors():
    assert issubclass(w.WireError, ProtocolError)
    assert issubclass(w.WireError, CircuitError)


@ROUND
@given(hellos)
def test_hello_round_trip(h):
    data = w.encode_hello(h)
    assert data[:3] == b"PYC"
    assert w.decode_hello(data) == h
    assert w.decode_hello(bytearray(data)) == h


def test_hello_defaults_round_trip():
    h = w.Hello(w.WIRE_VERSION, "Q0123456789abcdef", "circuit://h:1/2/Q0123456789abcdef", "worker")
    assert h.want_id == "" and h.want_pid == ""
    assert w.decode_hello(w.encode_hello(h)) == h


@ROUND
@given(calls)
def test_call_round_trip(c):
    data = enc_call(c)
    out = w.decode_call(data)
    assert out == c
    assert isinstance(out, w.Call)
    assert out.handle == c.handle and out.method == c.method and out.payload == c.payload


@ROUND
@given(replies)
def test_reply_round_trip(r):
    out = w.decode_reply(enc_reply(r))
    assert out == r
    assert isinstance(out, w.Reply)


@ROUND
@given(lease_lists)
def test_leases_round_trip(items):
    data = w.encode_leases(items)
    assert len(data) == 4 + 12 * len(items)
    assert w.decode_leases(data) == items


@ROUND
@given(payloads)
def test_export_round_trip(stream):
    blob = w.encode_export(stream)
    assert blob[:4] == b"PYCX"
    assert w.decode_export(blob) == stream
    assert w.decode_export(bytearray(blob)) == stream


# -- encoders refuse what cannot be represented ------------------------------------


@ROUND
@given(messages)
def test_message_round_trip(m):
    data = w.encode_message(*m)
    assert decode_message(data) == m
    assert data[0] not in (1, 2, 3)  # never one of RPyC's own message types


@ROUND
@given(tokens)
def test_token_round_trip(t):
    assert w.decode_token(w.encode_token(t)) == t


@pytest.mark.parametrize(
    "bad",
    [
        (0x10, 1, w.OP_CALL),
        (w.MSG_REQUEST, -1, w.OP_CALL),
        (w.MSG_REQUEST, 2**32, w.OP_CALL),
        (w.MSG_REPLY, 1, 99),
    ],
)
def test_encode_message_refuses_bad_headers(bad):
    with pytest.raises(w.WireError):
        w.encode_message(*bad, b"")


def test_encode_token_refuses_zero_and_too_big():
    for t in (0, 2**64):
        with pytest.raises(w.WireError):
            w.encode_token(t)


def test_encode_call_refuses_out_of_range_handles_and_long_names():
    with pytest.raises(w.WireError):
        w.encode_call(-1, "m", b"")
    with pytest.raises(w.WireError):
        w.encode_call(w.MAX_HANDLE + 1, "m", b"")
    with pytest.raises(w.WireError):
        w.encode_call(1, "m" * 0x10000, b"")
    # the longest name that fits still round-trips
    name = "m" * 0xFFFF
    assert w.decode_call(w.encode_call(w.MAX_HANDLE, name, b"x")) == (w.MAX_HANDLE, name, b"x")


def test_encode_hello_refuses_long_strings():
    with pytest.raises(w.WireError):
        w.encode_hello(w.Hello(w.WIRE_VERSION, "x" * 0x10000, "", ""))
    # the limit is in UTF-8 bytes, not characters
    with pytest.raises(w.WireError):
        w.encode_hello(w.Hello(w.WIRE_VERSION, "", "é" * 0x8000, ""))


@pytest.mark.parametrize("item", [(-1, 1), (w.MAX_HANDLE + 1, 1), (1, 0), (1, -1), (1, 2**32)])
def test_encode_leases_refuses_out_of_range(item):
    with pytest.raises(w.WireError):
        w.encode_leases([item])


# -- specific malformed frames -------------------------------------------------------


def test_decode_leases_rejects_zero_count_and_bad_length():
    zero = struct.pack("!IQI", 1, 7, 0)
    with pytest.raises(w.WireError, match="zero"):
        w.decode_leases(zero)
    with pytest.raises(w.WireError):
        w.decode_leases(struct.pack("!IQI", 2, 7, 1))  # count says 2, holds 1
    with pytest.raises(w.WireError):
        w.decode_leases(w.encode_leases([(7, 1)]) + b"\0")
    assert w.decode_leases(struct.pack("!I", 0)) == []


def test_decode_call_rejects_unknown_kind_and_bad_utf8():
    good = w.encode_call(5, "go", b"payload")
    with pytest.raises(w.WireError, match="kind"):
        w.decode_call(b"\x02" + good[1:])
    bad_name = struct.pack("!BQH", w.KIND_CALL, 5, 2) + b"\xff\xfe"
    with pytest.raises(w.WireError, match="UTF-8"):
        w.decode_call(bad_name)


def test_decode_reply_rejects_unknown_status():
    with pytest.raises(w.WireError, match="status"):
        w.decode_reply(struct.pack("!BQ", 2, 0))


def test_decode_hello_rejects_trailing_bytes_and_bad_magic():
    data = w.encode_hello(w.Hello(w.WIRE_VERSION, "a", "b", "c"))
    with pytest.raises(w.WireError, match="trailing"):
        w.decode_hello(data + b"\0")
    with pytest.raises(w.WireError):
        w.decode_hello(b"PYX" + data[3:])
    with pytest.raises(w.WireError):
        w.decode_hello(data[:4])


@pytest.mark.parametrize("name", sorted(DECODERS))
@pytest.mark.parametrize("junk", [None, "PYC", 12, [1, 2], memoryview(b"PYC\0\1")])
def test_decoders_reject_non_bytes_with_wire_error(name, junk):
    with pytest.raises(w.WireError):
        DECODERS[name][0](junk)


@ROUND
@given(calls, replies, lease_lists)
def test_decoders_take_views_and_hand_out_views_of_the_payload(c, r, items):
    # A large frame arrives as a bytearray and is decoded through a
    # memoryview: the same values, and the payload is not copied.
    for buf in (bytearray(enc_call(c)), memoryview(bytearray(enc_call(c)))):
        got = w.decode_call(memoryview(buf))
        assert (got.handle, got.method, bytes(got.payload)) == (c.handle, c.method, c.payload)
        assert isinstance(got.payload, memoryview)
    got = w.decode_reply(memoryview(bytearray(enc_reply(r))))
    assert (got.status, got.ack, bytes(got.payload)) == tuple(r)
    assert w.decode_leases(memoryview(w.encode_leases(items))) == items


@ROUND
@given(calls, replies)
def test_parts_join_to_the_encoding(c, r):
    assert b"".join(w.call_parts(c.handle, c.method, c.payload)) == enc_call(c)
    assert w.call_parts(c.handle, c.method, c.payload)[1] is c.payload  # never copied
    assert b"".join(w.reply_parts(*r)) == enc_reply(r)


# -- version checks ---------------------------------------------------------------------


def test_hello_carries_a_foreign_version_and_check_version_names_both():
    other = w.WIRE_VERSION + 1
    h = w.decode_hello(w.encode_hello(w.Hello(other, "Q1", "circuit://x:1/1/Q1", "worker")))
    assert h.version == other  # decoding does not judge; check_version does
    w.check_version(w.WIRE_VERSION, w.WIRE_VERSION)  # same version: no error
    with pytest.raises(ProtocolError) as ei:
        w.check_version(w.WIRE_VERSION, h.version)
    msg = str(ei.value)
    assert f"version {w.WIRE_VERSION}" in msg and f"version {other}" in msg


@FUZZ
@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF))
def test_check_version_fuzz(mine, theirs):
    if mine == theirs:
        w.check_version(mine, theirs)
    else:
        with pytest.raises(ProtocolError) as ei:
            w.check_version(mine, theirs)
        assert str(mine) in str(ei.value) and str(theirs) in str(ei.value)


def test_export_of_another_version_is_refused_naming_both():
    other = w.WIRE_VERSION + 7
    blob = b"PYCX" + struct.pack("!H", other) + b"stream"
    with pytest.raises(ProtocolError) as ei:
        w.decode_export(blob)
    assert str(w.WIRE_VERSION) in str(ei.value) and str(other) in str(ei.value)


# -- fuzzing -------------------------------------------------------------------------------


@FUZZ
@given(st.sampled_from(sorted(DECODERS)), st.binary(max_size=120))
@example("hello", b"PYC")
@example("hello", b"PYC\0\1")
@example("call", b"\x01" + b"\0" * 10)
@example("leases", b"\xff\xff\xff\xff")
@example("export", b"PYCX\0")
@example("message", b"\x50\0\0\0\1\2")
@example("token", b"\0" * 8)
def test_decoders_on_arbitrary_bytes(name, data):
    check_decoder(name, data)


@FUZZ
@given(
    st.sampled_from(sorted(DECODERS)),
    st.sampled_from([b"PYC", b"PYCX", b"\x01", b"\x00", b"\x00\x00\x00\x01"]),
    st.binary(max_size=80),
)
def test_decoders_on_plausible_prefixes(name, prefix, rest):
    check_decoder(name, prefix + rest)


def valid_frames():
    return st.one_of(
        hellos.map(lambda h: ("hello", w.encode_hello(h))),
        calls.map(lambda c: ("call", enc_call(c))),
        replies.map(lambda r: ("reply", enc_reply(r))),
        lease_lists.map(lambda items: ("leases", w.encode_leases(items))),
        payloads.map(lambda p: ("export", w.encode_export(p))),
        messages.map(lambda m: ("message", w.encode_message(*m))),
        tokens.map(lambda t: ("token", w.encode_token(t))),
    )


@FUZZ
@given(valid_frames(), st.data())
def test_truncated_frames(frame, data):
    name, blob = frame
    cut = data.draw(st.integers(0, len(blob)), label="cut")
    check_decoder(name, blob[:cut])


@FUZZ
@given(valid_frames(), st.data())
def test_bit_flipped_frames(frame, data):
    name, blob = frame
    if not blob:
        return
    flips = data.draw(
        st.lists(st.integers(0, len(blob) * 8 - 1), min_size=1, max_size=4), label="flips"
    )
    buf = bytearray(blob)
    for bit in flips:
        buf[bit // 8] ^= 1 << (bit % 8)
    check_decoder(name, bytes(buf))


@FUZZ
@given(valid_frames(), st.binary(min_size=1, max_size=16))
def test_frames_with_appended_junk(frame, junk):
    name, blob = frame
    check_decoder(name, blob + junk)
    if name in ("hello", "leases"):  # length-exact frames refuse trailing bytes
        with pytest.raises(w.WireError):
            DECODERS[name][0](blob + junk)


@FUZZ
@given(valid_frames(), st.sampled_from(sorted(DECODERS)))
def test_frames_fed_to_the_wrong_decoder(frame, other):
    _, blob = frame
    check_decoder(other, blob)
