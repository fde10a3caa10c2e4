"""Docker elements through the CLI and the Python client, on a real server
started with --docker against a private, real dockerd."""

from __future__ import annotations

import json

import pytest

import pycircuit
from conftest import child_env, cli, wait_until
from dockerd import dockerd, requires_docker  # noqa: F401  (fixture)

pytestmark = requires_docker


def ok(r):
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.fixture
def dkr(servers, dockerd):  # noqa: F811
    env = child_env() | {"DOCKER_HOST": dockerd.host}
    url = servers.start("--docker", env=env)
    return url, pycircuit.Client(url).server_id, dockerd


def test_container_from_the_cli(dkr):
    url, x, d = dkr
    path = f"/{x}/docky"
    spec = {
        "Image": d.image,
        "Memory": 64 * 1024 * 1024,
        "CpuShares": 3,
        "Env": ["GREETING=hi"],
        "Dir": "/tmp",
        "Path": "/bin/sh",
        "Args": ["-c", "cat; echo \"$GREETING from $(pwd)\"; echo oops >&2; exit 3"],
    }
    ok(cli("mkdkr", path, input=json.dumps(spec), url=url))
    assert ok(cli("ls", "-l", f"/{x}/...", url=url)).split() == ["docker", path]
    ok(cli("stdin", path, input="piped in\n", url=url))
    assert ok(cli("stdout", path, url=url)) == "piped in\nhi from /tmp\n"
    assert ok(cli("stderr", path, url=url)) == "oops\n"
    st = json.loads(ok(cli("wait", path, url=url)))
    assert st["State"]["ExitCode"] == 3
    peek = json.loads(ok(cli("peek", path, url=url)))
    assert peek["HostConfig"]["Memory"] == 64 * 1024 * 1024 and peek["HostConfig"]["CpuShares"] == 3
    cid = peek["Id"]
    ok(cli("scrub", path, url=url))
    assert cid not in [c.id for c in d.client.containers.list(all=True)]
    assert ok(cli("ls", f"/{x}/...", url=url)) == ""


def test_signal_and_python_client(dkr):
    url, x, d = dkr
    with pycircuit.connect(url) as c:
        box = c.walk([x, "py", "box"]).make_docker(
            {"image": d.image, "path": "/bin/sleep", "args": ["600"]}
        )
        assert isinstance(c.walk([x, "py", "box"]).get(), pycircuit.Container)
        wait_until(lambda: box.peek()["State"]["Running"], 10)
        box.signal("KILL")
        assert box.wait(timeout=30)["State"]["ExitCode"] == 137
        box.scrub()


def test_docker_mistakes_are_clear(dkr, servers):
    url, x, d = dkr
    r = cli(
        "mkdkr",
        f"/{x}/bad",
        input=json.dumps({"Image": d.image, "Lxc": ["lxc.cgroup.cpuset.cpus = 0,1"]}),
        url=url,
    )
    assert r.returncode != 0 and "Lxc" in r.stderr and "Traceback" not in r.stderr
    r = cli("mkdkr", f"/{x}/bad", input=json.dumps({"Image": "no-such-image:never"}), url=url)
    assert (
        r.returncode != 0
        and "image" in r.stderr.lower()
        and len(r.stderr.strip().splitlines()) == 1
    )
    assert ok(cli("ls", f"/{x}/...", url=url)) == ""
    plain = servers.start()
    xp = pycircuit.Client(plain).server_id
    r = cli("mkdkr", f"/{xp}/d", input=json.dumps({"Image": d.image}), url=plain)
    assert r.returncode != 0 and "docker not enabled on this server" in r.stderr
