"""The membership datagram (pure): encoding of ``_swim`` messages, and their
sealing with AES-GCM.

Frame: ``b"PM"``, u8 wire version, u8 mode (0 plain, 1 sealed), then the
body. Sealed body: a 12-byte random nonce and the AES-GCM ciphertext of the
plain body, with the 4 header bytes as associated data. Plain body: u8 kind,
sender ID, sender URL, then the message:

=======  =======================================================
PING     u32 seq, str target ID, updates
ACK      u32 seq, updates
PINGREQ  u32 seq, str target ID, str target URL, updates
NACK     u32 seq
SYNC     u8 flags (1 reply, 2 first), updates
GOSSIP   updates
=======  =======================================================

``str``: u8 length + UTF-8; updates: u16 count, then per update u8 state,
u32 incarnation, str ID, str URL, str suspecter ("" unless SUSPECT).
Decoders raise only :class:`ProtocolError`; a peer of another version is
refused naming both versions.
"""

from __future__ import annotations

import hmac
import os
import struct
from typing import TYPE_CHECKING

from ..errors import ProtocolError
from ._members import ALIVE, LEFT, Ack, Gossip, Message, Nack, Ping, PingReq, Sync, Update

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["MEMBERS_VERSION", "encode", "decode", "Sealer", "derive_key", "MAX_DATAGRAM"]

MEMBERS_VERSION = 1
MAGIC = b"PM"
PLAIN, SEALED = 0, 1
MAX_DATAGRAM = 65507
_HEAD = struct.Struct("!2sBB")
_U32, _U16, _U8 = struct.Struct("!I"), struct.Struct("!H"), struct.Struct("!B")
_KINDS = {Ping: 1, Ack: 2, PingReq: 3, Nack: 4, Sync: 5, Gossip: 6}
_NONCE = 12
_INFO = b"pycircuit membership datagrams v1"


def derive_key(secret: bytes) -> bytes:
    """A 32-byte AES key for datagrams, from a secret: HKDF-SHA256 (RFC 5869)
    with salt ``b"pycircuit"``, one 32-byte block, made with ``hmac`` so that
    deriving it imports nothing."""
    prk = hmac.digest(b"pycircuit", secret, "sha256")  # extract
    return hmac.digest(prk, _INFO + b"\x01", "sha256")  # expand: T(1)


class Sealer:
    """AES-GCM with one key: seals frames, opens them or raises ProtocolError.
    The cipher is made on first use: a server alone never seals a datagram,
    and importing ``cryptography`` would cost every server's start-up."""

    def __init__(self, key: bytes) -> None:
        self._key = key
        self._aead: AESGCM | None = None

    def _cipher(self) -> AESGCM:
        if self._aead is None:  # two threads may both make one: the same cipher either way
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM as _AESGCM

            self._aead = _AESGCM(self._key)
        return self._aead

    def seal(self, head: bytes, body: bytes) -> bytes:
        nonce = os.urandom(_NONCE)
        return head + nonce + self._cipher().encrypt(nonce, body, head)

    def open(self, head: bytes, sealed: memoryview | bytes) -> bytes:
        from cryptography.exceptions import InvalidTag

        if len(sealed) < _NONCE + 16:
            raise ProtocolError("sealed datagram too short")
        try:
            return self._cipher().decrypt(bytes(sealed[:_NONCE]), bytes(sealed[_NONCE:]), head)
        except InvalidTag:
            raise ProtocolError("datagram failed authentication (another key?)") from None


def _s(x: str) -> bytes:
    b = x.encode()
    if len(b) > 255:
        raise ProtocolError("string too long for a membership datagram")
    return _U8.pack(len(b)) + b


def _updates(ups: tuple[Update, ...]) -> bytes:
    parts = [_U16.pack(len(ups))]
    for u in ups:
        parts += [_U8.pack(u.state), _U32.pack(u.inc), _s(u.id), _s(u.url), _s(u.frm)]
    return b"".join(parts)


def encode(src_id: str, src_url: str, msg: Message, sealer: Sealer | None = None) -> bytes:
    parts = [_U8.pack(_KINDS[type(msg)]), _s(src_id), _s(src_url)]
    if isinstance(msg, Ping):
        parts += [_U32.pack(msg.seq), _s(msg.target), _updates(msg.updates)]
    elif isinstance(msg, Ack):
        parts += [_U32.pack(msg.seq), _updates(msg.updates)]
    elif isinstance(msg, PingReq):
        parts += [_U32.pack(msg.seq), _s(msg.target), _s(msg.target_url), _updates(msg.updates)]
    elif isinstance(msg, Nack):
        parts.append(_U32.pack(msg.seq))
    elif isinstance(msg, Sync):
        parts += [
            _U8.pack((1 if msg.reply else 0) | (2 if msg.first else 0)),
            _updates(msg.entries),
        ]
    else:
        parts.append(_updates(msg.updates))
    body = b"".join(parts)
    head = _HEAD.pack(MAGIC, MEMBERS_VERSION, PLAIN if sealer is None else SEALED)
    return head + body if sealer is None else sealer.seal(head, body)


class _Reader:
    __slots__ = ("b", "i")

    def __init__(self, b: bytes) -> None:
        self.b, self.i = b, 0

    def take(self, n: int) -> bytes:
        j = self.i + n
        if j > len(self.b):
            raise ProtocolError("truncated membership datagram")
        out, self.i = self.b[self.i : j], j
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        n: int = _U16.unpack(self.take(2))[0]
        return n

    def u32(self) -> int:
        n: int = _U32.unpack(self.take(4))[0]
        return n

    def s(self) -> str:
        try:
            return self.take(self.u8()).decode()
        except UnicodeDecodeError:
            raise ProtocolError("bad UTF-8 in a membership datagram") from None

    def updates(self) -> tuple[Update, ...]:
        out = []
        for _ in range(self.u16()):
            state, inc = self.u8(), self.u32()
            if not ALIVE <= state <= LEFT:
                raise ProtocolError(f"bad member state {state}")
            out.append(Update(state, self.s(), self.s(), inc, self.s()))
        return tuple(out)


def decode(data: bytes, sealer: Sealer | None = None) -> tuple[str, str, Message]:
    """(sender ID, sender URL, message) of a datagram."""
    if len(data) < _HEAD.size or data[:2] != MAGIC:
        raise ProtocolError("not a pycircuit membership datagram")
    magic, version, mode = _HEAD.unpack_from(data)
    if version != MEMBERS_VERSION:
        raise ProtocolError(
            f"incompatible pycircuit membership protocol: this side speaks version "
            f"{MEMBERS_VERSION}, the peer speaks version {version}"
        )
    if mode == SEALED:
        if sealer is None:
            raise ProtocolError("sealed datagram, but this server has no key for datagrams")
        body = sealer.open(bytes(data[:4]), memoryview(data)[4:])
    elif mode == PLAIN:
        if sealer is not None:
            raise ProtocolError("plain datagram refused: this server accepts only sealed ones")
        body = bytes(data[4:])
    else:
        raise ProtocolError(f"unknown datagram mode {mode}")
    r = _Reader(body)
    kind, src_id, src_url = r.u8(), r.s(), r.s()
    if kind == 1:
        msg: Message = Ping(r.u32(), r.s(), r.updates())
    elif kind == 2:
        msg = Ack(r.u32(), r.updates())
    elif kind == 3:
        msg = PingReq(r.u32(), r.s(), r.s(), r.updates())
    elif kind == 4:
        msg = Nack(r.u32())
    elif kind == 5:
        flags = r.u8()
        msg = Sync(bool(flags & 1), bool(flags & 2), r.updates())
    elif kind == 6:
        msg = Gossip(r.updates())
    else:
        raise ProtocolError(f"unknown membership message kind {kind}")
    if r.i != len(body):
        raise ProtocolError("trailing bytes in a membership datagram")
    return src_id, src_url, msg
