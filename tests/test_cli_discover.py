"""`--discover` on the command line: a plain flag (loopback, or
$CIRCUIT_DISCOVER), `--discover-if IFACE` for another interface, and a path
after `--discover` stays a path.  Multicast runs only inside namespaces made
here (tests/netns.py), never in the root namespace."""

from __future__ import annotations

import sys

import pytest

from conftest import PYCIRCUIT, child_env, cli, wait_until
from netns import hosts, netns_unavailable, requires_netns
from pycircuit.cli._main import build_parser


def pc(host, cmd, *args, env=None, timeout=60):
    argv = [PYCIRCUIT] if PYCIRCUIT else [sys.executable, "-m", "pycircuit.cli"]
    return host.run(argv + [cmd, *args], timeout=timeout, env=env or child_env())


def server_id(host, url):
    r = host.python("import sys, pycircuit; print(pycircuit.Client(sys.argv[1]).server_id)", url)
    assert r.returncode == 0, r.stderr
    return "/" + r.stdout.strip()


def _need_netns():
    if netns_unavailable():
        pytest.skip(f"needs network namespaces: {netns_unavailable()}")


# Separate hosts per case: a socket bound to 0.0.0.0:5353 on one host may hear
# mDNS that came in on another of its interfaces, so each client here runs
# where only the server it should find is announced.
@pytest.fixture(scope="module")
def lo_host():
    """One host with a server on loopback that announces itself there."""
    _need_netns()
    with hosts(1) as c:
        assert c[0].run(["ip", "link", "set", "lo", "multicast", "on"]).returncode == 0
        _, url = c[0].start_server("-a", "127.0.0.1:0", "--discover")
        yield c[0], server_id(c[0], url)


@pytest.fixture(scope="module")
def eth_net():
    """Host 1: a server on eth0 that announces itself there; host 2: clients."""
    _need_netns()
    with hosts(2) as c:
        _, url = c[0].start_server("--discover")
        yield c, server_id(c[0], url)


# ------------------------------------------------------------ parsing (no network)


def test_a_path_after_discover_is_a_path():
    args = build_parser().parse_args(["ls", "--discover", "/"])
    assert args.discover is True and args.discover_if is None and args.paths == ["/"]
    args = build_parser().parse_args(["ls", "--discover-if", "eth0", "/..."])
    assert args.discover_if == "eth0" and args.paths == ["/..."]
    assert build_parser().parse_args(["start", "--discover"]).discover is True


def test_help_names_both_forms():
    r = cli("ls", "--help")
    assert r.returncode == 0
    assert "--discover-if IFACE" in r.stdout and "loopback" in r.stdout


def test_discover_if_an_unknown_interface_is_one_clear_line():
    r = cli("ls", "--discover-if", "nosuchif0", "/")
    assert r.returncode != 0 and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "'nosuchif0'" in lines[0], r.stderr


# ------------------------------------------------------------ real discovery in namespaces


@requires_netns
def test_ls_discover_slash_finds_the_loopback_server(lo_host):
    host, lo_id = lo_host
    r = pc(host, "ls", "--discover", "/")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [lo_id]


@requires_netns
def test_discover_if_names_another_interface(eth_net):
    c, eth_id = eth_net
    r = pc(c[1], "ls", "--discover-if", "eth0", "/")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [eth_id]


@requires_netns
def test_circuit_discover_names_the_interface_for_the_flag_and_alone(eth_net):
    c, eth_id = eth_net
    env = child_env() | {"CIRCUIT_DISCOVER": "eth0"}
    for args in (("--discover", "/"), ("/",)):
        r = pc(c[1], "ls", *args, env=env)
        assert r.returncode == 0, (args, r.stderr)
        assert r.stdout.split() == [eth_id], args


@requires_netns
def test_start_discover_still_joins_servers_found(eth_net):
    c, eth_id = eth_net
    _, url = c[1].start_server("--discover")
    me = server_id(c[1], url)
    wait_until(
        lambda: sorted(pc(c[1], "ls", "-d", url, "/").stdout.split()) == sorted([me, eth_id]),
        30,
        what="a --discover server joins the one announced on its interface",
    )
