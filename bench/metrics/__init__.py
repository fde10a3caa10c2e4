"""The metric groups, one module each, run in this order by ``run.py``:

========== ======================================================
spawn      spawn on the local host to the first result, warm and cold
call       trivial cross-call: round trip and pipelined throughput
byvalue    by-value round trip of 100k ints and of 1 MiB of bytes
footprint  idle worker RSS/USS
stack      stack dump of a live worker by path
gc         distributed GC churn
cluster    N servers joining, and a killed one reported to @leave
web        pycircuit web at rest with 100 workers and a page open
fleet      bursts of spawns, threads of idle connections, first spawn
cli        command-line start-up: ``pycircuit ls``, ``import pycircuit``
========== ======================================================

Spawn runs first so that the fork-based peers fork this process before it
has pycircuit's client threads. Each module has ``run(ctx) -> Section``.
"""

from __future__ import annotations

import importlib

ORDER = ["spawn", "call", "byvalue", "footprint", "stack", "gc", "cluster", "web", "fleet", "cli"]


class Context:
    """What the groups share: the mode, the process tracker, the embedded
    pycircuit server and the running call peers (started on first use,
    shared by ``call`` and ``byvalue``, stopped by ``close``)."""

    def __init__(self, quick: bool, tracker):
        self.quick = quick
        self.tracker = tracker
        self._circuit = None
        self._subjects = None
        self.skipped: list[tuple[str, str]] = []  # (peer, reason)

    def n(self, full: int, quick: int) -> int:
        return quick if self.quick else full

    def circuit(self):
        if self._circuit is None:
            from peers.pycircuit_peer import Circuit

            self._circuit = Circuit(self.tracker)
        return self._circuit

    def subjects(self):
        """[(name, peer or None, skip reason)], pycircuit first."""
        if self._subjects is None:
            from common import log
            from peers import available
            from peers.pycircuit_peer import Pycircuit

            pc = Pycircuit(self.circuit())
            pc.start(self.tracker)
            out = [(pc.name, pc, "")]
            for name, klass, reason in available():
                if klass is None:
                    out.append((name, None, reason))
                    continue
                peer = klass()
                try:
                    log(f"  starting {name} …")
                    peer.start(self.tracker)
                except Exception as e:
                    peer.close()
                    out.append((name, None, f"skipped: could not start ({type(e).__name__}: {e})"))
                    continue
                out.append((name, peer, ""))
            self._subjects = out
        return self._subjects

    def close_subjects(self):
        """Stop the call peers (and pycircuit's echo worker)."""
        from common import log

        if self._subjects is not None:
            for name, peer, _ in self._subjects:
                if peer is not None:
                    try:
                        peer.close()
                    except Exception as e:
                        log(f"warning: closing {name}: {e}")
            self._subjects = None

    def close(self):
        self.close_subjects()
        if self._circuit is not None:
            self._circuit.close()


def module(name: str):
    return importlib.import_module(f"metrics.{name}")
