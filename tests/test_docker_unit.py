"""DockerElement against a real, private dockerd (tests/dockerd.py).

Every container runs with network_mode="none" from a busybox image imported
from the machine's static busybox. Each test leaves no container behind (the
``make`` fixture scrubs its elements and checks). No sleeps as
synchronisation: blocking calls take timeouts and conditions are polled with
deadlines.
"""

from __future__ import annotations

import os
import threading
import time

import pytest

from conftest import wait_until
from dockerd import dockerd, requires_docker  # noqa: F401
from pycircuit.errors import ElementError
from pycircuit.server._docker import LABEL, DockerElement, DockerSpec, docker_client_factory

T = 30.0  # generous deadline for anything a container does


def read_all(el: DockerElement, stream: str, timeout: float = T) -> bytes:
    deadline = time.monotonic() + timeout
    out = bytearray()
    while True:
        chunk = el.read(stream, timeout=max(0.0, deadline - time.monotonic()))
        if not chunk:
            return bytes(out)
        out += chunk


def read_until(el: DockerElement, stream: str, want: bytes, timeout: float = T) -> bytes:
    deadline = time.monotonic() + timeout
    out = bytearray()
    while want not in out:
        chunk = el.read(stream, timeout=max(0.0, deadline - time.monotonic()))
        if not chunk:
            break
        out += chunk
    return bytes(out)


# --------------------------------------------------------------------------- the spec (no daemon)


def test_spec_from_json_keys_are_case_insensitive():
    s = DockerSpec.from_json(
        {
            "image": "busybox",
            "MEMORY": 1 << 26,
            "cpuShares": 3,
            "Lxc": [],
            "volume": ["/webapp"],
            "Dir": "/tmp",
            "entry": "/bin/sh",
            "ENV": ["A=1"],
            "path": "-c",
            "Args": ["echo hi"],
            "scrub": True,
        }
    )
    assert s == DockerSpec(
        image="busybox",
        memory=1 << 26,
        cpu_shares=3,
        volume=("/webapp",),
        dir="/tmp",
        entry="/bin/sh",
        env=("A=1",),
        path="-c",
        args=("echo hi",),
        scrub=True,
    )
    assert s.command == ["-c", "echo hi"]
    assert DockerSpec.from_json(s.to_json()) == s
    assert s.to_json() == {
        "Image": "busybox",
        "Memory": 1 << 26,
        "CpuShares": 3,
        "Lxc": [],
        "Volume": ["/webapp"],
        "Dir": "/tmp",
        "Entry": "/bin/sh",
        "Env": ["A=1"],
        "Path": "-c",
        "Args": ["echo hi"],
        "Scrub": True,
    }
    # JSON null means "not given"; Args without Path are the whole command.
    s = DockerSpec.from_json({"Image": "x", "Env": None, "Path": None, "Args": ["ls", "/"]})
    assert s.env is None and s.command == ["ls", "/"]
    assert DockerSpec.from_json({"Image": "x"}).command is None  # the image's default


@pytest.mark.parametrize(
    "obj, words",
    [
        ({"Image": "x", "Bogus": 1}, "'Bogus'"),
        ({"Image": "x", "image": "y"}, "duplicate"),
        ({}, "Image"),
        ({"Image": ""}, "Image"),
        ({"Image": 3}, "Image"),
        ({"Image": "x", "Memory": "1g"}, "Memory"),
        ({"Image": "x", "Memory": -1}, "Memory"),
        ({"Image": "x", "Memory": True}, "Memory"),
        ({"Image": "x", "CpuShares": 1.5}, "CpuShares"),
        ({"Image": "x", "Volume": "/data"}, "Volume"),
        ({"Image": "x", "Volume": [""]}, "Volume"),
        ({"Image": "x", "Env": ["NOEQUALS"]}, "Env"),
        ({"Image": "x", "Env": "A=1"}, "Env"),
        ({"Image": "x", "Args": [1]}, "Args"),
        ({"Image": "x", "Dir": 5}, "Dir"),
        ({"Image": "x", "Entry": ["/bin/sh"]}, "Entry"),
        ({"Image": "x", "Path": 1}, "Path"),
        ({"Image": "x", "Scrub": "yes"}, "Scrub"),
        ({"Image": "x", "Lxc": "lxc.x = 1"}, "Lxc"),
    ],
)
def test_spec_rejects_bad_json_naming_the_key(obj, words):
    with pytest.raises(ElementError, match=words):
        DockerSpec.from_json(obj)


def test_spec_rejects_lxc_options():
    with pytest.raises(
        ElementError, match="^Lxc options are not supported: LXC no longer exists in Docker$"
    ):
        DockerSpec.from_json({"Image": "ubuntu", "Lxc": ["lxc.cgroup.cpuset.cpus = 0,1"]})
    with pytest.raises(ElementError, match="Lxc options are not supported"):
        DockerSpec(image="ubuntu", lxc=("lxc.x = 1",))
    assert DockerSpec.from_json({"Image": "ubuntu", "Lxc": []}).lxc == ()


def test_element_needs_a_spec():
    with pytest.raises(ElementError, match="DockerSpec"):
        DockerElement({"Image": "x"}, lambda: None)


def test_factory_reports_an_unreachable_daemon(tmp_path):
    with pytest.raises(ElementError, match="docker daemon unavailable"):
        docker_client_factory(f"unix://{tmp_path}/nothing.sock")


# --------------------------------------------------------------------------- against dockerd


@pytest.fixture
def make(dockerd):  # noqa: F811
    """make(on_done=None, start=True, **JSON keys) → a DockerElement on the private dockerd."""
    made: list[DockerElement] = []
    clients: list = []

    def factory():
        c = docker_client_factory(dockerd.host)
        clients.append(c)
        return c

    def make(on_done=lambda el: None, start: bool = True, **fields) -> DockerElement:
        el = DockerElement(
            DockerSpec.from_json({"Image": dockerd.image, **fields}), factory, on_done
        )
        made.append(el)
        if start:
            el.start()
        return el

    try:
        yield make
    finally:
        for el in made:
            el.scrub()
        left = dockerd.client.containers.list(all=True, filters={"label": LABEL})
        for c in left:
            c.remove(force=True, v=True)
        for c in clients:
            c.close()
        assert not left, f"containers left behind: {left}"


@requires_docker
def test_cat_echoes_stdin_and_stdin_close_is_eof(make):
    el = make(Path="cat")
    assert el.describe()["State"]["Running"] is True
    el.stdin_write(b"hello\n")
    assert read_until(el, "stdout", b"hello\n") == b"hello\n"
    el.stdin_write(b"world")
    assert read_until(el, "stdout", b"world") == b"world"
    with pytest.raises(ElementError, match="timeout"):
        el.wait(timeout=0.2)  # cat still waits for more input
    el.close_stream("stdin")  # EOF reaches cat, which exits
    el.stdin_close()  # idempotent
    with pytest.raises(ElementError, match="stdin closed"):
        el.stdin_write(b"late")
    assert read_all(el, "stdout") == b""
    assert read_all(el, "stderr") == b""
    st = el.wait(T)
    assert st["State"]["Status"] == "exited" and st["State"]["ExitCode"] == 0
    assert st["Config"]["OpenStdin"] is True and st["Config"]["StdinOnce"] is True
    assert st["Config"]["Tty"] is False
    assert st["HostConfig"]["NetworkMode"] == "none"
    assert st["Id"] == el.id and st["Name"] == "/" + el.name


@requires_docker
def test_a_megabytes_round_trip_through_cat(make):
    el = make(Path="cat")
    data = os.urandom(3 << 20)  # more than every buffer on the way
    writer_error: list = []

    def write():
        try:
            for i in range(0, len(data), 100_000):
                el.stdin_write(data[i : i + 100_000])
            el.stdin_close()
        except BaseException as e:
            writer_error.append(e)

    w = threading.Thread(target=write)
    w.start()
    got = read_all(el, "stdout", timeout=60)
    w.join(T)
    assert not writer_error
    assert len(got) == len(data) and got == data
    assert el.wait(T)["State"]["ExitCode"] == 0


@requires_docker
def test_stdin_write_to_a_container_that_never_reads_is_bounded(make):
    el = make(Path="sleep", Args=["600"])
    data = b"x" * (16 << 20)  # more than the pipe, dockerd and the socket buffers hold
    sent = el.stdin_write(data, timeout=1.0)
    assert 0 <= sent < len(data)  # the rest is the caller's to write again
    writer = threading.Thread(target=lambda: pytest.raises(ElementError, el.stdin_write, data))
    writer.start()  # no timeout: blocked until the scrub removes the container
    el.scrub()
    writer.join(T)
    assert not writer.is_alive()


@requires_docker
def test_outputs_and_exit_code(make):
    el = make(Path="sh", Args=["-c", "echo out; echo err >&2; exit 3"])
    assert read_all(el, "stdout") == b"out\n"
    assert read_all(el, "stderr") == b"err\n"
    st = el.wait(T)
    assert st["State"]["ExitCode"] == 3 and st["State"]["Status"] == "exited"
    assert el.peek()["State"]["ExitCode"] == 3
    d = el.describe()
    assert d["kind"] == "docker" and d["State"]["ExitCode"] == 3 and d["Id"] == el.id
    wait_until(lambda: el.done, what="done")  # wait returns at exit; done follows the output's end
    with pytest.raises(ElementError, match="^process already finished$"):
        el.signal("TERM")
    with pytest.raises(ElementError, match="broken pipe"):
        el.stdin_write(b"x")


@requires_docker
def test_wait_returns_at_exit_and_the_output_stays_readable(make):
    el = make(Path="sh", Args=["-c", "echo one; echo two >&2"])
    assert el.wait(T)["State"]["ExitCode"] == 0  # stdin never closed, nothing read
    assert read_all(el, "stdout") == b"one\n"
    assert read_all(el, "stderr") == b"two\n"
    wait_until(lambda: el.done, what="done")


@requires_docker
def test_kill_ends_a_sleeping_container(make):
    el = make(Path="sleep", Args=["60"])
    with pytest.raises(ElementError, match="^timeout$"):
        el.wait(timeout=0.2)
    with pytest.raises(ElementError, match="^timeout$"):
        el.read("stdout", timeout=0.05)
    with pytest.raises(ElementError, match="signal name not recognized"):
        el.signal("NOPE")
    assert el.peek()["State"]["Running"] is True
    el.signal("kill")
    st = el.wait(T)
    assert st["State"]["ExitCode"] == 137 and st["State"]["Running"] is False
    with pytest.raises(ElementError, match="^process already finished$"):
        el.signal("KILL")


@requires_docker
def test_term_signal_reaches_the_process(make):
    el = make(
        Path="sh",
        Args=[
            "-c",
            "trap 'echo got TERM; exit 7' TERM; echo ready; while true; do sleep 0.05; done",
        ],
    )
    assert read_until(el, "stdout", b"ready\n") == b"ready\n"
    el.signal("SIGTERM")
    assert read_all(el, "stdout") == b"got TERM\n"
    assert el.wait(T)["State"]["ExitCode"] == 7


@requires_docker
def test_env_dir_and_entry_are_applied(make):
    el = make(
        Entry="/bin/sh",
        Path="-c",
        Args=['echo "$FOO"; pwd; echo "$PATH"'],
        Env=["FOO=bar baz"],
        Dir="/tmp",
    )
    out = read_all(el, "stdout").decode().splitlines()
    assert out[0] == "bar baz" and out[1] == "/tmp" and "/bin" in out[2].split(":")
    st = el.wait(T)
    assert st["State"]["ExitCode"] == 0
    assert st["Config"]["Entrypoint"] == ["/bin/sh"]
    assert st["Config"]["Cmd"] == ["-c", 'echo "$FOO"; pwd; echo "$PATH"']
    assert st["Config"]["WorkingDir"] == "/tmp"
    assert "FOO=bar baz" in st["Config"]["Env"]


@requires_docker
def test_memory_and_cpu_shares_are_set(make):
    el = make(Path="true", Memory=64 << 20, CpuShares=512)
    st = el.wait(T)
    assert st["State"]["ExitCode"] == 0
    assert st["HostConfig"]["Memory"] == 64 << 20
    assert st["HostConfig"]["CpuShares"] == 512


@requires_docker
def test_volumes_anonymous_and_bound(make, dockerd, tmp_path):  # noqa: F811
    (tmp_path / "f").write_text("from the host\n")
    el = make(
        Path="sh",
        Args=["-c", "cat /mnt/f; echo x > /data/y && cat /data/y"],
        Volume=["/data", f"{tmp_path}:/mnt:ro"],
    )
    assert read_all(el, "stdout") == b"from the host\nx\n"
    st = el.wait(T)
    assert st["State"]["ExitCode"] == 0
    mounts = {m["Destination"]: m for m in st["Mounts"]}
    assert mounts["/mnt"]["Type"] == "bind" and mounts["/mnt"]["RW"] is False
    assert mounts["/data"]["Type"] == "volume"
    volume = mounts["/data"]["Name"]
    assert volume in [v.name for v in dockerd.client.volumes.list()]
    el.scrub()  # the anonymous volume goes with the container
    assert volume not in [v.name for v in dockerd.client.volumes.list()]


@requires_docker
def test_a_missing_image_fails_start_and_leaves_nothing(make, dockerd):  # noqa: F811
    el = make(start=False, Image="pycircuit-no-such-image", Path="true")
    with pytest.raises(ElementError, match="^no such image: pycircuit-no-such-image$"):
        el.start()
    assert dockerd.client.containers.list(all=True, filters={"label": LABEL}) == []
    st = el.wait(timeout=0)  # nothing runs: wait returns at once
    assert st["Id"] is None and st["State"]["Error"] == "no such image: pycircuit-no-such-image"
    with pytest.raises(ElementError, match="container not started"):
        el.read("stdout", timeout=0)
    with pytest.raises(ElementError, match="already started"):
        el.start()


@requires_docker
def test_a_missing_executable_fails_start_and_leaves_nothing(make, dockerd):  # noqa: F811
    el = make(start=False, Path="/no/such/program")
    with pytest.raises(ElementError, match="^docker start: .*no/such/program"):
        el.start()
    assert dockerd.client.containers.list(all=True, filters={"label": LABEL}) == []


@requires_docker
def test_no_command_fails(make):
    el = make(start=False)  # the imported image has no default command
    with pytest.raises(ElementError, match="^docker create: .*[Nn]o command specified"):
        el.start()


@requires_docker
def test_scrub_removes_the_container_and_aborts_waits(make, dockerd):  # noqa: F811
    el = make(Path="sleep", Args=["60"])
    cid = el.id
    assert cid in [c.id for c in dockerd.client.containers.list(all=True)]
    waited: list = []

    def waiter():
        try:
            waited.append(el.wait(T))
        except ElementError as e:
            waited.append(e)

    w = threading.Thread(target=waiter)
    w.start()
    wait_until(lambda: w.is_alive(), what="waiter running")
    el.scrub()
    w.join(T)
    assert len(waited) == 1 and isinstance(waited[0], ElementError) and str(waited[0]) == "aborted"
    assert cid not in [c.id for c in dockerd.client.containers.list(all=True)]
    with pytest.raises(ElementError, match="^aborted$"):
        el.wait(timeout=0)
    assert el.read("stdout", timeout=0) == b""
    with pytest.raises(ElementError, match="stdin closed"):
        el.stdin_write(b"x")
    with pytest.raises(ElementError, match="process already finished"):
        el.signal("KILL")
    assert el.peek()["Id"] == cid  # the last inspect data known
    el.scrub()  # idempotent


@requires_docker
def test_scrub_after_done_keeps_the_result_for_nobody_but_removes(make, dockerd):  # noqa: F811
    el = make(Path="true")
    assert el.wait(T)["State"]["ExitCode"] == 0
    el.scrub()
    assert el.id not in [c.id for c in dockerd.client.containers.list(all=True)]
    with pytest.raises(ElementError, match="^aborted$"):
        el.wait(timeout=0)


@requires_docker
def test_auto_scrub_removes_the_container_once_it_exited(make, dockerd):  # noqa: F811
    calls: list = []
    el = make(on_done=calls.append, Scrub=True, Path="sh", Args=["-c", "echo bye; exit 4"])
    cid = el.id
    st = el.wait(T)  # auto-scrub is not a user scrub: waiters get the result
    assert st["State"]["ExitCode"] == 4
    wait_until(lambda: calls, what="on_done")
    wait_until(
        lambda: cid not in [c.id for c in dockerd.client.containers.list(all=True)],
        what="container removed",
    )
    assert calls == [el]
    assert el.read("stdout", timeout=0) == b"bye\n"  # what arrived stays readable
    assert el.peek()["State"]["ExitCode"] == 4
    assert el.wait(timeout=0)["State"]["ExitCode"] == 4
    el.scrub()
    assert calls == [el]


@requires_docker
def test_no_auto_scrub_without_scrub(make, dockerd):  # noqa: F811
    calls: list = []
    el = make(on_done=calls.append, Path="true")
    el.wait(T)
    assert calls == [] and el.id in [c.id for c in dockerd.client.containers.list(all=True)]


@requires_docker
def test_closed_stdout_does_not_hold_up_stderr(make):
    # 4 MB of stdout nobody reads: closing the stream discards it, the container is not blocked.
    el = make(Path="sh", Args=["-c", "head -c 4000000 /dev/zero; echo done >&2"])
    el.close_stream("stdout")
    assert read_all(el, "stderr", timeout=60) == b"done\n"
    assert el.wait(T)["State"]["ExitCode"] == 0
    assert el.read("stdout", timeout=0) == b""
    with pytest.raises(ElementError, match="unknown output stream"):
        el.read("stdlog")
    with pytest.raises(ElementError, match="max_bytes"):
        el.read("stderr", 0)


@requires_docker
def test_unstarted_element(dockerd):  # noqa: F811
    el = DockerElement(DockerSpec(image=dockerd.image, path="true"), lambda: dockerd.client)
    assert el.describe() == {
        "kind": "docker",
        "Id": None,
        "Name": None,
        "Config": {"Image": dockerd.image},
        "State": {"Status": "unknown", "Running": False},
    }
    for call in (
        lambda: el.read("stdout"),
        lambda: el.stdin_write(b""),
        el.stdin_close,
        lambda: el.signal("KILL"),
    ):
        with pytest.raises(ElementError, match="container not started"):
            call()
    with pytest.raises(ElementError, match="timeout"):
        el.wait(timeout=0.01)
    el.scrub()
    with pytest.raises(ElementError, match="aborted"):
        el.start()


@requires_docker
def test_factory_honours_docker_host(dockerd, monkeypatch):  # noqa: F811
    monkeypatch.setenv("DOCKER_HOST", dockerd.host)
    c = docker_client_factory(None)
    try:
        assert c.ping()
        assert c.images.get(dockerd.image)
    finally:
        c.close()


@requires_docker
def test_timings(make, dockerd):  # noqa: F811
    """Measurements, printed (pytest -rP shows them)."""
    firsts = []
    for _ in range(5):
        t0 = time.monotonic()
        el = make(Path="echo", Args=["hi"])
        t1 = time.monotonic()
        assert el.read("stdout", timeout=T) == b"hi\n"
        t2 = time.monotonic()
        el.wait(T)
        t3 = time.monotonic()
        el.scrub()
        t4 = time.monotonic()
        firsts.append((t1 - t0, t2 - t0, t3 - t0, t4 - t3))
    print(
        f"dockerd start: {dockerd.timings['start']:.3f} s, busybox rootfs + tar: "
        f"{dockerd.timings['rootfs']:.3f} s, image import: {dockerd.timings['import']:.3f} s"
    )
    for start, first, done, scrub in firsts:
        print(
            f"container start(): {start:.3f} s, start-to-first-output: {first:.3f} s, "
            f"to done: {done:.3f} s, scrub: {scrub:.3f} s"
        )
    assert all(first < T for _, first, _, _ in firsts)
