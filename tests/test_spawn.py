"""Spawn, worker lifetime, run_in_back, kill, remains, anchors (issue 2,
points 1-3), against a real server process."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import psutil
import pytest

import pycircuit
from circuit_helpers import Gate, add, pid
from conftest import child_env, wait_until

URL_RE = re.compile(r"^circuit://127\.0\.0\.1:\d+/\d+/Q[0-9a-f]{16}$")


def gone(p: int) -> bool:
    try:
        return psutil.Process(p).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_connect_without_configuration_starts_embedded_server(tmp_path):
    """A fresh program with nothing configured gets one local X… host, and
    closing the client stops the embedded server."""
    script = textwrap.dedent("""
        import os, psutil, pycircuit
        c = pycircuit.connect()
        hosts = c.hosts()
        kids = [p for p in psutil.Process().children() if "pycircuit.cli" in " ".join(p.cmdline())]
        print(len(hosts), hosts[0].id, hosts[0].url, len(kids))
        c.close()
        print(all(not p.is_running() or p.status() == psutil.STATUS_ZOMBIE for p in kids))
    """)
    env = child_env()
    out = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    first, second = out.stdout.splitlines()
    n, hid, url, kids = first.split()
    assert n == "1" and re.fullmatch(r"X[0-9a-f]{16}", hid) and URL_RE.match(url)
    assert kids == "1"
    assert second == "True"


def test_hosts_lists_the_server(client, host):
    hosts = client.hosts()
    assert [h.id for h in hosts] == [host.id]
    assert re.fullmatch(r"X[0-9a-f]{16}", host.id)


def test_spawn_returns_value_and_address_and_worker_exits(client, host):
    out, addr = client.spawn(host, None, add, 2, 3)
    assert out == 5
    assert URL_RE.match(str(addr)) and addr.pid != os.getpid()
    wait_until(lambda: gone(addr.pid), what="worker exit after return")


def test_function_runs_in_another_process(client, host):
    wpid, addr = client.spawn(host, None, pid)
    assert wpid == addr.pid != os.getpid()


def test_lambdas_and_closures_travel_by_value(client, host):
    k = 10
    out, _ = client.spawn(host, None, lambda x: x * k + os.getpid() * 0, 4)
    assert out == 40

    def make(n):
        def inner(y):
            return [n + y, os.getpid()]

        return inner

    (val, wpid), _ = client.spawn(host, None, make(7), 1)
    assert val == 8 and wpid != os.getpid()


def test_unimportable_module_names_module_and_host(client, host, tmp_path, monkeypatch):
    (tmp_path / "only_here_mod.py").write_text("def f():\n    return 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import only_here_mod

    with pytest.raises(pycircuit.RemoteImportError) as ei:
        client.spawn(host, None, only_here_mod.f)
    msg = str(ei.value)
    assert "only_here_mod" in msg and host.id in msg
    # the server survives and keeps spawning
    assert client.spawn(host, None, add, 1, 1)[0] == 2


def test_run_in_back_keeps_worker_alive_until_background_returns(client, host):
    gate = Gate()
    gref = pycircuit.ref(gate)

    def main(g):
        import pycircuit

        pycircuit.run_in_back(lambda: g.wait(30))
        return "main done"

    out, addr = client.spawn(host, None, main, gref)
    assert out == "main done"
    assert not gone(addr.pid)
    assert any(w["id"] == addr.id for w in client._kernel.workers())
    gate.open()
    wait_until(lambda: gone(addr.pid), what="worker exit after background returned")


def stoppable():
    import pycircuit
    from circuit_helpers import Gate

    g = Gate()
    pycircuit.listen("gate", g)
    pycircuit.run_in_back(g.wait)
    return "up"


def test_call_that_ends_the_last_background_function_gets_its_reply(client, host):
    # The worker may exit only after the reply of the call that released it.
    for _ in range(15):
        _, addr = client.spawn(host, None, stoppable)
        assert pycircuit.dial(addr, "gate").open() is None
        wait_until(lambda addr=addr: gone(addr.pid), what="worker exit")


def test_run_in_back_outside_a_worker_raises():
    with pytest.raises(pycircuit.CircuitError):
        pycircuit.run_in_back(print)


def test_anchor_listing_and_remains(client, host):
    def main():
        import threading
        import pycircuit

        print("hello from the worker", flush=True)
        pycircuit.run_in_back(threading.Event().wait)
        return 1

    _, addr = client.spawn(host, ["jobs", "/batch/a"], main)
    jobs = client.walk(f"/{host.id}/jobs")
    assert addr.id in jobs.view()
    assert jobs.view()[addr.id].get() == addr
    assert addr.id in client.walk([host.id, "batch", "a"]).view()
    assert "jobs" in client.walk(f"/{host.id}").view()
    assert host.id in client.walk("/").view()
    pycircuit.kill(addr)
    wait_until(lambda: addr.id not in jobs.view(), what="worker unlisted after death")
    assert "jobs" not in client.walk(f"/{host.id}").view()  # empty anchors disappear
    rem = wait_until(lambda: client._kernel.remains(addr.id), what="remains")
    assert rem["cause"] == "killed by SIGKILL" and rem["signal"] == 9
    assert "hello from the worker" in rem["stdout"]


def test_kill_unknown_worker_is_quiet_and_a_bad_url_raises(client):
    assert client.kill("circuit://127.0.0.1:1/1/Q0000000000000000") is False
    with pytest.raises(pycircuit.CircuitError, match="circuit URL"):
        client.kill("circuit://127.0.0.1:1/1/nope")


def test_spawn_many_concurrently(client, host):
    import concurrent.futures as cf

    with cf.ThreadPoolExecutor(8) as ex:
        results = list(ex.map(lambda i: client.spawn(host, None, add, i, i)[0], range(24)))
    assert results == [2 * i for i in range(24)]


def _zygote_children(server_url: str) -> set[int]:
    server = psutil.Process(pycircuit.WorkerAddr.parse(server_url).pid)
    zygotes = [p for p in server.children() if "pycircuit.spawn._zygote" in " ".join(p.cmdline())]
    return {c.pid for z in zygotes for c in z.children()}


def test_spawn_hands_out_a_spare_forked_ahead_and_hides_spares(servers):
    url = servers.start("--spares", "1")
    with pycircuit.connect(url) as c:
        kernel = c.kernel(c.hosts()[0])
        wait_until(lambda: kernel.info()["spares"] == 1, 10, what="a spare is ready")
        spare = _zygote_children(url)
        assert kernel.workers() == [] and kernel.remains() == []  # spares are nobody's yet
        out, addr = c.spawn(c.hosts()[0], ["d"], pid)
        assert out == addr.pid and addr.pid in spare  # the spawn took the spare
        wait_until(
            lambda: len(_zygote_children(url) - spare) == 1, 10, what="a new spare replaces it"
        )


def test_spawn_without_spares(servers):
    url = servers.start("--spares", "0")
    with pycircuit.connect(url) as c:
        assert c.spawn(c.hosts()[0], None, add, 2, 3)[0] == 5
        # the worker exits once its reply has left: wait for that, no spare takes its place
        wait_until(
            lambda: all(gone(p) for p in _zygote_children(url)), 10, what="the worker exited"
        )
