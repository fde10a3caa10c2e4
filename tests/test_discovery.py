"""Zeroconf discovery (pycircuit.server._discovery) between network-namespace
hosts.  Zeroconf only ever runs inside namespaces created here (in
subprocesses started with ``ip netns exec``), never in the root namespace."""

from __future__ import annotations

import ast
import json
import subprocess

import pytest

import netns
from netns import hosts, requires_netns
from pycircuit.errors import CircuitError
from pycircuit.server import _discovery
from pycircuit.server._discovery import announce, browse, interface_address

# Announces argv[1] on interface argv[2]; says "announced <name>", closes when
# stdin closes, then says "closed".
ANNOUNCER = (
    "import sys\n"
    "from pycircuit.server._discovery import announce\n"
    "a = announce(sys.argv[1], sys.argv[2])\n"
    "print('announced', a.name, flush=True)\n"
    "sys.stdin.read()\n"
    "a.close()\n"
    "print('closed', flush=True)\n"
)
# Browses on argv[1]; prints JSON {"urls": [...]} or {"error": ..., "type": ...} and the time browse() took.
BROWSER = (
    "import sys, time, json\n"
    "from pycircuit.server._discovery import browse\n"
    "from pycircuit.errors import CircuitError\n"
    "t = time.monotonic()\n"
    "try:\n"
    "    out = {'urls': browse(sys.argv[1], float(sys.argv[2]), int(sys.argv[3]))}\n"
    "except CircuitError as e:\n"
    "    out = {'error': str(e), 'type': type(e).__name__}\n"
    "out['elapsed'] = time.monotonic() - t\n"
    "print(json.dumps(out))\n"
)


def fake_url(host: netns.Host, n: int) -> str:
    return f"circuit://{host.ip}:{4000 + n}/{100 + n}/Q{n:016x}"


class Announcer:
    def __init__(self, host: netns.Host, url: str, iface: str = "eth0"):
        self.url = url
        self.p = host.popen_python(
            ANNOUNCER, url, iface, stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        line = netns._read_line(self.p, 20.0).decode()
        assert line.startswith("announced "), f"announcer in {host.ns} failed: {line!r}"
        self.name = line.split(" ", 1)[1]

    def close(self) -> None:
        """Close the announcement (mDNS goodbye) and wait for the process to end."""
        self.p.stdin.close()
        assert netns._read_line(self.p, 20.0) == b"closed"
        assert self.p.wait(20) == 0

    def kill(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()


@pytest.fixture
def announcers():
    started: list[Announcer] = []

    def start(host: netns.Host, url: str, iface: str = "eth0") -> Announcer:
        a = Announcer(host, url, iface)
        started.append(a)
        return a

    try:
        yield start
    finally:
        for a in started:
            a.kill()


def browse_in(host: netns.Host, iface: str = "eth0", timeout: float = 5.0, want: int = 1) -> dict:
    r = host.python(BROWSER, iface, str(timeout), str(want), timeout=timeout + 60)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout)


@pytest.fixture(scope="module")
def net():
    if netns.netns_unavailable():
        pytest.skip(f"needs network namespaces: {netns.netns_unavailable()}")
    with hosts(3) as c:
        yield c


# ------------------------------------------------------------ across namespaces


@requires_netns
def test_browse_in_another_host_finds_the_announced_server(net, announcers):
    server, url = net[0].start_server()
    try:
        a = announcers(net[0], url)
        assert a.name.endswith("._pycircuit._tcp.local.") and url.rsplit("/", 1)[1] in a.name
        out = browse_in(net[1], net[1].ip, timeout=10.0)
        assert out.get("urls") == [url], out
        assert out["elapsed"] < 8.0  # returned once found, not at the timeout
        # The URL found is the live server: a client in a third host reaches it.
        r = net[2].python(
            "import pycircuit,sys\n"
            "with pycircuit.connect(sys.argv[1]) as c: print(c.hosts()[0].url)",
            out["urls"][0],
        )
        assert r.stdout.strip() == url, r.stderr[-3000:]
    finally:
        server.terminate()
        server.wait(10)


@requires_netns
def test_browse_waits_for_want_servers(net, announcers):
    urls = {fake_url(net[0], 1), fake_url(net[2], 2)}
    announcers(net[0], fake_url(net[0], 1))
    announcers(net[2], fake_url(net[2], 2))
    out = browse_in(net[1], "eth0", timeout=10.0, want=2)
    assert set(out.get("urls", [])) == urls, out
    assert out["elapsed"] < 8.0


@requires_netns
def test_browse_with_nobody_announcing_raises_clear_error_in_time(net):
    out = browse_in(net[1], "eth0", timeout=1.5)
    assert out.get("type") == "CircuitError", out
    assert out["error"] == f"discovery on {net[1].ip} found no pycircuit server within 1.5 s"
    assert 1.5 <= out["elapsed"] < 1.5 + 3.0


@requires_netns
def test_closed_announcement_is_no_longer_found(net, announcers):
    url = fake_url(net[0], 3)
    a = announcers(net[0], url)
    assert browse_in(net[1], timeout=10.0).get("urls") == [url]
    a.close()
    out = browse_in(net[1], timeout=2.0)
    assert out.get("type") == "CircuitError", out


@requires_netns
def test_announcement_stays_on_its_one_interface(net, announcers):
    # Host 1 announces on lo only (multicast enabled on its lo, inside the
    # namespace): seen on lo there, never on the switch from host 2.
    assert net[0].run(["ip", "link", "set", "lo", "multicast", "on"]).returncode == 0
    url = f"circuit://127.0.0.1:4999/99/Q{5:016x}"
    announcers(net[0], url, "lo")
    assert browse_in(net[0], "lo", timeout=10.0).get("urls") == [url]
    out = browse_in(net[1], "eth0", timeout=2.0)
    assert out.get("type") == "CircuitError", out


@requires_netns
def test_concurrent_browses_in_one_process(net, announcers):
    url = fake_url(net[0], 6)
    announcers(net[0], url)
    code = (
        "import concurrent.futures as cf, json, sys\n"
        "from pycircuit.server._discovery import browse\n"
        "with cf.ThreadPoolExecutor(4) as ex:\n"
        "    print(json.dumps(list(ex.map(lambda _: browse(sys.argv[1], 10.0), range(4)))))\n"
    )
    r = net[1].python(code, "eth0")
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout) == [[url]] * 4


@requires_netns
def test_interface_address_resolves_a_namespace_interface(net):
    r = net[1].python(
        "from pycircuit.server._discovery import interface_address as f\nprint(f('eth0'), f('lo'))"
    )
    assert r.stdout.split() == [net[1].ip, "127.0.0.1"], r.stderr[-3000:]


# ------------------------------------------------------------ no network traffic


def test_interface_address_passes_ips_and_names_lo():
    assert interface_address("10.1.2.3") == "10.1.2.3"
    assert interface_address("lo") == "127.0.0.1"


def test_interface_address_rejects_unknown_names_and_ipv6():
    with pytest.raises(CircuitError, match="no network interface or IPv4 address 'nosuchif0'"):
        interface_address("nosuchif0")
    with pytest.raises(CircuitError, match="IPv4 only"):
        interface_address("::1")


def test_announce_rejects_a_bad_url_before_touching_the_network():
    with pytest.raises(CircuitError, match="not a circuit URL"):
        announce("http://example/", "127.0.0.1")


def test_browse_rejects_want_below_one():
    with pytest.raises(ValueError):
        browse("127.0.0.1", 1.0, want=0)


def test_discovery_module_does_not_import_rpyc():
    tree = ast.parse(open(_discovery.__file__).read())
    names = {
        a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names
    }
    names |= {
        (n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
    }
    assert "zeroconf" in names and "rpyc" not in names
