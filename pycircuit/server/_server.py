"""The per-host server: a runtime with the ``circuit`` kernel service, the
anchor tree and the spawner. Layer: above ``runtime``, ``spawn`` and ``acid``.
"""
from __future__ import annotations

import os
import secrets
import signal
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Any

from ..errors import CircuitError, ElementError, SpawnError
from ..runtime._addr import WorkerAddr, is_worker_id, new_server_id
from ..runtime._runtime import Runtime, RuntimeConfig, install
from ..spawn._spawner import Spawner, WorkerRecord
from ._anchors import AnchorTree, check_name

SPAWN_TIMEOUT = 30.0


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 0
    var_dir: str | None = None
    server_id: str | None = None
    tls: Any = None


@dataclass(frozen=True)
class WorkerElement:
    """A live worker, as listed in the anchor tree."""

    url: str
    pid: int
    kind: str = "worker"

    def describe(self) -> dict:
        return {"kind": self.kind, "url": self.url, "pid": self.pid}


class Server:
    def __init__(self, cfg: ServerConfig = ServerConfig()):
        self.cfg = cfg
        self.id = cfg.server_id or new_server_id()
        self.var = cfg.var_dir or tempfile.mkdtemp(prefix=f"pycircuit-{self.id}-")
        os.makedirs(self.var, exist_ok=True)
        self.rt = install(Runtime(RuntimeConfig(host=cfg.host, port=cfg.port, role="server",
                                                host_label=self.id, tls=cfg.tls)))
        self.url = self.rt.url
        self.started = time.time()
        self.anchors = AnchorTree()
        self._lock = threading.Lock()
        self.spawner = Spawner(self.url, self.id, self.rt.addr.host, self.var, self._worker_exited)
        self.kernel = Kernel(self)
        self.rt.listen("circuit", self.kernel)
        self.stopped = threading.Event()

    # -- workers ------------------------------------------------------------
    def spawn(self, anchors: list) -> str:
        paths = [[check_name(n) for n in p] for p in anchors]
        token = secrets.token_hex(8)
        rec = self.spawner.order(token, paths)
        if not rec.ready.wait(SPAWN_TIMEOUT):
            self.spawner.forget(rec)
            if rec.pid:
                _kill(rec.pid)
            raise SpawnError(f"worker did not start on host {self.id} within {SPAWN_TIMEOUT:.0f} s")
        if rec.failure:
            raise SpawnError(f"worker failed to start on host {self.id}: {rec.failure}")
        return rec.url

    def register(self, token: str, url: str) -> None:
        addr = WorkerAddr.parse(url)
        rec = self.spawner.registered(token, url, addr.id, addr.pid)
        if rec is None:
            raise SpawnError("unknown spawn token")
        element = WorkerElement(url, addr.pid)
        with self._lock:
            for p in rec.anchors:
                try:
                    self.anchors.set(p + [addr.id], element)
                except ElementError:
                    pass

    def _worker_exited(self, rec: WorkerRecord, remains: dict) -> None:
        if rec.id is None:
            return
        with self._lock:
            for p in rec.anchors:
                self.anchors.remove(p + [rec.id])

    def kill(self, worker_id: str) -> bool:
        rec = self.spawner.find(worker_id)
        if rec is None or rec.pid is None:
            return False
        _kill(rec.pid)
        return True

    def close(self) -> None:
        for rec in self.spawner.live():
            if rec.pid:
                _kill(rec.pid)
        self.spawner.close()
        self.rt.close()
        self.stopped.set()


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class Kernel:
    """The ``circuit`` service of a server: what clients and workers call."""

    def __init__(self, server: Server):
        self._s = server

    def info(self) -> dict:
        s = self._s
        return {"id": s.id, "url": s.url, "pid": os.getpid(), "started": s.started}

    def hosts(self) -> list[tuple[str, str]]:
        return [(self._s.id, self._s.url)]

    def spawn(self, anchors: list) -> str:
        return self._s.spawn(anchors)

    def register(self, token: str, url: str) -> None:
        self._s.register(token, url)

    def kill(self, worker_id: str) -> bool:
        if not is_worker_id(worker_id):
            raise CircuitError(f"not a worker ID: {worker_id!r}")
        return self._s.kill(worker_id)

    def view(self, path: list) -> dict:
        """Children of the anchor at ``path`` (below this server): name →
        description of its element, or None for a bare anchor."""
        with self._s._lock:
            kids = self._s.anchors.children(list(path))
        return {name: (el.describe() if el is not None else None) for name, el in kids.items()}

    def get(self, path: list) -> dict | None:
        with self._s._lock:
            el = self._s.anchors.get(list(path))
        return el.describe() if el is not None else None

    def workers(self) -> list[dict]:
        return [{"id": r.id, "url": r.url, "pid": r.pid, "anchors": r.anchors} for r in self._s.spawner.live()]

    def remains(self, worker_id: str | None = None) -> Any:
        if worker_id is None:
            return self._s.spawner.remains.all()
        return self._s.spawner.remains.get(worker_id)

    def fault_stack(self, worker_id: str, timeout: float = 2.0) -> str:
        """Stacks of a worker via faulthandler (works while it holds the GIL)."""
        rec = self._s.spawner.find(worker_id)
        if rec is None or rec.pid is None:
            raise CircuitError(f"no live worker {worker_id} on host {self._s.id}")
        path = os.path.join(rec.wdir, "stack")
        before = os.path.getsize(path) if os.path.exists(path) else 0
        os.kill(rec.pid, signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        last = -1
        while time.monotonic() < deadline:
            size = os.path.getsize(path) if os.path.exists(path) else 0
            if size > before and size == last:
                with open(path, "rb") as f:
                    f.seek(before)
                    return f.read().decode("utf-8", "replace")
            last = size
            time.sleep(0.01)
        raise CircuitError(f"worker {worker_id} wrote no stack within {timeout} s")
