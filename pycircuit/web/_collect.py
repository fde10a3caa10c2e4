"""What the page shows, read from the circuit through one client (blocking
calls; the web server runs them in threads).

A snapshot is a dict of sections (``hosts``, ``tree``, ``workers``,
``elements``, ``remains``, ``events``); the server pushes a section to the
pages only when it changed. A poll is one kernel call per host,
``metrics(view=True)``; the remains (with output tails) are fetched only
when their count or newest death changed, and the membership
subscriptions are received from only when a poll saw events pending.
"""

from __future__ import annotations

import collections
import logging
import secrets
import threading
import time
from typing import Any

from .._client import Client, Host
from ..errors import CircuitError
from ..runtime._addr import WorkerAddr, is_server_id, is_worker_id
from ._config import WebConfig

log = logging.getLogger(__name__)

MAX_PROFILE_SECONDS = 60.0
MAX_EVENTS = 500
MAX_REMAINS = 50  # newest, per host
TAIL_CHARS = 2000  # of each output stream of a dead worker


class Circuit:
    """Reads the circuit for the page; also answers stack, profile and kill."""

    def __init__(self, client: Client, cfg: WebConfig = WebConfig()) -> None:
        self.c = client
        self._cfg = cfg
        self._lock = threading.Lock()
        self._events: collections.deque = collections.deque(maxlen=MAX_EVENTS)
        self._remains: dict[str, tuple[Any, list]] = {}  # host ID -> (key, remains shown)
        self._targets: dict[str, tuple[str, str]] = {}  # worker or server ID -> (host ID, URL)
        self._subs: list[tuple[str, Any]] = []  # (join | leave, subscription)
        self._drain_lock = threading.Lock()
        self._last_poll = 0.0
        self._stopped = threading.Event()

    # -- membership events ----------------------------------------------------------
    def watch_membership(self) -> None:
        """Subscribe to @join and @leave on the dial-in server, under an
        anchor of our own (scrubbed by ``close``). Never a blocking receive:
        a call left waiting in the server keeps its serving machinery awake
        (it costs CPU at rest: bench/README.md); polls see what is pending."""
        base = self.c.walk([self.c.server_id, f"pycircuit-web-{secrets.token_hex(4)}"])
        self._subs = [
            ("join", base.walk("join").make_on_join()),
            ("leave", base.walk("leave").make_on_leave()),
        ]
        self.drain_events()
        threading.Thread(target=self._drain_loop, name="pycircuit-web-events", daemon=True).start()

    def _drain_loop(self) -> None:
        every = self._cfg.events_every
        while not self._stopped.wait(every):
            if time.monotonic() - self._last_poll >= every:  # else the polls drain
                self.drain_events()

    def drain_events(self) -> None:
        pending = {}
        for kind, sub in list(self._subs):
            try:
                pending[sub] = sub.peek()["Pending"]
            except CircuitError as e:
                self._lost(kind, sub, e)
        self._receive(pending)

    def _drain_seen(self, states: dict) -> None:
        """Receive what a poll of the dial-in server saw pending."""
        pending = {}
        for _, sub in self._subs:
            st = states.get(sub.path.split("/", 2)[2])  # the path below the server's anchor
            if isinstance(st, dict) and st.get("Pending"):
                pending[sub] = st["Pending"]
        self._receive(pending)

    def _receive(self, pending: dict) -> None:
        with self._drain_lock:
            for kind, sub in list(self._subs):
                try:
                    for _ in range(pending.get(sub, 0)):
                        path = sub.recv(timeout=0)
                        with self._lock:
                            self._events.append(
                                {"time": time.time(), "kind": kind, "host": path.strip("/")}
                            )
                except CircuitError as e:
                    if str(e) != "timeout":  # a timeout: another drain took it first
                        self._lost(kind, sub, e)

    def _lost(self, kind: str, sub: Any, e: Exception) -> None:
        if self._stopped.is_set():
            return
        log.warning("membership %s subscription ended: %s", kind, e)
        self._subs = [s for s in self._subs if s[1] is not sub]
        with self._lock:
            self._events.append({"time": time.time(), "kind": "lost", "host": f"{kind}: {e}"})

    def close(self) -> None:
        self._stopped.set()
        for _, sub in self._subs:
            try:
                sub.scrub()
            except CircuitError as e:  # the server is gone: so is the subscription
                log.info("could not scrub %s: %s", sub.path, e)

    # -- the snapshot ---------------------------------------------------------------
    def snapshot(self) -> dict:
        """One ``metrics(view=True)`` per host; the dial-in server's first,
        as it names the live hosts."""
        hosts, tree, workers, elements, remains = [], {}, {}, {}, {}
        targets: dict[str, tuple[str, str]] = {}
        try:
            first = self.c.kernel(self.c.server_id).metrics(True)
        except CircuitError as e:
            return {"hosts": [], "error": f"cannot reach the dial-in server: {e}"}
        self._last_poll = time.monotonic()
        for hid, url in sorted(first["hosts"]):
            targets[hid] = (hid, url)
            try:
                k = self.c.kernel(Host(hid, url))
                m = first if hid == first["id"] else k.metrics(True)
                remains[hid] = self._host_remains(k, hid, m)
            except CircuitError as e:
                hosts.append({"id": hid, "url": url, "error": str(e)})
                continue
            tree[hid] = [["/".join(p), kind] for p, kind in m["tree"]]
            elements[hid] = {
                p: {"kind": kind, "state": m["elements"][p]}
                for p, kind in tree[hid]
                if p in m["elements"]
            }
            ws = []
            for w in m["workers"]:
                targets[w["id"]] = (hid, w["url"])
                ws.append(
                    {
                        "id": w["id"],
                        "pid": w["pid"],
                        "url": w["url"],
                        "started": w["started"],
                        "cpu": w["cpu_percent"],
                        "rss": w["rss"],
                        "anchors": ["/".join(a) for a in w["anchors"]],
                    }
                )
            workers[hid] = ws
            hosts.append(
                {
                    "id": hid,
                    "url": url,
                    "workers": len(ws),
                    "members": m["members"],
                    "cpu": m["host"]["cpu_percent"],
                    "cpus": m["host"]["cpus"],
                    "mem_total": m["host"]["mem_total"],
                    "mem_available": m["host"]["mem_available"],
                    "server_rss": m["server"]["rss"],
                    "server_cpu": m["server"]["cpu_percent"],
                    "spawns": m["spawns"],
                    "started": m["started"],
                }
            )
        self._drain_seen(first["elements"])
        with self._lock:
            self._targets = targets
            events = list(self._events)
        return {
            "hosts": hosts,
            "tree": tree,
            "workers": workers,
            "elements": elements,
            "remains": remains,
            "events": events,
            "error": None,
        }

    def _host_remains(self, k: Any, host_id: str, m: dict) -> list:
        key = (m["remains"], m["last_death"])
        cached = self._remains.get(host_id)
        if cached is not None and cached[0] == key:
            return cached[1]
        shown = []
        for r in (k.remains() or [])[-MAX_REMAINS:]:
            shown.append(
                {
                    "id": r.get("id"),
                    "pid": r.get("pid"),
                    "exit": r.get("exit_code"),
                    "signal": r.get("signal"),
                    "cause": r.get("cause"),
                    "died": r.get("died"),
                    "started": r.get("started"),
                    "stdout": (r.get("stdout") or "")[-TAIL_CHARS:],
                    "stderr": (r.get("stderr") or "")[-TAIL_CHARS:],
                }
            )
        shown.reverse()  # newest first
        self._remains[host_id] = (key, shown)
        return shown

    # -- for /metrics ---------------------------------------------------------------
    def host_metrics(self) -> list[dict]:
        out = []
        for h in self.c.hosts():
            try:
                out.append(self.c.kernel(h).metrics())
            except CircuitError as e:
                log.warning("no metrics from host %s: %s", h.id, e)
        return out

    # -- a worker (or server) on demand ---------------------------------------------
    def _target(self, target_id: str) -> tuple[str, WorkerAddr]:
        """Only IDs the last snapshot saw: the page cannot make us dial an
        arbitrary address."""
        if not (is_worker_id(target_id) or is_server_id(target_id)):
            raise ValueError(f"not a worker or server ID: {target_id!r}")
        with self._lock:
            found = self._targets.get(target_id)
        if found is None:
            raise LookupError(f"no live worker or server {target_id} in this circuit")
        return found[0], WorkerAddr.parse(found[1])

    def stack(self, target_id: str) -> str:
        import pycircuit

        host_id, addr = self._target(target_id)
        box: list = []

        def ask() -> None:
            try:
                box.append(("ok", pycircuit.dial(addr, "acid").stack()))
            except CircuitError as e:  # handed to the waiting thread
                box.append(("error", e))

        t = threading.Thread(target=ask, daemon=True)
        t.start()
        t.join(self._cfg.stack_timeout)
        if box and box[0][0] == "ok":
            return box[0][1]
        if box:
            raise box[0][1]
        if is_server_id(target_id):
            raise CircuitError(
                f"server {target_id} did not answer within {self._cfg.stack_timeout:g} s"
            )
        # Stuck holding the GIL: its server dumps it with faulthandler.
        return self.c.kernel(host_id).fault_stack(target_id)

    def profile(self, target_id: str, seconds: float) -> str:
        import pycircuit

        if not 0 < seconds <= MAX_PROFILE_SECONDS:
            raise ValueError(f"seconds must be in (0, {MAX_PROFILE_SECONDS:.0f}]")
        _, addr = self._target(target_id)
        return pycircuit.dial(addr, "acid").cpu_profile(seconds)

    def kill(self, worker_id: str) -> None:
        if not is_worker_id(worker_id):
            raise ValueError(f"not a worker ID: {worker_id!r}")
        host_id, _ = self._target(worker_id)
        if not self.c.kernel(host_id).kill(worker_id):
            raise LookupError(f"worker {worker_id} is gone")
