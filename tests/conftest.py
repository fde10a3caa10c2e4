"""Shared fixtures: real server processes, always torn down (terminate, then
kill), and a deadline-based wait helper (no sleeps as synchronisation)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from ci_skips import pytest_make_collect_report, pytest_runtest_makereport  # noqa: F401  (hooks: CI=true forbids privileged skips)

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


def sigstop(pid: int, timeout: float = 10.0) -> None:
    """SIGSTOP ``pid`` and wait until every thread of it has stopped: kill()
    returns before that, and on a loaded machine a thread of the target
    may still run (serve a call) until the thread picked to take the
    signal is scheduled."""
    os.kill(pid, signal.SIGSTOP)

    def stopped() -> bool:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/stat") as f:
                    state = f.read().rsplit(")", 1)[1].split()[0]
            except FileNotFoundError:  # a thread that ended meanwhile
                continue
            if state not in ("T", "t"):
                return False
        return True

    wait_until(stopped, timeout, what=f"process {pid} to stop")


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
    env["PYTHONPATH"] = os.pathsep.join(
        [ROOT, os.path.join(ROOT, "tests")] + [p for p in sys.path if p]
    )
    env.pop("CIRCUIT", None)
    env.pop("CIRCUIT_DISCOVER", None)
    return env


def start_server(*extra: str, env: dict | None = None) -> tuple[subprocess.Popen, str]:
    p = subprocess.Popen(
        [sys.executable, "-m", "pycircuit.cli", "start", "-a", "127.0.0.1:0", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env or child_env(),
        text=True,
    )
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


@pytest.fixture
def served(client, host):
    """A daemon worker (tests/circuit_helpers.daemon); killed afterwards."""
    import pycircuit
    from circuit_helpers import daemon

    x, addr = client.spawn(host, None, daemon)
    try:
        yield x, addr
    finally:
        try:
            client.kill(addr)
        except pycircuit.CircuitError:
            pass


PYCIRCUIT = shutil.which("pycircuit")


def cli(
    cmd: str,
    *args: str,
    url: str | None = None,
    input: str | bytes | None = None,
    timeout: float = 30,
    env: dict | None = None,
) -> subprocess.CompletedProcess:
    """Run the real ``pycircuit`` command (the installed console script)."""
    argv = [PYCIRCUIT] if PYCIRCUIT else [sys.executable, "-m", "pycircuit.cli"]
    argv += [cmd] + (["-d", url] if url else []) + list(args)
    text = not isinstance(input, bytes)
    return subprocess.run(
        argv, input=input, capture_output=True, timeout=timeout, env=env or child_env(), text=text
    )


class Servers:
    """Servers started by a test, stopped in reverse order even on failure."""

    def __init__(self):
        self.procs: list[subprocess.Popen] = []

    def start(self, *extra: str, env: dict | None = None) -> str:
        p, url = start_server(*extra, env=env)
        self.procs.append(p)
        return url

    def close(self):
        for p in reversed(self.procs):
            stop_process(p)


@pytest.fixture
def servers():
    s = Servers()
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def runtimes():
    """``make(**RuntimeConfig fields)``: runtimes in this process, closed
    afterwards in reverse order."""
    from pycircuit.runtime._runtime import Runtime, RuntimeConfig

    made = []

    def make(**kw):
        rt = Runtime(RuntimeConfig(**kw))
        made.append(rt)
        return rt

    try:
        yield make
    finally:
        for rt in reversed(made):
            rt.close()
