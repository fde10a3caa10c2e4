"""The per-host server: a runtime with the ``circuit`` kernel service, the
anchor tree and the spawner. Layer: above ``runtime``, ``spawn`` and ``acid``.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import signal
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Any

from ..acid import serve_everywhere
from ..errors import CircuitError, ElementError, SpawnError
from ..runtime._addr import WorkerAddr, new_server_id
from ..runtime._limits import raise_nofile
from ..runtime._runtime import HANDLE_KERNEL, HANDLE_MAIN, Runtime, RuntimeConfig, install
from ._refusals import RefusalLog
from ._spares import SpareConfig, SparePool
from ..spawn._orders import ZygoteProc
from ..spawn._spawner import Spawner, WorkerRecord
from ._anchors import AnchorTree, check_name
from ._cluster import Cluster, ClusterConfig
from ._kernel import Kernel
from ._members import JOIN, LEAVE_KINDS, Event

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 0
    var_dir: str | None = None
    server_id: str | None = None
    tls: Any = None
    cluster: ClusterConfig = ClusterConfig()
    docker: bool = False
    spares: SpareConfig = SpareConfig()  # workers kept forked ahead of demand
    spawn_timeout: float = 30.0  # fork to registration
    discover_every: float = 2.0
    # The longest one kernel call may block the server's thread: a client
    # that waits longer calls again, so one gone mid-wait pins no thread long.
    max_block: float = 5.0


@dataclass(frozen=True)
class WorkerElement:
    """A live worker, as listed in the anchor tree."""

    url: str
    pid: int
    id: str
    kind: str = "worker"

    def describe(self) -> dict:
        return {"kind": self.kind, "url": self.url, "pid": self.pid, "id": self.id}


def _listing(rec: WorkerRecord) -> WorkerElement:
    """A registered worker as listed (its URL, pid and ID are known by then)."""
    assert rec.url is not None and rec.pid is not None and rec.id is not None
    return WorkerElement(rec.url, rec.pid, rec.id)


class Server:
    def __init__(self, cfg: ServerConfig = ServerConfig(), zygote: ZygoteProc | None = None):
        """``zygote``: from ``spawn._orders.start_zygote``, started early by the caller."""
        self.cfg = cfg
        self.id = cfg.server_id or new_server_id()
        self._own_var = cfg.var_dir is None  # a directory we made, and remove at close
        self.var = cfg.var_dir or tempfile.mkdtemp(prefix=f"pycircuit-{self.id}-")
        os.makedirs(self.var, exist_ok=True)
        serve_everywhere()
        raise_nofile()  # one descriptor per worker connection (the zygote raises its own)
        self.rt = install(
            Runtime(
                RuntimeConfig(
                    host=cfg.host, port=cfg.port, role="server", host_label=self.id, tls=cfg.tls
                ),
                on_refused=RefusalLog().note,
            )
        )
        self.url = self.rt.url
        self.started = time.time()
        self.anchors = AnchorTree()
        self.lock = threading.RLock()
        self.spawner = Spawner(
            self.url,
            self.id,
            self.rt.addr.host,
            self.var,
            self._worker_exited,
            self.rt.adopt_link,
            key_path=getattr(cfg.tls, "path", ""),
            zygote=zygote,
        )  # workers use the server's key
        self._subs: list = []
        self.cluster = Cluster(self.rt, self.id, self._member_event, cfg.cluster, key=cfg.tls)
        self.kernel = Kernel(self)
        self.rt.listen("circuit", self.kernel)
        self.rt.add_static(HANDLE_KERNEL, self.kernel)
        self.stopped = threading.Event()
        self._spares = SparePool(
            cfg.spares, self._make_spare, self._assign_spare, self._retire_spare, self.stopped
        )
        self.cluster.start()
        self._spares.fill()

    # -- elements -----------------------------------------------------------
    def describe(self) -> dict:
        """The server element at the server's own anchor."""
        joined = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started))
        return {"kind": "server", "Addr": self.url, "Joined": joined}

    def attach(self, path: list, element: Any) -> None:
        with self.lock:
            self.anchors.set(list(path), element)

    def detach(self, path: list, element: Any) -> None:
        with self.lock:
            self.anchors.remove(list(path), element)
            if element in self._subs:
                self._subs.remove(element)

    def subscribe(self, kind: str, path: list) -> Any:
        from ._subs import Subscription

        with self.lock:
            initial = [f"/{mid}" for mid, _ in self.cluster.alive()] if kind == "@join" else []
            sub = Subscription(kind, f"/{self.id}/{'/'.join(path)}", initial)
            self.attach(path, sub)
            self._subs.append(sub)
        return sub

    def _member_event(self, ev: Event) -> None:
        if ev.kind != JOIN and ev.kind not in LEAVE_KINDS:
            return
        kind = "@join" if ev.kind == JOIN else "@leave"
        with self.lock:
            subs = [s for s in self._subs if s.kind == kind]
        for s in subs:
            s.publish(f"/{ev.id}")

    # -- workers ------------------------------------------------------------
    def spawn(self, anchors: list) -> str:
        paths = [[check_name(n) for n in p] for p in anchors]
        rec = self._spares.take(paths, self.cfg.spawn_timeout)
        if rec is None:
            rec = self._order(paths, spare=False)
        else:
            self._list(rec)
        return _listing(rec).url

    def spawn_many(self, anchors: list, count: int) -> list[str]:
        """``count`` workers listed under ``anchors``: spares ready now, and
        the rest forked at once. All or none: if one cannot start, those
        already started are killed (leaving no remains) and SpawnError says why."""
        paths = [[check_name(n) for n in p] for p in anchors]
        recs = self._spares.take_ready(paths, count)
        for rec in recs:
            self._list(rec)
        ordered = []
        try:
            for _ in range(count - len(recs)):
                ordered.append(self.spawner.order(secrets.token_hex(8), paths))
            deadline = time.monotonic() + self.cfg.spawn_timeout
            for rec in ordered:
                self._started(rec, deadline)
        except BaseException:
            for rec in recs + ordered:
                self.spawner.abandon(rec)
            raise
        return [_listing(rec).url for rec in recs + ordered]

    def spare_count(self) -> int:
        """Workers forked ahead of demand, not handed out yet."""
        return self._spares.count()

    def _order(self, paths: list, spare: bool) -> WorkerRecord:
        token = secrets.token_hex(8)
        rec = self.spawner.order(token, paths, spare=spare)
        self._started(rec, time.monotonic() + self.cfg.spawn_timeout)
        return rec

    def _started(self, rec: WorkerRecord, deadline: float) -> None:
        """Wait until the ordered worker registered; SpawnError if it did
        not by ``deadline`` (it is then abandoned) or failed to boot."""
        if not rec.ready.wait(max(0.0, deadline - time.monotonic())):
            self.spawner.abandon(rec)
            raise SpawnError(
                f"worker did not start on host {self.id} within {self.cfg.spawn_timeout:g} s"
            )
        if rec.failure:
            raise SpawnError(f"worker failed to start on host {self.id}: {rec.failure}")

    # -- the spare pool's ways to make, hand out and retire a worker ----------
    def _make_spare(self) -> WorkerRecord | None:
        try:
            rec = self._order([], spare=True)
            # Have it serve one call: a new fork's first call pays for
            # copying the memory pages it touches, the spawner's would
            # otherwise. Posted: a spawn waiting for this spare need not
            # wait for the answer (its own call comes after it anyway).
            self.rt.post_remote(WorkerAddr.parse(_listing(rec).url), HANDLE_MAIN, "warm")
            return rec
        except Exception:  # the server is stopping, or the spare died: no spare this time
            _log.debug("no spare this time", exc_info=True)
            return None

    def _assign_spare(self, rec: WorkerRecord, paths: list) -> bool:
        rec.anchors, rec.assigned = paths, True
        try:
            # Posted, not awaited: the spawner's own call reaches the
            # worker over another connection and also counts as assignment.
            self.rt.post_remote(WorkerAddr.parse(_listing(rec).url), HANDLE_MAIN, "assign")
            return True
        except CircuitError:  # it died meanwhile; its exit is reported as usual
            return False

    def _retire_spare(self, rec: WorkerRecord) -> None:
        self.spawner.signal(rec, signal.SIGKILL)

    def register(self, token: str, url: str, stack_fd: int | None = None) -> None:
        addr = WorkerAddr.parse(url)
        rec = self.spawner.registered(token, url, addr.id, addr.pid, stack_fd)
        if rec is None:
            raise SpawnError("unknown spawn token")
        self._list(rec)

    def _list(self, rec: WorkerRecord) -> None:
        """Show a worker in the anchor tree, under each of its directories."""
        element = _listing(rec)
        with self.lock:
            for p in rec.anchors:
                try:
                    self.anchors.set(p + [rec.id], element)
                except ElementError as e:  # the worker runs all the same, unlisted there
                    _log.warning(
                        "worker %s not listed at /%s: %s", rec.id, "/".join(p + [rec.id]), e
                    )

    def _worker_exited(self, rec: WorkerRecord, remains: dict) -> None:
        self._spares.discard(rec)
        if rec.id is None:
            return
        with self.lock:
            for p in rec.anchors:
                self.anchors.remove(p + [rec.id])

    def kill(self, worker_id: str) -> bool:
        rec = self.spawner.find(worker_id)
        return rec is not None and self.spawner.signal(rec, signal.SIGKILL)

    # -- discovery ----------------------------------------------------------
    def start_discovery(self) -> None:
        """Announce this server by multicast DNS on its own interface only,
        and keep joining the servers found there."""
        from ._discovery import announce

        ip = self.rt.addr.host
        self._announcement = announce(self.url, ip)
        threading.Thread(
            target=self._discover_loop, args=(ip,), name="pycircuit-discover", daemon=True
        ).start()

    def _discover_loop(self, ip: str) -> None:
        from ._discovery import DiscoveryConfig, DiscoveryLoop

        DiscoveryLoop(
            ip,
            self.cluster.join,
            lambda: {u for _, u in self.cluster.alive()},
            self.stopped,
            DiscoveryConfig(every=self.cfg.discover_every),
        ).run()

    def close(self) -> None:
        ann = getattr(self, "_announcement", None)
        if ann is not None:
            ann.close()
        self.cluster.stop()
        self.stopped.set()  # no more spares
        for rec in self.spawner.live(spares=True):
            self.spawner.signal(rec, signal.SIGKILL)
        self.spawner.close()
        self.rt.close()
        if self._own_var:
            shutil.rmtree(self.var, ignore_errors=True)
