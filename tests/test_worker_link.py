"""A worker's link to its server: one end of a socketpair the server made
and sent down to the zygote with the fork order (``spawn/_orders``), not a
TCP connection the worker dials and authenticates."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import psutil

from conftest import start_server, stop_process, wait_until
from pycircuit.runtime._addr import WorkerAddr
from pycircuit.runtime._runtime import HANDLE_ROOT
from pycircuit.spawn import _orders


def _server_link() -> tuple[int, list[int]]:
    """In a worker: the family of its link to the server, and the remote
    ports of its TCP connections."""
    from pycircuit.runtime._runtime import current
    from pycircuit.spawn._worker import server_url

    rt = current()
    assert rt is not None
    url = server_url()
    assert url is not None
    family = rt.peer(WorkerAddr.parse(url)).conn.socket().family  # type: ignore[attr-defined]
    ports = [c.raddr.port for c in psutil.Process().net_connections("tcp") if c.raddr]
    return int(family), ports


def test_a_worker_talks_to_its_server_over_a_socketpair(client, host):
    (family, ports), _ = client.spawn(host, None, _server_link)
    assert family == socket.AF_UNIX
    server_port = WorkerAddr.parse(client.url).port
    assert server_port not in ports  # it never dialled the server's TCP port


def test_orders_carry_one_descriptor_and_end_when_the_server_hangs_up():
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    r, w = os.pipe()
    try:
        _orders._send(ours, {"token": "t", "dir": "/d"}, w)
        _orders._send(ours, {"compile": ["a.py"]})
        order, fd = _orders.receive(theirs)
        assert order == {"token": "t", "dir": "/d"} and fd is not None
        os.write(fd, b"x")  # the descriptor sent: the pipe's write end
        os.close(fd)
        assert os.read(r, 1) == b"x"
        assert _orders.receive(theirs) == ({"compile": ["a.py"]}, None)
        ours.close()
        assert _orders.receive(theirs) == (None, None)
    finally:
        for f in (r, w):
            os.close(f)
        theirs.close()


def test_a_link_serves_calls_and_one_closed_before_its_hello_leaves_nothing(runtimes):
    a, b = runtimes(role="server"), runtimes(role="server")
    before = a.counters()["connections"]
    mine, yours = socket.socketpair()
    a.adopt_link(mine)
    b.dial_link(a.addr, yours)
    assert b.call_remote(a.addr, HANDLE_ROOT, "ping", (), {}) == a.id
    # a link whose process never said HELLO (its zygote died before forking)
    mine, yours = socket.socketpair()
    a.adopt_link(mine)
    wait_until(lambda: a.counters()["connections"] == before + 2, 10, what="two links")
    yours.close()
    wait_until(lambda: a.counters()["connections"] == before + 1, 10, what="the dead link dropped")


def test_a_worker_exits_when_its_server_is_killed():
    p, url = start_server()
    worker = None
    try:
        code = (
            "import sys, pycircuit\n"
            "from circuit_helpers import daemon\n"
            "c = pycircuit.connect(sys.argv[1])\n"
            "_, a = c.spawn(c.hosts()[0], None, daemon)\n"
            "print(a.pid)\n"
        )
        here = os.path.dirname(__file__)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([here, os.environ.get("PYTHONPATH", "")]))
        out = subprocess.run(
            [sys.executable, "-c", code, url], capture_output=True, text=True, timeout=60, env=env
        )
        assert out.returncode == 0, out.stderr
        worker = psutil.Process(int(out.stdout.split()[-1]))
        assert worker.is_running()
        p.send_signal(signal.SIGKILL)
        p.wait(10)

        def gone() -> bool:
            try:
                return worker.status() == psutil.STATUS_ZOMBIE
            except psutil.NoSuchProcess:
                return True

        wait_until(gone, 20, what="the worker exits with its server")
    finally:
        stop_process(p)
        if worker is not None and worker.is_running():
            worker.kill()


def test_the_zygote_is_forked_from_the_server_and_titled_as_one(servers):
    url = servers.start()
    server = psutil.Process(WorkerAddr.parse(url).pid)
    wait_until(lambda: server.children(), 20, what="the zygote")
    (zygote,) = server.children()
    assert "pycircuit.spawn._zygote" in " ".join(zygote.cmdline())
    assert "start" not in zygote.cmdline()  # not shown as a second server
    # forked, not started: it has the server's environment, without the
    # malloc settings start_zygote puts in a started zygote's (it calls mallopt)
    assert "MALLOC_MMAP_THRESHOLD_" not in zygote.environ()


def _argv() -> list[str]:
    return list(sys.argv)


def test_a_worker_sees_no_server_arguments_in_its_argv(client, host):
    argv, _ = client.spawn(host, None, _argv)
    assert len(argv) == 1 and argv[0].endswith("_zygote.py")  # as in a started zygote


def test_no_zygote_is_forked_from_a_process_with_threads():
    import threading

    stop = threading.Event()
    t = threading.Thread(target=stop.wait)
    t.start()
    try:
        assert _orders.fork_zygote() is None
    finally:
        stop.set()
        t.join()


def test_connect_starts_the_embedded_server_before_loading_the_runtime(tmp_path):
    # In a fresh process: which modules were loaded when the server's
    # process was started? The runtime's load overlaps the server's start.
    code = (
        "import subprocess, sys\n"
        "seen = []\n"
        "real = subprocess.Popen.__init__\n"
        "def init(self, args, *a, **k):\n"
        "    seen.append(('rpyc' in sys.modules, list(args)))\n"
        "    real(self, args, *a, **k)\n"
        "subprocess.Popen.__init__ = init\n"
        "import pycircuit\n"
        "c = pycircuit.connect()\n"
        "assert c.hosts()\n"
        "c.close()\n"
        "print(seen[0])\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIRCUIT")}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("(False,") and "--embedded" in out.stdout


def _own_files() -> tuple[str, str]:
    """In a worker: what its faulthandler stack descriptor and its stdout are."""
    print("said on stdout")
    targets = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            targets.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:  # the descriptor listdir itself used
            pass
    stack = next(t for t in targets if "pycircuit-stack" in t)
    return stack, os.readlink("/proc/self/fd/1")


def test_a_worker_leaves_two_output_files_and_no_directory(tmp_path):
    """A worker's output goes to two flat files in the server's var directory
    (no directory of its own, no stack file: each inode costs a spawn on
    some filesystems); both are gone once it has exited."""
    import pycircuit

    var = tmp_path / "var"
    p, url = start_server("--var", str(var))
    try:
        c = pycircuit.connect(url)
        try:
            host = c.hosts()[0]
            (stack, stdout), addr = c.spawn(host, "/files", _own_files)
            assert stack.startswith("/memfd:pycircuit-stack")
            workers = var / "workers"
            assert os.path.dirname(stdout) == str(workers) and stdout.endswith(".stdout")
            names = [e.name for e in workers.iterdir()]  # the spares' files, maybe this one's
            assert names and all(n.endswith((".stdout", ".stderr")) for n in names)
            stems = {n.rsplit(".", 1)[0] for n in names}
            assert sorted(names) == sorted(f"{s}.{k}" for s in stems for k in ("stdout", "stderr"))
            kernel = c.kernel(host)
            remains = wait_until(lambda: kernel.remains(addr.id), 10, what="remains")
            assert remains["stdout"] == "said on stdout\n"  # read from its file before removal
            stderr = stdout[: -len("stdout")] + "stderr"
            wait_until(
                lambda: not os.path.exists(stdout) and not os.path.exists(stderr), 10, what="gone"
            )
        finally:
            c.close()
    finally:
        stop_process(p)
