"""Multi-host tests on one machine with Linux network namespaces.

A :class:`Cluster` is ``n`` "hosts" (network namespaces ``<prefix>-1`` ..
``<prefix>-n``) plugged into one Ethernet switch: a bridge ``br0`` that lives in
its own namespace ``<prefix>-sw``.  Every link is created directly inside the
namespaces, so nothing is ever added to, changed in or sent on the root
namespace and the machine's real interfaces::

    <prefix>-sw:  br0 (mcast_snooping 0) -- p1, p2, ... pn   (bridge ports)
    <prefix>-i:   eth0 (veth peer of p<i>), 10.77.<k>.<i>/24, multicast on; lo up

``<k>`` is random per cluster (the clusters are isolated from each other
anyway: each has its own switch namespace).

Use::

    from netns import hosts, requires_netns

    @requires_netns
    def test_x():
        with hosts(3) as c:
            p, url = c[0].start_server()
            assert c[1].tcp_connect(c[0].ip, port_of(url))

Teardown always runs (``with`` exit, or :meth:`Cluster.close`): tracked
processes are terminated then killed, every pid left in a namespace is killed,
the veth pairs are deleted, then the host namespaces, then the switch.  A
cluster whose owner died without teardown (e.g. SIGKILLed pytest) is reaped by
the next :meth:`Cluster.setup` on the machine.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence

import pytest

from conftest import child_env, stop_process

__all__ = [
    "Cluster",
    "Host",
    "hosts",
    "requires_netns",
    "requires_nft",
    "netns_unavailable",
    "nft_unavailable",
    "list_netns",
    "NetnsError",
]

IFNAME = "eth0"  # the host's interface, inside its namespace
_NFT_TABLE = "pycircuit_netem"  # partitions live in this table in the host namespace
_OWNERS = "/run/pycircuit-netns"  # <prefix>.owner files: "pid create_time" of the owner


class NetnsError(RuntimeError):
    pass


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and r.returncode:
        raise NetnsError(f"ip {' '.join(args)}: {r.stderr.strip() or r.returncode}")
    return r


def list_netns() -> list[str]:
    """Names of the named network namespaces on the machine (``ip netns list``)."""
    out = _ip("netns", "list").stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def ns_pids(ns: str) -> list[int]:
    """Pids of the live processes in namespace ``ns`` (``ip netns pids``)."""
    r = _ip("netns", "pids", ns, check=False)
    return [int(x) for x in r.stdout.split()]


def _kill_all_in(ns: str, timeout: float = 10.0) -> list[int]:
    """SIGKILL every process in ``ns`` until none is left; return the pids killed."""
    killed: list[int] = []
    deadline = time.monotonic() + timeout
    while True:
        pids = [p for p in ns_pids(ns) if p != os.getpid()]
        if not pids:
            return killed
        if time.monotonic() > deadline:
            raise NetnsError(f"processes {pids} in namespace {ns} survive SIGKILL")
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                if pid not in killed:
                    killed.append(pid)
        time.sleep(0.01)  # poll interval of the deadline loop above


# ---------------------------------------------------------------- availability


@functools.cache
def netns_unavailable() -> str | None:
    """Why network-namespace tests cannot run here, or None when they can."""
    if not sys.platform.startswith("linux"):
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespaces need root (run the tests as root)"
    if not shutil.which("ip"):
        return "iproute2 `ip` is not installed (apt-get install iproute2)"
    name = f"pcprobe{os.getpid()}"
    r = _ip("netns", "add", name, check=False)
    if r.returncode:
        return f"`ip netns add` fails here: {r.stderr.strip()}"
    try:
        r = _ip(
            "-n",
            name,
            "link",
            "add",
            "name",
            "pa",
            "type",
            "veth",
            "peer",
            "name",
            "pb",
            check=False,
        )
        if r.returncode:
            return f"cannot create a veth pair in a namespace: {r.stderr.strip()}"
        r = _ip("-n", name, "link", "add", "name", "br0", "type", "bridge", check=False)
        if r.returncode:
            return f"cannot create a bridge in a namespace: {r.stderr.strip()}"
    finally:
        _ip("netns", "del", name, check=False)
    return None


@functools.cache
def nft_unavailable() -> str | None:
    """Why partitions (nftables) cannot be used here, or None when they can."""
    why = netns_unavailable()
    if why:
        return why
    if not shutil.which("nft"):
        return "`nft` is not installed (apt-get install nftables)"
    name = f"pcprobe{os.getpid()}"
    _ip("netns", "add", name)
    try:
        r = subprocess.run(
            ["ip", "netns", "exec", name, "nft", "add", "table", "inet", "probe"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if r.returncode:
            return f"nftables does not work in a namespace: {r.stderr.strip()}"
    finally:
        _ip("netns", "del", name, check=False)
    return None


requires_netns = pytest.mark.skipif(
    netns_unavailable() is not None, reason=f"needs network namespaces: {netns_unavailable()}"
)
requires_nft = pytest.mark.skipif(
    nft_unavailable() is not None,
    reason=f"needs nftables in network namespaces: {nft_unavailable()}",
)


# ---------------------------------------------------------------- hosts


class Host:
    """One namespace of a :class:`Cluster`: ``ns`` (its name), ``ip`` (IPv4 on
    ``eth0``), ``ifname`` ("eth0"), ``index`` (1-based)."""

    def __init__(self, cluster: Cluster, index: int, ns: str, ip: str):
        self.cluster = cluster
        self.index = index
        self.ns = ns
        self.ip = ip
        self.ifname = IFNAME
        self.procs: list[subprocess.Popen] = []

    def __repr__(self) -> str:
        return f"Host({self.ns}, {self.ip})"

    # -- processes

    def argv(self, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.ns, *argv]

    def popen(self, argv: Sequence[str], **kw) -> subprocess.Popen:
        """Start ``argv`` in this namespace (``ip netns exec`` execs, so the
        Popen's pid is the program's).  Default env: ``conftest.child_env()``.
        Tracked: killed at teardown."""
        kw.setdefault("env", child_env())
        p = subprocess.Popen(self.argv(argv), **kw)
        self.procs.append(p)
        return p

    def run(self, argv: Sequence[str], timeout: float = 60.0, **kw) -> subprocess.CompletedProcess:
        """``subprocess.run`` in this namespace; captures text output by default."""
        kw.setdefault("env", child_env())
        if "stdout" not in kw and "stderr" not in kw:
            kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        return subprocess.run(self.argv(argv), timeout=timeout, **kw)

    def python(
        self, code: str, *args: str, timeout: float = 60.0, **kw
    ) -> subprocess.CompletedProcess:
        """Run ``python -c code args…`` in this namespace."""
        return self.run([sys.executable, "-c", code, *args], timeout=timeout, **kw)

    def popen_python(self, code: str, *args: str, **kw) -> subprocess.Popen:
        return self.popen([sys.executable, "-c", code, *args], **kw)

    def pids(self) -> list[int]:
        return ns_pids(self.ns)

    def crash(self, timeout: float = 10.0) -> list[int]:
        """SIGKILL every process in the namespace (a host crash); return their pids."""
        killed = _kill_all_in(self.ns, timeout)
        for p in self.procs:
            if p.poll() is None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(timeout)
        return killed

    # -- reachability

    def tcp_connect(self, ip: str, port: int, timeout: float = 1.0) -> bool:
        """Whether a TCP connection from this host to ``ip:port`` succeeds within ``timeout``."""
        code = (
            "import socket,sys\n"
            "try:\n socket.create_connection((sys.argv[1], int(sys.argv[2])), float(sys.argv[3])).close()\n"
            "except OSError as e:\n sys.exit(str(e) or type(e).__name__)\n"
        )
        r = self.run(
            [sys.executable, "-I", "-S", "-c", code, ip, str(port), str(timeout)],
            timeout=timeout + 30,
        )
        return r.returncode == 0

    # -- faults (nftables table inside this namespace)

    def _nft(self, script: str) -> None:
        r = self.run(["nft", "-f", "-"], input=script, timeout=30)
        if r.returncode:
            raise NetnsError(f"nft in {self.ns}: {r.stderr.strip()}\n{script}")

    _BASE = (
        f"add table inet {_NFT_TABLE}\n"
        f"add chain inet {_NFT_TABLE} input {{ type filter hook input priority 0; policy accept; }}\n"
        f"add chain inet {_NFT_TABLE} output {{ type filter hook output priority 0; policy accept; }}\n"
    )

    def partition(self, one_way: bool = False) -> None:
        """Cut this host off the switch: drop everything in and out on ``eth0``
        (``one_way``: only what it sends; it still receives).  ``lo`` is untouched.
        Replaces any earlier partition/cut of this host."""
        rules = "" if one_way else f"add rule inet {_NFT_TABLE} input iifname \"{IFNAME}\" drop\n"
        rules += f"add rule inet {_NFT_TABLE} output oifname \"{IFNAME}\" drop\n"
        self._nft(
            f"add table inet {_NFT_TABLE}\ndelete table inet {_NFT_TABLE}\n" + self._BASE + rules
        )

    def cut_from(self, other: Host | str) -> None:
        """Drop traffic between this host and ``other`` only (both directions);
        adds to earlier cuts."""
        ip = other.ip if isinstance(other, Host) else other
        self._nft(
            self._BASE
            + f"add rule inet {_NFT_TABLE} input ip saddr {ip} drop\n"
            + f"add rule inet {_NFT_TABLE} output ip daddr {ip} drop\n"
        )

    def heal(self) -> None:
        """Undo :meth:`partition` and :meth:`cut_from`."""
        self._nft(f"add table inet {_NFT_TABLE}\ndelete table inet {_NFT_TABLE}\n")

    # -- pycircuit

    def start_server(self, *extra: str, timeout: float = 20.0) -> tuple[subprocess.Popen, str]:
        """Start ``pycircuit.cli start -a IP:0 --insecure --var DIR *extra``
        here; return ``(Popen, circuit URL)``.  DIR and its stderr file are in
        the cluster's temp dir, so even a crashed server leaves nothing behind
        (the stderr is quoted when it prints no URL within ``timeout``)."""
        name = f"server-{self.index}-{len(self.procs)}"
        err_path = os.path.join(self.cluster.tmpdir, name + ".err")
        var = os.path.join(self.cluster.tmpdir, name + ".var")
        with open(err_path, "wb") as err:
            p = self.popen(
                [
                    sys.executable,
                    "-m",
                    "pycircuit.cli",
                    "start",
                    "-a",
                    f"{self.ip}:0",
                    "--insecure",
                    "--var",
                    var,
                    *extra,
                ],
                stdout=subprocess.PIPE,
                stderr=err,
            )
        line = _read_line(p, timeout)
        url = line.decode(errors="replace").strip()
        if not url.startswith("circuit://"):
            _stop(p)
            with open(err_path, errors="replace") as f:
                raise AssertionError(
                    f"server in {self.ns} gave no URL within {timeout} s "
                    f"(stdout {line!r}, exit {p.returncode}): {f.read()[-4000:]}"
                )
        return p, url


def _read_line(p: subprocess.Popen, timeout: float) -> bytes:
    """The first line of ``p``'s stdout, or what came before the deadline/EOF."""
    fd = p.stdout.fileno()
    buf = b""
    deadline = time.monotonic() + timeout
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        buf += chunk
    return buf.split(b"\n", 1)[0] if b"\n" in buf else buf


def _stop(p: subprocess.Popen, grace: float = 5.0) -> None:
    stop_process(p, grace)


# ---------------------------------------------------------------- cluster


def _owner_alive(path: str) -> bool:
    try:
        with open(path) as f:
            pid, started = f.read().split()
        import psutil

        return abs(psutil.Process(int(pid)).create_time() - float(started)) < 1.0
    except Exception:  # unreadable, pid gone or reused
        return False


def reap_stale() -> list[str]:
    """Delete the clusters whose owner process is dead; return the namespaces removed."""
    removed: list[str] = []
    if not os.path.isdir(_OWNERS):
        return removed
    names = list_netns()
    for fn in os.listdir(_OWNERS):
        path = os.path.join(_OWNERS, fn)
        if not fn.endswith(".owner") or _owner_alive(path):
            continue
        prefix = fn[: -len(".owner")]
        for ns in sorted(
            (n for n in names if n.startswith(prefix + "-")), key=lambda n: n.endswith("-sw")
        ):
            with contextlib.suppress(NetnsError):
                _kill_all_in(ns)
            if _ip("netns", "del", ns, check=False).returncode == 0:
                removed.append(ns)
        for d in glob.glob(os.path.join(tempfile.gettempdir(), prefix + "-*")):
            shutil.rmtree(d, ignore_errors=True)  # its Cluster.tmpdir
        with contextlib.suppress(OSError):
            os.unlink(path)
    return removed


class Cluster:
    """``n`` hosts on one switch.  ``cluster[i]`` / iteration give the
    :class:`Host` objects (0-based).  ``setup_seconds`` / ``teardown_seconds``
    are measured.  ``multicast_route`` adds ``224.0.0.0/4 dev eth0`` in every
    host (not needed by programs that pick the interface, like zeroconf with
    ``interfaces=[ip]``)."""

    def __init__(self, n: int, prefix: str | None = None, multicast_route: bool = False):
        if not 1 <= n <= 250:
            raise ValueError("1 <= n <= 250")
        self.n = n
        self.prefix = prefix or f"pc{secrets.token_hex(3)}"
        self.switch_ns = f"{self.prefix}-sw"
        self.subnet = f"10.77.{secrets.randbelow(256)}"
        self.multicast_route = multicast_route
        self.hosts: list[Host] = []
        self.tmpdir = ""
        self.setup_seconds: float | None = None
        self.teardown_seconds: float | None = None
        self._created: list[str] = []  # namespaces created, in order
        self._closed = False

    def __getitem__(self, i: int) -> Host:
        return self.hosts[i]

    def __iter__(self) -> Iterator[Host]:
        return iter(self.hosts)

    def __len__(self) -> int:
        return len(self.hosts)

    def __enter__(self) -> Cluster:
        try:
            self.setup()
        except BaseException as e:
            try:
                self.close()
            except NetnsError as ce:
                e.add_note(f"and teardown failed: {ce}")
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def namespaces(self) -> list[str]:
        return list(self._created)

    def setup(self) -> Cluster:
        why = netns_unavailable()
        if why:
            raise NetnsError(why)
        t0 = time.monotonic()
        reap_stale()
        os.makedirs(_OWNERS, exist_ok=True)
        import psutil

        with open(os.path.join(_OWNERS, self.prefix + ".owner"), "w") as f:
            f.write(f"{os.getpid()} {psutil.Process().create_time()}\n")
        self.tmpdir = tempfile.mkdtemp(prefix=f"{self.prefix}-")
        sw = self.switch_ns
        _ip("netns", "add", sw)
        self._created.append(sw)
        _ip("-n", sw, "link", "add", "name", "br0", "type", "bridge", "mcast_snooping", "0")
        _ip("-n", sw, "link", "set", "br0", "up")
        for i in range(1, self.n + 1):
            ns = f"{self.prefix}-{i}"
            _ip("netns", "add", ns)
            self._created.append(ns)
            # Both ends are created inside namespaces: nothing touches the root one.
            _ip(
                "-n",
                sw,
                "link",
                "add",
                "name",
                f"p{i}",
                "type",
                "veth",
                "peer",
                "name",
                IFNAME,
                "netns",
                ns,
            )
            _ip("-n", sw, "link", "set", f"p{i}", "master", "br0", "up")
            ip = f"{self.subnet}.{i}"
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "addr", "add", f"{ip}/24", "dev", IFNAME)
            _ip("-n", ns, "link", "set", IFNAME, "multicast", "on", "up")
            if self.multicast_route:
                _ip("-n", ns, "route", "add", "224.0.0.0/4", "dev", IFNAME)
            self.hosts.append(Host(self, i, ns, ip))
        self.setup_seconds = time.monotonic() - t0
        return self

    def close(self) -> None:
        """Tear everything down; every step runs even if an earlier one fails.
        Raises NetnsError at the end if something could not be removed."""
        if self._closed:
            return
        self._closed = True
        t0 = time.monotonic()
        errors: list[str] = []
        # 1. tracked processes: terminate all, then wait with one grace period, then kill.
        procs = [p for h in self.hosts for p in h.procs]
        for p in procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.terminate()
        deadline = time.monotonic() + 5.0
        for p in procs:
            try:
                p.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(5.0)
            for stream in (p.stdin, p.stdout, p.stderr):
                if stream:
                    with contextlib.suppress(OSError):
                        stream.close()
        # 2. whatever else still runs in the namespaces (workers, grandchildren).
        for ns in reversed(self._created):
            try:
                _kill_all_in(ns)
            except NetnsError as e:
                errors.append(str(e))
        # 3. veth pairs (deleting the bridge port deletes its peer), then namespaces.
        if self.switch_ns in self._created:
            for h in self.hosts:
                r = _ip("-n", self.switch_ns, "link", "del", f"p{h.index}", check=False)
                if r.returncode:
                    errors.append(f"veth p{h.index}: {r.stderr.strip()}")
        for ns in reversed(self._created):  # hosts first, the switch last
            r = _ip("netns", "del", ns, check=False)
            if r.returncode:
                errors.append(f"netns del {ns}: {r.stderr.strip()}")
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(_OWNERS, self.prefix + ".owner"))
        if self.tmpdir:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
        left = set(self._created) & set(list_netns())
        if left:
            errors.append(f"namespaces left behind: {sorted(left)}")
        self.teardown_seconds = time.monotonic() - t0
        if errors:
            raise NetnsError("; ".join(errors))


@contextlib.contextmanager
def hosts(n: int, prefix: str | None = None, multicast_route: bool = False) -> Iterator[Cluster]:
    """``with hosts(3) as c: c[0].ip …`` — a :class:`Cluster`, always torn down."""
    with Cluster(n, prefix, multicast_route) as c:
        yield c
