"""The embedded local server: a ``pycircuit start`` child owned by a client
program that found no circuit to dial."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

from .errors import CircuitError
from .runtime._children import stop_child

__all__ = ["EmbeddedServer"]


class EmbeddedServer:
    """A local server owned by this process; it exits when we close its stdin
    (which the kernel also does if we die)."""

    def __init__(self, key_path: str | None, start_timeout: float) -> None:
        """Start the server; ``url()`` waits for its address."""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        env.pop("CIRCUIT_KEY", None)  # it uses our key, or none
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pycircuit.cli",
                "start",
                "-a",
                "127.0.0.1:0",
                "--embedded",
                *(["--key", key_path] if key_path else []),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None,
            env=env,
            close_fds=True,
        )
        self._deadline = time.monotonic() + start_timeout
        out = self.proc.stdout
        assert out is not None  # stdout=PIPE above
        self._line = [b""]
        self._reader = threading.Thread(
            target=lambda: self._line.__setitem__(0, out.readline()), daemon=True
        )
        self._reader.start()

    def url(self) -> str:
        """The server's URL, once it has printed it (within the start
        timeout); CircuitError, with the server stopped, if it does not."""
        self._reader.join(max(0.0, self._deadline - time.monotonic()))
        url = self._line[0].decode().strip()
        if not url:
            self.stop()
            raise CircuitError("the embedded local server did not start (see its stderr above)")
        return url

    def stop(self) -> None:
        stdin = self.proc.stdin
        assert stdin is not None  # stdin=PIPE above
        stop_child(self.proc, 5.0, stdin.close)
