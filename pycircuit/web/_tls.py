"""HTTPS for a web view bound beyond loopback: a certificate for the bound
address, made at start and signed by the cluster key's CA (so a browser or
``curl --cacert KEYFILE`` that trusts the cluster's certificate trusts it)."""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import ssl
import tempfile

from ..errors import CircuitError

_PEM = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n.*?-----END \1-----\r?\n?", re.S)


def server_context(key_path: str, host: str) -> ssl.SSLContext:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    try:
        with open(key_path, "rb") as f:
            blocks = {m.group(1).decode(): m.group(0) for m in _PEM.finditer(f.read())}
        ca_key = serialization.load_pem_private_key(
            blocks.get("PRIVATE KEY") or blocks["EC PRIVATE KEY"], None
        )
        ca = x509.load_pem_x509_certificate(blocks["CERTIFICATE"])
    except (OSError, KeyError, ValueError) as e:
        raise CircuitError(f"bad cluster key file {key_path}: {e}") from None
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):  # what `pycircuit keygen` makes
        raise CircuitError(f"bad cluster key file {key_path}: not an elliptic-curve key")
    try:
        names: list = [x509.IPAddress(ipaddress.ip_address(host))]
    except ValueError:
        names = [x509.DNSName(host)]
    names += [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"pycircuit web {host}")]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    with tempfile.TemporaryDirectory(
        prefix="pycircuit-web-"
    ) as d:  # mode 700; ssl loads from files only
        path = os.path.join(d, "cert.pem")
        with open(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as f:
            f.write(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
            f.write(
                cert.public_bytes(serialization.Encoding.PEM)
                + ca.public_bytes(serialization.Encoding.PEM)
            )
        ctx.load_cert_chain(path)
    return ctx
