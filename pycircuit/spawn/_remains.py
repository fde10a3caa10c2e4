"""The remains of dead workers: how a worker ended (from its wait status),
the ends of its saved output, and a store of them bounded in count and age.
Layer: spawn (used by ``_spawner``)."""

from __future__ import annotations

import collections
import os
import signal
import threading
import time

__all__ = ["describe_status", "tail", "Remains"]


def describe_status(status: int | None) -> tuple[int | None, int | None, str]:
    """Raw wait status → (exit code, signal number, cause); None: unknown
    (the worker outlived its zygote, so nobody of ours reaped it)."""
    if status is None:
        return None, None, "exited (status unknown: its zygote had died)"
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        return None, sig, f"killed by {name}"
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
    from ._worker import EXIT_BOOT_FAILED, EXIT_NO_MAIN, EXIT_OK, EXIT_SERVER_LOST

    causes: dict[int | None, str] = {
        EXIT_OK: "finished",
        EXIT_NO_MAIN: "no function arrived",
        EXIT_SERVER_LOST: "lost its server",
        EXIT_BOOT_FAILED: "failed to start",
    }
    cause = causes.get(code, f"exited with status {code}")
    return code, None, cause


def tail(path: str, n: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - n))
            return f.read().decode("utf-8", "replace")
    except OSError:  # no such output (the worker died before making it): an empty tail says so
        return ""


class Remains:
    """What is left of dead workers, bounded in count and age."""

    def __init__(self, max_count: int = 256, max_age: float = 3600.0):
        self._max_count = max_count
        self._max_age = max_age
        self._items: collections.OrderedDict[str, dict] = collections.OrderedDict()
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
