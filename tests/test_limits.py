"""The descriptor limit: a server raises its soft RLIMIT_NOFILE to the hard
limit, and the workers it forks inherit it; a client that runs out of
descriptors gets one error line that names the limit."""

from __future__ import annotations

import resource
import subprocess
import sys
import textwrap

import psutil
import pytest

import pycircuit
from conftest import child_env, start_server, stop_process

LOW = 256


def _lowered() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (LOW, hard))


@pytest.fixture
def low_limit_server():
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard <= LOW:
        pytest.skip(f"the hard descriptor limit here is {hard}: nothing to raise")
    p = subprocess.Popen(
        [sys.executable, "-m", "pycircuit.cli", "start", "-a", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=child_env(),
        text=True,
        preexec_fn=_lowered,
    )
    try:
        url = p.stdout.readline().strip()
        assert url, p.stderr.read()
        yield p, url, hard
    finally:
        stop_process(p)


def _soft(pid: int) -> int:
    return psutil.Process(pid).rlimit(psutil.RLIMIT_NOFILE)[0]


def test_server_and_its_workers_raise_the_soft_limit(low_limit_server):
    p, url, hard = low_limit_server
    assert _soft(p.pid) == hard  # started at LOW
    c = pycircuit.connect(url)
    try:
        pid, addr = c.spawn(c.hosts()[0], None, _pid_and_linger)
        try:
            assert _soft(pid) == hard
        finally:
            pycircuit.kill(addr)
    finally:
        c.close()


def _pid_and_linger() -> int:
    import os
    import threading

    pycircuit.run_in_back(threading.Event().wait, 30)
    return os.getpid()


def test_a_client_out_of_descriptors_is_told_the_limit(server):
    other, other_url = start_server()  # a runtime the client has no connection to yet
    try:
        _client_out_of_fds(server, other_url)
    finally:
        stop_process(other)


def _client_out_of_fds(server: str, other_url: str) -> None:
    script = textwrap.dedent(
        f"""
        import os, resource, sys, threading
        import pycircuit
        c = pycircuit.connect({server!r})
        addr = pycircuit.WorkerAddr.parse({other_url!r})
        dial, NetworkError = pycircuit.dial, pycircuit.NetworkError  # imported before the fds go
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
        held = []
        try:
            while True:
                held.append(os.open("/dev/null", os.O_RDONLY))
        except OSError:
            pass
        try:
            dial(addr, "acid")
            said = "NO ERROR"
        except NetworkError as e:
            said = f"ERROR {{e}}"
        for fd in held:
            os.close(fd)
        print(said)
        c.close()
        """
    )
    r = subprocess.run(
        [sys.executable, "-c", script], env=child_env(), capture_output=True, text=True, timeout=60
    )
    out = r.stdout.strip().splitlines()
    assert out and out[-1].startswith("ERROR"), r.stdout + r.stderr
    assert "RLIMIT_NOFILE soft limit 64" in out[-1]
    assert "Traceback" not in r.stderr
