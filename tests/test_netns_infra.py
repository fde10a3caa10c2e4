"""The network-namespace test harness itself (tests/netns.py): hosts reach each
other, partitions cut and heal, crash kills, teardown leaves nothing behind.
All traffic stays inside namespaces created here."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import psutil
import pytest

from conftest import wait_until
import netns
from netns import hosts, list_netns, requires_netns, requires_nft

pytestmark = requires_netns

PORT = 7000

# Accept-and-close loop; says "ready" once listening.
TCP_LISTENER = (
    "import socket,sys\n"
    "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(64)\n"
    "print('ready', flush=True)\n"
    "while True: s.accept()[0].close()\n"
)
# Prints every datagram it receives, one per line.
UDP_RECEIVER = (
    "import socket,sys\n"
    "s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((sys.argv[1], int(sys.argv[2])))\n"
    "print('ready', flush=True)\n"
    "while True: print(s.recv(100).decode(), flush=True)\n"
)
UDP_SEND = (
    "import socket,sys\n"
    "socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(sys.argv[3].encode(), (sys.argv[1], int(sys.argv[2])))\n"
)
SLEEPER = "import threading; threading.Event().wait()"  # a process to be killed, never woken


def start_ready(host: netns.Host, code: str, *args: str) -> subprocess.Popen:
    p = host.popen_python(code, *args, stdout=subprocess.PIPE)
    line = netns._read_line(p, 15.0)
    assert line == b"ready", f"helper in {host.ns} did not start: {line!r}"
    return p


@pytest.fixture(scope="module")
def net():
    with hosts(3) as c:
        for h in c:
            start_ready(h, TCP_LISTENER, h.ip, str(PORT))
        yield c
    print(f"\n3-host cluster: setup {c.setup_seconds:.3f} s, teardown {c.teardown_seconds:.3f} s")


def reachable(a: netns.Host, b: netns.Host, timeout: float = 0.5) -> bool:
    return a.tcp_connect(b.ip, PORT, timeout)


def test_hosts_have_own_namespace_address_and_interface(net):
    names = list_netns()
    assert len({h.ns for h in net}) == 3 and all(h.ns in names for h in net)
    assert net.switch_ns in names
    assert len({h.ip for h in net}) == 3
    assert len({h.ip.rsplit(".", 1)[0] for h in net}) == 1  # one /24
    for h in net:
        out = h.run(["ip", "-o", "-4", "addr", "show", "dev", h.ifname]).stdout
        assert f"inet {h.ip}/24" in out
        flags = h.run(["ip", "-o", "link", "show", "dev", h.ifname]).stdout
        assert "MULTICAST" in flags and "UP" in flags
    assert net.setup_seconds is not None and net.setup_seconds < 10


def test_every_host_reaches_every_other(net):
    for a in net:
        for b in net:
            if a is not b:
                assert reachable(a, b), f"{a} cannot reach {b}"


def test_closed_port_is_refused_not_reachable(net):
    # The probe can fail: a port nobody listens on is refused.
    assert not net[0].tcp_connect(net[1].ip, PORT + 1, 2.0)


@requires_nft
def test_partition_blocks_both_ways_and_heal_restores(net):
    a, b, c = net
    a.partition()
    try:
        assert not reachable(b, a)
        assert not reachable(a, b)
        assert reachable(b, c)  # the others are unaffected
        assert a.tcp_connect(a.ip, PORT)  # a's own traffic goes over lo
    finally:
        a.heal()
    wait_until(lambda: reachable(b, a) and reachable(a, b), 10, what="healed partition")


@requires_nft
def test_one_way_partition_drops_only_outgoing(net):
    a, b, _ = net
    rx = start_ready(a, UDP_RECEIVER, a.ip, "7001")
    try:
        a.partition(one_way=True)
        try:
            assert not reachable(a, b)  # a's SYN is dropped
            assert not reachable(b, a)  # a's SYN-ACK is dropped
            # ...but what b sends still arrives at a.
            assert b.python(UDP_SEND, a.ip, "7001", "hello-a").returncode == 0
            assert netns._read_line(rx, 10.0) == b"hello-a"
        finally:
            a.heal()
        wait_until(lambda: reachable(a, b), 10, what="healed one-way partition")
    finally:
        rx.kill()
        rx.wait()


@requires_nft
def test_cut_from_blocks_one_pair_only(net):
    a, b, c = net
    a.cut_from(b)
    try:
        assert not reachable(a, b)
        assert not reachable(b, a)
        assert reachable(a, c) and reachable(c, a)
    finally:
        a.heal()
    wait_until(lambda: reachable(a, b) and reachable(b, a), 10, what="healed cut")


def test_pycircuit_server_in_one_host_serves_another(net):
    p, url = net[0].start_server()
    try:
        assert url.startswith(f"circuit://{net[0].ip}:")
        code = (
            "import pycircuit,sys\n"
            "with pycircuit.connect(sys.argv[1]) as cl: print(cl.hosts()[0].url)\n"
        )
        r = net[1].python(code, url)
        assert r.returncode == 0, r.stderr[-3000:]
        assert r.stdout.strip() == url
    finally:
        p.terminate()
        p.wait(10)


def test_crash_kills_every_process_in_the_host():
    with hosts(1) as c:
        h = c[0]
        server, url = h.start_server()
        sleeper = h.popen_python(SLEEPER)

        def both() -> list[int] | None:
            # `ip netns exec` enters the namespace after Popen returns: wait for it
            pids = h.pids()
            return pids if server.pid in pids and sleeper.pid in pids else None

        before = wait_until(both, 10, what="the server and the sleeper in the namespace")
        assert len(before) >= 3  # the server's own children count too
        killed = h.crash()
        assert set(before) <= set(killed)
        assert h.pids() == []
        assert server.returncode == -signal.SIGKILL and sleeper.returncode == -signal.SIGKILL


def _root_links() -> list[str]:
    return sorted(i for i in psutil.net_if_addrs())


def test_teardown_removes_processes_links_and_namespaces():
    links_before = _root_links()
    with hosts(3) as c:
        names = c.namespaces()
        assert len(names) == 4 and all(n in list_netns() for n in names)
        assert _root_links() == links_before  # nothing added to the root namespace
        procs = [h.popen_python(SLEEPER) for h in c]
        _, url = c[1].start_server()
        pids = [pid for h in c for pid in h.pids()]
        assert len(pids) >= 5
    assert not set(names) & set(list_netns())
    assert all(p.returncode is not None for p in procs)
    # Grandchildren are killed too (a zombie awaiting its reaper is dead).
    alive = [
        pid
        for pid in pids
        if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    ]
    assert alive == []
    assert _root_links() == links_before
    assert c.teardown_seconds is not None and c.teardown_seconds < 20
    print(f"\n3 hosts: setup {c.setup_seconds:.3f} s, teardown {c.teardown_seconds:.3f} s")


def test_teardown_runs_when_the_test_body_fails():
    with pytest.raises(ZeroDivisionError):
        with hosts(2) as c:
            names = c.namespaces()
            p = c[0].popen_python(SLEEPER)
            1 / 0
    assert p.returncode is not None
    assert not set(names) & set(list_netns())


def test_clusters_of_a_dead_owner_are_reaped():
    code = (
        "import sys\nfrom netns import Cluster\n"
        "c = Cluster(2).setup()\nprint(c.prefix, flush=True)\nsys.stdin.read()\n"
    )
    owner = subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=netns.child_env(),
    )
    try:
        prefix = netns._read_line(owner, 30.0).decode()
        assert prefix.startswith("pc"), prefix
        mine = [n for n in list_netns() if n.startswith(prefix + "-")]
        assert len(mine) == 3
    finally:
        owner.kill()  # dies without teardown
        owner.wait()
        owner.stdin.close()
        owner.stdout.close()
    assert set(mine) <= set(list_netns())  # left behind...
    removed = netns.reap_stale()
    assert set(mine) <= set(removed)  # ...until the next setup reaps them
    assert not set(mine) & set(list_netns())
    assert not os.path.exists(os.path.join(netns._OWNERS, prefix + ".owner"))
