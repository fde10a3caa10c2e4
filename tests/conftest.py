"""Shared fixtures: real server processes, always torn down (terminate, then
kill), and a deadline-based wait helper (no sleeps as synchronisation)."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def wait_until(cond, timeout: float = 10.0, interval: float = 0.01, what: str = "condition"):
    """Poll ``cond`` until it returns a truthy value or the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def stop_process(p: subprocess.Popen, grace: float = 5.0) -> None:
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(grace)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def child_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([ROOT, os.path.join(ROOT, "tests")] + [p for p in sys.path if p])
    env.pop("CIRCUIT", None)
    env.pop("CIRCUIT_DISCOVER", None)
    return env


def start_server(*extra: str) -> tuple[subprocess.Popen, str]:
    p = subprocess.Popen([sys.executable, "-m", "pycircuit.cli", "start", "-a", "127.0.0.1:0", *extra],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env(), text=True)
    url = p.stdout.readline().strip()
    if not url:
        stop_process(p)
        raise AssertionError("server did not start: " + p.stderr.read())
    return p, url


@pytest.fixture(scope="module")
def server():
    p, url = start_server()
    try:
        yield url
    finally:
        stop_process(p)


@pytest.fixture(scope="module")
def client(server):
    import pycircuit

    c = pycircuit.connect(server)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture(scope="module")
def host(client):
    return client.hosts()[0]
