"""Leaks in spawning: a dead zygote leaves no dead workers listed and is
replaced; signals go through pidfds (never to a reused pid); a spawn that
times out before the fork leaves no process or directory; `pycircuit mem`
leaves tracemalloc as it found it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import psutil
import pytest

import pycircuit
from circuit_helpers import daemon
from conftest import child_env, cli, wait_until
from pycircuit.spawn._pidfd import ProcHandle


def zygotes(server_url: str) -> list[psutil.Process]:
    server = psutil.Process(pycircuit.WorkerAddr.parse(server_url).pid)
    out = []
    for p in server.children():
        try:
            if "pycircuit.spawn._zygote" in " ".join(p.cmdline()):
                out.append(p)
        except psutil.Error:  # it died between the listing and the look: not a zygote to count
            continue
    return out


def listed(c, host, anchor) -> set:
    return set(c.walk([host.id, anchor]).view())


def test_zygote_death_reaps_records_and_restarts_it(servers):
    url = servers.start()
    with pycircuit.connect(url) as c:
        host = c.hosts()[0]
        x1, a1 = c.spawn(host, ["orph"], daemon)
        x2, a2 = c.spawn(host, ["orph"], daemon)
        (old,) = zygotes(url)
        old.kill()
        new = wait_until(
            lambda: [z for z in zygotes(url) if z.pid != old.pid], 30, what="a new zygote"
        )
        assert len(new) == 1
        # the orphans live on and stay usable
        assert x1.incr(2) == 2 and listed(c, host, "orph") == {a1.id, a2.id}
        # one dies on its own (nobody of the server's reaps it now) ...
        os.kill(a1.pid, signal.SIGKILL)
        wait_until(lambda: a1.id not in listed(c, host, "orph"), 30, what="dead orphan unlisted")
        rem = wait_until(lambda: c.kernel(host).remains(a1.id), 10, what="remains of the orphan")
        assert "zygote had died" in rem["cause"]
        # ... the other is killed through the circuit (its pidfd)
        assert c.kill(a2) is True
        wait_until(lambda: not listed(c, host, "orph"), 30, what="killed orphan unlisted")
        # spawns work; the new zygote forks (spares taken are replaced by it)
        for _ in range(3):
            x3, a3 = c.spawn(host, None, daemon)
            assert x3.incr(5) == 5
            assert c.kill(a3) is True
        wait_until(lambda: new[0].children(), 30, what="the new zygote forks workers")


def test_a_handle_never_signals_a_reaped_pid():
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        h = ProcHandle.open(p.pid, parent=os.getpid())
        assert h is not None and not h.exited()
        assert h.send(signal.SIGKILL) is True
        p.wait(10)  # reaped: the pid is free for anyone now
        assert h.exited()
        assert h.send(signal.SIGKILL) is False  # ESRCH from the pidfd, not a kill of the pid
        h.close()
        assert h.send(signal.SIGKILL) is False
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    # a pid that is not the given parent's child is refused
    assert ProcHandle.open(os.getpid(), parent=os.getpid()) is None


def test_without_pidfds_a_handle_checks_the_start_time():
    from pycircuit.spawn._pidfd import _stat

    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stat = _stat(p.pid)
        assert stat is not None and stat[0] == os.getpid()
        h = ProcHandle(p.pid, None, stat[1])  # as open() makes it where pidfd_open fails
        stranger = ProcHandle(p.pid, None, stat[1] + 1)  # the same pid, another start time
        assert not h.exited() and h.send(0) is True
        assert stranger.exited() and stranger.send(signal.SIGKILL) is False
        assert h.send(signal.SIGKILL) is True
        p.wait(10)
        assert h.exited() and h.send(signal.SIGKILL) is False
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


# A real server (own process) whose zygote is stopped while a spawn is
# ordered: the spawn times out before "forked"; then the zygote goes on.
TIMEOUT_SCRIPT = """
import json, os, signal, sys, time
import psutil
from pycircuit.errors import SpawnError
from pycircuit.server._server import Server, ServerConfig
from pycircuit.server._spares import SpareConfig

srv = Server(ServerConfig(spares=SpareConfig(floor=0, ceiling=0), spawn_timeout=1.5))
try:
    (zyg,) = [p for p in psutil.Process().children() if "_zygote" in " ".join(p.cmdline())]
    wdirs = os.path.join(srv.var, "workers")
    zyg.suspend()
    try:
        srv.spawn([["t"]])
        out = {"spawned": True}
    except SpawnError as e:
        out = {"error": str(e)}
    zyg.resume()
    deadline = time.monotonic() + 30
    def clean():
        return not zyg.children() and not os.listdir(wdirs) and not srv.spawner._by_token \\
            and not srv.spawner._by_pid
    while not clean() and time.monotonic() < deadline:
        time.sleep(0.05)
    out.update(clean=clean(), children=[c.pid for c in zyg.children()], dirs=os.listdir(wdirs),
               records=len(srv.spawner._by_token), remains=len(srv.spawner.remains.all()))
    out["next"] = srv.spawn([["t"]]).startswith("circuit://")
    print(json.dumps(out))
finally:
    srv.close()
"""


def test_spawn_that_times_out_before_forked_leaves_no_process_or_directory():
    r = subprocess.run(
        [sys.executable, "-c", TIMEOUT_SCRIPT],
        capture_output=True,
        text=True,
        timeout=110,
        env=child_env(),
    )
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.splitlines()[-1])
    assert "did not start" in out.get("error", ""), out
    assert out["clean"], out  # no child of the zygote, no work directory, no record
    assert out["remains"] == 0, out  # a spawn given up is no dead worker of anybody's
    assert out["next"], out


def test_mem_leaves_tracemalloc_off(client, host, server):
    _, addr = client.spawn(host, None, daemon)
    try:
        acid = pycircuit.dial(addr, "acid")
        assert acid.stat()["tracemalloc"] is False
        r = cli("mem", str(addr), url=server, timeout=60)
        assert r.returncode == 0, r.stderr
        assert "allocated in a 1 s sample" in r.stdout
        assert acid.stat()["tracemalloc"] is False
    finally:
        client.kill(addr)


def _traced_daemon():
    import tracemalloc

    tracemalloc.start()
    return daemon()


def test_mem_leaves_the_programs_own_tracemalloc_on(client, host):
    _, addr = client.spawn(host, None, _traced_daemon)
    try:
        acid = pycircuit.dial(addr, "acid")
        assert acid.stat()["tracemalloc"] is True
        assert acid.runtime_profile("heap").startswith("traced by the program's own tracemalloc")
        assert acid.stat()["tracemalloc"] is True
        with pytest.raises(ValueError, match="0 to 60"):
            acid.runtime_profile("heap", seconds=3600)
    finally:
        client.kill(addr)
