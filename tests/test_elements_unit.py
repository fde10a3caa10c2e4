"""Unit tests of the process, channel and subscription elements, standalone
(no server, no rpyc) and against real OS processes.

Every process is killed and reaped in a fixture finaliser. Nothing sleeps to
synchronise: tests wait on conditions with deadlines. A short timeout is used
only to show that something does *not* happen (yet).
"""

from __future__ import annotations

import json
import os
import threading

import pytest

from conftest import wait_until
from pycircuit.errors import CircuitError, ElementError
from pycircuit.server._chan import ChanElement
from pycircuit._spec import Cmd
from pycircuit.server._proc import ProcElement
from pycircuit.server._subs import Subscription

NOT_YET = 0.3  # how long we watch for something that must not happen


class Background:
    """Run ``fn`` in a thread; keep its result or exception."""

    def __init__(self, fn, *args, **kwargs):
        self.finished = threading.Event()
        self.result = self.error = None

        def run():
            try:
                self.result = fn(*args, **kwargs)
            except BaseException as e:
                self.error = e
            finally:
                self.finished.set()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def join(self, timeout: float = 10.0):
        assert self.finished.wait(timeout), "background call did not finish"
        self.thread.join(timeout)
        return self


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def spawn():
    """Start process elements; afterwards kill and reap every one still running."""
    started: list[ProcElement] = []

    def make(path, *args, on_done=lambda p: None, **kw) -> ProcElement:
        p = ProcElement(Cmd(path, args=args, **kw), on_done)
        started.append(p)
        p.start()
        return p

    yield make
    for p in started:
        if p.pid is None:
            continue
        try:  # the group (each process leads its own): children left behind go too
            os.killpg(p.pid, 9)  # also works after scrub, and on stopped processes
        except ProcessLookupError:
            pass
        wait_until(lambda p=p: p.peek()["Phase"] in ("exited", "signaled"), what=f"reaping {p!r}")
        p.stdin_close()
        p.close_stream("stdout")
        p.close_stream("stderr")


def read_all(p: ProcElement, stream: str = "stdout", timeout: float = 10.0) -> bytes:
    out = b""
    while chunk := p.read(stream, timeout=timeout):
        out += chunk
    return out


def finish(p: ProcElement, timeout: float = 10.0) -> tuple[bytes, bytes, dict]:
    """Close stdin, drain both outputs, wait: the full obligation of a user."""
    p.stdin_close()
    out, err = read_all(p, "stdout"), read_all(p, "stderr")
    return out, err, p.wait(timeout)


# ============================================================== processes: streams and wait


def test_cat_echoes_stdin_to_stdout(spawn):
    p = spawn("/bin/cat")
    assert p.peek()["Phase"] == "running" and isinstance(p.pid, int)
    p.stdin_write(b"hello\n")
    got = b""
    while got != b"hello\n":
        got += p.read("stdout", timeout=10)
    p.stdin_write(bytearray(b"again"))
    out, err, stat = finish(p)
    assert (out, err) == (b"again", b"")
    assert stat == {"Cmd": p.cmd.to_json(), "Exit": None, "Phase": "exited"}
    assert p.done


def test_large_transfer_through_cat_keeps_order(spawn):
    p = spawn("/bin/cat")
    data = os.urandom(3 << 20)  # far beyond the pipe and element buffers: needs real back-pressure

    def writer():
        for i in range(0, len(data), 100_000):
            p.stdin_write(data[i : i + 100_000])
        p.stdin_close()

    w = Background(writer)
    assert read_all(p) == data
    assert w.join().error is None
    assert p.wait(10)["Exit"] is None


def test_wait_returns_at_exit_with_stdin_open_and_output_unread(spawn):
    p = spawn("/bin/sh", "-c", "echo out; echo err >&2; exit 1")
    stat = p.wait(10)  # stdin never touched, nothing read
    assert (stat["Exit"], stat["Phase"]) == ("exit status 1", "exited")
    assert stat == p.peek()
    assert not p.done  # done (what auto-scrub waits for) still needs stdin closed and output read
    assert read_all(p) == b"out\n" and read_all(p, "stderr") == b"err\n"
    assert not p.done
    p.stdin_close()
    assert p.done and p.wait(0) == stat


def test_wait_returns_while_a_child_left_behind_holds_the_pipes(spawn, tmp_path):
    pidfile = tmp_path / "child"
    p = spawn("/bin/sh", "-c", f"echo before; sleep 1000 & echo $! > {pidfile}; exit 0")
    stat = p.wait(10)
    assert (stat["Exit"], stat["Phase"]) == (None, "exited")
    child = int(wait_until(lambda: pidfile.read_text().strip(), what="child pid"))
    try:
        assert alive(child)
        assert p.read("stdout", timeout=10) == b"before\n"  # readable; EOF only once the child goes
        with pytest.raises(ElementError, match="^timeout$"):
            p.read("stdout", timeout=NOT_YET)
    finally:
        os.kill(child, 9)
    assert read_all(p) == b""


def test_wait_blocks_until_the_process_exits(spawn):
    p = spawn("/bin/cat")
    pending = Background(p.wait, 30)
    assert not pending.finished.wait(NOT_YET)
    p.stdin_write(b"x")
    assert not pending.finished.wait(NOT_YET)
    p.stdin_close()  # cat exits
    assert pending.join().error is None and pending.result["Phase"] == "exited"
    assert read_all(p) == b"x"


def test_close_stream_discards_without_blocking_the_process(spawn):
    # ~4 MB of output would block the writer forever if nobody drained the pipe.
    p = spawn(
        "/bin/sh",
        "-c",
        "i=0; while [ $i -lt 64 ]; do head -c 65536 /dev/zero; i=$((i+1)); done; echo done >&2",
    )
    assert p.read("stdout", timeout=10)  # something arrived
    p.close_stream("stdout")
    assert p.read("stdout", timeout=1) == b""  # closed: reads see the end
    wait_until(lambda: p.peek()["Phase"] == "exited", what="the writer to finish")
    p.close_stream("stdin")
    assert read_all(p, "stderr") == b"done\n"
    assert p.wait(10)["Exit"] is None


def test_read_timeout_and_bad_stream(spawn):
    p = spawn("/bin/cat")
    with pytest.raises(ElementError, match="^timeout$"):
        p.read("stdout", timeout=0.1)
    with pytest.raises(ElementError, match="stream"):
        p.read("stdin")
    with pytest.raises(ElementError):
        p.read("stdout", max_bytes=0)
    p.stdin_write(b"abcdef")
    got = b""
    while len(got) < 6:
        chunk = p.read("stdout", max_bytes=2, timeout=10)
        assert 0 < len(chunk) <= 2
        got += chunk
    assert got == b"abcdef"


def test_stdin_after_close(spawn):
    p = spawn("/bin/cat")
    p.stdin_close()
    p.stdin_close()  # idempotent
    with pytest.raises(ElementError, match="stdin closed"):
        p.stdin_write(b"x")
    with pytest.raises(ElementError):
        p.stdin_write("text, not bytes")  # type: ignore[arg-type]
    assert finish(p)[0] == b""


def test_stdin_write_to_exited_process_is_broken_pipe(spawn):
    p = spawn("/bin/sh", "-c", "exit 0")
    wait_until(lambda: p.peek()["Phase"] == "exited")
    with pytest.raises(ElementError, match="broken pipe"):
        p.stdin_write(b"x" * 200_000)
    assert finish(p)[2]["Exit"] is None


MIB = 1 << 20  # far more than a pipe holds


def test_stdin_write_is_bounded_by_its_timeout_when_nobody_reads(spawn):
    p = spawn("/bin/sleep", "1000")
    n = p.stdin_write(b"x" * MIB, timeout=0.5)
    assert 0 < n < MIB  # what the pipe took; the caller writes the rest again
    assert p.stdin_write(b"y" * MIB, timeout=0.1) == 0  # the pipe is full
    with pytest.raises(ElementError, match="timeout"):
        p.stdin_write(b"z", timeout=-1)


def test_scrub_aborts_a_write_blocked_on_a_process_that_never_reads(spawn):
    p = spawn("/bin/sleep", "1000")
    writer = Background(p.stdin_write, b"x" * MIB)  # no timeout: only the scrub can end it
    assert not writer.finished.wait(NOT_YET)
    p.scrub()
    assert isinstance(writer.join().error, ElementError) and str(writer.error) == "aborted"
    with pytest.raises(ElementError, match="^aborted$"):
        p.stdin_write(b"late")
    assert alive(p.pid)  # scrub detaches; the process is still the user's to kill


def test_kill_fails_a_write_blocked_on_a_process_that_never_reads(spawn):
    p = spawn("/bin/sleep", "1000")
    writer = Background(p.stdin_write, b"x" * MIB)
    assert not writer.finished.wait(NOT_YET)
    p.signal("KILL")
    assert isinstance(writer.join().error, ElementError) and str(writer.error) == "broken pipe"
    assert p.wait(10)["Exit"] == "signal: killed"


def test_blocked_write_completes_once_the_process_reads(spawn):
    p = spawn("/bin/sh", "-c", "kill -STOP $$; exec wc -c")
    wait_until(lambda: p.peek()["Phase"] == "stopped", what="sh to stop itself")
    writer = Background(p.stdin_write, b"x" * MIB)
    assert not writer.finished.wait(NOT_YET)
    p.signal("CONT")
    assert writer.join().error is None and writer.result == MIB
    p.stdin_close()
    assert int(read_all(p)) == MIB
    assert p.wait(10)["Exit"] is None


def test_start_twice(spawn):
    p = spawn("/bin/cat")
    with pytest.raises(ElementError, match="already started"):
        p.start()


# ============================================================== processes: exit, signals, phases


@pytest.mark.parametrize(
    "script, exit_",
    [
        ("exit 0", None),
        ("exit 3", "exit status 3"),
        ("kill -KILL $$", "signal: killed"),
        ("kill -TERM $$", "signal: terminated"),
    ],
)
def test_exit_strings(spawn, script, exit_):
    stat = finish(spawn("/bin/sh", "-c", script))[2]
    assert stat["Exit"] == exit_
    assert stat["Phase"] == ("exited" if exit_ is None or exit_.startswith("exit") else "signaled")


@pytest.mark.parametrize(
    "name, exit_",
    [
        ("KILL", "signal: killed"),
        ("term", "signal: terminated"),
        ("SIGINT", "signal: interrupt"),
        ("sighup", "signal: hangup"),
    ],
)
def test_signal_terminates(spawn, name, exit_):
    p = spawn("/bin/sleep", "30")
    p.signal(name)
    stat = finish(p)[2]
    assert (stat["Exit"], stat["Phase"]) == (exit_, "signaled")


def test_stop_and_continue_phases(spawn):
    p = spawn("/bin/sleep", "30")
    p.signal("STOP")
    wait_until(lambda: p.peek()["Phase"] == "stopped", what="phase stopped")
    assert p.peek()["Exit"] is None
    p.signal("cont")
    wait_until(lambda: p.peek()["Phase"] == "continued", what="phase continued")
    p.signal("KILL")
    wait_until(lambda: p.peek()["Phase"] == "signaled", what="phase signaled")
    assert p.peek()["Exit"] == "signal: killed"


@pytest.mark.parametrize("bad", ["FOO", "", "SIG", "SIGFOO", "KILLX", "9", 9, None])
def test_bad_signal_name(spawn, bad):
    p = spawn("/bin/sleep", "30")
    with pytest.raises(ElementError, match="^signal name not recognized$"):
        p.signal(bad)
    assert p.peek()["Phase"] == "running"


def test_signal_names_accepted_in_any_case_and_with_prefix(spawn):
    p = spawn("/bin/sleep", "30")
    for name in ("CONT", "cont", "SigCont", " winch ", "CHLD", "URG"):  # all ignored by sleep
        p.signal(name)
    assert p.peek()["Phase"] == "running"


def test_signal_after_exit(spawn):
    p = spawn("/bin/sh", "-c", "exit 0")
    wait_until(lambda: p.peek()["Phase"] == "exited")
    with pytest.raises(ElementError, match="^process already finished$"):
        p.signal("KILL")
    with pytest.raises(ElementError, match="^signal name not recognized$"):
        p.signal("BOGUS")  # the name is checked first


# ============================================================== processes: exec, Path, Env, Dir


def test_exec_error_keeps_phase_unknown(tmp_path):
    p = ProcElement(Cmd(str(tmp_path / "no-such-binary")))
    with pytest.raises(ElementError, match="^exec error: .*no such file") as e:
        p.start()
    assert isinstance(e.value, CircuitError)
    stat = p.peek()
    assert stat["Phase"] == "unknown" and stat["Exit"].startswith("exec error:")
    assert p.pid is None and p.done
    assert p.wait(1) == stat  # nothing will ever run: wait does not hang
    with pytest.raises(ElementError, match="not started"):
        p.signal("KILL")
    with pytest.raises(ElementError, match="not started"):
        p.stdin_write(b"x")
    with pytest.raises(ElementError, match="not started"):
        p.read("stdout")


def test_exec_error_for_bad_dir_and_non_executable(tmp_path):
    p = ProcElement(Cmd("/bin/cat", dir=str(tmp_path / "missing")))
    with pytest.raises(ElementError, match="^exec error: chdir"):
        p.start()
    f = tmp_path / "plain"
    f.write_text("not a program")
    p = ProcElement(Cmd(str(f)))
    with pytest.raises(ElementError, match="^exec error: .*permission denied"):
        p.start()
    assert p.peek()["Phase"] == "unknown"


def test_path_is_not_searched_in_PATH(spawn, tmp_path):
    # $PATH would find ls; there is no ./ls in Dir.
    p = ProcElement(Cmd("ls", env=("PATH=/bin:/usr/bin",), dir=str(tmp_path)))
    with pytest.raises(ElementError, match="^exec error:"):
        p.start()
    assert p.peek()["Phase"] == "unknown"
    # A bare name is relative to Dir, as in Go's os/exec.
    out, _, stat = finish(spawn("ls", "-d", "/", dir="/bin"))
    assert (out, stat["Exit"]) == (b"/\n", None)


def test_env_none_inherits_the_server_environment(spawn, monkeypatch):
    monkeypatch.setenv("PYCIRCUIT_ELEMENT_MARK", "inherited")
    out = finish(spawn("/bin/sh", "-c", 'echo "$PYCIRCUIT_ELEMENT_MARK"'))[0]
    assert out == b"inherited\n"


def test_explicit_env_is_exactly_the_list(spawn, monkeypatch):
    monkeypatch.setenv("PYCIRCUIT_ELEMENT_MARK", "inherited")
    out = finish(spawn("/usr/bin/env", env=("A=1", "B=x=y", "EMPTY=")))[0]
    assert sorted(out.decode().splitlines()) == ["A=1", "B=x=y", "EMPTY="]
    assert finish(spawn("/usr/bin/env", env=()))[0] == b""


def test_dir_applies_and_is_reported(spawn, tmp_path):
    p = spawn("/bin/sh", "-c", "pwd -P", dir=str(tmp_path))
    out, _, stat = finish(p)
    assert out.decode().strip() == os.path.realpath(tmp_path)
    assert stat["Cmd"]["Dir"] == str(tmp_path)


# ============================================================== processes: scrub


def test_scrub_aborts_waits_and_leaves_the_process_running(spawn):
    p = spawn("/bin/sleep", "30")
    pending = Background(p.wait)
    assert not pending.finished.wait(NOT_YET)
    p.scrub()
    assert isinstance(pending.join().error, ElementError) and str(pending.error) == "aborted"
    with pytest.raises(ElementError, match="^aborted$"):
        p.wait(1)
    p.scrub()  # idempotent
    assert alive(p.pid) and p.peek()["Phase"] == "running"
    p.signal("KILL")  # still controllable: scrubbing detaches, it does not kill
    wait_until(lambda: p.peek()["Phase"] == "signaled")


def test_pending_wait_keeps_its_result_if_scrub_follows_completion(spawn):
    p = spawn("/bin/sh", "-c", "exit 4")
    _, _, stat = finish(p)
    p.scrub()
    assert stat["Exit"] == "exit status 4"
    with pytest.raises(ElementError, match="^aborted$"):
        p.wait(1)


def test_auto_scrub_calls_on_done_once_when_done(spawn):
    calls = []
    p = spawn("/bin/sh", "-c", "echo hi", scrub=True, on_done=calls.append)
    assert p.wait(10)["Phase"] == "exited"
    assert calls == []  # exited, but stdin open and output unread
    p.stdin_close()
    assert calls == []
    assert read_all(p) == b"hi\n" and read_all(p, "stderr") == b""
    wait_until(lambda: calls, what="on_done")
    p.stdin_close()
    p.close_stream("stdout")
    assert calls == [p]
    assert p.wait(1)["Cmd"]["Scrub"] is True


def test_auto_scrub_waits_until_the_reader_was_given_the_end(spawn):
    calls = []
    p = spawn("/bin/sh", "-c", "echo hi", scrub=True, on_done=calls.append)
    p.wait(10)
    p.stdin_close()
    wait_until(
        lambda: p._outputs["stdout"]._eof, what="stdout at EOF"
    )  # so the next read empties it
    assert p.read("stdout", timeout=10) == b"hi\n"
    assert calls == []  # a reader that took the last bytes comes back for b"": not cut off
    assert p.read("stdout", timeout=10) == b""
    wait_until(lambda: calls, what="on_done")  # stderr never had anything: nothing to lose there
    assert calls == [p]


def test_on_done_not_called_without_scrub_flag_or_after_user_scrub(spawn):
    calls = []
    p = spawn("/bin/sh", "-c", "exit 0", on_done=calls.append)
    finish(p)
    q = spawn("/bin/sh", "-c", "exit 0", scrub=True, on_done=calls.append)
    q.scrub()  # the user detached it first: nothing left for on_done to remove
    q.stdin_close()
    wait_until(lambda: q.done, what="q done")
    assert calls == []


def test_on_done_errors_do_not_escape(spawn):
    def boom(p):
        raise RuntimeError("boom")

    p = spawn("/bin/sh", "-c", "exit 0", scrub=True, on_done=boom)
    assert finish(p)[2]["Phase"] == "exited"


# ============================================================== Cmd JSON


def test_cmd_json_keys_are_case_insensitive():
    c = Cmd.from_json(
        {"PATH": "/bin/ls", "args": ["-l", "/"], "eNv": ["TERM=xterm"], "Dir": "/", "scrub": True}
    )
    assert c == Cmd("/bin/ls", ("-l", "/"), ("TERM=xterm",), "/", True)
    assert c.to_json() == {
        "Env": ["TERM=xterm"],
        "Dir": "/",
        "Path": "/bin/ls",
        "Args": ["-l", "/"],
        "Scrub": True,
    }
    assert Cmd.from_json(c.to_json()) == c
    assert Cmd.from_json({"Path": "/bin/ls"}).to_json() == {
        "Env": None,
        "Dir": None,
        "Path": "/bin/ls",
        "Args": [],
        "Scrub": False,
    }
    assert Cmd.from_json({"Path": "/bin/ls", "Env": None, "Args": None, "Dir": None}) == Cmd(
        "/bin/ls"
    )


@pytest.mark.parametrize(
    "obj, message",
    [
        ({"Path": "/bin/ls", "Bogus": 1}, "Bogus"),
        ({"Args": ["-l"]}, "Path"),
        ({"Path": ""}, "Path"),
        ({"Path": 5}, "Path"),
        ({"Path": "/bin/ls", "Args": "-l"}, "Args"),
        ({"Path": "/bin/ls", "Args": ["-l", 1]}, "Args"),
        ({"Path": "/bin/ls", "Env": "A=1"}, "Env"),
        ({"Path": "/bin/ls", "Env": ["NOEQUALS"]}, "Env"),
        ({"Path": "/bin/ls", "Dir": 3}, "Dir"),
        ({"Path": "/bin/ls", "Scrub": "yes"}, "Scrub"),
        ({"Path": "/bin/ls", "path": "/bin/cat"}, "duplicate"),
        (["/bin/ls"], "object"),
    ],
)
def test_cmd_json_errors(obj, message):
    with pytest.raises(ElementError, match=message):
        Cmd.from_json(obj)


def test_cmd_accepts_lists_and_peek_is_json(spawn):
    c = Cmd("/bin/sh", args=["-c", "exit 0"], env=["A=1"])  # type: ignore[arg-type]
    assert c.args == ("-c", "exit 0") and c.env == ("A=1",)
    hash(c)
    p = spawn("/bin/sh", "-c", "exit 0")
    d = p.describe()
    assert d["kind"] == "proc" == ProcElement.kind
    assert json.loads(json.dumps(d)) == d
    assert set(p.peek()) == {"Cmd", "Exit", "Phase"}


# ============================================================== channels


def test_chan_cap2_third_send_blocks():
    ch = ChanElement(2)
    ch.send(b"a", timeout=1)
    ch.send(b"b", timeout=1)
    third = Background(ch.send, b"c")
    assert not third.finished.wait(NOT_YET)
    assert ch.recv(1) == b"a"
    assert third.join().error is None
    assert [ch.recv(1), ch.recv(1)] == [b"b", b"c"]
    assert ch.peek() == {"Cap": 2, "Closed": False, "Aborted": False, "NumSend": 3, "NumRecv": 3}


def test_chan_send_timeout_withdraws_the_message():
    ch = ChanElement(1)
    ch.send(b"kept")
    with pytest.raises(ElementError, match="^timeout$"):
        ch.send(b"withdrawn", timeout=0.1)
    assert ch.recv(1) == b"kept"
    with pytest.raises(ElementError, match="^timeout$"):
        ch.recv(0.1)
    assert ch.peek()["NumSend"] == 1


def test_chan_cap0_is_a_rendezvous():
    ch = ChanElement(0)
    with pytest.raises(ElementError, match="^timeout$"):
        ch.send(b"nobody", timeout=0.1)
    sender = Background(ch.send, b"hand-over")
    assert not sender.finished.wait(NOT_YET)
    assert ch.peek()["NumSend"] == 0
    assert ch.recv(5) == b"hand-over"
    assert sender.join().error is None
    receiver = Background(ch.recv)
    assert not receiver.finished.wait(NOT_YET)
    ch.send(b"x", timeout=5)
    assert receiver.join().result == b"x"
    assert ch.peek()["NumSend"] == ch.peek()["NumRecv"] == 2


def test_chan_fifo_and_blocked_senders_keep_order():
    ch = ChanElement(3)
    for i in range(3):
        ch.send(b"%d" % i)
    blocked = []
    for i in range(3, 6):  # queue up one at a time so their order is known
        blocked.append(Background(ch.send, b"%d" % i))
        # Peeking at the private queue is the only way to know the sender is in line.
        wait_until(lambda i=i: len(ch._queue) == i + 1, what=f"sender {i} to queue up")
    assert not any(b.finished.is_set() for b in blocked)
    assert [ch.recv(5) for _ in range(6)] == [b"%d" % i for i in range(6)]
    assert all(b.join().error is None for b in blocked)


def test_chan_close_semantics():
    ch = ChanElement(2)
    ch.send(b"1")
    ch.send(b"2")
    blocked = Background(ch.send, b"3")
    assert not blocked.finished.wait(0.05)
    ch.close()
    assert str(blocked.join().error) == "channel closed"
    with pytest.raises(ElementError, match="^channel already closed$"):
        ch.close()
    with pytest.raises(ElementError, match="^channel closed$"):
        ch.send(b"late")
    assert [ch.recv(1), ch.recv(1)] == [b"1", b"2"]  # the buffer drains
    with pytest.raises(ElementError, match="^channel closed$"):
        ch.recv(1)
    assert ch.peek() == {"Cap": 2, "Closed": True, "Aborted": False, "NumSend": 2, "NumRecv": 2}


def test_chan_close_wakes_blocked_receiver():
    ch = ChanElement(0)
    r = Background(ch.recv)
    assert not r.finished.wait(0.05)
    ch.close()
    assert str(r.join().error) == "channel closed"


def test_chan_scrub_aborts_everything():
    ch = ChanElement(0)
    r = Background(ch.recv)
    full = ChanElement(1)
    full.send(b"x")
    s = Background(full.send, b"y")
    assert not r.finished.wait(0.05) and not s.finished.wait(0.05)
    ch.scrub()
    full.scrub()
    assert str(r.join().error) == "channel aborted"
    assert str(s.join().error) == "channel aborted"
    for op in (lambda: full.send(b"z"), lambda: full.recv(1), full.close):
        with pytest.raises(ElementError, match="^channel aborted$"):
            op()
    assert full.peek()["Aborted"] is True
    assert full.describe() == {"kind": "chan", **full.peek()}


@pytest.mark.parametrize("cap", [-1, 1.5, "2", None, True])
def test_chan_bad_capacity(cap):
    with pytest.raises(ElementError, match="^channel capacity must be a non-negative integer$"):
        ChanElement(cap)


def test_chan_rejects_non_bytes():
    with pytest.raises(ElementError):
        ChanElement(1).send("text")  # type: ignore[arg-type]


@pytest.mark.parametrize("cap, n_cons", [(0, 1), (0, 3), (1, 3), (5, 1), (5, 3)])
def test_chan_many_producers_and_consumers(cap, n_cons):
    ch = ChanElement(cap)
    n_prod, per = 4, 200
    got: list[bytes] = []
    lock = threading.Lock()

    def produce(k):
        for i in range(per):
            ch.send(b"%d:%d" % (k, i), timeout=10)

    def consume():
        while True:
            try:
                m = ch.recv(10)
            except ElementError as e:
                assert str(e) == "channel closed"
                return
            with lock:
                got.append(m)

    consumers = [Background(consume) for _ in range(n_cons)]
    producers = [Background(produce, k) for k in range(n_prod)]
    for b in producers:
        assert b.join(30).error is None
    ch.close()
    for b in consumers:
        assert b.join(30).error is None
    assert sorted(got) == sorted(b"%d:%d" % (k, i) for k in range(n_prod) for i in range(per))
    if n_cons == 1:  # FIFO: each producer's messages arrive in the order sent
        for k in range(n_prod):
            mine = [int(m.split(b":")[1]) for m in got if m.startswith(b"%d:" % k)]
            assert mine == sorted(mine)
    assert ch.peek()["NumSend"] == ch.peek()["NumRecv"] == n_prod * per


# ============================================================== subscriptions


def test_subscription_initial_then_published():
    s = Subscription("@join", "/X0000000000000001", ["/X0000000000000001", "/X0000000000000002"])
    assert s.peek() == {"Source": "/X0000000000000001", "Pending": 2, "Closed": False}
    s.publish("/X0000000000000003")
    assert [s.recv(1) for _ in range(3)] == [
        "/X0000000000000001",
        "/X0000000000000002",
        "/X0000000000000003",
    ]
    assert s.peek()["Pending"] == 0
    with pytest.raises(ElementError, match="^timeout$"):
        s.recv(0.1)
    waiting = Background(s.recv)
    assert not waiting.finished.wait(0.05)
    s.publish("/X0000000000000004")
    assert waiting.join().result == "/X0000000000000004"
    assert s.describe() == {"kind": "@join", **s.peek()}


def test_subscription_scrub_and_close():
    s = Subscription("@leave", "/X00000000000000aa")
    assert s.kind == "@leave" and s.peek()["Pending"] == 0
    waiting = Background(s.recv)
    assert not waiting.finished.wait(0.05)
    s.scrub()
    assert str(waiting.join().error) == "subscription closed"
    s.publish("/X00000000000000bb")  # ignored once closed
    with pytest.raises(ElementError, match="^subscription closed$"):
        s.recv(1)
    assert s.peek() == {"Source": "/X00000000000000aa", "Pending": 0, "Closed": True}
    t = Subscription("@join", "/X00000000000000aa", ["/X00000000000000aa"])
    t.close()
    with pytest.raises(ElementError, match="^subscription closed$"):
        t.recv(1)


def test_subscription_bounded_queue_drops_oldest():
    s = Subscription("@join", "/X1", max_pending=3)
    for i in range(5):
        s.publish(f"/X{i}")
    assert s.peek()["Pending"] == 3
    assert [s.recv(1) for _ in range(3)] == ["/X2", "/X3", "/X4"]


def test_subscription_bad_kind():
    with pytest.raises(ElementError):
        Subscription("@nope", "/X1")
