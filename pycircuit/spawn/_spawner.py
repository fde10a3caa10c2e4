"""Server side of spawning: drives the zygote and keeps the remains of dead
workers (``_remains``). Layer: used by ``pycircuit.server``; knows nothing of anchors."""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from collections.abc import Callable
from typing import Any

from ..errors import SpawnError
from ._orders import ZygoteProc, output_path, start_zygote
from ._pidfd import ProcHandle
from ._remains import Remains, describe_status, tail

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SpawnerConfig:
    # The end of a dead worker's stdout and stderr kept in its remains:
    # enough for a traceback, small enough for many remains in a listing.
    tail_bytes: int = 4096
    # A zygote that dies younger than this (seconds) is restarted only
    # after restart_delay: one that cannot start must not loop hot.
    zygote_min_life: float = 5.0
    zygote_restart_delay: float = 1.0
    # How often workers of a dead zygote are checked for their end; only
    # where pidfds are missing does this bound how late their remains are.
    orphan_poll: float = 1.0


@dataclass(eq=False)  # a record is one worker: compared by identity
class WorkerRecord:
    token: str
    files: str  # path prefix of its output files (``output_path``)
    anchors: list
    started: float = field(default_factory=time.time)
    pid: int | None = None
    url: str | None = None
    id: str | None = None
    ready: threading.Event = field(default_factory=threading.Event)
    failure: str | None = None
    spare: bool = False  # forked ahead of demand; not anybody's until assigned
    assigned: bool = False
    handle: ProcHandle | None = None  # what signals reach it (see _pidfd)
    zygote: object = None  # the ZygoteProc that forks it
    abandoned: bool = False  # its spawn timed out: killed once forked, no remains
    stack_fd: int | None = None  # its descriptor that faulthandler writes stacks to

    def output_path(self, stream: str) -> str:
        """Where the worker's ``stdout`` or ``stderr`` goes while it lives."""
        return output_path(self.files, stream)

    def remove_files(self) -> None:
        for stream in ("stdout", "stderr"):
            try:
                os.unlink(self.output_path(stream))
            except OSError:  # never created (not forked), or removed already
                pass

    @property
    def owned(self) -> bool:
        """Handed to a spawner (a spare until then is nobody's)."""
        return self.assigned or not self.spare

    @property
    def visible(self) -> bool:
        return bool(self.url) and self.owned


class Spawner:
    """Starts the zygote and turns its events into worker records."""

    def __init__(
        self,
        server_url: str,
        server_id: str,
        host: str,
        var_dir: str,
        on_exit: Callable[[WorkerRecord, dict], None],
        adopt_link: Callable[[socket.socket], None],
        key_path: str = "",
        cfg: SpawnerConfig = SpawnerConfig(),
        zygote: ZygoteProc | None = None,
    ) -> None:
        """``zygote``: one made before the server knew its URL (its imports
        overlap the server's start-up); without it, one is started.
        ``adopt_link(sock)`` serves the server's end of each worker's link
        (``_orders``)."""
        self.cfg = cfg
        self._args = [
            server_url,
            server_id,
            host,
            key_path or "",
        ]  # key_path: the cluster key of workers
        self._var = os.path.join(var_dir, "workers")
        os.makedirs(self._var, exist_ok=True)
        self._closed = False
        self._closing = threading.Event()
        self._on_exit = on_exit
        self._adopt_link = adopt_link
        self._lock = threading.Lock()
        self._by_token: dict[str, WorkerRecord] = {}
        self._by_pid: dict[int, WorkerRecord] = {}
        self._proc: ZygoteProc | None = None
        self._proc_started = 0.0
        self.remains = Remains()
        self._start(zygote)

    def _start(self, proc: ZygoteProc | None = None) -> None:
        """Start a zygote (or adopt one started early) and tell it its arguments."""
        self._proc_started = time.monotonic()
        self._proc = proc or start_zygote()
        try:
            self._proc.send(self._args)
        except OSError as e:  # it died already: _read sees EOF and starts another
            _log.warning("zygote %d did not take its arguments: %s", self._proc.pid, e)
        threading.Thread(
            target=self._read, args=(self._proc,), name="pycircuit-zygote", daemon=True
        ).start()

    def _read(self, proc: ZygoteProc) -> None:
        for line in proc.events:
            try:
                ev = json.loads(line)
            except ValueError:
                _log.warning("zygote %d wrote a line that is not JSON: %.200r", proc.pid, line)
                continue
            if ev.get("ev") == "forked":
                self._forked(proc, ev["token"], ev["pid"])
            elif ev.get("ev") == "exit":
                with self._lock:
                    rec = self._by_pid.pop(ev["pid"], None)
                if rec is not None:
                    self._exited(rec, ev["status"])
                # else the child of an order nobody wanted: killed at "forked", nothing to record
        self._zygote_died(proc)

    def _forked(self, proc: ZygoteProc, token: str, pid: int) -> None:
        handle = ProcHandle.open(pid, parent=proc.pid)
        with self._lock:
            rec = self._by_token.get(token)
            kill = rec is None or rec.abandoned  # an order given up: the child is nobody's
            if rec is not None:
                handle = self._track(rec, pid, handle)
        if handle is not None and kill:
            handle.send(signal.SIGKILL)
            if rec is None:
                handle.close()

    def _track(self, rec: WorkerRecord, pid: int, handle: ProcHandle | None) -> ProcHandle | None:
        """Holding _lock: note the worker's pid and handle (the first one
        wins; "forked" and the worker's registration race). Returns its handle."""
        if rec.pid is None:
            rec.pid = pid
            self._by_pid[pid] = rec
        if rec.handle is None and rec.pid == pid:
            rec.handle = handle
        elif handle is not None and handle is not rec.handle:
            handle.close()
        return rec.handle

    def _zygote_died(self, proc: ZygoteProc) -> None:
        """The zygote is gone: its workers live on (re-parented), but nobody
        reports their exits now. Watch them through their handles, fail the
        orders it never forked, and start a new zygote."""
        status = proc.wait()
        with self._lock:
            closed = self._closed
            mine = [r for r in self._by_token.values() if r.zygote is proc]
        if closed:
            return
        how = f"killed by signal {-status}" if status < 0 else f"exit status {status}"
        _log.warning(
            "the zygote (pid %d) died (%s) leaving %d worker(s); starting another",
            proc.pid,
            how,
            len(mine),
        )
        orphans = []
        for rec in mine:
            if rec.pid is not None:
                orphans.append(rec)
                continue
            with self._lock:
                self._by_token.pop(rec.token, None)
            rec.remove_files()
            rec.failure = "the zygote died before forking it"
            rec.ready.set()
        if orphans:
            threading.Thread(
                target=self._watch_orphans, args=(orphans,), name="pycircuit-orphans", daemon=True
            ).start()
        # A zygote that dies young is restarted a little later: one that
        # cannot start must not be restarted in a tight loop.
        young = time.monotonic() - self._proc_started < self.cfg.zygote_min_life
        if young and self._closing.wait(self.cfg.zygote_restart_delay):
            return
        with self._lock:
            if not self._closed and self._proc is proc:  # an order may have restarted it already
                self._start()

    def _watch_orphans(self, recs: list[WorkerRecord]) -> None:
        """Record the remains of workers whose zygote died, as they end."""
        while recs and not self._closed:
            fds = [fd for fd in (r.handle.fileno() for r in recs if r.handle) if fd is not None]
            if fds:
                select.select(fds, [], [], self.cfg.orphan_poll)
            else:
                time.sleep(self.cfg.orphan_poll)  # no pidfds here: poll start times
            for rec in [r for r in recs if r.handle is None or r.handle.exited()]:
                recs.remove(rec)
                with self._lock:
                    ours = rec.pid is not None and self._by_pid.pop(rec.pid, None) is rec
                if ours:
                    self._exited(rec, None)

    def _exited(self, rec: WorkerRecord, status: int | None) -> None:
        with self._lock:
            self._by_token.pop(rec.token, None)
            if rec.pid is not None:
                self._by_pid.pop(rec.pid, None)
            handle, rec.handle = rec.handle, None
        if handle is not None:
            handle.close()
        code, sig, cause = describe_status(status)
        stderr = tail(rec.output_path("stderr"), self.cfg.tail_bytes)
        remains = {
            "id": rec.id,
            "url": rec.url,
            "pid": rec.pid,
            "exit_code": code,
            "signal": sig,
            "cause": cause,
            "stdout": tail(rec.output_path("stdout"), self.cfg.tail_bytes),
            "stderr": stderr,
            "started": rec.started,
            "died": time.time(),
        }
        if rec.owned and not rec.abandoned:  # a spare nobody used, or a spawn given up, leaves none
            self.remains.add(rec.id or rec.token, remains)
        rec.remove_files()
        if rec.url is None:
            rec.failure = f"{cause}; stderr: {stderr.strip()[-800:] or '(empty)'}"
            rec.ready.set()
        self._on_exit(rec, remains)

    def cache_code(self, paths: list[str]) -> None:
        """Have the zygote compile these source files for its next forks."""
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                return
            try:
                self._tell({"compile": paths})
            except OSError:
                pass  # the zygote is gone and its reader starts another: only this hint is lost

    def _tell(self, order: dict[str, Any], fd: int | None = None) -> None:  # holding _lock
        assert self._proc is not None
        self._proc.send(order, fd)

    def order(self, token: str, anchors: list, spare: bool = False) -> WorkerRecord:
        rec = WorkerRecord(token, os.path.join(self._var, token), anchors, spare=spare)
        with self._lock:
            # A late order (a spare being made as the server stops) must not
            # restart the zygote.
            if self._closed:
                raise SpawnError("the server is stopping")
            if self._proc is None or self._proc.poll() is not None:
                self._start()
            rec.zygote = self._proc
            self._by_token[token] = rec
            ours, theirs = socket.socketpair()
            try:
                self._tell({"token": token, "files": rec.files, "spare": spare}, theirs.fileno())
            except OSError as e:
                del self._by_token[token]
                ours.close()
                raise SpawnError(f"the zygote is gone: {e}") from None
            finally:
                theirs.close()
        self._adopt_link(ours)
        return rec

    def registered(
        self, token: str, url: str, wid: str, pid: int, stack_fd: int | None = None
    ) -> WorkerRecord | None:
        with self._lock:
            rec = self._by_token.get(token)
            if rec is None:
                return None
            if rec.abandoned:
                return None
            rec.url, rec.id, rec.stack_fd = url, wid, stack_fd
            zygote = getattr(rec.zygote, "pid", None)
        if rec.pid is None:  # registered before the zygote's "forked" was read
            handle = ProcHandle.open(pid, parent=zygote)
            with self._lock:
                self._track(rec, pid, handle)
        rec.ready.set()
        return rec

    def live(self, spares: bool = False) -> list[WorkerRecord]:
        """Running workers (unassigned spares only when asked)."""
        with self._lock:
            return [r for r in self._by_token.values() if r.url and (spares or r.visible)]

    def find(self, wid: str) -> WorkerRecord | None:
        with self._lock:
            for r in self._by_token.values():
                if r.id == wid and r.visible:
                    return r
        return None

    def signal(self, rec: WorkerRecord, sig: int) -> bool:
        """Send ``sig`` to the worker; False when it is gone (the signal
        never reaches a process that reused its pid)."""
        with self._lock:
            handle = rec.handle
        return handle is not None and handle.send(sig)

    def abandon(self, rec: WorkerRecord) -> None:
        """Give up a spawn that timed out: its worker is killed, now or as
        soon as it is forked, and its exit removes the record and the work
        output files as usual (a zygote that dies first cleans them then)."""
        with self._lock:
            rec.abandoned = True
            handle = rec.handle
        if handle is not None:
            handle.send(signal.SIGKILL)

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._closing.set()
        proc = self._proc
        if proc is None:
            return
        proc.stop(2.0)
