"""The cluster across real separate hosts: network namespaces on a bridge,
each with its own address, servers and clients running inside them."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time

import pytest

from conftest import PYCIRCUIT, stop_process, wait_until
from netns import hosts, requires_netns, requires_nft
from pycircuit.server._swim import SwimConfig

BOUND = SwimConfig().presence_bound(3)  # the documented presence bound (README), here ~10 s

pytestmark = requires_netns


def pc(host, cmd, *args, url=None, input=None, timeout=30):
    argv = [PYCIRCUIT] if PYCIRCUIT else [sys.executable, "-m", "pycircuit.cli"]
    argv += [cmd] + (["-d", url] if url else []) + list(args)
    return host.run(argv, input=input, timeout=timeout)


def listed(host, url):
    r = pc(host, "ls", "/", url=url)
    return r.stdout.split() if r.returncode == 0 else None


@pytest.fixture
def three():
    with hosts(3) as c:
        urls = []
        for i, h in enumerate(c):
            extra = ("-j", urls[0]) if urls else ()
            _, url = h.start_server(*extra)
            urls.append(url)
        yield c, urls


def server_ids(c, urls):
    # each server's own ID, asked of itself from host 1
    got = []
    for u in urls:
        r = c[0].python("import sys, pycircuit; print(pycircuit.Client(sys.argv[1]).server_id)", u)
        assert r.returncode == 0, r.stderr
        got.append(r.stdout.strip())
    return got


def test_three_hosts_join_and_list_each_other(three):
    c, urls = three
    want = sorted(f"/{i}" for i in server_ids(c, urls))
    for h, u in zip(c, urls):
        # each host asks a server on another host
        other = urls[(urls.index(u) + 1) % 3]
        wait_until(
            lambda h=h, other=other: listed(h, other) == want, 15, what=f"{h} lists all three"
        )


def test_spawn_on_a_remote_host_and_call_back(three):
    c, urls = three
    code = textwrap.dedent("""
        import os, socket, sys, pycircuit
        class Sink:
            def __init__(self): self.got = []
            def put(self, who): self.got.append(who); return len(self.got)
        def work(sink):
            import os, socket
            return sink.put(os.environ.get("PYCIRCUIT_PROBE", "") + socket.gethostname() + str(os.getpid()))
        with pycircuit.connect(sys.argv[1]) as cl:
            hosts = cl.hosts()
            assert len(hosts) == 3, hosts
            target = [h for h in hosts if h.url.split("/")[2].split(":")[0] == sys.argv[2]][0]
            sink = Sink()
            n, addr = pycircuit.spawn(target, None, work, pycircuit.ref(sink))
            assert n == 1 and addr.host == sys.argv[2], (n, addr)
            print("ok", addr)
    """)
    wait_until(lambda: len(listed(c[2], urls[0]) or []) == 3, 15)
    # a client on host 3, dialling host 1's server, spawns on host 2; the worker calls back into host 3
    r = c[2].python(code, urls[0], c[1].ip, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"ok circuit://{c[1].ip}:")
    # its runtime listens on a routable address without a key: it says so, once
    assert r.stderr.count("without a cluster key") == 1, r.stderr


def test_killed_host_is_dropped_and_reported(three):
    c, urls = three
    ids = server_ids(c, urls)
    wait_until(lambda: len(listed(c[0], urls[0]) or []) == 3, 15)
    r = pc(c[0], "mk@leave", f"/{ids[0]}/leaves", url=urls[0])
    assert r.returncode == 0, r.stderr
    t0 = time.monotonic()
    c[2].crash()
    r = pc(c[0], "recv", f"/{ids[0]}/leaves", url=urls[0], timeout=30)
    took = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"/{ids[2]}"
    assert took < BOUND, f"leave took {took:.1f} s"
    # The other member learns of it on its own probes or by gossip: within the
    # presence bound too, not necessarily by the time host 1 reported it.
    rest = sorted(f"/{i}" for i in ids[:2])
    wait_until(
        lambda: listed(c[1], urls[1]) == rest,
        BOUND,
        what="host 2 drops the killed host as well",
    )


@requires_nft
def test_partition_and_heal(three):
    c, urls = three
    ids = server_ids(c, urls)
    everyone = sorted(f"/{i}" for i in ids)
    wait_until(lambda: listed(c[0], urls[0]) == everyone, 15)
    c[2].partition()
    t0 = time.monotonic()
    rest = sorted(f"/{i}" for i in ids[:2])
    wait_until(
        lambda: listed(c[0], urls[0]) == rest and listed(c[1], urls[1]) == rest,
        3 * BOUND,
        what="host 3 dropped by hosts 1 and 2",
    )
    took = time.monotonic() - t0
    assert took < BOUND + 2, (
        f"a host cut off was dropped after {took:.1f} s (bound {BOUND:.1f} s)"
    )  # 2 s: ls itself
    # host 3 is alone on its side of the cut
    wait_until(lambda: listed(c[2], urls[2]) == [f"/{ids[2]}"], 15, what="host 3 sees itself alone")
    c[2].heal()
    wait_until(lambda: listed(c[0], urls[0]) == everyone, 20, what="healed: host 3 seen again")
    wait_until(lambda: listed(c[2], urls[2]) == everyone, 20, what="healed: host 3 sees all")


def test_discovery_across_hosts():
    with hosts(3) as c:
        _, u1 = c[0].start_server("--discover")
        _, u2 = c[1].start_server("--discover")
        ids = set()
        for u in (u1, u2):
            r = c[0].python(
                "import sys, pycircuit; print(pycircuit.Client(sys.argv[1]).server_id)", u
            )
            ids.add("/" + r.stdout.strip())
        # the servers find each other by multicast DNS, nobody joins by hand
        wait_until(
            lambda: set(listed(c[0], u1) or []) == ids, 20, what="servers discover each other"
        )
        # a client on host 3 finds a server by discovery on its interface
        r = pc(c[2], "ls", "--discover-if", "eth0", "/")
        assert r.returncode == 0, r.stderr
        assert set(r.stdout.split()) == ids


def test_discovery_with_nobody_gives_up_clearly():
    with hosts(1) as c:
        t0 = time.monotonic()
        r = pc(c[0], "ls", "--discover-if", "eth0", "/")
        assert r.returncode != 0 and "found no pycircuit server" in r.stderr
        assert "Traceback" not in r.stderr
        assert time.monotonic() - t0 < 15


def test_start_on_an_interface_by_name():
    import subprocess

    with hosts(2) as c:
        p = c[0].popen(
            [sys.executable, "-m", "pycircuit.cli", "start", "--if", "eth0", "--insecure"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        url = p.stdout.readline().strip()
        assert url.startswith(f"circuit://{c[0].ip}:"), url
        assert len(listed(c[1], url)) == 1  # reachable from the other host
        r = c[0].run([sys.executable, "-m", "pycircuit.cli", "start", "-a", f"{c[0].ip}:0"])
        assert r.returncode != 0 and "non-loopback" in r.stderr and "Traceback" not in r.stderr


@requires_nft
def test_a_call_to_a_host_cut_off_fails_within_the_link_bound(three):
    """Link death (SPEC §7): a call in flight to a worker whose host is cut
    off gives NetworkError once the link has been silent for about
    ``RuntimeConfig.link_silence`` (30 s), not before and not never."""
    c, urls = three
    wait_until(lambda: len(listed(c[2], urls[0]) or []) == 3, 15)
    code = textwrap.dedent("""
        import sys, threading, time, pycircuit
        class Napper:
            def nap(self, s):
                time.sleep(s)
        def serve():
            pycircuit.listen("napper", Napper())
            pycircuit.run_in_back(threading.Event().wait)
        with pycircuit.connect(sys.argv[1]) as cl:
            target = [h for h in cl.hosts() if h.url.split("/")[2].split(":")[0] == sys.argv[2]][0]
            _, addr = pycircuit.spawn(target, None, serve)
            x = pycircuit.dial(addr, "napper")
            print("ready", flush=True)
            t0 = time.monotonic()
            try:
                x.nap(600)
                print("returned", flush=True)
            except pycircuit.NetworkError as e:
                print("network", round(time.monotonic() - t0, 1), flush=True)
    """)
    p = c[2].popen_python(code, urls[0], c[1].ip, stdout=subprocess.PIPE, text=True)
    try:
        assert _line_of(p, 60) == "ready"
        cut = time.monotonic()
        c[1].partition()
        out = _line_of(p, 90)
        took = time.monotonic() - cut
        assert out.startswith("network"), out
        assert 20 < took < 60, f"NetworkError after {took:.1f} s"
    finally:
        c[1].heal()
        stop_process(p)


def _line_of(p, timeout: float) -> str:
    box: list[bytes] = []
    t = threading.Thread(target=lambda: box.append(p.stdout.readline()), daemon=True)
    t.start()
    t.join(timeout)
    assert box, f"no line within {timeout} s"
    line = box[0]
    return (line.decode() if isinstance(line, bytes) else line).strip()
