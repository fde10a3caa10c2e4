"""Same-user authentication of connections between runtimes without a key.

Without a cluster key the trust boundary is the local user (SPEC §5): every
runtime of that user (servers, embedded servers, workers, client programs)
holds the same 32-byte secret, kept in a file only that user can read, and
both ends of a connection prove they hold it before a single frame of the
link is read. Another local user, who can reach the port but not read the
file, is refused before anything of theirs is unpickled; and a process of
another user squatting a port we dial cannot answer our calls, since the
acceptor proves itself too.

The handshake (all fixed sizes, big-endian; ``s`` the secret)::

    dialer   -> acceptor  GREET   b"PYCA" u8 version u8 flags u16 0  nonce_d[32]        (40 bytes)
    acceptor -> dialer    GREET   b"PYCA" u8 version u8 flags u16 0  nonce_a[32]
                          mac_a[32] = HMAC-SHA256(s, LABEL_A + nonce_d + nonce_a)      (72 bytes)
    dialer   -> acceptor  PROOF   b"+" mac_d[32] = HMAC-SHA256(s, LABEL_D + nonce_d + nonce_a),
                          or b"o" and 32 zero bytes: "I cannot verify you" (open dialers only)

``flags`` bit 0 says the sender is *open* (``--insecure``): it accepts a
peer that cannot prove the secret. The dialer's first bytes are not TLS, so
a keyed server drops it at once; its link frames follow PROOF without
waiting (a refusal comes back as a FAULT to the first request: see
``_runtime``). The costs are in ``bench/README.md``.

The message functions are pure (bytes in, bytes or verdicts out); the
socket side is ``SecretAuth``. Layer: runtime; imports only ``errors``.
"""

from __future__ import annotations

import hmac
import logging
import os
import socket
import stat
import struct
import threading
import time
from dataclasses import dataclass, field

from ..errors import CircuitError, NetworkError, ProtocolError

log = logging.getLogger(__name__)

VERSION = 1
MAGIC = b"PYCA"
NONCE = 32
MAC = 32
FLAG_OPEN = 1
LABEL_D = b"pycircuit-auth-1 dialer\0"
LABEL_A = b"pycircuit-auth-1 acceptor\0"
_GREET = struct.Struct("!4sBBH32s")
GREET_SIZE = _GREET.size  # 40
ACCEPT_SIZE = GREET_SIZE + MAC  # 72
PROOF_SIZE = 1 + MAC  # 33


# -- pure messages ---------------------------------------------------------
@dataclass(frozen=True)
class Greeting:
    version: int
    open: bool
    nonce: bytes


def encode_greeting(nonce: bytes, open_: bool) -> bytes:
    return _GREET.pack(MAGIC, VERSION, FLAG_OPEN if open_ else 0, 0, nonce)


def decode_greeting(data: bytes) -> Greeting:
    """Raises ProtocolError for anything that is not a greeting of our version."""
    if len(data) < GREET_SIZE:
        raise ProtocolError("truncated greeting")
    magic, version, flags, _, nonce = _GREET.unpack_from(data)
    if magic != MAGIC:
        raise ProtocolError("not a pycircuit runtime (no greeting)")
    if version != VERSION:
        raise ProtocolError(
            f"incompatible authentication versions: ours {VERSION}, theirs {version}"
        )
    return Greeting(version, bool(flags & FLAG_OPEN), nonce)


def mac(secret: bytes, label: bytes, nonce_d: bytes, nonce_a: bytes) -> bytes:
    return hmac.digest(secret, label + nonce_d + nonce_a, "sha256")


def encode_proof(secret: bytes | None, nonce_d: bytes, nonce_a: bytes) -> bytes:
    """The dialer's proof, or the anonymous answer when ``secret`` is None."""
    if secret is None:
        return b"o" + bytes(MAC)
    return b"+" + mac(secret, LABEL_D, nonce_d, nonce_a)


def check_proof(secret: bytes, data: bytes, nonce_d: bytes, nonce_a: bytes) -> bool:
    """Did the dialer prove it holds ``secret``? (False for an anonymous answer.)"""
    if len(data) != PROOF_SIZE or data[:1] != b"+":
        return False
    return hmac.compare_digest(data[1:], mac(secret, LABEL_D, nonce_d, nonce_a))


# -- the secret file -------------------------------------------------------
def _candidates() -> list[str]:
    """Where the secret may live, in the order every process of a user
    tries them (so all of them settle on the same file)."""
    out = [os.path.join(os.path.expanduser("~"), ".config", "pycircuit")]
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        out.append(os.path.join(xdg, "pycircuit"))
    out.append(os.path.join("/tmp", f"pycircuit-{os.getuid()}"))
    return out


def _private_dir(path: str) -> bool:
    """Make ``path`` a directory only we can use; False if it is not ours."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        st = os.lstat(path)
    except OSError:  # not ours to make (read-only home, say): the caller tries the next place
        return False
    # Another user may have made /tmp/pycircuit-<uid> first: never trust it.
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o077


def _read_secret(path: str) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:  # not made yet: the caller makes it
        return None
    try:
        st = os.fstat(fd)
        if st.st_uid != os.getuid() or st.st_mode & 0o077:
            raise CircuitError(
                f"the pycircuit secret {path} is not private to this user "
                f"(owner uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):o}); "
                "remove it and a new one is made"
            )
        data = os.read(fd, 4096).strip()
    finally:
        os.close(fd)
    try:
        secret = bytes.fromhex(data.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        secret = b""
    if len(secret) != 32:
        raise CircuitError(
            f"the pycircuit secret {path} is malformed; remove it and a new one is made"
        )
    return secret


def _make_secret(directory: str) -> bytes | None:
    path = os.path.join(directory, "secret")
    have = _read_secret(path)
    if have is not None:
        return have
    tmp = os.path.join(directory, f".secret.{os.getpid()}.{threading.get_ident()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError:  # a directory we cannot write: the caller tries the next place
        return None
    try:
        with os.fdopen(fd, "w") as f:
            f.write(os.urandom(32).hex() + "\n")
        try:
            os.link(tmp, path)  # atomic; fails if another process won the race
        except FileExistsError:
            pass  # the winner's secret is read below
    except OSError:  # a full or read-only disk: the caller tries the next place
        return None
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass  # already gone: nothing to clean
    return _read_secret(path)


_secret: bytes | None = None
_secret_lock = threading.Lock()


def user_secret() -> bytes:
    """This OS user's secret (32 bytes), made on first use in
    ``~/.config/pycircuit/secret`` (mode 600), else under
    ``$XDG_RUNTIME_DIR/pycircuit/`` or ``/tmp/pycircuit-UID/``. Where none
    can be made, a secret private to this process (nobody can then dial
    in without a key, which is the safe answer). Raises CircuitError if an
    existing file is readable by others."""
    global _secret
    if _secret is None:
        with _secret_lock:
            if _secret is None:
                for d in _candidates():
                    if _private_dir(d):
                        got = _make_secret(d)
                        if got is not None:
                            _secret = got
                            break
                else:
                    log.warning(
                        "no private directory for the pycircuit secret (tried %s); "
                        "this process accepts no connection without a key",
                        ", ".join(_candidates()),
                    )
                    _secret = os.urandom(32)
    return _secret


# -- the socket side -------------------------------------------------------
class AuthRefused(NetworkError):
    """The peer did not prove the secret and we are not open."""


@dataclass(frozen=True)
class SecretAuth:
    """Authenticates sockets with the same-user secret. ``open``: also
    accept peers that cannot prove it (``--insecure``, or a client whose
    runtime must be reachable from another host)."""

    secret: bytes = field(repr=False)
    open: bool = False
    # The runtime passes RuntimeConfig.handshake_timeout; the default is the same.
    timeout: float = 5.0

    def wrap_server(self, sock: socket.socket) -> socket.socket:
        """Run the acceptor's side. Raises AuthRefused (socket left open,
        so the caller can say why) or NetworkError (socket closed)."""
        deadline = time.monotonic() + self.timeout
        where = _where(sock)
        try:
            theirs = decode_greeting(_read(sock, GREET_SIZE, deadline))
            nonce = os.urandom(NONCE)
            sock.sendall(
                encode_greeting(nonce, self.open) + mac(self.secret, LABEL_A, theirs.nonce, nonce)
            )
            proved = check_proof(
                self.secret, _read(sock, PROOF_SIZE, deadline), theirs.nonce, nonce
            )
        except (OSError, EOFError, ProtocolError) as e:  # TimeoutError is an OSError
            _close(sock)
            raise NetworkError(f"handshake with {where} failed: {_why(e, self.timeout)}") from None
        _settle(sock)
        if not proved and not self.open:
            raise AuthRefused(
                f"{where} did not prove this user's secret (another user's process, "
                "or a circuit with a cluster key?)"
            )
        return sock

    def wrap_client(self, sock: socket.socket) -> socket.socket:
        """Run the dialer's side. Closes the socket and raises NetworkError
        (AuthRefused when the acceptor is not this user's and we are not
        open)."""
        deadline = time.monotonic() + self.timeout
        where = _where(sock)
        nonce = os.urandom(NONCE)
        try:
            sock.sendall(encode_greeting(nonce, self.open))
            data = _read(sock, ACCEPT_SIZE, deadline)
            theirs = decode_greeting(data)
            proved = hmac.compare_digest(
                data[GREET_SIZE:], mac(self.secret, LABEL_A, nonce, theirs.nonce)
            )
            if proved or self.open:
                sock.sendall(encode_proof(self.secret if proved else None, nonce, theirs.nonce))
        except (OSError, EOFError, ProtocolError) as e:  # TimeoutError is an OSError
            _close(sock)
            raise NetworkError(f"handshake with {where} failed: {_why(e, self.timeout)}") from None
        if not proved and not self.open:
            _close(sock)
            raise AuthRefused(
                "it is not a runtime of this user (it did not prove this user's secret); "
                "a circuit of another user needs its cluster key"
            )
        _settle(sock)
        return sock


def _read(sock: socket.socket, n: int, deadline: float) -> bytes:
    buf = b""
    while len(buf) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        sock.settimeout(left)
        try:
            chunk = sock.recv(n - len(buf))
        except TimeoutError:
            raise TimeoutError from None
        if not chunk:
            raise EOFError
        buf += chunk
    return buf


def _settle(sock: socket.socket) -> None:
    try:
        sock.settimeout(None)
    except OSError:
        pass  # closed meanwhile: the caller sees that on its next use


def _close(sock: socket.socket) -> None:
    try:
        sock.close()
    except OSError:
        pass  # closing a broken socket: nothing more to release


def _where(sock: socket.socket) -> str:
    try:
        host, port = sock.getpeername()[:2]
    except OSError:  # already reset: the message names no address
        return "the peer"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _why(e: BaseException, timeout: float) -> str:
    if isinstance(e, TimeoutError):
        return (
            f"no answer within {timeout:g} s (does the peer use a cluster key, "
            "or is it not a pycircuit runtime?)"
        )
    if isinstance(e, (EOFError, ConnectionResetError, BrokenPipeError)):
        return (
            "closed during authentication (if the circuit uses a cluster key, this process needs it "
            "too: key=, --key or $CIRCUIT_KEY)"
        )
    if isinstance(e, OSError):
        return e.strerror or str(e) or type(e).__name__
    return str(e)
