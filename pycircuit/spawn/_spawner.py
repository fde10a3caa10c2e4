"""Server side of spawning: drives the zygote and keeps the remains of dead
workers. Layer: used by ``pycircuit.server``; knows nothing of anchors."""
from __future__ import annotations

import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from ..errors import SpawnError

TAIL_BYTES = 4096


def describe_status(status: int) -> tuple[int | None, int | None, str]:
    """Raw wait status → (exit code, signal number, cause)."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        return None, sig, f"killed by {name}"
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
    from ._worker import EXIT_BOOT_FAILED, EXIT_NO_MAIN, EXIT_OK, EXIT_SERVER_LOST

    cause = {
        EXIT_OK: "finished",
        EXIT_NO_MAIN: "no function arrived",
        EXIT_SERVER_LOST: "lost its server",
        EXIT_BOOT_FAILED: "failed to start",
    }.get(code, f"exited with status {code}")
    return code, None, cause


def _tail(path: str) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - TAIL_BYTES))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


@dataclass(eq=False)  # a record is one worker: compared by identity
class WorkerRecord:
    token: str
    wdir: str
    anchors: list
    started: float = field(default_factory=time.time)
    pid: int | None = None
    url: str | None = None
    id: str | None = None
    ready: threading.Event = field(default_factory=threading.Event)
    failure: str | None = None
    spare: bool = False  # forked ahead of demand; not anybody's until assigned
    assigned: bool = False

    @property
    def owned(self) -> bool:
        """Handed to a spawner (a spare until then is nobody's)."""
        return self.assigned or not self.spare

    @property
    def visible(self) -> bool:
        return bool(self.url) and self.owned


class Remains:
    """What is left of dead workers, bounded in count and age."""

    def __init__(self, max_count: int = 256, max_age: float = 3600.0):
        self._max_count = max_count
        self._max_age = max_age
        self._items: "collections.OrderedDict[str, dict]" = collections.OrderedDict()
        self._lock = threading.Lock()

    def add(self, key: str, record: dict) -> None:
        with self._lock:
            self._items[key] = record
            self._trim()

    def _trim(self) -> None:
        cutoff = time.time() - self._max_age
        while self._items:
            k, v = next(iter(self._items.items()))
            if len(self._items) > self._max_count or v["died"] < cutoff:
                del self._items[k]
            else:
                break

    def get(self, key: str) -> dict | None:
        with self._lock:
            self._trim()
            return self._items.get(key)

    def all(self) -> list[dict]:
        with self._lock:
            self._trim()
            return list(self._items.values())


class Spawner:
    """Starts the zygote and turns its events into worker records."""

    def __init__(self, server_url: str, server_id: str, host: str, var_dir: str,
                 on_exit: Callable[[WorkerRecord, dict], None], key_path: str = ""):
        self._args = [server_url, server_id, host, key_path or ""]  # key_path: the cluster key of workers
        self._var = os.path.join(var_dir, "workers")
        os.makedirs(self._var, exist_ok=True)
        self._closed = False
        self._on_exit = on_exit
        self._lock = threading.Lock()
        self._by_token: dict[str, WorkerRecord] = {}
        self._by_pid: dict[int, WorkerRecord] = {}
        self._early_exits: dict[int, int] = {}
        self._proc: subprocess.Popen | None = None
        self.remains = Remains()
        self._start()

    def _start(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        # Workers move large frames: keep glibc from mmapping and unmapping a
        # fresh block for every one (measured: 1 MiB echo 4.0 -> 0.5 ms).
        env.setdefault("MALLOC_MMAP_THRESHOLD_", str(64 << 20))
        env.setdefault("MALLOC_TRIM_THRESHOLD_", str(128 << 20))
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "pycircuit.spawn._zygote", *self._args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, close_fds=True,
        )
        threading.Thread(target=self._read, args=(self._proc,), name="pycircuit-zygote", daemon=True).start()

    def _read(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if ev.get("ev") == "forked":
                with self._lock:
                    rec = self._by_token.get(ev["token"])
                    if rec is None:
                        continue
                    rec.pid = ev["pid"]
                    self._by_pid[rec.pid] = rec
                    status = self._early_exits.pop(rec.pid, None)
                if status is not None:
                    self._exited(rec, status)
            elif ev.get("ev") == "exit":
                with self._lock:
                    rec = self._by_pid.pop(ev["pid"], None)
                    if rec is None:
                        self._early_exits[ev["pid"]] = ev["status"]
                        continue
                self._exited(rec, ev["status"])

    def _exited(self, rec: WorkerRecord, status: int) -> None:
        with self._lock:
            self._by_token.pop(rec.token, None)
            self._by_pid.pop(rec.pid, None)
        code, sig, cause = describe_status(status)
        remains = {
            "id": rec.id, "url": rec.url, "pid": rec.pid, "exit_code": code, "signal": sig,
            "cause": cause, "stdout": _tail(os.path.join(rec.wdir, "stdout")),
            "stderr": _tail(os.path.join(rec.wdir, "stderr")), "started": rec.started, "died": time.time(),
        }
        if rec.owned:  # a spare nobody used leaves no remains
            self.remains.add(rec.id or rec.token, remains)
        shutil.rmtree(rec.wdir, ignore_errors=True)
        if rec.url is None:
            rec.failure = f"{cause}; stderr: {remains['stderr'].strip()[-800:] or '(empty)'}"
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
                pass  # the zygote is gone; it is restarted with the next order

    def _tell(self, order: dict) -> None:  # holding _lock
        self._proc.stdin.write(json.dumps(order).encode() + b"\n")
        self._proc.stdin.flush()

    def order(self, token: str, anchors: list, spare: bool = False) -> WorkerRecord:
        wdir = os.path.join(self._var, token)
        rec = WorkerRecord(token, wdir, anchors, spare=spare)
        with self._lock:
            # A late order (a spare being made as the server stops) must not
            # restart the zygote or remake the directory the server removes.
            if self._closed:
                raise SpawnError("the server is stopping")
            os.makedirs(wdir, exist_ok=True)
            if self._proc is None or self._proc.poll() is not None:
                self._start()
            self._by_token[token] = rec
            try:
                self._tell({"token": token, "dir": wdir, "spare": spare})
            except OSError as e:
                del self._by_token[token]
                raise SpawnError(f"the zygote is gone: {e}") from None
        return rec

    def registered(self, token: str, url: str, wid: str, pid: int) -> WorkerRecord | None:
        with self._lock:
            rec = self._by_token.get(token)
            if rec is None:
                return None
            rec.url, rec.id = url, wid
            if rec.pid is None:
                rec.pid = pid
                self._by_pid[pid] = rec
                status = self._early_exits.pop(pid, None)
            else:
                status = None
        rec.ready.set()
        if status is not None:
            self._exited(rec, status)
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

    def forget(self, rec: WorkerRecord) -> None:
        with self._lock:
            self._by_token.pop(rec.token, None)

    def close(self) -> None:
        with self._lock:
            self._closed = True
        proc = self._proc
        if proc is None:
            return
        try:
            proc.stdin.close()
        except OSError:
            pass
        try:
            proc.wait(2)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
