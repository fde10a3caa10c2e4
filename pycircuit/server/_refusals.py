"""A server says why it refused a connection (a peer without the cluster
key, say), at most ``burst`` lines a ``window``, so that a port scanner
cannot fill the log (or a pipe nobody reads). The runtime reports each
refusal through its ``on_refused`` hook. Layer: server."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RefusalLogConfig:
    # Enough lines to show a misconfigured member's reason; few enough that
    # a scan a minute long writes five lines, not thousands.
    burst: int = 5
    window: float = 60.0


class RefusalLog:
    def __init__(self, cfg: RefusalLogConfig = RefusalLogConfig()) -> None:
        self.cfg = cfg
        self._lock = threading.Lock()
        self._since = 0.0
        self._count = 0

    def note(self, why: str) -> None:
        now = time.monotonic()
        with self._lock:  # held while writing, too: lines from two handshakes do not interleave
            if now - self._since >= self.cfg.window:
                self._since, self._count = now, 0
            self._count += 1
            if self._count <= self.cfg.burst:
                last = self._count == self.cfg.burst
                more = " (more in this minute are not logged)" if last else ""
                log.warning("refused a connection: %s%s", why, more)
