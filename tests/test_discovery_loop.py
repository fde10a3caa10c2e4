"""A server's discovery loop when browsing fails at once: it backs off
(bounded, exponential) instead of spinning and says why once per change of
state.  Browsing fails for real here: zeroconf cannot start on an address no
interface has (192.0.2.1, TEST-NET-1), so nothing is ever sent."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import child_env
from pycircuit.server import _discovery

NOWHERE = "192.0.2.1"

# A real server (own process, own runtime) runs its discovery loop against
# NOWHERE for argv[1] seconds; prints how often zeroconf was started and the
# log records of pycircuit.server._discovery.
SERVER_LOOP = """
import json, logging, sys, threading, time
from pycircuit.server import _discovery
from pycircuit.server._server import Server, ServerConfig
from pycircuit.server._spares import SpareConfig

records = []
class Keep(logging.Handler):
    def emit(self, r):
        records.append({"level": r.levelname, "msg": r.getMessage()})
log = logging.getLogger("pycircuit.server._discovery")
log.addHandler(Keep()); log.setLevel(logging.DEBUG); log.propagate = False

starts = [0]
real = _discovery._zeroconf
def counted(ip):
    starts[0] += 1
    return real(ip)
_discovery._zeroconf = counted

srv = Server(ServerConfig(spares=SpareConfig(floor=0, ceiling=0)))
try:
    t = threading.Thread(target=srv._discover_loop, args=(sys.argv[2],), daemon=True)
    t.start()
    time.sleep(float(sys.argv[1]))   # the bounded interval observed (not a synchronisation)
    srv.stopped.set()
    t.join(10)
    print(json.dumps({"starts": starts[0], "records": records, "stopped": not t.is_alive()}))
finally:
    srv.close()
"""


def test_server_discovery_loop_backs_off_and_says_why_once():
    r = subprocess.run(
        [sys.executable, "-c", SERVER_LOOP, "3", NOWHERE],
        capture_output=True,
        text=True,
        timeout=90,
        env=child_env(),
    )
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.splitlines()[-1])
    # backoff 0.5, 1, 2 s: about four tries in 3 s (a spinning loop makes thousands)
    assert 1 <= out["starts"] <= 8, out["starts"]
    warnings = [x for x in out["records"] if x["level"] == "WARNING"]
    assert len(warnings) == 1, out["records"]  # once per state, not per try
    assert NOWHERE in warnings[0]["msg"] and "No such device" in warnings[0]["msg"], warnings
    assert out["stopped"]  # the loop ends with the server


class _Flaky:
    """Browsing that fails with ``errors`` in turn, then finds ``urls``."""

    def __init__(self, errors, urls):
        self.errors = list(errors)
        self.urls = urls

    def __call__(self, ip, timeout, want):
        if self.errors:
            raise self.errors.pop(0)
        return self.urls


class _Stop:
    """The loop's stop event: ``wait`` (its backoff) is recorded and returns at
    once; set by the test's join callback."""

    def __init__(self):
        self.waits: list[float] = []
        self._set = False

    def set(self):
        self._set = True

    def is_set(self):
        return self._set

    def wait(self, t):
        self.waits.append(t)
        return False


def test_backoff_is_bounded_and_logs_each_change_of_state(monkeypatch, caplog):
    """Backoff doubles up to its bound; a new reason and the recovery are
    logged, repeats of a reason are not; a URL found is joined."""
    from pycircuit.errors import CircuitError
    from pycircuit.server._discovery import DiscoveryConfig, DiscoveryLoop

    url = "circuit://10.0.0.9:1/1/Q" + "1" * 16
    boom = CircuitError("cannot start zeroconf on 127.0.0.1: [Errno 19] No such device")
    other = OSError(99, "Cannot assign requested address")
    monkeypatch.setattr(_discovery, "_browse_once", _Flaky([boom] * 4 + [other] * 2, [url]))
    stop = _Stop()
    joined: list[str] = []

    def join(u):
        joined.append(u)
        stop.set()

    loop = DiscoveryLoop(
        "127.0.0.1", join, set, stop, DiscoveryConfig(every=0.01, backoff_min=0.5, backoff_max=2.0)
    )
    with caplog.at_level("WARNING", logger="pycircuit.server._discovery"):
        loop.run()
    assert stop.waits == [0.5, 1.0, 2.0, 2.0, 2.0, 2.0]
    assert joined == [url] and loop.attempts == 7
    msgs = [r.getMessage() for r in caplog.records]
    assert len(msgs) == 3, msgs
    assert "No such device" in msgs[0] and "Cannot assign" in msgs[1] and "works again" in msgs[2]
    assert caplog.records[1].exc_info  # an unexpected error comes with its traceback
