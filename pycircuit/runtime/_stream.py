"""The bottom of a link: RPyC's framing, read and written by a buffered
socket stream. Layer: runtime (uses ``_wire`` for the message head's
format only).

RPyC is used here through its public classes only: ``SocketStream`` (its
``sock``, ``close``, ``closed``, ``poll``, ``read`` and ``write``) and
``Channel`` (its ``stream``, ``FRAME_HEADER`` and ``FLUSHER``). A frame is
RPyC's: a ``!LB`` header (length, compressed), the body and one flusher
byte ``b"\\n"``. The stream adds a read buffer (one ``recv`` usually brings
a whole small frame), reads and writes large bodies without copies, and
refuses compressed frames (a decompression bomb) and frames over
``max_frame``. ``tune_socket`` sets the socket options every link uses.
"""

from __future__ import annotations

import logging
import select
import socket
import ssl
import struct
from collections.abc import Callable, Sequence
from typing import Any

from rpyc.core.channel import Channel
from rpyc.core.stream import SocketStream

from . import _wire

log = logging.getLogger(__name__)

FRAME_HEADER = Channel.FRAME_HEADER  # !LB: length, compressed; the flusher byte follows the body
FLUSHER = Channel.FLUSHER
if FRAME_HEADER.format != "!LB" or FLUSHER != b"\n":
    # _stream slices frames by these sizes: a different RPyC framing must not go unnoticed
    raise ImportError(f"unsupported RPyC framing: {FRAME_HEADER.format!r} + {FLUSHER!r}")
# The frame header, then _wire's message head, packed in one go.
FRAME_AND_MESSAGE = struct.Struct(FRAME_HEADER.format + _wire.MSG_HEAD_FORMAT)

_CHUNK = 1 << 20
_POLL_IN = select.POLLIN | select.POLLPRI | select.POLLERR | select.POLLHUP

# A message body in parts: bytes-like objects sent one after the other.
Parts = Sequence[Any]


class BufferedStream(SocketStream):
    """SocketStream with a read buffer and linear-time large reads and writes.

    One ``recv`` usually brings a whole small frame (header, body, flusher),
    so a frame costs one system call instead of RPyC's two reads."""

    FILL = 1 << 16

    def __init__(self, sock: socket.socket, max_frame: int = 1 << 30):
        super().__init__(sock)
        self._rbuf: bytes = b""
        self.max_frame = max_frame

    def write(self, data: Any) -> None:
        try:
            self.sock.sendall(data)
        except (OSError, ValueError) as e:
            self.close()
            raise EOFError(e) from None

    def buffered(self) -> bool:
        """Bytes received but not yet read (ours, or TLS's decrypted ones)?"""
        if self._rbuf:
            return True
        sock = self.sock
        return isinstance(sock, ssl.SSLSocket) and sock.pending() > 0

    def poll(self, timeout: float | None) -> bool:
        """Data (or EOF) to read within ``timeout`` seconds (None: wait)."""
        if self._rbuf:
            return True
        sock = self.sock
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return True
        # poll(2), not select(2): a process with many connections has
        # descriptors beyond select's FD_SETSIZE.
        try:
            fd = sock.fileno()
            if fd < 0:
                raise ValueError("socket closed")
            p = select.poll()
            p.register(fd, _POLL_IN)
            r = p.poll(None if timeout is None else max(0, int(timeout * 1000 + 0.999)))
        except (OSError, ValueError, EOFError) as e:
            raise EOFError(e) from None
        return bool(r)

    def read(self, count: int) -> Any:
        """Exactly ``count`` bytes (bytes, or a bytearray for a large read)."""
        buf = self._rbuf
        have = len(buf)
        if have >= count:
            self._rbuf = buf[count:]
            return buf[:count]
        if count - have < self.FILL:
            parts = [buf]
            while have < count:
                chunk = self._recv(self.FILL)
                parts.append(chunk)
                have += len(chunk)
            data = b"".join(parts)
            self._rbuf = data[count:]
            return data[:count]
        # A large frame: read in place into one growing buffer (returned as
        # it is: a bytearray). Its length comes from the peer, so the buffer
        # doubles as data arrives: six stray bytes cannot make us reserve
        # gigabytes.
        self._rbuf = b""
        size = min(count, 2 * _CHUNK)
        out = bytearray(size)
        out[:have] = buf
        got = have
        while True:
            got = self._fill(out, got, size)
            if size == count:
                return out
            grow = min(count, 2 * size) - size
            out.extend(bytes(grow))
            size += grow

    def _fill(self, out: bytearray, got: int, end: int) -> int:
        view = memoryview(out)
        try:
            while got < end:
                got += self._io(self.sock.recv_into, view[got:end], end - got)
            return got
        finally:
            view.release()

    def recv_frame(self) -> Any:
        """The body of the next frame; usually sliced out of what one
        ``recv`` brought (bytes, or a bytearray for a large one)."""
        buf = self._rbuf
        while len(buf) < 5:
            buf += self._recv(self.FILL)
        length, compressed = FRAME_HEADER.unpack_from(buf)
        if compressed:
            self.close()
            raise EOFError("compressed frame refused")
        if length > self.max_frame:
            self.close()
            log.warning(
                "closed a connection: a frame of %d bytes exceeds the maximum of %d (RuntimeConfig.max_frame)",
                length,
                self.max_frame,
            )
            raise EOFError(f"a frame of {length} bytes exceeds the maximum of {self.max_frame}")
        end = 6 + length
        if len(buf) >= end:
            self._rbuf = buf[end:]
            return buf[5 : end - 1]
        self._rbuf = buf[5:]
        data = self.read(length)
        self.read(1)
        return data

    def write_message(self, head: bytes, parts: Parts, n: int) -> None:
        """``head`` (the frame header, and whatever else starts the body)
        and ``parts`` (the rest, ``n`` bytes of body in all), then the
        flusher, without copying the large parts: small ones are joined and
        sent, large ones sent as they are."""
        if n < self.FILL:
            self.write(b"".join((head, *parts, FLUSHER)))
            return
        pending = [head]
        for p in parts:
            if len(p) < self.FILL:
                pending.append(p)
            else:
                self.write(b"".join(pending))
                pending = []
                self.write(p)
        pending.append(FLUSHER)
        self.write(b"".join(pending))

    def _recv(self, n: int) -> bytes:
        data: bytes = self._io(self.sock.recv, n)
        return data

    def _io(self, receive: Callable[..., Any], *args: Any) -> Any:
        """``receive(*args)``; a closed or broken socket is an EOFError."""
        while True:
            try:
                got = receive(*args)
            except TimeoutError:  # a timeout someone set on the socket: reading goes on
                continue
            except (OSError, ValueError) as e:
                self.close()
                raise EOFError(e) from None
            if not got:
                self.close()
                raise EOFError("connection closed by peer")
            return got


class FrameChannel(Channel):
    """RPyC's channel over a ``BufferedStream``: frames read and written
    without copies of large bodies and without zlib (a compressed frame
    could be a decompression bomb: we never send one)."""

    stream: BufferedStream

    def __init__(self, stream: BufferedStream):
        super().__init__(stream, compress=False)

    def recv(self) -> Any:
        return self.stream.recv_frame()

    def send(self, data: bytes) -> None:
        self.stream.write_message(FRAME_HEADER.pack(len(data), 0), (data,), len(data))


def tune_socket(sock: socket.socket, silence: float = 30.0) -> None:
    """Blocking, no Nagle, and a link declared dead only when the peer is
    known gone (EOF, RST) or its host has been silent for about ``silence``
    seconds: unacknowledged data (TCP_USER_TIMEOUT) or unanswered keepalive
    probes. A stopped or busy process still has its kernel acknowledge both,
    so a stall within that time loses nothing (SPEC §7)."""
    sock.settimeout(None)
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        idle = max(1, int(silence / 3))
        interval = max(1, int(silence / 6))
        count = max(1, int((silence - idle) / interval))
        for opt, val in (
            ("TCP_KEEPIDLE", idle),
            ("TCP_KEEPINTVL", interval),
            ("TCP_KEEPCNT", count),
            ("TCP_USER_TIMEOUT", int(silence * 1000)),
        ):
            if hasattr(socket, opt):
                try:
                    sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, opt), val)
                except OSError:  # an option this kernel lacks: the others still bound the silence
                    log.debug("cannot set %s on a link", opt)
