"""Services, export/import, failure semantics, protocol checks and acid
(issue 2, points 7-10), against real worker processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import pycircuit
from circuit_helpers import Counter
from conftest import child_env, wait_until


# -- services --------------------------------------------------------------
def test_listen_twice_raises():
    pycircuit.listen("svc-twice", Counter())
    with pytest.raises(pycircuit.ServiceError):
        pycircuit.listen("svc-twice", Counter())


def test_dial_unknown_service_raises_and_try_dial_returns_error(served):
    _, addr = served
    with pytest.raises(pycircuit.ServiceError) as ei:
        pycircuit.dial(addr, "no-such-service")
    assert "no-such-service" in str(ei.value)
    x, err = pycircuit.try_dial(addr, "no-such-service")
    assert x is None and isinstance(err, pycircuit.ServiceError)
    x, err = pycircuit.try_dial(addr, "probe")
    assert err is None and x.pid() == addr.pid


def test_dial_service_of_the_calling_program(client, host):
    pycircuit.listen("caller-svc", Counter())
    me = pycircuit.runtime._runtime.current().addr

    def main(a):
        import pycircuit

        return pycircuit.dial(a, "caller-svc").incr(4)

    assert client.spawn(host, None, main, me)[0] == 4


def test_try_dial_dead_address():
    x, err = pycircuit.try_dial("circuit://127.0.0.1:1/1/Q0000000000000001", "acid")
    assert x is None and isinstance(err, pycircuit.NetworkError)


def test_stale_address_is_refused(served):
    _, addr = served
    stale = pycircuit.WorkerAddr(addr.host, addr.port, addr.pid, "Q" + "0" * 16)
    with pytest.raises(pycircuit.StaleAddressError):
        pycircuit.dial(stale, "probe")
    stale_pid = pycircuit.WorkerAddr(addr.host, addr.port, addr.pid + 1, addr.id)
    with pytest.raises(pycircuit.StaleAddressError):
        pycircuit.dial(stale_pid, "probe")


# -- export / import -------------------------------------------------------
def test_export_import_roundtrip(served):
    x, addr = served
    factory = pycircuit.dial(addr, "factory")
    blob = factory.export_perm()
    assert isinstance(blob, bytes)
    (ref, label), stack = pycircuit.import_(blob)
    assert label == "label" and isinstance(ref, pycircuit.XPerm)
    assert ref.incr(3) == 3 and ref.addr == addr
    assert "export_perm" in stack


def test_export_of_non_permanent_raises(served):
    _, addr = served
    factory = pycircuit.dial(addr, "factory")
    with pytest.raises(pycircuit.CircuitError) as ei:
        factory.export_plain()
    assert "permanent" in str(ei.value)
    with pytest.raises(pycircuit.CircuitError):
        pycircuit.export({"nested": [pycircuit.ref(Counter())]})


def test_import_garbage_raises():
    with pytest.raises(pycircuit.ProtocolError):
        pycircuit.import_(b"not an export")


# -- failures ----------------------------------------------------------------
def test_sigkill_during_long_call_raises_network_error_fast(served):
    _, addr = served
    sleeper = pycircuit.dial(addr, "sleeper")
    factory = pycircuit.dial(addr, "factory")
    acid = pycircuit.dial(addr, "acid")
    result: dict = {}

    def call():
        try:
            sleeper.sleep(30)
        except pycircuit.NetworkError as e:
            result["err"] = e
            result["t"] = time.monotonic()

    th = threading.Thread(target=call)
    th.start()
    wait_until(lambda: "in sleep" in acid.stack(), what="the 30 s call to start")
    t_kill = time.monotonic()
    os.kill(addr.pid, signal.SIGKILL)
    th.join(10)
    assert not th.is_alive()
    assert isinstance(result.get("err"), pycircuit.NetworkError)
    assert result["t"] - t_kill < 5.0
    t0 = time.monotonic()
    with pytest.raises(pycircuit.NetworkError):
        factory.make(1)
    with pytest.raises(pycircuit.NetworkError):
        pycircuit.dial(addr, "probe")
    assert time.monotonic() - t0 < 0.5  # dead for this process: at once


def test_version_mismatch_is_refused_naming_both(served):
    _, addr = served
    script = textwrap.dedent(f"""
        import pycircuit
        from pycircuit.runtime import _wire
        _wire.WIRE_VERSION = 99
        try:
            pycircuit.dial({str(addr)!r}, "probe")
        except pycircuit.ProtocolError as e:
            print("refused:", e)
    """)
    out = subprocess.run(
        [sys.executable, "-c", script], env=child_env(), capture_output=True, text=True, timeout=60
    )
    assert "refused:" in out.stdout, out.stderr
    assert "99" in out.stdout and "version 1" in out.stdout


# -- acid --------------------------------------------------------------------
def test_acid_on_a_worker(served):
    _, addr = served
    acid = pycircuit.dial(addr, "acid")
    assert acid.ping()
    stack = acid.stack()
    assert "Thread" in stack and "pycircuit-back" in stack
    assert "Thread" in acid.runtime_profile("threads")
    assert acid.runtime_profile("gc")
    assert isinstance(acid.runtime_profile("heap"), str)
    with pytest.raises(ValueError):
        acid.runtime_profile("nonsense")
    prof = acid.cpu_profile(0.3)
    lines = [ln for ln in prof.splitlines() if ln.strip()]
    assert lines and all(ln.rsplit(" ", 1)[1].isdigit() for ln in lines)  # collapsed stacks
    with pytest.raises(ValueError):
        acid.cpu_profile(3601)
    st = acid.stat()
    assert st["pid"] == addr.pid and st["rss"] > 0 and "cpu_user" in st or "cpu_times" in st


def test_acid_on_the_server(client, server):
    acid = pycircuit.dial(server, "acid")
    assert acid.ping()
    assert "Thread" in acid.stack()
    assert acid.stat()["pid"] == pycircuit.WorkerAddr.parse(server).pid


def test_fault_stack_of_worker_stuck_in_c(client, host, tmp_path):
    """A worker whose thread holds the GIL inside C code still yields a stack."""
    go, inside = str(tmp_path / "go"), str(tmp_path / "inside")

    def stuck(go, inside):
        import os
        import re
        import time
        import pycircuit

        def spin_in_regex():
            while not os.path.exists(go):  # let the spawn reply leave first
                time.sleep(0.01)
            open(inside, "w").close()
            re.match(r"(a+)+$", "a" * 64 + "b")  # catastrophic backtracking in C, GIL held

        pycircuit.run_in_back(spin_in_regex)
        return "spinning"

    out, addr = client.spawn(host, None, stuck, go, inside)
    try:
        assert out == "spinning"
        open(go, "w").close()
        wait_until(lambda: os.path.exists(inside), 10)
        text = client.kernel(host).fault_stack(addr.id)
        assert "spin_in_regex" in text and "Thread" in text
    finally:
        client.kill(addr)


def test_a_bogus_frame_length_does_not_make_the_server_allocate_it(client, server):
    """Six stray bytes (the start of a TLS ClientHello) announce a huge RPyC
    frame; the server must not reserve it up front."""
    import socket
    import psutil

    addr = pycircuit.WorkerAddr.parse(server)
    proc = psutil.Process(addr.pid)
    before = proc.memory_info().rss
    with socket.create_connection((addr.host, addr.port)) as s:
        s.sendall(b"\x16\x03\x01\x02\x00\x01\xff\xff\xff\xff")
        time.sleep(0.3)  # give a careless reader time to allocate (this asserts an absence)
        grown = proc.memory_info().rss - before
    assert grown < 64 * 1024 * 1024, f"server grew by {grown >> 20} MiB"
    assert pycircuit.dial(server, "acid").ping()  # and still serves
