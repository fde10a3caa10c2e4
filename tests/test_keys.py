"""Cluster keys (SPEC section 5): with a key, every connection (client to
server, worker to server, worker to worker, worker to client) is mutually
authenticated TLS 1.3, and a peer without the key is refused at once.

A process's runtime has one TLS setting, and the test process's runtime is
keyless (the other test modules use it), so every keyed client here runs in
a subprocess, with a timeout."""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import textwrap
import threading
import time

import pytest
import rpyc

import pycircuit
from conftest import child_env, cli, start_server, stop_process, wait_until
from pycircuit.runtime._addr import WorkerAddr
from pycircuit.runtime._tls import load_key

CLIENT_TIMEOUT = 60


def run_client(
    script: str, *args: str, env_key: str | None = None, timeout: float = CLIENT_TIMEOUT
):
    env = child_env()
    env.pop("CIRCUIT_KEY", None)
    if env_key:
        env["CIRCUIT_KEY"] = env_key
    t0 = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return out, time.monotonic() - t0


def last_json(out) -> dict:
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    paths = []
    for name in ("a.key", "b.key"):
        out = subprocess.run(
            [sys.executable, "-m", "pycircuit.cli", "keygen"],
            env=child_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        p = d / name
        p.write_text(out.stdout)
        p.chmod(0o600)
        paths.append(str(p))
    return paths


@pytest.fixture(scope="module")
def keyed(keys):
    """A server with key A: (url, its process)."""
    p, url = start_server("--key", keys[0])
    try:
        yield url, p
    finally:
        stop_process(p)


# -- (a) everything works with the key ------------------------------------

WITH_KEY = """
    import json, ssl, sys, threading
    import pycircuit
    from pycircuit.runtime._runtime import current
    from circuit_helpers import Counter, daemon

    def tls_versions():
        rt = current()
        with rt._lock:
            socks = [p.conn._channel.stream.sock for p in rt._all_peers]
        return sorted({s.version() if isinstance(s, ssl.SSLSocket) else "plain" for s in socks})

    def use(x, mine):
        # worker C: calls worker B (owner of x) and the client (owner of mine) directly
        import socket, ssl
        import pycircuit
        from pycircuit.runtime._runtime import current
        c = pycircuit.connect()  # inside a worker: its own server, with the worker's key
        hosts = [h.id for h in c.hosts()]
        r = x.incr(5), mine.incr(7), hosts
        rt = current()
        with rt._lock:
            socks = [p.conn._channel.stream.sock for p in rt._all_peers]
        # every connection over the network speaks TLS; the one to its own
        # server is the socketpair it was forked with
        kinds = {"unix" if s.family == socket.AF_UNIX else s.version() if isinstance(s, ssl.SSLSocket) else "plain" for s in socks}
        return r + (sorted(kinds),)

    url = sys.argv[1]
    key = sys.argv[2] if len(sys.argv) > 2 else None
    c = pycircuit.connect(url, key=key)
    host = c.hosts()[0]
    x, baddr = c.spawn(host, None, daemon)          # worker B serves a Counter
    try:
        mine = Counter()
        a = x.incr(1)                               # client -> worker
        b, cb, hosts, c_tls = c.spawn(host, None, use, x, pycircuit.ref(mine))[0]  # worker <-> worker, worker -> client
        # many concurrent calls over the TLS connections, both ways
        errors = []
        def hammer():
            try:
                for _ in range(100):
                    x.incr(1)
            except Exception as e:
                errors.append(repr(e))
        ts = [threading.Thread(target=hammer) for _ in range(8)]
        for t in ts: t.start()
        for t in ts: t.join()
        total = x.get()
        print(json.dumps({"a": a, "b": b, "cb": cb, "mine": mine.n, "hosts": hosts, "host": host.id,
                          "total": total, "errors": errors, "c_tls": c_tls, "my_tls": tls_versions()}))
    finally:
        c.kill(baddr)
        c.close()
"""


def test_keyed_client_spawns_and_calls_across_workers(keyed, keys):
    url, _ = keyed
    out, _ = run_client(WITH_KEY, url, keys[0])
    r = last_json(out)
    assert r["a"] == 1 and r["b"] == 6 and r["cb"] == 7 and r["mine"] == 7
    assert r["hosts"] == [r["host"]]
    assert r["errors"] == [] and r["total"] == 6 + 800
    assert r["c_tls"] == ["TLSv1.3", "unix"] and r["my_tls"] == ["TLSv1.3"]


def test_key_from_environment(keyed, keys):
    url, _ = keyed
    out, _ = run_client(
        """
        import json, sys, pycircuit
        from circuit_helpers import add
        c = pycircuit.connect(sys.argv[1])
        print(json.dumps(c.spawn(c.hosts()[0], None, add, 2, 3)[0]))
    """,
        url,
        env_key=keys[0],
    )
    assert last_json(out) == 5


def test_servers_join_only_with_the_same_key(servers, keys):
    """Server to server: b (key A) joins a (key A); c (key B) cannot, says
    so and runs alone."""
    a = servers.start("--key", keys[0])
    b = servers.start("--key", keys[0], "-j", a)
    c = servers.start("--key", keys[1], "-j", a)

    def ls(url, key):
        r = cli("ls", "/", "--key", key, url=url)
        assert r.returncode == 0, r.stderr
        return sorted(r.stdout.split())

    wait_until(lambda: len(ls(a, keys[0])) == 2, 15, what="a and b see each other")
    assert ls(b, keys[0]) == ls(a, keys[0])
    assert len(ls(c, keys[1])) == 1
    r = cli("ls", "/", "--key", keys[1], url=a)  # a client with key B is refused by a
    assert r.returncode != 0 and "not in this cluster" in r.stderr and "Traceback" not in r.stderr
    p = servers.procs[2]
    p.terminate()
    _, err = p.communicate(timeout=10)
    assert "cannot join" in err and "not in this cluster" in err and "running alone" in err


# -- (b), (c) refused without the key or with another ---------------------

REFUSED = """
    import sys, time, pycircuit
    key = sys.argv[2] if len(sys.argv) > 2 else None
    t = time.monotonic()
    try:
        c = pycircuit.connect(sys.argv[1], key=key)
        c.hosts()
    except pycircuit.NetworkError as e:
        print(f"{time.monotonic() - t:.3f}")
        print(e)
    else:
        print("connected")
"""


def test_client_without_key_is_refused(keyed):
    url, _ = keyed
    out, took = run_client(REFUSED, url, timeout=30)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] != "connected", out.stdout
    assert float(lines[0]) < 3.0 and "cluster key" in lines[1]


def test_client_with_another_key_is_refused(keyed, keys):
    url, _ = keyed
    out, took = run_client(REFUSED, url, keys[1], timeout=30)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] != "connected", out.stdout
    assert float(lines[0]) < 3.0
    assert "TLS handshake with 127.0.0.1:" in lines[1] and "not in this cluster" in lines[1]


def test_keyed_client_against_keyless_server_does_not_hang(server, keys):
    """The keyless server never answers a ClientHello; the handshake deadline
    ends the wait."""
    out, took = run_client(REFUSED, server, keys[0], timeout=30)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] != "connected", out.stdout
    assert float(lines[0]) < 10.0 and "TLS handshake" in lines[1]


def test_explicit_key_differing_from_the_runtime_is_an_error(keys):
    """The test process's runtime is keyless: connect(key=...) must say so
    rather than connect without TLS."""
    from pycircuit.runtime._runtime import current

    current()  # this process's (keyless) runtime exists, as for the other test modules
    with pytest.raises(pycircuit.CircuitError, match="without a cluster key"):
        pycircuit.connect("circuit://127.0.0.1:1/1/Q0000000000000000", key=keys[0])


# -- (d) silent or garbage peers do not block the server ------------------


def test_silent_and_garbage_peers_do_not_block_others(keyed, keys):
    url, _ = keyed
    a = WorkerAddr.parse(url)
    silent = [socket.create_connection((a.host, a.port), timeout=10) for _ in range(10)]
    garbage = socket.create_connection((a.host, a.port), timeout=10)
    try:
        garbage.sendall(b"GET / HTTP/1.0\r\n\r\n" + os.urandom(64))
        # Ten handshakes that would each wait 5 s if run in turn on the accept
        # thread; a keyed client gets through meanwhile.
        out, took = run_client(
            """
            import json, sys, pycircuit
            from circuit_helpers import add
            c = pycircuit.connect(sys.argv[1], key=sys.argv[2])
            print(json.dumps(c.spawn(c.hosts()[0], None, add, 20, 22)[0]))
        """,
            url,
            keys[0],
            timeout=30,
        )
        assert last_json(out) == 42
        # The garbage sender is dropped at once, the silent ones after the deadline.
        try:
            assert garbage.recv(100) == b""
        except ConnectionResetError:
            pass
        for s in silent:
            assert s.recv(100) == b""  # EOF within the socket timeout (10 s)
    finally:
        for s in silent + [garbage]:
            s.close()


def test_a_server_says_why_it_refused_connections_at_most_five_a_minute(keys):
    p, url = start_server("--key", keys[0])
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(p.stderr.readline, "")), daemon=True)
    reader.start()
    try:
        a = WorkerAddr.parse(url)
        for _ in range(8):
            with socket.create_connection((a.host, a.port), timeout=10) as s:
                s.sendall(b"GET / HTTP/1.0\r\n\r\n")
                try:
                    assert s.recv(100) == b""  # dropped
                except ConnectionResetError:
                    pass
        wait_until(
            lambda: sum("refused a connection" in ln for ln in lines) >= 5,
            what="five refusal lines",
        )
    finally:
        stop_process(p)
    reader.join(10)
    refusals = [ln for ln in lines if "refused a connection" in ln]
    assert len(refusals) == 5, lines  # the other three in this minute are not logged
    assert all("TLS handshake with 127.0.0.1:" in ln for ln in refusals)
    assert refusals[-1].rstrip().endswith("(more in this minute are not logged)")


# -- (e) the wire is TLS, and a plain client gets nothing ------------------


def test_plain_rpyc_client_gets_nothing(keyed):
    url, _ = keyed
    a = WorkerAddr.parse(url)
    with pytest.raises((EOFError, ConnectionError, OSError)):
        conn = rpyc.connect(a.host, a.port, config={"sync_request_timeout": 10})
        try:
            conn.root.ping()
        finally:
            conn.close()


def test_server_speaks_tls13_with_the_cluster_certificate_and_wants_ours(keyed, keys):
    url, _ = keyed
    a = WorkerAddr.parse(url)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection((a.host, a.port), timeout=10) as raw:
        with ctx.wrap_socket(raw) as s:
            assert s.version() == "TLSv1.3"
            der = s.getpeercert(binary_form=True)
            cert_pem = open(keys[0]).read().split("-----BEGIN CERTIFICATE-----")[1]
            assert (
                ssl.DER_cert_to_PEM_cert(der).split("-----BEGIN CERTIFICATE-----")[1].split()
                == cert_pem.split()
            )
            # Without a client certificate the server refuses us.
            with pytest.raises((ssl.SSLError, ConnectionError)):
                s.sendall(b"\0" * 16)
                if s.recv(100) == b"":
                    raise ConnectionError("closed")


class _Tap:
    """A TCP forwarder that records what passes through it."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.lsock = socket.create_server(("127.0.0.1", 0))
        self.port = self.lsock.getsockname()[1]
        self.up = bytearray()
        self.down = bytearray()
        self.socks: list[socket.socket] = []
        self.threads: list[threading.Thread] = []
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        self.threads.append(t)

    def _accept(self):
        while True:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            s = socket.create_connection(self.target)
            self.socks += [c, s]
            for src, dst, buf in ((c, s, self.up), (s, c, self.down)):
                t = threading.Thread(target=self._pump, args=(src, dst, buf), daemon=True)
                t.start()
                self.threads.append(t)

    @staticmethod
    def _pump(src, dst, buf):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                buf += data
                dst.sendall(data)
        except OSError:
            pass
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def url_for(self, url: str) -> str:
        a = WorkerAddr.parse(url)
        return WorkerAddr("127.0.0.1", self.port, a.pid, a.id).url

    def close(self):
        try:
            self.lsock.shutdown(socket.SHUT_RDWR)  # wakes accept(); close() alone does not
        except OSError:
            pass
        self.lsock.close()
        for s in self.socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        for t in self.threads:
            t.join(5)


@pytest.fixture
def tap():
    taps = []

    def make(url):
        a = WorkerAddr.parse(url)
        t = _Tap((a.host, a.port))
        taps.append(t)
        return t

    yield make
    for t in taps:
        t.close()


MARKER = "plaintext-marker-7f3a9c"

TAPPED = """
    import sys, pycircuit
    key = sys.argv[2] if len(sys.argv) > 2 else None
    c = pycircuit.connect(sys.argv[1], key=key)
    try:
        c.walk([c.hosts()[0].id, sys.argv[3]]).view()
    except pycircuit.CircuitError:
        pass
    print("done")
"""


def test_wire_bytes_are_encrypted(keyed, server, keys, tap):
    """The same exchange through a recording forwarder: the marker is
    visible on a keyless circuit and absent on a keyed one."""
    plain = tap(server)
    out, _ = run_client(TAPPED, plain.url_for(server), "", MARKER)
    assert out.stdout.strip() == "done", out.stderr
    assert MARKER.encode() in bytes(plain.up)  # the method works

    url, _ = keyed
    enc = tap(url)
    out, _ = run_client(TAPPED, enc.url_for(url), keys[0], MARKER)
    assert out.stdout.strip() == "done", out.stderr
    up, down = bytes(enc.up), bytes(enc.down)
    assert up[:1] == b"\x16" and down[:1] == b"\x16"  # TLS handshake records
    assert MARKER.encode() not in up and MARKER.encode() not in down
    assert b"circuit" not in up and b"circuit" not in down  # no service names, URLs, ...


# -- (f) keygen and bad key files -----------------------------------------


def test_keygen_output_loads_and_is_fresh(keys):
    a, b = load_key(keys[0]), load_key(keys[1])
    assert a.path == keys[0] and a.fingerprint != b.fingerprint
    assert open(keys[0]).read() != open(keys[1]).read()


def test_keygen_writes_a_file_only_its_owner_reads_and_never_overwrites(tmp_path):
    out = tmp_path / "k"
    r = cli("keygen", "-o", str(out))
    assert r.returncode == 0 and r.stdout == "", r.stderr
    assert out.stat().st_mode & 0o777 == 0o600
    first = out.read_text()
    load_key(str(out))
    again = cli("keygen", "-o", str(out))
    assert (
        again.returncode != 0
        and again.stderr.strip().count("\n") == 0
        and "not overwriting" in again.stderr
    )
    assert out.read_text() == first


def test_start_warns_when_others_can_read_the_key(tmp_path, keys):
    loose = tmp_path / "loose.key"
    loose.write_text(open(keys[0]).read())
    loose.chmod(0o644)
    p = subprocess.Popen(
        [sys.executable, "-m", "pycircuit.cli", "start", "-a", "127.0.0.1:0", "--key", str(loose)],
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert p.stdout.readline().startswith("circuit://")
        first = p.stderr.readline()
        assert "can be read by other users" in first and f"chmod 600 {loose}" in first
    finally:
        stop_process(p)


def _leaf_key_file() -> str:
    """A key and a self-signed certificate that is not a CA."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    k = ec.generate_private_key(ec.SECP256R1())
    n = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "leaf")])
    now = datetime.datetime.now(datetime.timezone.utc)
    c = (
        x509.CertificateBuilder()
        .subject_name(n)
        .issuer_name(n)
        .public_key(k.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(k, hashes.SHA256())
    )
    return (
        k.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        + c.public_bytes(serialization.Encoding.PEM)
    ).decode()


@pytest.mark.parametrize(
    "content",
    [
        None,
        "garbage\n",
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        "cert-only",
        "key-of-another",
        "corrupt",
        "leaf",
    ],
)
def test_bad_key_file_is_one_line_and_no_traceback(tmp_path, keys, content):
    bad = tmp_path / "bad.key"
    if content == "leaf":
        content = _leaf_key_file()
    elif content == "corrupt":  # base64 damaged inside the private key
        text = open(keys[0]).read()
        i = text.index("-----BEGIN PRIVATE KEY-----") + 40
        content = text[:i] + "!!!!" + text[i + 4 :]
    elif content == "cert-only":
        text = open(keys[0]).read()
        content = text[text.index("-----BEGIN CERTIFICATE-----") :]
    elif content == "key-of-another":  # key of A, certificate of B
        ta, tb = open(keys[0]).read(), open(keys[1]).read()
        content = (
            ta[: ta.index("-----BEGIN CERTIFICATE-----")]
            + tb[tb.index("-----BEGIN CERTIFICATE-----") :]
        )
    if content is not None:
        bad.write_text(content)
    with pytest.raises(pycircuit.CircuitError, match=f"bad cluster key file {bad}: "):
        load_key(str(bad))
    env = child_env()
    env.pop("CIRCUIT_KEY", None)
    out = subprocess.run(
        [sys.executable, "-m", "pycircuit.cli", "start", "-a", "127.0.0.1:0", "--key", str(bad)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0 and out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"pycircuit: bad cluster key file {bad}: "), (
        out.stderr
    )
    assert "Traceback" not in out.stderr


def test_key_allows_non_loopback_address(keys):
    env = child_env()
    env.pop("CIRCUIT_KEY", None)
    cmd = [sys.executable, "-m", "pycircuit.cli", "start", "-a", "0.0.0.0:0"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "without a key" in out.stderr
    p = subprocess.Popen(
        cmd + ["--key", keys[0]], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert p.stdout.readline().startswith("circuit://"), (
            p.stderr.read() if p.poll() is not None else ""
        )
    finally:
        stop_process(p)
