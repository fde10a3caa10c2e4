"""``wait`` returns when the process exits (issue 17), and a process that never
reads its stdin pins no server thread (issue 12), through the CLI and the
Python client against a real server and real OS processes.

Process elements outlive their server (each leads its own session), so every
process made here first writes its pid to a file and teardown kills its whole
group, children left behind included. A short wait (NOT_YET) only ever shows
that something does *not* happen; everything else waits on a condition.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading

import pytest

import pycircuit
from conftest import PYCIRCUIT, child_env, cli, stop_process, wait_until
from dockerd import dockerd, requires_docker  # noqa: F401  (fixture)

NOT_YET = 0.5  # how long we watch for something that must not happen
T = 60.0  # generous bound for anything that must happen
MIB = 1 << 20  # far more than a pipe holds
_names = itertools.count()


def ok(r):
    assert r.returncode == 0, r.stderr
    return r.stdout


def popen_cli(cmd: str, *args: str, url: str) -> subprocess.Popen:
    """A ``pycircuit`` command left running, to show that it blocks."""
    argv = [PYCIRCUIT] if PYCIRCUIT else [sys.executable, "-m", "pycircuit.cli"]
    return subprocess.Popen(
        argv + [cmd, "-d", url, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
    )


class Background:
    """Run ``fn`` in a thread; keep its result or exception."""

    def __init__(self, fn, *args):
        self.finished = threading.Event()
        self.result = self.error = None

        def run():
            try:
                self.result = fn(*args)
            except BaseException as e:
                self.error = e
            finally:
                self.finished.set()

        threading.Thread(target=run, daemon=True).start()

    def join(self, timeout: float = T):
        assert self.finished.wait(timeout), "background call did not finish"
        return self


class Procs:
    def __init__(self, client, url, tmp_path):
        self.client, self.url, self.tmp = client, url, tmp_path
        self.x = client.server_id
        self.paths: list[str] = []
        self.pidfiles: list = []

    def make(
        self, script: str | None = None, *, cmd: dict | None = None, scrub: bool = False
    ) -> str:
        """A process element running ``sh -c script`` (or ``cmd`` as given)."""
        n = next(_names)
        path = f"/{self.x}/wait/p{n}"
        pidfile = None
        if cmd is None:
            pidfile = self.tmp / f"p{n}.pid"
            self.pidfiles.append(pidfile)
            cmd = {"Path": "/bin/sh", "Args": ["-c", f"echo $$ > {pidfile}; {script}"]}
        ok(
            cli(
                "mkproc", path, *(["--scrub"] if scrub else []), input=json.dumps(cmd), url=self.url
            )
        )
        self.paths.append(path)
        if pidfile is not None:
            wait_until(
                lambda: pidfile.exists() and pidfile.read_text().strip(), what=f"{path} started"
            )
        return path

    def get(self, path: str):
        return self.client.walk(path).get()

    def close(self):
        for f in self.pidfiles:
            try:
                os.killpg(int(f.read_text()), signal.SIGKILL)
            except (OSError, ValueError):
                pass  # never started, or already gone with its whole group
        for p in self.paths:
            try:
                self.client.walk(p).scrub()
            except pycircuit.CircuitError:
                pass  # already scrubbed


@pytest.fixture
def procs(client, server, tmp_path):
    p = Procs(client, server, tmp_path)
    try:
        yield p
    finally:
        p.close()


# ============================================================== wait returns at exit


def test_false_with_stdin_untouched(procs, server):
    path = procs.make(cmd={"Path": "/bin/false"})
    st = json.loads(ok(cli("wait", path, url=server, timeout=T)))
    assert (st["Exit"], st["Phase"]) == ("exit status 1", "exited")
    assert st == json.loads(ok(cli("peek", path, url=server)))  # the same status, as peek words it
    stat = procs.get(path).wait(timeout=T)
    assert (stat.exit, stat.phase) == ("exit status 1", "exited")


def test_wait_returns_while_a_child_left_behind_holds_the_pipes(procs, server, tmp_path):
    childfile = tmp_path / "child.pid"
    path = procs.make(f"echo before; sleep 1000 & echo $! > {childfile}; exit 0")
    st = json.loads(ok(cli("wait", path, url=server, timeout=T)))
    assert (st["Exit"], st["Phase"]) == (None, "exited")
    child = int(
        wait_until(lambda: childfile.exists() and childfile.read_text().strip(), what="child pid")
    )
    os.kill(child, 0)  # the sleep still runs, holding stdout and stderr open
    proc = procs.get(path)
    assert proc.wait(timeout=T).exit is None
    assert proc.stdout.read(100) == b"before\n"  # the output stays readable after wait
    os.kill(child, signal.SIGKILL)
    assert ok(cli("stdout", path, url=server)) == ""  # and ends with the last holder


def test_wait_blocks_until_the_process_exits(procs, server):
    path = procs.make("exec sleep 1000")
    waiter = popen_cli("wait", path, url=server)
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            waiter.wait(NOT_YET)
        api = Background(procs.get(path).wait, T)
        assert not api.finished.wait(NOT_YET)
        ok(cli("signal", "TERM", path, url=server))
        out, err = waiter.communicate(timeout=T)
        assert waiter.returncode == 0, err
        st = json.loads(out)
        assert (st["Exit"], st["Phase"]) == ("signal: terminated", "signaled")
        assert api.join().error is None and api.result.exit == "signal: terminated"
    finally:
        stop_process(waiter)


def test_stdout_after_wait_gives_the_whole_output(procs, server):
    path = procs.make("seq 1 10000; echo err >&2; exit 2")
    st = json.loads(ok(cli("wait", path, url=server, timeout=T)))
    assert st["Exit"] == "exit status 2"
    assert ok(cli("stdout", path, url=server)) == "".join(f"{i}\n" for i in range(1, 10001))
    assert ok(cli("stderr", path, url=server)) == "err\n"


def test_auto_scrub_only_after_the_outputs_were_read(procs, server):
    path = procs.make("echo hi; echo ho >&2; exit 0", scrub=True)
    assert json.loads(ok(cli("wait", path, url=server, timeout=T)))["Phase"] == "exited"
    assert procs.get(path) is not None  # exited, stdin open, outputs unread
    ok(cli("stdin", path, input="", url=server))
    assert procs.get(path) is not None  # stdin closed, outputs unread
    assert ok(cli("stdout", path, url=server)) == "hi\n"
    assert procs.get(path) is not None  # stderr still holds "ho"
    assert ok(cli("stderr", path, url=server)) == "ho\n"
    wait_until(lambda: procs.get(path) is None, T, what="auto-scrub")


def test_waitall_over_a_mix_returns_once_all_have_exited(procs, server, tmp_path):
    paths = [
        procs.make(cmd={"Path": "/bin/false"}),
        procs.make(f"sleep 1000 & echo $! > {tmp_path / 'child.pid'}; exit 0"),
        procs.make("exec sleep 1000"),
    ]
    waiter = popen_cli("waitall", url=server)
    try:
        waiter.stdin.write("\n".join(paths) + "\n")
        waiter.stdin.close()
        with pytest.raises(subprocess.TimeoutExpired):
            waiter.wait(NOT_YET)  # the last one still runs
        ok(cli("signal", "KILL", paths[2], url=server))
        assert waiter.wait(T) == 0, waiter.stderr.read()
    finally:
        stop_process(waiter)
    exits = [json.loads(ok(cli("peek", p, url=server)))["Exit"] for p in paths]
    assert exits == ["exit status 1", None, "signal: killed"]


# ============================================================== stdin to a process that never reads


def test_a_process_that_never_reads_pins_no_server_thread(procs, server):
    scrubbed, killed = procs.make("exec sleep 1000"), procs.make("exec sleep 1000")
    writers = [Background(procs.get(p).stdin.write, b"x" * MIB) for p in (scrubbed, killed)]
    assert not any(w.finished.wait(NOT_YET) for w in writers)  # blocked, as on a pipe
    # The server answers other requests, on this connection and others.
    assert procs.get(scrubbed).peek().phase == "running"
    echo = procs.make(cmd={"Path": "/bin/echo", "Args": ["still here"]})
    assert ok(cli("stdout", echo, url=server)) == "still here\n"
    assert json.loads(ok(cli("wait", echo, url=server, timeout=T)))["Exit"] is None
    procs.get(scrubbed).scrub()
    procs.get(killed).signal("KILL")
    for w in writers:
        assert isinstance(w.join().error, pycircuit.ElementError), w.error
    assert str(writers[1].error) == "broken pipe"
    assert procs.get(killed).wait(timeout=T).exit == "signal: killed"


def test_a_blocked_write_completes_once_the_process_reads(procs, server):
    path = procs.make("kill -STOP $$; exec wc -c")
    proc = procs.get(path)
    wait_until(lambda: proc.peek().phase == "stopped", T, what="sh to stop itself")
    stdin = proc.stdin
    writer = Background(stdin.write, b"x" * MIB)
    assert not writer.finished.wait(NOT_YET)
    proc.signal("CONT")
    assert writer.join().error is None and writer.result == MIB
    stdin.close()
    assert int(ok(cli("stdout", path, url=server))) == MIB
    assert proc.wait(timeout=T).exit is None


# ============================================================== docker elements


@pytest.fixture
def dkr(servers, dockerd):  # noqa: F811
    url = servers.start("--docker", env=child_env() | {"DOCKER_HOST": dockerd.host})
    return url, pycircuit.Client(url).server_id, dockerd


@requires_docker
def test_container_wait_returns_at_exit_with_stdin_untouched(dkr):
    url, x, d = dkr
    done, running = f"/{x}/d/done", f"/{x}/d/running"
    spec = {"Image": d.image, "Path": "/bin/sh", "Args": ["-c", "echo out; echo err >&2; exit 3"]}
    ok(cli("mkdkr", done, input=json.dumps(spec), url=url))
    ok(
        cli(
            "mkdkr",
            running,
            input=json.dumps({"Image": d.image, "Path": "/bin/sleep", "Args": ["600"]}),
            url=url,
        )
    )
    waiter = popen_cli("wait", running, url=url)
    try:
        st = json.loads(ok(cli("wait", done, url=url, timeout=T)))
        assert st["State"]["ExitCode"] == 3
        assert ok(cli("stdout", done, url=url)) == "out\n"
        assert ok(cli("stderr", done, url=url)) == "err\n"
        with pytest.raises(subprocess.TimeoutExpired):
            waiter.wait(NOT_YET)
        with pycircuit.connect(url) as c:
            box = c.walk(running).get()
            writer = Background(box.stdin.write, b"x" * (8 * MIB))  # sleep never reads it
            assert not writer.finished.wait(NOT_YET)
            assert box.peek()["State"]["Running"] is True  # the server still answers
            ok(cli("signal", "KILL", running, url=url))
            out, err = waiter.communicate(timeout=T)
            assert waiter.returncode == 0, err
            assert json.loads(out)["State"]["ExitCode"] == 137
            assert isinstance(writer.join().error, pycircuit.ElementError)
    finally:
        stop_process(waiter)
        for p in (done, running):
            cli("scrub", p, url=url)
