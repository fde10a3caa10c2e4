"""The pycircuit wire format (pure: bytes in, values out; no sockets, threads
or rpyc).

RPyC's channel carries the frames (its length header and framing); inside
an RPyC frame, a first byte of 1–3 is one of RPyC's own messages and
``MSG_*`` below is one of ours: a request, its reply or its fault, with a
sequence number and an operation code. So a cross-call costs one frame each
way, and neither brine nor RPyC's boxing ever sees user values or our
frames. All integers are big-endian.

=========  ==================================================================
frame      layout
=========  ==================================================================
MESSAGE    ``u8 type, u32 seq, u8 op`` then the body: a REQUEST body is one
           of the frames below (by op: 1 HELLO, 2 CALL, 3 and 4 LEASES
           for release and acquire, 5 an u64 ack token); a REPLY body is
           the handler's answer (HELLO, REPLY, LEASES, or empty); a FAULT
           body is UTF-8 text saying why the request failed. Seq 0 asks for
           no reply (a post); replies echo the request's seq and op.
HELLO      ``b"PYC" u16 version`` then five length-prefixed UTF-8 strings:
           runtime id, url, role, wanted id (``""``: any), wanted pid (text)
CALL       ``u8 kind=1, u64 handle, u16 len, method (UTF-8), payload``
REPLY      ``u8 status (0 ok, 1 error), u64 ack token (0: none), payload``
LEASES     ``u32 n`` then n × ``(u64 handle, u32 count)`` (acquire/release)
EXPORT     ``b"PYCX" u16 version``, value stream of ``(payload, stack text)``
XREF       (inside a value stream, through the pickler's reducer hook) the
           tuple ``(owner host, port, pid, runtime id, handle, permanent)``
=========  ==================================================================

``payload`` is a value stream (see ``_codec``). The version is checked when
two runtimes meet; peers of other versions refuse each other naming both.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import NamedTuple

from ..errors import ProtocolError, SerializationError
from ._addr import WorkerAddr

WIRE_VERSION = 1
_MAGIC = b"PYC"

KIND_CALL = 1

MSG_REQUEST = 0x50  # RPyC's own message types are 1, 2 and 3
MSG_REPLY = 0x51
MSG_FAULT = 0x52
OP_HELLO, OP_CALL, OP_RELEASE, OP_ACQUIRE, OP_ACK = 1, 2, 3, 4, 5
OP_NAMES = {
    OP_HELLO: "hello",
    OP_CALL: "call",
    OP_RELEASE: "release",
    OP_ACQUIRE: "acquire",
    OP_ACK: "ack",
}
MAX_SEQ = 2**32 - 1
STATUS_OK = 0
STATUS_ERROR = 1

MSG_HEAD_FORMAT = "BIB"  # type, seq, op (the link packs it right after RPyC's frame header)
_MSG_HEAD = struct.Struct("!" + MSG_HEAD_FORMAT)
MSG_HEAD_SIZE = _MSG_HEAD.size
_U64 = struct.Struct("!Q")
_CALL_HEAD = struct.Struct("!BQH")
_REPLY_HEAD = struct.Struct("!BQ")
REPLY_HEAD_SIZE = _REPLY_HEAD.size  # a reply's payload starts here
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_LEASE = struct.Struct("!QI")
MAX_HANDLE = 2**64 - 1
_BYTES = (
    bytes,
    bytearray,
    memoryview,
)  # decoders take any of these; a view's slices are views (no copies)


class WireError(ProtocolError):
    """A frame is malformed."""


@dataclass(frozen=True)
class Hello:
    version: int
    runtime_id: str
    url: str
    role: str
    want_id: str = ""
    want_pid: str = ""


class Call(NamedTuple):
    handle: int
    method: str
    payload: bytes


class Reply(NamedTuple):
    status: int
    ack: int
    payload: bytes


def _pack_str(s: str) -> bytes:
    b = s.encode("utf-8")
    if len(b) > 0xFFFF:
        raise WireError("string too long for a frame")
    return _U16.pack(len(b)) + b


def _unpack_str(data: bytes, pos: int) -> tuple[str, int]:
    if pos + 2 > len(data):
        raise WireError("truncated frame")
    (n,) = _U16.unpack_from(data, pos)
    pos += 2
    if pos + n > len(data):
        raise WireError("truncated frame")
    try:
        return bytes(data[pos : pos + n]).decode("utf-8"), pos + n
    except UnicodeDecodeError as e:
        raise WireError(f"bad text in frame: {e}") from None


def encode_message(kind: int, seq: int, op: int, body: bytes) -> bytes:
    if (
        kind not in (MSG_REQUEST, MSG_REPLY, MSG_FAULT)
        or op not in OP_NAMES
        or not 0 <= seq <= MAX_SEQ
    ):
        raise WireError("bad message header")
    return _MSG_HEAD.pack(kind, seq, op) + body


def decode_message_head(data: bytes) -> tuple[int, int, int]:
    """``(type, seq, op)`` of a MESSAGE; its body is ``data[MSG_HEAD_SIZE:]``."""
    if not isinstance(data, _BYTES) or len(data) < MSG_HEAD_SIZE:
        raise WireError("truncated message")
    kind, seq, op = _MSG_HEAD.unpack_from(data, 0)
    if kind not in (MSG_REQUEST, MSG_REPLY, MSG_FAULT):
        raise WireError(f"unknown message type {kind}")
    if op not in OP_NAMES:
        raise WireError(f"unknown operation {op}")
    return kind, seq, op


def encode_token(token: int) -> bytes:
    if not 0 < token < 2**64:
        raise WireError("ack token out of range")
    return _U64.pack(token)


def decode_token(data: bytes) -> int:
    if not isinstance(data, _BYTES) or len(data) != 8:
        raise WireError("bad ack token")
    token: int = _U64.unpack(data)[0]
    if token == 0:
        raise WireError("bad ack token")
    return token


def encode_hello(h: Hello) -> bytes:
    parts = [_MAGIC, _U16.pack(h.version)]
    for s in (h.runtime_id, h.url, h.role, h.want_id, h.want_pid):
        parts.append(_pack_str(s))
    return b"".join(parts)


def decode_hello(data: bytes) -> Hello:
    if not isinstance(data, _BYTES) or len(data) < 5 or bytes(data[:3]) != _MAGIC:
        raise WireError("not a pycircuit hello")
    (version,) = _U16.unpack_from(data, 3)
    pos = 5
    fields = []
    for _ in range(5):
        s, pos = _unpack_str(data, pos)
        fields.append(s)
    if pos != len(data):
        raise WireError("trailing bytes after hello")
    return Hello(version, *fields)


def check_version(mine: int, theirs: int) -> None:
    if mine != theirs:
        raise ProtocolError(
            f"incompatible pycircuit wire protocol: this side speaks version {mine}, "
            f"the peer speaks version {theirs}"
        )


def call_parts(handle: int, method: str, payload: bytes) -> tuple[bytes, bytes]:
    """A CALL as (head, payload): sent one after the other, never joined."""
    m = method.encode("utf-8")
    if len(m) > 0xFFFF:
        raise WireError("method name too long")
    if not 0 <= handle <= MAX_HANDLE:
        raise WireError("handle out of range")
    return _CALL_HEAD.pack(KIND_CALL, handle, len(m)) + m, payload


def encode_call(handle: int, method: str, payload: bytes) -> bytes:
    return b"".join(call_parts(handle, method, payload))


def decode_call(data: bytes) -> Call:
    if not isinstance(data, _BYTES) or len(data) < _CALL_HEAD.size:
        raise WireError("truncated call frame")
    kind, handle, n = _CALL_HEAD.unpack_from(data, 0)
    if kind != KIND_CALL:
        raise WireError(f"unknown frame kind {kind}")
    end = _CALL_HEAD.size + n
    if end > len(data):
        raise WireError("truncated call frame")
    try:
        method = bytes(data[_CALL_HEAD.size : end]).decode("utf-8")
    except UnicodeDecodeError:
        raise WireError("method name is not UTF-8") from None
    return Call(handle, method, data[end:])


def reply_parts(status: int, ack: int, payload: bytes) -> tuple[bytes, bytes]:
    """A REPLY as (head, payload): sent one after the other, never joined."""
    return _REPLY_HEAD.pack(status, ack), payload


def encode_reply(status: int, ack: int, payload: bytes) -> bytes:
    return b"".join(reply_parts(status, ack, payload))


def decode_reply(data: bytes) -> Reply:
    if not isinstance(data, _BYTES) or len(data) < _REPLY_HEAD.size:
        raise WireError("truncated reply frame")
    status, ack = _REPLY_HEAD.unpack_from(data, 0)
    if status not in (STATUS_OK, STATUS_ERROR):
        raise WireError(f"unknown reply status {status}")
    return Reply(status, ack, data[_REPLY_HEAD.size :])


def encode_leases(items: list[tuple[int, int]]) -> bytes:
    out = [_U32.pack(len(items))]
    for handle, count in items:
        if not (0 <= handle <= MAX_HANDLE and 0 < count < 2**32):
            raise WireError("lease out of range")
        out.append(_LEASE.pack(handle, count))
    return b"".join(out)


def decode_leases(data: bytes) -> list[tuple[int, int]]:
    if not isinstance(data, _BYTES) or len(data) < 4:
        raise WireError("truncated lease frame")
    (n,) = _U32.unpack_from(data, 0)
    if len(data) != 4 + n * _LEASE.size:
        raise WireError("lease frame length does not match its count")
    items = [_LEASE.unpack_from(data, 4 + i * _LEASE.size) for i in range(n)]
    if any(c == 0 for _, c in items):
        raise WireError("zero lease count")
    return items


_EXPORT_MAGIC = b"PYCX"


def encode_export(stream: bytes) -> bytes:
    """EXPORT: ``b"PYCX" u16 version`` then a value stream of
    ``(payload tuple, exporter's stack text)``."""
    return _EXPORT_MAGIC + _U16.pack(WIRE_VERSION) + stream


def decode_export(blob: bytes) -> bytes:
    if (
        not isinstance(blob, (bytes, bytearray))
        or bytes(blob[:4]) != _EXPORT_MAGIC
        or len(blob) < 6
    ):
        raise WireError("not a pycircuit export")
    (version,) = _U16.unpack_from(blob, 4)
    check_version(WIRE_VERSION, version)
    return bytes(blob[6:])


XrefDesc = tuple[str, int, int, str, int, bool]


def encode_xref(owner: WorkerAddr, handle: int, perm: bool) -> XrefDesc:
    """XREF: how a cross-interface travels inside a value stream."""
    return (owner.host, owner.port, owner.pid, owner.id, handle, perm)


def decode_xref(desc: object) -> tuple[WorkerAddr, int, bool]:
    """The owner, handle and permanence of an XREF descriptor."""
    try:
        if not isinstance(desc, tuple) or len(desc) != 6:
            raise TypeError
        host, port, pid, oid, handle, perm = desc
        return WorkerAddr(str(host), int(port), int(pid), str(oid)), int(handle), bool(perm)
    except (TypeError, ValueError):
        raise SerializationError(f"malformed cross-interface descriptor {desc!r}") from None
