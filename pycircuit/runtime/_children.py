"""Stopping a child process that exits when its stdin closes (the embedded
server, a zygote): hang up, give it ``grace`` seconds, then kill it.
Layer: runtime (no other pycircuit import)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from typing import Protocol


class Child(Protocol):
    """What ``stop_child`` uses of a ``subprocess.Popen``."""

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...

    def kill(self) -> None: ...


def stop_child(proc: Child, grace: float, hang_up: Callable[[], None]) -> None:
    """Ask ``proc`` to exit by ``hang_up()`` (closing its stdin); kill it if
    it has not within ``grace``."""
    if proc.poll() is not None:
        return
    try:
        hang_up()
    except OSError:  # a broken pipe: it exited already, which is what closing asks; reaped below
        pass
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
