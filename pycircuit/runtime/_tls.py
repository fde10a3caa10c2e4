"""Cluster keys: mutual TLS between the runtimes of one circuit.

A cluster key file (``pycircuit keygen``) holds, in PEM, an EC P-256 private
key and a self-signed CA certificate for it. Every runtime of the circuit
(servers, workers, clients) presents that certificate and requires the
peer's certificate to chain to it: identity is "holds the cluster key", so
host names are not checked. TLS 1.3 only; the handshake is bounded by a
deadline, so a peer without the key, or one that sends nothing, never hangs
anybody. Layer: used by ``_runtime`` (through ``RuntimeConfig.tls``), the
server, the spawner and the client; knows nothing of them.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import re
import secrets
import select
import socket
import ssl
import time
from dataclasses import dataclass, field

from ..errors import CircuitError, NetworkError

VALIDITY_DAYS = 100 * 365

_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n.*?-----END \1-----\r?\n?", re.S)


def keygen() -> str:
    """The text of a new cluster key file (keep it secret: whoever holds it
    is a member of the circuit)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "pycircuit"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"pycircuit cluster {secrets.token_hex(8)}"),
        ]
    )
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=VALIDITY_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    return (
        "# pycircuit cluster key: every process holding this file is a member of the circuit; keep it secret.\n"
        + key_pem.decode()
        + cert_pem.decode()
    )


def load_key(path: str) -> ClusterKey:
    """Load a cluster key file; raises CircuitError with a one-line reason.
    Only ``ssl`` is used here (importing ``cryptography`` would cost every
    client ~25 ms): OpenSSL checks the PEM, that the certificate belongs to
    the key, and that it is a CA certificate."""
    path = os.path.abspath(os.path.expanduser(str(path)))

    def bad(why: str) -> CircuitError:
        return CircuitError(f"bad cluster key file {path}: {why}")

    try:
        with open(path, "rb") as f:
            data = f.read(1 << 20)
    except FileNotFoundError:
        raise bad("no such file") from None
    except IsADirectoryError:
        raise bad("is a directory") from None
    except OSError as e:
        raise bad(f"cannot be read: {e.strerror or e}") from None
    blocks: dict[bytes, list[bytes]] = {}
    for m in _PEM_BLOCK.finditer(data):
        blocks.setdefault(m.group(1), []).append(m.group(0))
    keys = blocks.get(b"PRIVATE KEY", []) + blocks.get(b"EC PRIVATE KEY", [])
    certs = blocks.get(b"CERTIFICATE", [])
    if len(keys) != 1 or len(certs) != 1:
        raise bad(
            f"want one unencrypted private key and one certificate in PEM (found {len(keys)} and "
            f"{len(certs)}); make one with `pycircuit keygen`"
        )
    if b"ENCRYPTED" in keys[0]:
        raise bad("the private key is encrypted (make one with `pycircuit keygen`)")
    cert_pem = certs[0].decode("ascii", "replace")
    try:
        cert_der = ssl.PEM_cert_to_DER_cert(cert_pem)
    except ValueError as e:
        raise bad(f"malformed certificate: {e}") from None
    try:
        server = _context(ssl.PROTOCOL_TLS_SERVER, path, cert_pem)
        client = _context(ssl.PROTOCOL_TLS_CLIENT, path, cert_pem)
    except ssl.SSLError as e:
        reason = e.reason or re.sub(
            r"^\[\w+\]\s*|\s*\(_ssl\.c:\d+\)$", "", str(e.args[1] if len(e.args) > 1 else e)
        )
        if "MISMATCH" in reason.upper():
            raise bad("the certificate does not belong to the private key") from None
        raise bad(f"malformed PEM ({reason})") from None
    except OSError as e:  # the file went away or changed meanwhile
        raise bad(f"cannot be read: {e.strerror or e}") from None
    cas = client.get_ca_certs()  # OpenSSL lists only certificates that are CAs
    if not cas:
        raise bad("the certificate is not a CA certificate (make one with `pycircuit keygen`)")
    try:
        start: float = ssl.cert_time_to_seconds(str(cas[0]["notBefore"]))
        end: float = ssl.cert_time_to_seconds(str(cas[0]["notAfter"]))
    except (KeyError, ValueError):  # no dates to check: the handshake checks the rest
        start, end = 0.0, float("inf")
    if not start <= time.time() <= end:
        raise bad(
            f"the certificate is not valid now (valid {cas[0].get('notBefore')} to {cas[0].get('notAfter')})"
        )
    return ClusterKey(path, hashlib.sha256(cert_der).hexdigest(), server, client)


def _context(protocol: int, path: str, cert_pem: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(protocol)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False  # identity is "holds the cluster key", not a name
    ctx.verify_mode = ssl.CERT_REQUIRED  # both ways: servers require client certificates too
    ctx.load_cert_chain(
        path, password=lambda: b""
    )  # the file holds both; never prompt for a password
    ctx.load_verify_locations(cadata=cert_pem)
    if protocol == ssl.PROTOCOL_TLS_SERVER:
        ctx.num_tickets = 0  # no resumption; and no post-handshake records racing the first reads
    return ctx


@dataclass(frozen=True)
class ClusterKey:
    """A loaded cluster key: wraps sockets in mutually authenticated TLS."""

    path: str  # absolute; child processes load the key from here
    fingerprint: str  # SHA-256 of the certificate, hex
    _server: ssl.SSLContext = field(repr=False, compare=False)
    _client: ssl.SSLContext = field(repr=False, compare=False)
    # The TLS handshake's bound; the same as RuntimeConfig.handshake_timeout,
    # for the same reason (what an unauthenticated peer may hold).
    timeout: float = field(default=5.0, compare=False)

    def datagram_secret(self) -> bytes:
        """Secret material for keys that are not TLS (membership datagrams):
        the private key (never the certificate, which is public), as DER."""
        from cryptography.hazmat.primitives import serialization

        try:
            with open(self.path, "rb") as f:
                data = f.read(1 << 20)
        except OSError as e:
            raise CircuitError(
                f"bad cluster key file {self.path}: cannot be read: {e.strerror or e}"
            ) from None
        for m in _PEM_BLOCK.finditer(data):
            if m.group(1) in (b"PRIVATE KEY", b"EC PRIVATE KEY"):
                key = serialization.load_pem_private_key(m.group(0), password=None)
                return key.private_bytes(
                    serialization.Encoding.DER,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
        raise CircuitError(f"bad cluster key file {self.path}: no private key")

    def wrap_server(self, sock: socket.socket) -> ssl.SSLSocket:
        """TLS on an accepted socket; closes it and raises NetworkError on failure."""
        return self._handshake(self._server, sock, True)

    def wrap_client(self, sock: socket.socket) -> ssl.SSLSocket:
        """TLS on a dialled socket; closes it and raises NetworkError on failure."""
        return self._handshake(self._client, sock, False)

    def _handshake(
        self, ctx: ssl.SSLContext, sock: socket.socket, server_side: bool
    ) -> ssl.SSLSocket:
        try:
            host, port = sock.getpeername()[:2]
            where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        except OSError:
            where = "?"
        deadline = time.monotonic() + self.timeout
        ssock = None
        try:
            sock.setblocking(False)
            ssock = ctx.wrap_socket(sock, server_side=server_side, do_handshake_on_connect=False)
            while True:
                try:
                    ssock.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    wait: tuple[list[ssl.SSLSocket], list[ssl.SSLSocket]] = ([ssock], [])
                except ssl.SSLWantWriteError:
                    wait = ([], [ssock])
                left = deadline - time.monotonic()
                if left <= 0 or not any(select.select(*wait, [], left)):
                    raise TimeoutError
            ssock.setblocking(True)
            return ssock
        except Exception as e:
            for s in (ssock, sock):
                if s is not None:
                    try:
                        s.close()
                    except OSError:  # already broken: nothing left to release
                        pass
            raise NetworkError(
                f"TLS handshake with {where} failed: {_explain(e, self.timeout)}"
            ) from None


def _explain(e: BaseException, timeout: float) -> str:
    if isinstance(e, TimeoutError):
        return (
            f"no answer within {timeout:g} s (does the peer run without a cluster key, "
            "or is it not a pycircuit runtime?)"
        )
    if isinstance(e, ssl.SSLCertVerificationError):
        # 18-21: self-signed / unknown issuer, i.e. another key's certificate
        detail = "" if e.verify_code in (18, 19, 20, 21) else f": {e.verify_message}"
        return f"refused: not in this cluster (certificate not signed by the cluster key{detail})"
    if isinstance(e, ssl.SSLError):
        reason = (e.reason or "").upper()
        if (
            "ALERT_UNKNOWN_CA" in reason
            or "BAD_CERTIFICATE" in reason
            or "CERTIFICATE_REQUIRED" in reason
            or "DECRYPT_ERROR" in reason
        ):
            return "refused by the peer: not in its cluster (our certificate is not signed by its cluster key)"
        if (
            "WRONG_VERSION_NUMBER" in reason
            or "HTTP" in reason
            or "UNSUPPORTED_PROTOCOL" in reason
            or "PACKET_LENGTH" in reason
            or "RECORD" in reason
        ):
            return "the peer does not speak TLS 1.3 (does it run without a cluster key?)"
        if isinstance(e, ssl.SSLEOFError) or "EOF" in reason:
            return "the peer closed the connection during the handshake (does it use another cluster key, or none?)"
        return f"{e.reason or e}"
    if isinstance(e, OSError):
        return e.strerror or str(e) or type(e).__name__
    return f"{type(e).__name__}: {e}"
