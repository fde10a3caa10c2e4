"""The ``pycircuit`` command against real servers: the seed's walkthrough,
the anchor namespace, process and channel elements, worker tools, and one
clear line for every user mistake."""

from __future__ import annotations

import json
import os

import pytest

import pycircuit
from circuit_helpers import daemon
from conftest import cli, wait_until


@pytest.fixture
def two(servers):
    a = servers.start()
    b = servers.start("-j", a)
    ids_ = sorted(pycircuit.Client(u).server_id for u in (a, b))
    wait_until(lambda: len(cli("ls", "/", url=a).stdout.split()) == 2, 10)
    return a, b, ids_


def cli_tool(name, *args, url):
    """The old toolkit's console scripts (4ls, 4stk, 4cpu, 4kill)."""
    import shutil
    import subprocess
    from conftest import child_env

    exe = shutil.which(name)
    assert exe, f"{name} is not installed (pip install -e .)"
    return subprocess.run(
        [exe, "-d", url, *args], capture_output=True, text=True, timeout=60, env=child_env()
    )


def ok(r):
    assert r.returncode == 0, r.stderr
    return r.stdout


def one_line_error(r, *needles):
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def test_seed_walkthrough(two, tmp_path):
    """start, join, ls, mkproc, peek, stdin, stdout, scrub — as the seed shows."""
    a, b, (x1, x2) = two
    circuit_file = tmp_path / "circuit"
    circuit_file.write_text(a + "\n")
    from conftest import child_env

    env = child_env() | {"CIRCUIT": str(circuit_file)}

    assert ok(cli("ls", "/", env=env)).split() == [f"/{x1}", f"/{x2}"]
    assert ok(cli("ls", "/...", env=env)).split() == [f"/{x1}", f"/{x2}"]
    ok(cli("mkproc", f"/{x1}/pippi", input='{\n"Path": "/bin/ls",\n"Args":["/"]\n}\n', env=env))
    peek = json.loads(ok(cli("peek", f"/{x1}/pippi", env=env)))
    assert peek["Cmd"]["Path"] == "/bin/ls" and peek["Cmd"]["Args"] == ["/"]
    assert peek["Phase"] in ("running", "exited")
    ok(cli("stdin", f"/{x1}/pippi", input="", env=env))  # cat /dev/null | circuit stdin …
    out = ok(cli("stdout", f"/{x1}/pippi", env=env))
    assert "usr" in out.split() and "proc" in out.split()
    st = json.loads(ok(cli("wait", f"/{x1}/pippi", env=env)))
    assert st["Phase"] == "exited" and st["Exit"] is None
    assert ok(cli("ls", "-l", f"/{x1}/...", env=env)).split() == ["proc", f"/{x1}/pippi"]
    ok(cli("scrub", f"/{x1}/pippi", env=env))
    assert ok(cli("ls", f"/{x1}/...", env=env)) == ""  # the empty anchor disappeared


def test_ls_lists_full_paths_depth_and_kinds(two):
    a, b, (x1, x2) = two
    ok(cli("mkchan", f"/{x2}/hi/charlie", "1", url=a))
    ok(cli("mkproc", f"/{x2}/hi/job", input='{"path": "/bin/cat"}', url=a))
    try:
        assert ok(cli("ls", f"/{x2}/hi", url=b)).split() == [f"/{x2}/hi/charlie", f"/{x2}/hi/job"]
        long = [ln.split() for ln in ok(cli("ls", "-l", "/...", url=a)).splitlines()]
        assert long == [
            ["server", f"/{x1}"],
            ["server", f"/{x2}"],
            ["·", f"/{x2}/hi"],
            ["chan", f"/{x2}/hi/charlie"],
            ["proc", f"/{x2}/hi/job"],
        ]
        deep = ok(cli("ls", "--depth", f"/{x2}/...", url=a)).split()
        assert deep.index(f"/{x2}/hi/job") < deep.index(f"/{x2}/hi")  # children before parents
    finally:
        cli("signal", "KILL", f"/{x2}/hi/job", url=a)
        cli("scrub", f"/{x2}/hi/job", url=a)


def test_process_signals_phases_and_wait(two):
    a, _, (x1, _) = two
    path = f"/{x1}/sleepy"
    ok(cli("mkproc", path, input='{"Path": "/bin/sleep", "Args": ["60"]}', url=a))
    ok(cli("stdin", path, input="", url=a))
    ok(cli("signal", "stop", path, url=a))
    wait_until(lambda: json.loads(cli("peek", path, url=a).stdout)["Phase"] == "stopped", 10)
    ok(cli("signal", "CONT", path, url=a))
    wait_until(
        lambda: json.loads(cli("peek", path, url=a).stdout)["Phase"] in ("continued", "running"), 10
    )
    one_line_error(cli("signal", "NOPE", path, url=a), "signal name not recognized")
    ok(cli("signal", "KILL", path, url=a))
    ok(cli("stdout", path, url=a))
    ok(cli("stderr", path, url=a))
    st = json.loads(ok(cli("wait", path, url=a)))
    assert st["Exit"] == "signal: killed" and st["Phase"] == "signaled"
    one_line_error(cli("signal", "TERM", path, url=a), "process already finished")
    ok(cli("scrub", path, url=a))
    # --scrub: the element goes by itself once the process is done
    ok(cli("mkproc", f"/{x1}/quick", "--scrub", input='{"Path": "/bin/true"}', url=a))
    ok(cli("stdin", f"/{x1}/quick", input="", url=a))
    wait_until(lambda: cli("ls", f"/{x1}/...", url=a).stdout == "", 10, what="auto-scrub")


def test_waitall_and_exit_status(two):
    a, _, (x1, _) = two
    paths = [f"/{x1}/w/{i}" for i in range(3)]
    for i, p in enumerate(paths):
        ok(
            cli(
                "mkproc",
                p,
                input=json.dumps({"Path": "/bin/sh", "Args": ["-c", f"exit {i}"]}),
                url=a,
            )
        )
        ok(cli("stdin", p, input="", url=a))
        ok(cli("stdout", p, url=a))
        ok(cli("stderr", p, url=a))
    ok(cli("waitall", input="\n".join(paths) + "\n", url=a))
    exits = [json.loads(ok(cli("peek", p, url=a)))["Exit"] for p in paths]
    assert exits == [None, "exit status 1", "exit status 2"]
    for p in paths:
        ok(cli("scrub", p, url=a))


def test_channel_through_the_cli(two):
    a, b, (x1, x2) = two
    path = f"/{x2}/ch"
    ok(cli("mkchan", path, "2", url=a))
    ok(cli("send", path, input="one", url=a))
    ok(cli("send", path, input="two", url=b))
    assert json.loads(ok(cli("peek", path, url=a))) == {
        "Cap": 2,
        "Closed": False,
        "Aborted": False,
        "NumSend": 2,
        "NumRecv": 0,
    }
    assert ok(cli("recv", path, url=b)) == "one"
    ok(cli("close", path, url=a))
    one_line_error(cli("close", path, url=a), "channel already closed")
    one_line_error(cli("send", path, input="x", url=a), "channel closed")
    assert ok(cli("recv", path, url=a)) == "two"
    one_line_error(cli("recv", path, url=a), "channel closed")
    ok(cli("scrub", path, url=a))


def test_python_client_elements(two):
    a, _, (x1, x2) = two
    with pycircuit.connect(a) as c:
        proc = c.walk(f"/{x2}/py/cat").make_proc(pycircuit.Cmd(path="/bin/cat"))
        w = proc.stdin
        w.write(b"hello ")
        w.write(b"circuit")
        w.close()
        assert proc.stdout.read() == b"hello circuit"
        assert proc.stderr.read() == b""
        st = proc.wait(timeout=10)
        assert st.phase == "exited" and st.exit is None and st.cmd["Path"] == "/bin/cat"
        assert isinstance(c.walk(f"/{x2}/py/cat").get(), pycircuit.Proc)
        proc.scrub()
        assert c.walk(f"/{x2}/py/cat").get() is None

        ch = c.walk([x1, "py", "ch"]).make_chan(0)
        with pytest.raises(pycircuit.CircuitError, match="timeout"):
            ch.send(b"nobody listens", timeout=0.3)
        assert ch.peek()["NumSend"] == 0
        with pytest.raises(pycircuit.ElementError, match="already has an element"):
            c.walk([x1, "py", "ch"]).make_chan(1)
        with pytest.raises(pycircuit.ElementError, match="outside of servers"):
            c.walk("/").make_chan(1)
        with pytest.raises(pycircuit.ElementError, match="cannot be scrubbed"):
            c.walk([x1]).scrub()
        ch.scrub()


def test_worker_tools_by_path(two, tmp_path):
    a, _, (x1, _) = two
    with pycircuit.connect(a) as c:
        _, addr = c.spawn(x1, ["tools"], daemon)
        wpath = f"/{x1}/tools/{addr.id}"
        assert ok(cli("ls", "-l", f"/{x1}/tools", url=a)).split() == ["worker", wpath]
        stk = ok(cli("stk", wpath, url=a))
        assert "pycircuit-back" in stk
        assert "Thread" in ok(cli("stk", str(addr), url=a))
        assert "Thread" in ok(cli("stk", f"/{x1}", url=a))  # the server itself
        prof = ok(cli("cpu", wpath, "0.2", url=a))
        assert all(ln.rsplit(" ", 1)[1].isdigit() for ln in prof.splitlines() if ln.strip())
        mem = ok(cli("mem", wpath, url=a))
        assert '"rss"' in mem
        assert "pycircuit-back" in ok(cli_tool("4stk", wpath, url=a))
        assert ok(cli_tool("4ls", f"/{x1}/tools", url=a)).split() == [wpath]
        assert all(
            ln.rsplit(" ", 1)[1].isdigit()
            for ln in ok(cli_tool("4cpu", wpath, "0.1", url=a)).splitlines()
            if ln.strip()
        )
        ok(cli_tool("4kill", f"/{x1}/tools/...", url=a))
        wait_until(lambda: cli("ls", f"/{x1}/...", url=a).stdout == "", 10, what="worker gone")


def test_user_mistakes_are_one_line_and_nonzero(two):
    a, _, (x1, _) = two
    one_line_error(cli("ls", "/", url=None), "no circuit to dial")
    one_line_error(cli("ls", "nopath", url=a), "start with '/'")
    one_line_error(cli("peek", "/Xffffffffffffffff/a", url=a), "Xffffffffffffffff")
    one_line_error(cli("mkproc", f"/{x1}/p", input="{not json", url=a), "parse error")
    one_line_error(
        cli("mkproc", f"/{x1}/p", input='{"Path": "/nonexistent/bin"}', url=a), "exec error"
    )
    assert json.loads(ok(cli("peek", f"/{x1}/p", url=a)))["Phase"] == "unknown"
    ok(cli("scrub", f"/{x1}/p", url=a))
    one_line_error(cli("mkchan", f"/{x1}/c", "-1", url=a), "capacity")
    one_line_error(cli("mkchan", "/", "1", url=a), "outside of servers")
    one_line_error(cli("scrub", f"/{x1}", url=a), "server")
    one_line_error(cli("stk", f"/{x1}/nothing", url=a), "no worker")
    one_line_error(cli("cpu", f"/{x1}", "7200", url=a), "hour")
    one_line_error(cli("ls", "/", url="circuit://127.0.0.1:9/1/Q0123456789abcdef"), "cannot reach")
    one_line_error(cli("nonsense"), "invalid choice")
    assert ok(cli("peek", f"/{x1}/empty/anchor", url=a)).strip() == "null"
    assert cli("ls", "/", url=a).returncode == 0  # the server survived every mistake


def test_stk_of_a_worker_stuck_in_c_code(two, tmp_path):
    """The worker holds the GIL in a regex: acid cannot answer, so stk falls
    back to the server's faulthandler dump."""
    a, _, (x1, _) = two
    go, inside = str(tmp_path / "go"), str(tmp_path / "inside")

    def stuck(go, inside):
        import os
        import re
        import time
        import pycircuit

        def spin_in_regex():
            while not os.path.exists(go):
                time.sleep(0.01)
            open(inside, "w").close()
            re.match(r"(a+)+$", "a" * 64 + "b")

        pycircuit.run_in_back(spin_in_regex)

    with pycircuit.connect(a) as c:
        _, addr = c.spawn(x1, ["stuck"], stuck, go, inside)
        try:
            open(go, "w").close()
            wait_until(lambda: os.path.exists(inside), 10)
            out = ok(cli("stk", f"/{x1}/stuck/{addr.id}", url=a, timeout=60))
            assert "spin_in_regex" in out
        finally:
            c.kill(addr)


def test_ls_loads_only_what_a_client_needs(server):
    """Start-up: ``pycircuit ls`` imports no JSON, no idna codec (an ASCII
    host goes to getaddrinfo as bytes) and no ``secrets``; each would cost
    every command-line call its import (bench/README.md, cli)."""
    import subprocess
    import sys
    from conftest import child_env

    code = (
        "import sys\n"
        "from pycircuit.cli._main import main\n"
        f"assert main(['ls', '-d', {server!r}, '/']) == 0\n"
        "print(sorted(m for m in ('json', 'encodings.idna', 'unicodedata', 'secrets')"
        " if m in sys.modules))\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=child_env()
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1] == "[]", r.stdout
