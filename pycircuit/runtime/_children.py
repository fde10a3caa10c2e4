"""Stopping a child process that exits when its stdin closes (the embedded
server, a zygote): close the pipe, give it ``grace`` seconds, then kill it.
Layer: runtime (no other pycircuit import)."""

from __future__ import annotations

import subprocess


def stop_child(proc: subprocess.Popen[bytes], grace: float) -> None:
    """Ask ``proc`` to exit by closing its stdin; kill it if it has not within ``grace``."""
    if proc.poll() is not None:
        return
    try:
        if proc.stdin is not None:
            proc.stdin.close()
    except OSError:  # a broken pipe: it exited already, which is what closing asks; reaped below
        pass
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
