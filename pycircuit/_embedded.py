"""The embedded local server: a ``pycircuit start`` child owned by a client
program that found no circuit to dial."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

from .errors import CircuitError
from .runtime._children import stop_child

__all__ = ["EmbeddedServer"]


class EmbeddedServer:
    """A local server owned by this process; it exits when we close its stdin
    (which the kernel also does if we die)."""

    def __init__(self, key_path: str | None, start_timeout: float) -> None:
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
        out = self.proc.stdout
        assert out is not None  # stdout=PIPE above
        line = [b""]
        reader = threading.Thread(target=lambda: line.__setitem__(0, out.readline()), daemon=True)
        reader.start()
        reader.join(start_timeout)
        url = line[0].decode().strip()
        if not url:
            self.stop()
            raise CircuitError("the embedded local server did not start (see its stderr above)")
        self.url = url

    def stop(self) -> None:
        stop_child(self.proc, 5.0)
