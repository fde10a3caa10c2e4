"""What every part of the suite shares: statistics, formatting, the result
rows, process control and the benchmark's environment.

Importing this module fixes the environment of everything the suite starts:
``bench/`` goes first on ``sys.path`` and ``$PYTHONPATH`` (workers and peer
processes import ``bench_helpers`` by name), and ``$CIRCUIT`` /
``$CIRCUIT_DISCOVER`` are removed, so that ``pycircuit.connect()`` always
starts an embedded server on 127.0.0.1 and never reaches a configured
circuit.
"""

from __future__ import annotations

import math
import os
import select
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any
from collections.abc import Callable

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
if BENCH_DIR not in sys.path:
    sys.path.insert(0, BENCH_DIR)
os.environ["PYTHONPATH"] = os.pathsep.join(
    [BENCH_DIR]
    + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != BENCH_DIR]
)
os.environ.pop("CIRCUIT", None)
os.environ.pop("CIRCUIT_DISCOVER", None)
os.environ.pop("CIRCUIT_KEY", None)

import psutil  # noqa: E402 - a dependency of pycircuit

GRACE = 5.0  # seconds between terminate and kill
LOOPBACK = "127.0.0.1"
clock = time.perf_counter_ns


def log(msg: str) -> None:
    """Progress goes to stderr; the table goes to stdout."""
    print(msg, file=sys.stderr, flush=True)


# -- statistics ---------------------------------------------------------------
def stats(samples_ns: list[int]) -> dict:
    """Summary of durations, in microseconds; p99 is nearest-rank."""
    s = sorted(samples_ns)
    n = len(s)
    if not n:
        return {"n": 0}

    def q(p: float) -> float:
        return s[min(n, max(1, math.ceil(p * n))) - 1] / 1e3

    mid = n // 2
    median = (s[mid] if n % 2 else (s[mid - 1] + s[mid]) / 2) / 1e3
    return {
        "n": n,
        "median_us": round(median, 2),
        "p99_us": round(q(0.99), 2),
        "mean_us": round(sum(s) / n / 1e3, 2),
        "min_us": round(s[0] / 1e3, 2),
        "max_us": round(s[-1] / 1e3, 2),
    }


def median(values: list[float]) -> float:
    s = sorted(values)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


# -- result rows ----------------------------------------------------------------
@dataclass
class Target:
    """A goal from the issue, checked on one row: ``pycircuit <= limit``
    (or ``>=`` when ``higher``), where ``limit`` is a number in the row's
    unit or ``factor`` × the peer's value."""

    text: str
    limit: float | None = None
    factor: float | None = None
    higher: bool = False

    def check(self, pc: float | None, peer: float | None) -> bool | None:
        if pc is None:
            return None
        if self.factor is not None:
            if peer is None:
                return None
            bound = self.factor * peer
        else:
            bound = self.limit
        return pc >= bound if self.higher else pc <= bound


@dataclass
class Row:
    metric: str  # shown once per group of rows
    peer: str  # the peer, or what the pycircuit value is compared with
    pc: float | None  # pycircuit's value, in ``unit``
    other: float | None  # the peer's value
    unit: str = "us"  # us | calls/s | MB | count | cores
    target: Target | None = None
    note: str = ""  # replaces the numbers when there are none (a skip)
    info: bool = False  # for information only
    group: str = ""

    @property
    def ratio(self) -> float | None:
        if self.pc is None or self.other in (None, 0):
            return None
        return self.pc / self.other

    @property
    def met(self) -> bool | None:
        return self.target.check(self.pc, self.other) if self.target else None

    def as_json(self) -> dict:
        return {
            "group": self.group,
            "metric": self.metric,
            "peer": self.peer,
            "unit": self.unit,
            "pycircuit": self.pc,
            "peer_value": self.other,
            "ratio": None if self.ratio is None else round(self.ratio, 4),
            "target": self.target.text if self.target else None,
            "met": self.met,
            "note": self.note,
            "info": self.info,
        }


def fmt(v: float | None, unit: str) -> str:
    if v is None:
        return "—"
    if unit == "us":
        if v < 1000:
            return f"{v:.1f} µs"
        if v < 1e6:
            return f"{v / 1e3:.2f} ms"
        return f"{v / 1e6:.2f} s"
    if unit == "calls/s":
        return f"{v:,.0f}/s"
    if unit == "MB":
        return f"{v:.1f} MB"
    if unit == "count":
        return f"{v:,.0f}"
    if unit == "cores":
        return f"{v:.2f} cores"
    return f"{v:g} {unit}"


def ratio_text(r: float | None) -> str:
    return "—" if r is None else f"{r:.2f}×"


@dataclass
class Section:
    """The rows of one metric group plus whatever else it measured."""

    name: str
    rows: list[Row] = field(default_factory=list)
    raw: dict = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)  # printed as FAIL lines

    def add(self, *a: Any, **kw: Any) -> Row:
        r = Row(*a, **kw)
        r.group = self.name
        self.rows.append(r)
        return r

    def skip(self, metric: str, peer: str, why: str, info: bool = False) -> None:
        self.add(metric, peer, None, None, note=why, info=info)


# -- process control -------------------------------------------------------------
class Tracker:
    """Every process the suite starts, directly or below a process it
    started: ``remember`` them as they appear, ``reap`` them at the end
    (terminate, then kill after GRACE). psutil.Process compares creation
    times, so a recycled pid is never signalled."""

    def __init__(self) -> None:
        self.procs: dict[int, psutil.Process] = {}

    def remember(self, pid: int | None, tree: bool = True) -> None:
        if not pid:
            return
        try:
            p = psutil.Process(pid)
            found = [p] + (p.children(recursive=True) if tree else [])
        except psutil.Error:
            return
        for q in found:
            self.procs.setdefault(q.pid, q)

    def remember_children(self) -> None:
        """Everything below this process right now."""
        try:
            for q in psutil.Process().children(recursive=True):
                self.procs.setdefault(q.pid, q)
        except psutil.Error:
            pass

    def reap(self) -> list[int]:
        """Stop every remembered process still running; returns the pids
        that had to be signalled."""
        self.remember_children()
        alive = [p for p in self.procs.values() if _running(p)]
        return terminate_all(alive)


def _running(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def terminate_all(procs: list, grace: float = GRACE) -> list[int]:
    """SIGTERM, wait ``grace``, SIGKILL what is left; returns the pids that
    were signalled."""
    hit = []
    for p in procs:
        try:
            p.terminate()
            hit.append(p.pid)
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=grace)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=grace)
    return hit


def wait_gone(procs: list, grace: float = GRACE) -> list[int]:
    """Give ``procs`` ``grace`` seconds to exit on their own, then stop the
    rest; returns the pids that had to be signalled."""
    _, alive = psutil.wait_procs([p for p in procs if _running(p)], timeout=grace)
    return terminate_all(alive, grace)


def stop_popen(p: subprocess.Popen | None, grace: float = GRACE) -> None:
    """Close stdin (our peers exit on EOF), terminate, kill after grace."""
    if p is None:
        return
    try:
        if p.stdin:
            p.stdin.close()
    except OSError:
        pass
    if p.poll() is None:
        try:
            p.wait(0.5)
        except subprocess.TimeoutExpired:
            p.terminate()
            try:
                p.wait(grace)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    for f in (p.stdout, p.stderr):
        if f:
            try:
                f.close()
            except OSError:
                pass


def read_line(p: subprocess.Popen, timeout: float, what: str) -> str:
    """The first stdout line of ``p`` (binary pipe), with a deadline."""
    deadline = time.monotonic() + timeout
    buf = b""
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0 or (p.poll() is not None and not buf):
            raise RuntimeError(f"{what} did not start")
        r, _, _ = select.select([p.stdout], [], [], min(left, 0.5))
        if r:
            chunk = os.read(p.stdout.fileno(), 4096)
            if not chunk:
                raise RuntimeError(f"{what} exited before it was ready")
            buf += chunk
    return buf.split(b"\n", 1)[0].decode().strip()


def start_script(
    script: str,
    *args: str,
    tracker: Tracker,
    what: str,
    env: dict | None = None,
    timeout: float = 60,
) -> tuple[subprocess.Popen, str]:
    """Run a peer server script of bench/peers/ with stdin as its lifeline;
    returns (process, first stdout line)."""
    p = subprocess.Popen(
        [sys.executable, os.path.join(BENCH_DIR, "peers", script), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env or dict(os.environ),
        close_fds=True,
    )
    tracker.remember(p.pid)
    try:
        return p, read_line(p, timeout, what)
    except BaseException:
        stop_popen(p)
        raise


def memory(pid: int) -> dict:
    """RSS and USS in MB (psutil memory_full_info), and the thread count."""
    p = psutil.Process(pid)
    m = p.memory_full_info()
    return {
        "rss_mb": round(m.rss / 2**20, 2),
        "uss_mb": round(m.uss / 2**20, 2),
        "pss_mb": round(getattr(m, "pss", 0) / 2**20, 2),
        "threads": p.num_threads(),
    }


def settle(seconds: float = 0.5) -> None:
    time.sleep(seconds)


def timed(fn: Callable[[], Any]) -> tuple[int, Any]:
    t0 = clock()
    v = fn()
    return clock() - t0, v
