"""Membership on one machine (servers on loopback), driven through the real
``pycircuit`` command and the Python client. The same behaviour across real
separate hosts is in test_multihost.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

import pycircuit
from conftest import child_env, cli, wait_until


def ids(url: str) -> list[str]:
    r = cli("ls", "/", url=url)
    assert r.returncode == 0, r.stderr
    return [ln.strip("/") for ln in r.stdout.split()]


def server_id(url: str) -> str:
    c = pycircuit.Client(url)
    try:
        return c.server_id
    finally:
        c.close()


def test_three_servers_join_and_list_each_other(servers):
    a = servers.start()
    b = servers.start("-j", a)
    c = servers.start("-j", b)  # joins through b: a is learned by gossip
    want = sorted(server_id(u) for u in (a, b, c))
    for u in (a, b, c):
        wait_until(lambda u=u: ids(u) == want, 10, what=f"{u} sees all three")


def test_killed_server_is_dropped_and_reported_to_leave(servers, tmp_path):
    a = servers.start()
    b = servers.start("-j", a)
    victim = servers.start("-j", a, "--var", str(tmp_path))  # SIGKILLed: cannot clean up itself
    vid = server_id(victim)
    with pycircuit.connect(a) as c:
        aid = c.server_id
        wait_until(lambda: len(c.hosts()) == 3, 10, what="three members")
        leave = c.walk([aid, "watch", "leave"]).make_on_leave()
        join = c.walk([aid, "watch", "join"]).make_on_join()
        initial = sorted(join.recv(timeout=5) for _ in range(3))
        assert initial == sorted(
            f"/{h.id}" for h in c.hosts()
        )  # @join starts with every known server
        os.kill(pycircuit.WorkerAddr.parse(victim).pid, signal.SIGKILL)
        t0 = time.monotonic()
        assert leave.recv(timeout=10) == f"/{vid}"
        took = time.monotonic() - t0
        assert took < 5, f"leave reported after {took:.1f} s"
        wait_until(lambda: vid not in [h.id for h in c.hosts()], 5, what="dropped from /")
        wait_until(lambda: vid not in ids(b), 10, what="dropped from the other member's / too")
        assert leave.peek()["Pending"] == 0
        # a newcomer is reported to @join
        d = servers.start("-j", b)
        assert join.recv(timeout=10) == f"/{server_id(d)}"


def test_join_command_merges_two_clusters(servers):
    a = servers.start()
    b = servers.start("-j", a)
    c = servers.start()
    d = servers.start("-j", c)
    wait_until(lambda: len(ids(a)) == 2 and len(ids(c)) == 2, 10)
    r = cli("join", f"/{server_id(a)}", c, url=a)
    assert r.returncode == 0, r.stderr
    want = sorted(server_id(u) for u in (a, b, c, d))
    for u in (a, b, c, d):
        wait_until(lambda u=u: ids(u) == want, 10, what=f"{u} sees the merged circuit")


def test_suicide_stops_the_server_and_the_others_drop_it(servers):
    a = servers.start()
    b = servers.start("-j", a)
    bid = server_id(b)
    wait_until(lambda: bid in ids(a), 10)
    r = cli("suicide", f"/{bid}", url=a)
    assert r.returncode == 0, r.stderr
    proc = servers.procs[1]
    proc.wait(timeout=10)
    wait_until(lambda: ids(a) == [server_id(a)], 5, what="a drops b")


def test_join_of_unreachable_server_runs_alone_and_says_so(servers, tmp_path):
    dead = "circuit://127.0.0.1:9/1/Q0123456789abcdef"
    a = servers.start("-j", dead)
    assert ids(a) == [server_id(a)]
    p = servers.procs[0]
    p.terminate()
    _, err = p.communicate(timeout=10)
    assert f"cannot join {dead}" in err and "running alone" in err


def test_var_dir_is_locked(servers, tmp_path):
    servers.start("--var", str(tmp_path))
    p = subprocess.run(
        [sys.executable, "-m", "pycircuit.cli", "start", "--var", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=30,
        env=child_env(),
    )
    assert p.returncode != 0
    assert "obtain lock" in p.stderr and "Traceback" not in p.stderr
    assert p.stdout == ""


def test_a_stopped_server_removes_the_directory_it_made(servers, tmp_path):
    import glob
    import tempfile
    from conftest import stop_process

    url = servers.start()
    pattern = os.path.join(tempfile.gettempdir(), f"pycircuit-{server_id(url)}-*")
    assert len(glob.glob(pattern)) == 1
    kept = servers.start("--var", str(tmp_path / "var"))  # a --var directory is the user's: kept
    for p in servers.procs:
        stop_process(p)
    assert glob.glob(pattern) == []
    assert (tmp_path / "var").is_dir() and kept


def test_forged_membership_datagrams_are_dropped_and_counted(servers):
    """On loopback without a key, datagrams are sealed with the same-user
    secret: plain, garbage or other-key datagrams change nothing, and are
    logged (a few lines a minute)."""
    import socket

    from pycircuit.runtime._auth import user_secret
    from pycircuit.server._members import LEFT, Update
    from pycircuit.server._swim import Gossip, Ping
    from pycircuit.server._swim_wire import Sealer, decode, derive_key, encode

    a = servers.start()
    b = servers.start("-j", a)
    aid, bid = server_id(a), server_id(b)
    wait_until(lambda: ids(a) == sorted([aid, bid]), 10, what="a lists b")
    addr = pycircuit.WorkerAddr.parse(a)
    lie = Gossip((Update(LEFT, bid, b, 99),))  # "b left", in the name of b
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(10)
        me = f"circuit://127.0.0.1:{s.getsockname()[1]}/1/Q0123456789abcdef"
        s.sendto(encode(bid, b, lie), (addr.host, addr.port))  # plain
        s.sendto(encode(bid, b, lie, Sealer(derive_key(b"not the secret"))), (addr.host, addr.port))
        s.sendto(b"\x00garbage", (addr.host, addr.port))
        # a real probe after them: its answer means a has handled the three (one thread, in order)
        sealer = Sealer(derive_key(user_secret()))
        s.sendto(encode("X0123456789abcdef", me, Ping(7, aid, ()), sealer), (addr.host, addr.port))
        src_id, _, ack = decode(s.recv(65536), sealer)
    assert src_id == aid and ack.seq == 7
    assert ids(a) == sorted([aid, bid])
    p = servers.procs[0]
    p.terminate()
    _, err = p.communicate(timeout=10)
    assert err.count("dropped a membership datagram") == 3, err
    assert (
        "only sealed" in err
        and "authentication" in err
        and "not a pycircuit membership datagram" in err
    )


def test_a_server_of_another_membership_version_is_refused_naming_both(servers):
    from pycircuit.server._swim_wire import MEMBERS_VERSION

    a = servers.start()
    c = pycircuit.Client(a)
    try:
        try:
            c._kernel.hello(
                "X0123456789abcdef",
                "circuit://127.0.0.1:9/1/Q0123456789abcdef",
                MEMBERS_VERSION + 1,
            )
        except pycircuit.CircuitError as e:
            assert f"version {MEMBERS_VERSION}" in str(
                e
            ) and f"version {MEMBERS_VERSION + 1}" in str(e)
        else:
            raise AssertionError("hello of another version accepted")
        assert [h.id for h in c.hosts()] == [c.server_id]  # and it was not admitted
    finally:
        c.close()


def test_a_term_taken_by_another_thread_still_stops_the_server(tmp_path):
    """The kernel may hand a process-directed signal to any thread; Python
    runs the handler in the main thread only when that thread wakes. A
    server whose main thread waited without a timeout never stopped."""
    import ctypes

    from conftest import start_server, stop_process

    tgkill = getattr(ctypes.CDLL(None, use_errno=True), "tgkill", None)
    if tgkill is None:
        pytest.skip("this C library has no tgkill")
    p, _ = start_server()
    try:
        others = [int(t) for t in os.listdir(f"/proc/{p.pid}/task") if int(t) != p.pid]
        assert others, "the server has no thread besides its main one"
        assert tgkill(p.pid, others[0], signal.SIGTERM) == 0
        p.wait(10)  # raises TimeoutExpired if the TERM was lost
        assert p.returncode == 0
    finally:
        stop_process(p)
