"""A private Docker daemon for tests, always torn down.

:func:`start_dockerd` runs ``dockerd`` with its own data root, exec root,
socket and pid file in a short temporary directory (unix socket paths are
limited to 108 bytes), with no iptables rules and no bridge, so nothing
outside that directory changes; containers run with ``network_mode="none"``.
It then imports a busybox image built from the machine's static busybox, so
no registry is needed. Use::

    from dockerd import dockerd, requires_docker  # noqa: F401

    @requires_docker
    def test_x(dockerd):
        dockerd.client.containers.run(dockerd.image, ["true"], network_mode="none", remove=True)

Teardown removes every container, stops dockerd (SIGTERM, then SIGKILL after
a grace period), kills what a killed dockerd leaves (containerd shims and the
containers below them), unmounts what is still mounted below the directory
and removes it. A session that died without teardown (SIGKILLed pytest) is
cleaned up by the next :func:`start_dockerd` on the machine (the directory's
``owner`` file names the owning process). The fixture is one daemon per
session even when several test modules import it.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass, field

import psutil
import pytest

__all__ = [
    "Dockerd",
    "start_dockerd",
    "dockerd",
    "requires_docker",
    "docker_unavailable",
    "IMAGE",
    "BUSYBOX",
]

IMAGE = "pycircuit-busybox:latest"
BUSYBOX = "/usr/bin/busybox"
_TMP = "/tmp"
_PREFIX = "pcd-"
_START_TIMEOUT = 30.0
_STOP_GRACE = 10.0


def _which(name: str, *extra: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for d in extra or ("/usr/sbin", "/usr/bin", "/sbin", "/bin"):
        p = os.path.join(d, name)
        if os.access(p, os.X_OK):
            return p
    return None


def docker_unavailable() -> str | None:
    """Why a private dockerd cannot run here, or None."""
    if os.geteuid() != 0:
        return "dockerd needs root"
    if importlib.util.find_spec("docker") is None:
        return "the docker Python SDK is not installed (pip install docker)"
    for name in ("dockerd", "containerd", "runc"):
        if _which(name) is None:
            return f"{name} is not installed (Debian: apt-get install docker.io)"
    if not os.access(BUSYBOX, os.X_OK):
        return f"{BUSYBOX} is missing (Debian: apt-get install busybox-static)"
    return None


requires_docker = pytest.mark.skipif(
    docker_unavailable() is not None, reason=f"needs a private dockerd: {docker_unavailable()}"
)


@dataclass
class Dockerd:
    dir: str
    host: str  # "unix:///tmp/pcd-…/docker.sock"
    client: object  # docker.DockerClient
    image: str = IMAGE
    timings: dict = field(
        default_factory=dict
    )  # seconds: "start", "rootfs" (build + tar), "import"
    proc: subprocess.Popen | None = None

    @property
    def log_path(self) -> str:
        return os.path.join(self.dir, "dockerd.log")

    def log_tail(self, n: int = 30) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def remove_all_containers(self) -> None:
        for c in self.client.containers.list(all=True):
            try:
                c.remove(force=True, v=True)
            except Exception:
                pass

    def close(self) -> None:
        """Stop everything and remove the directory; safe to call twice."""
        try:
            if self.client is not None:
                try:
                    self.remove_all_containers()
                except Exception:
                    pass
                self.client.close()
        finally:
            self.client = None
            _stop(self.proc, self.dir)
            self.proc = None
            _unmount_below(self.dir)
            shutil.rmtree(self.dir, ignore_errors=True)


def _stop(p: subprocess.Popen | None, d: str) -> None:
    if p is not None and p.poll() is None:
        p.send_signal(signal.SIGTERM)  # dockerd stops its containers and containerd, and unmounts
        try:
            p.wait(_STOP_GRACE)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    _kill_leftovers(d)


def _kill_leftovers(d: str) -> None:
    """A killed dockerd leaves containerd shims (their command lines name our
    directory) and the containers below them: kill the containers' processes,
    then the shims and anything else started from our directory."""
    mark = d.encode()
    ours: list[int] = []
    parents: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        pid = int(name)
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if mark in f.read():
                    ours.append(pid)
            with open(f"/proc/{pid}/stat", "rb") as f:
                ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
            parents.setdefault(ppid, []).append(pid)
        except (OSError, ValueError, IndexError):
            continue
    if not ours or os.getpid() in ours:
        return
    for pid in [c for p in ours for c in parents.get(p, []) if c not in ours] + ours:
        try:
            os.kill(pid, signal.SIGKILL)  # a container's init: its whole pid namespace goes
        except ProcessLookupError:
            pass


def _unmount_below(d: str) -> None:
    d = os.path.realpath(d)
    try:
        with open("/proc/self/mountinfo") as f:
            points = [line.split()[4] for line in f]
    except OSError:
        return
    points = [p for p in points if p == d or p.startswith(d + "/")]
    for p in sorted(set(points), key=len, reverse=True):  # deepest first
        subprocess.run(["umount", "-l", p], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _owner_alive(d: str) -> bool:
    try:
        with open(os.path.join(d, "owner")) as f:
            pid, started = f.read().split()
        return abs(psutil.Process(int(pid)).create_time() - float(started)) < 1.0
    except FileNotFoundError:
        return True  # being set up right now, or not ours
    except (OSError, ValueError, psutil.Error):
        return False


def _reap_stale() -> None:
    """Stop the daemons of sessions that died without teardown (e.g. a SIGKILLed pytest)."""
    for name in os.listdir(_TMP):
        d = os.path.join(_TMP, name)
        if not name.startswith(_PREFIX) or not os.path.isdir(d) or _owner_alive(d):
            continue
        try:
            with open(os.path.join(d, "pid")) as f:
                pid = int(f.read().strip())
            if d.encode() in open(f"/proc/{pid}/cmdline", "rb").read():
                os.kill(pid, signal.SIGTERM)
                try:
                    psutil.Process(pid).wait(_STOP_GRACE)
                except psutil.TimeoutExpired:
                    os.kill(pid, signal.SIGKILL)
        except (OSError, ValueError, psutil.Error):
            pass
        _kill_leftovers(d)
        _unmount_below(d)
        shutil.rmtree(d, ignore_errors=True)


def _build_rootfs_tar(d: str) -> str:
    """A rootfs with /bin/busybox and a symlink per applet, tarred."""
    root = os.path.join(d, "rootfs")
    for sub in ("bin", "etc", "tmp", "root", "proc", "sys", "dev"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    os.chmod(os.path.join(root, "tmp"), 0o1777)
    shutil.copy2(BUSYBOX, os.path.join(root, "bin", "busybox"))
    applets = subprocess.run(
        [BUSYBOX, "--list"], check=True, capture_output=True, text=True
    ).stdout.split()
    for name in set(applets) | {"sh", "cat", "echo", "sleep", "ls", "env", "pwd", "true", "false"}:
        if name != "busybox" and "/" not in name:
            os.symlink("busybox", os.path.join(root, "bin", name))
    with open(os.path.join(root, "etc", "passwd"), "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\n")
    with open(os.path.join(root, "etc", "group"), "w") as f:
        f.write("root:x:0:\n")
    tar = os.path.join(d, "rootfs.tar")
    with tarfile.open(tar, "w") as t:
        t.add(root, arcname=".")
    return tar


def start_dockerd() -> Dockerd:
    """Start a private dockerd and import the busybox image. Raises (after
    cleaning up) if the daemon does not come up."""
    import docker

    _reap_stale()
    d = tempfile.mkdtemp(prefix=_PREFIX, dir=_TMP)
    os.chmod(d, 0o711)
    with open(os.path.join(d, "owner"), "w") as f:
        f.write(f"{os.getpid()} {psutil.Process().create_time()}\n")
    host = f"unix://{d}/docker.sock"
    config = os.path.join(d, "daemon.json")
    with open(config, "w") as f:
        f.write("{}\n")  # not /etc/docker/daemon.json
    info = Dockerd(dir=d, host=host, client=None)
    try:
        t0 = time.monotonic()
        with open(info.log_path, "wb") as log:
            info.proc = subprocess.Popen(
                [
                    _which("dockerd"),
                    "--config-file",
                    config,
                    "--data-root",
                    f"{d}/data",
                    "--exec-root",
                    f"{d}/exec",
                    "-H",
                    host,
                    "--pidfile",
                    f"{d}/pid",
                    "--iptables=false",
                    "--ip6tables=false",
                    "--bridge=none",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _wait_answers(info, t0 + _START_TIMEOUT)
        client = info.client = docker.DockerClient(base_url=host, version="auto", timeout=60)
        info.timings["start"] = time.monotonic() - t0

        t0 = time.monotonic()
        tar = _build_rootfs_tar(d)
        info.timings["rootfs"] = time.monotonic() - t0
        t0 = time.monotonic()
        repo, tag = IMAGE.rsplit(":", 1)
        client.api.import_image(src=tar, repository=repo, tag=tag)
        client.images.get(IMAGE)  # raises if the import did not produce it
        info.timings["import"] = time.monotonic() - t0
        shutil.rmtree(os.path.join(d, "rootfs"), ignore_errors=True)
        os.unlink(tar)
        return info
    except BaseException:
        tail = info.log_tail()
        info.close()
        if tail:
            print("dockerd log:\n" + tail)
        raise


def _wait_answers(info: Dockerd, deadline: float) -> None:
    import docker

    sock = info.host[len("unix://") :]
    while True:
        if info.proc.poll() is not None:
            raise RuntimeError(f"dockerd exited with {info.proc.returncode}:\n{info.log_tail()}")
        if os.path.exists(sock):
            try:
                c = docker.APIClient(base_url=info.host, version="1.41", timeout=2)
                try:
                    if c.ping():
                        return
                finally:
                    c.close()
            except Exception:
                pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"dockerd did not answer on {sock} in time:\n{info.log_tail()}")
        time.sleep(0.02)


# One daemon per session even if several modules import the fixture (pytest
# then sees one session fixture per module): share it with a reference count.
_shared: Dockerd | None = None
_users = 0
_shared_lock = threading.Lock()


@pytest.fixture(scope="session")
def dockerd():
    global _shared, _users
    reason = docker_unavailable()
    if reason is not None:
        pytest.skip(f"needs a private dockerd: {reason}")
    with _shared_lock:
        if _shared is None:
            _shared = start_dockerd()
        _users += 1
        info = _shared
    try:
        yield info
    finally:
        with _shared_lock:
            _users -= 1
            last = _users == 0
            if last:
                _shared = None
        if last:
            info.close()
