"""The ``circuit`` service of a server: what clients, workers and other
servers call. Paths here are lists of names *below* this server's anchor.

Only the methods of this class are callable remotely; element methods are
reached through ``op`` and only when listed in ``_OPS`` for their kind.
Blocking element operations take a timeout, and clients call them in
bounded slices, so a client that dies mid-wait leaves no server thread
blocked for long.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

import psutil

from ..errors import CircuitError, ElementError
from ..runtime._addr import is_worker_id
from ..spawn import _codecache

# Workers one spawn_many may ask for (a client splits a bigger batch): the
# server forks them all at once, so one call must not ask for a host's worth.
MAX_BATCH = 256


_OPS: dict[str, frozenset[str]] = {
    "proc": frozenset(
        {"stdin_write", "stdin_close", "read", "close_stream", "signal", "peek", "wait"}
    ),
    "chan": frozenset({"send", "recv", "close", "peek"}),
    "docker": frozenset(
        {"stdin_write", "stdin_close", "read", "close_stream", "signal", "peek", "wait"}
    ),
    "dns": frozenset({"set", "unset", "peek"}),
    "@join": frozenset({"recv", "peek"}),
    "@leave": frozenset({"recv", "peek"}),
}
_BLOCKING = frozenset({"read", "wait", "send", "recv", "stdin_write"})


class Kernel:
    def __init__(self, server: Any) -> None:
        self._s = server
        self._stats_lock = threading.Lock()
        self._spawns = 0
        self._cpu: dict[
            str, tuple[float, float]
        ] = {}  # worker ID -> (when, CPU seconds), for CPU % between calls
        self._me = psutil.Process()

    # -- identity and membership ------------------------------------------------
    def info(self) -> dict:
        s = self._s
        return {
            "id": s.id,
            "url": s.url,
            "pid": os.getpid(),
            "started": s.started,
            "docker": s.cfg.docker,
            "spares": s.spare_count(),
        }

    def hosts(self) -> list[tuple[str, str]]:
        return self._s.cluster.alive()

    def hello(self, from_id: str, from_url: str, version: int) -> tuple:
        """A server joins the circuit through this one (membership then runs over UDP)."""
        return self._s.cluster.hello(str(from_id), str(from_url), version)

    def join(self, url: str) -> str:
        return self._s.cluster.join(str(url))

    def suicide(self) -> None:
        """Stop this server (after the reply has left)."""
        threading.Timer(0.05, self._s.stopped.set).start()

    # -- workers ------------------------------------------------------------------
    def spawn(self, anchors: list) -> str:
        url = self._s.spawn(anchors)
        with self._stats_lock:
            self._spawns += 1
        return url

    def spawn_many(self, anchors: list, count: int) -> list[str]:
        """``count`` new workers at once (``Client.spawn_many``), all or none."""
        if type(count) is not int or not 1 <= count <= MAX_BATCH:
            raise ValueError(f"spawn_many: count must be an int from 1 to {MAX_BATCH}")
        urls = self._s.spawn_many(anchors, count)
        with self._stats_lock:
            self._spawns += count
        return urls

    def register(self, token: str, url: str, stack_fd: int | None = None) -> None:
        if stack_fd is not None and (type(stack_fd) is not int or stack_fd < 0):
            raise ValueError("register: stack_fd must be a descriptor number")
        self._s.register(token, url, stack_fd)

    def cache_code(self, paths: list) -> None:
        """Source files a worker imported: the zygote keeps them compiled."""
        if isinstance(paths, list) and all(isinstance(p, str) for p in paths):
            self._s.spawner.cache_code(paths[: _codecache.MAX_REPORT])

    def kill(self, worker_id: str) -> bool:
        if not is_worker_id(worker_id):
            raise CircuitError(f"not a worker ID: {worker_id!r}")
        return self._s.kill(worker_id)

    def workers(self) -> list[dict]:
        return [
            {"id": r.id, "url": r.url, "pid": r.pid, "anchors": r.anchors}
            for r in self._s.spawner.live()
        ]

    def remains(self, worker_id: str | None = None) -> Any:
        if worker_id is None:
            return self._s.spawner.remains.all()
        return self._s.spawner.remains.get(worker_id)

    def fault_stack(self, worker_id: str, timeout: float = 2.0) -> str:
        """Stacks of a worker via faulthandler (works while it holds the GIL)."""
        rec = self._s.spawner.find(worker_id)
        if rec is None or rec.pid is None:
            raise CircuitError(f"no live worker {worker_id} on host {self._s.id}")
        if rec.stack_fd is None:
            raise CircuitError(f"worker {worker_id} has no stack file")
        # the worker's own descriptor (a memfd), opened through /proc
        path = f"/proc/{rec.pid}/fd/{rec.stack_fd}"
        before = os.path.getsize(path) if os.path.exists(path) else 0
        if not self._s.spawner.signal(rec, signal.SIGUSR1):
            raise CircuitError(f"no live worker {worker_id} on host {self._s.id}")
        deadline = time.monotonic() + timeout
        last = -1
        while (
            time.monotonic() < deadline
        ):  # faulthandler writes from a signal handler: poll the file
            size = os.path.getsize(path) if os.path.exists(path) else 0
            if size > before and size == last:
                with open(path, "rb") as f:
                    f.seek(before)
                    return f.read().decode("utf-8", "replace")
            last = size
            time.sleep(0.01)
        raise CircuitError(f"worker {worker_id} wrote no stack within {timeout} s")

    # -- monitoring ---------------------------------------------------------------
    def metrics(self, view: bool = False) -> dict:
        """This host at a glance, for monitoring (``pycircuit web``): live
        workers with CPU % (since the previous call) and RSS, the server
        runtime's counters, spawns, members, remains, the server process's
        and the machine's CPU and memory. Read from /proc: no worker is
        called, so this stays cheap with many workers. With ``view``, also
        the live hosts, the anchor tree (as ``tree``) and the state of each
        element that is not a worker: one call per host for a live view."""
        s = self._s
        extra = self._view() if view else {}
        live = s.spawner.live()
        remains = s.spawner.remains.all()
        with self._stats_lock:
            now = time.monotonic()
            workers = [self._worker_stat(r, now) for r in live]
            for gone in set(self._cpu) - {r.id for r in live}:
                del self._cpu[gone]
            spawns = self._spawns
            with self._me.oneshot():
                me_cpu = self._me.cpu_times()
                server = {
                    "pid": self._me.pid,
                    "rss": self._me.memory_info().rss,
                    "cpu_percent": self._me.cpu_percent(None),
                    "cpu_seconds": me_cpu.user + me_cpu.system,
                }
            host_cpu = psutil.cpu_percent(None)
        vm = psutil.virtual_memory()
        return {
            "id": s.id,
            "url": s.url,
            "time": time.time(),
            "started": s.started,
            "spawns": spawns,
            "members": len(s.cluster.alive()),
            "workers": workers,
            "remains": len(remains),
            "last_death": remains[-1]["died"] if remains else None,
            "runtime": s.rt.counters(),
            "server": server,
            "host": {
                "cpu_percent": host_cpu,
                "cpus": psutil.cpu_count() or 1,
                "mem_total": vm.total,
                "mem_available": vm.available,
            },
            **extra,
        }

    MAX_VIEW_ELEMENTS = 200  # element states in one metrics(view=True)

    def _view(self) -> dict:
        tree = self.tree([])
        elements: dict[str, Any] = {}
        for path, kind in tree:
            if kind not in (None, "worker") and len(elements) < self.MAX_VIEW_ELEMENTS:
                try:
                    elements["/".join(path)] = self.peek(path)
                except CircuitError as e:  # scrubbed meanwhile, or a broken element: shown as such
                    elements["/".join(path)] = {"error": str(e)}
        return {"hosts": self.hosts(), "tree": tree, "elements": elements}

    def _worker_stat(self, rec: Any, now: float) -> dict:  # holding _stats_lock
        out = {
            "id": rec.id,
            "url": rec.url,
            "pid": rec.pid,
            "anchors": rec.anchors,
            "started": rec.started,
            "cpu_percent": None,
            "rss": None,
        }
        got = _proc_times(rec.pid)
        if got is None:  # it is exiting: its figures are left out
            self._cpu.pop(rec.id, None)
            return out
        cpu, out["rss"] = got
        then = self._cpu.get(rec.id)
        self._cpu[rec.id] = (now, cpu)
        out["cpu_percent"] = (
            0.0
            if then is None or now <= then[0]
            else round(100.0 * (cpu - then[1]) / (now - then[0]), 2)
        )
        return out

    # -- anchors ------------------------------------------------------------------
    def view(self, path: list) -> dict:
        """Children of the anchor at ``path``: name → element kind, or None."""
        with self._s.lock:
            kids = self._s.anchors.children(list(path))
        return {name: (el.kind if el is not None else None) for name, el in kids.items()}

    def tree(self, path: list) -> list[tuple[list, str | None]]:
        """Every anchor below ``path`` (parents first) with its kind."""
        out: list[tuple[list, str | None]] = []
        with self._s.lock:
            stack = [list(path)]
            while stack:
                p = stack.pop()
                for name, el in self._s.anchors.children(p).items():
                    out.append((p + [name], _kind(el)))
                    stack.append(p + [name])
        out.sort(key=lambda item: item[0])
        return out

    def get(self, path: list) -> dict | None:
        """The element's description (kind plus peek), or None."""
        if not path:
            return self._s.describe()
        el = self._element(path, None)
        return el.describe() if el is not None else None

    def peek(self, path: list) -> Any:
        """The element's state without its kind (JSON-able), or None."""
        d = self.get(path)
        if d is not None:
            d.pop("kind", None)
        return d

    def make(self, path: list, kind: str, spec: Any = None) -> None:
        path = list(path)
        if not path:
            raise ElementError("anchor already has an element (the server itself)")
        from ._chan import ChanElement  # element modules load on first use
        from .._spec import Cmd
        from ._proc import ProcElement

        if kind == "proc":
            cmd = spec if isinstance(spec, Cmd) else Cmd.from_json(dict(spec or {}))
            el: Any = ProcElement(cmd, on_done=lambda p: self._s.detach(path, p))
            self._s.attach(path, el)
            el.start()  # on failure the element stays, in phase "unknown", as the original's did
            return
        if kind == "docker":
            self._make_docker(path, spec)
            return
        if kind == "dns":
            from ._dns import DnsElement

            el = DnsElement(spec)
            el.start()  # a busy port fails here, before the anchor is taken
            try:
                self._s.attach(path, el)
            except BaseException:
                el.scrub()
                raise
            return
        if kind == "chan":
            el = ChanElement(spec)
        elif kind in ("@join", "@leave"):
            self._s.subscribe(kind, path)
            return
        else:
            raise ElementError(f"unknown element kind {kind!r}")
        self._s.attach(path, el)

    def _make_docker(self, path: list, spec: Any) -> None:
        if not self._s.cfg.docker:
            raise ElementError("docker not enabled on this server")
        from ._docker import DockerElement, DockerSpec, docker_client_factory

        ds = DockerSpec.from_json(dict(spec or {}))
        el = DockerElement(
            ds,
            lambda: docker_client_factory(None),
            on_done=lambda e: self._s.detach(path, e),
        )
        self._s.attach(path, el)
        try:
            el.start()
        except BaseException:
            self._s.detach(path, el)  # nothing runs: leave the anchor free
            raise

    def scrub(self, path: list) -> None:
        path = list(path)
        if not path:
            raise ElementError("server anchors cannot be scrubbed")
        with self._s.lock:
            el = self._s.anchors.get(path)
        if el is None:
            return
        if el.kind == "worker":
            self._s.kill(el.id)
            return
        self._s.detach(path, el)
        el.scrub()

    def op(self, path: list, name: str, args: tuple = (), kwargs: dict | None = None) -> Any:
        el = self._element(list(path), None, required=True)
        allowed = _OPS.get(el.kind, frozenset())
        if name not in allowed:
            raise ElementError(f"a {el.kind} element has no operation {name!r}")
        kwargs = dict(kwargs or {})
        if name in _BLOCKING:
            t = kwargs.get("timeout")
            limit = self._s.cfg.max_block
            kwargs["timeout"] = limit if t is None else min(float(t), limit)
        return getattr(el, name)(*args, **kwargs)

    def _element(self, path: list, default: Any, required: bool = False) -> Any:
        with self._s.lock:
            el = self._s.anchors.get(path)
        if el is None and required:
            raise ElementError(f"no element at /{self._s.id}/{'/'.join(path)}")
        return el if el is not None else default


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_HAVE_PROC = os.path.exists("/proc/self/stat")


def _proc_times(pid: int) -> tuple[float, int] | None:
    """(CPU seconds, RSS bytes) of a process, or None if it is gone. One
    read of /proc/PID/stat where there is one: a tenth of what psutil's
    two reads cost, which counts when a host has hundreds of workers."""
    if not _HAVE_PROC:
        try:
            p = psutil.Process(pid)
            with p.oneshot():
                t = p.cpu_times()
                return t.user + t.system, p.memory_info().rss
        except psutil.Error:  # the worker is gone: it has no figures
            return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
        fields = data[
            data.rindex(b")") + 2 :
        ].split()  # after the command name, which may hold anything
        return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS, int(fields[21]) * _PAGE
    except (
        OSError,
        ValueError,
        IndexError,
    ):  # the worker is gone (or its stat was cut short): no figures
        return None


def _kind(el: Any) -> str | None:
    return None if el is None else el.kind
