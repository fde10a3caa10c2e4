"""`kill` of a worker that already exited is quiet (like Popen.kill): the API
returns False, the CLI exits 0 for its URL; a path naming no worker is still
one clear error."""

from __future__ import annotations

import pycircuit
from circuit_helpers import add, daemon
from conftest import cli, wait_until


def _alive(client, host, addr) -> bool:
    return any(w["id"] == addr.id for w in client.kernel(host).workers())


def test_kill_of_an_exited_worker_returns_false(client, host):
    value, addr = client.spawn(host, None, add, 2, 3)  # exits as add returns
    assert value == 5
    wait_until(lambda: not _alive(client, host, addr), 20, what="worker exited")
    assert client.kill(addr) is False
    assert pycircuit.kill(str(addr)) is False  # the module function, by URL


def test_kill_of_a_live_worker_returns_true_then_false(client, host):
    _, addr = client.spawn(host, ["killme"], daemon)
    assert _alive(client, host, addr)
    assert client.kill(addr) is True
    wait_until(lambda: not _alive(client, host, addr), 20, what="worker gone after kill")
    assert client.kill(addr) is False
    rem = wait_until(lambda: client.kernel(host).remains(addr.id), 20, what="remains")
    assert rem["signal"] == 9


def test_cli_kill_of_an_exited_worker_url_is_quiet(client, host, server):
    _, addr = client.spawn(host, ["cli-killme"], daemon)
    r = cli("kill", str(addr), url=server)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    wait_until(lambda: not _alive(client, host, addr), 20, what="worker gone after kill")
    r = cli("kill", str(addr), url=server)  # again: already dead
    assert r.returncode == 0 and r.stderr == "", r.stderr
    # its path is gone with it: naming it is a user mistake, one line
    r = cli("kill", f"/{host.id}/cli-killme/{addr.id}", url=server)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "no worker at" in lines[0], r.stderr
