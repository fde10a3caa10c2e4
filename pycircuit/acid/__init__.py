"""acid: the built-in debugging service of every runtime (after Plan 9's
debugger). Layer: above ``runtime`` (it only needs ``Runtime.listen``)."""

from __future__ import annotations

import gc
import io
import os
import sys
import threading
import time
import traceback
from typing import Any

from . import _sampler

__all__ = ["Acid", "install", "thread_stacks"]

_STARTED = time.time()


def thread_stacks() -> str:
    """Text stacks of every thread of this process."""
    names = {t.ident: t for t in threading.enumerate()}
    out = io.StringIO()
    out.write(f"pid {os.getpid()}, {len(names)} threads\n")
    for ident, frame in sorted(_sampler.current_frames().items()):
        t = names.get(ident)
        label = f"{t.name}{' (daemon)' if t and t.daemon else ''}" if t else "?"
        out.write(f"\nThread {ident:#x} {label}:\n")
        out.write("".join(traceback.format_stack(frame)))
    return out.getvalue()


class Acid:
    """Health, stacks, profiles and statistics of this process."""

    def ping(self) -> str:
        return "pong"

    def stack(self) -> str:
        return thread_stacks()

    def runtime_profile(self, name: str, debug: int = 0, seconds: float = 1.0) -> str:
        """``"threads"``, ``"gc"``, or ``"heap"``: live allocations by line
        (``debug``: by traceback). When tracemalloc is off, ``heap`` turns it
        on for ``seconds`` (at most 60), reports what was allocated then and
        is still alive, and turns it off again: tracing slows every
        allocation, so it never stays on behind the program's back."""
        if name in ("threads", "goroutine", "stack"):
            return thread_stacks()
        if name == "heap":
            return _heap(debug, seconds)
        if name == "gc":
            counts = gc.get_count()
            lines = [
                f"counts: {counts}",
                f"thresholds: {gc.get_threshold()}",
                f"objects: {len(gc.get_objects())}",
            ]
            for i, st in enumerate(gc.get_stats()):
                lines.append(f"generation {i}: {st}")
            return "\n".join(lines) + "\n"
        raise ValueError(f"unknown runtime profile {name!r} (known: threads, heap, gc)")

    def cpu_profile(self, seconds: float) -> str:
        return _sampler.profile(seconds)

    def stat(self) -> dict[str, Any]:
        import psutil  # here, not at import: every runtime serves acid, few are asked for stat

        p = psutil.Process()
        with p.oneshot():
            mem = p.memory_info()
            cpu = p.cpu_times()
            try:
                nfiles = len(p.open_files())
            except psutil.Error:
                nfiles = -1
            return {
                "pid": p.pid,
                "rss": mem.rss,
                "vms": mem.vms,
                "cpu_user": cpu.user,
                "cpu_system": cpu.system,
                "threads": p.num_threads(),
                "open_files": nfiles,
                "fds": p.num_fds(),
                "uptime": time.time() - p.create_time(),
                "gc_counts": gc.get_count(),
                "tracemalloc": _tracemalloc_on(),
                "python": sys.version.split()[0],
            }


_heap_lock = (
    threading.Lock()
)  # one sampling window at a time: each must find tracing as the program left it


def _tracemalloc_on() -> bool:
    import tracemalloc

    return tracemalloc.is_tracing()


def _heap(debug: int, seconds: float) -> str:
    import tracemalloc

    if not 0 <= seconds <= 60:
        raise ValueError("a heap sample lasts 0 to 60 seconds")
    with _heap_lock:
        ours = not tracemalloc.is_tracing()
        if ours:
            tracemalloc.start(25 if debug else 1)
            time.sleep(seconds)  # the sampling window itself
        try:
            snap = tracemalloc.take_snapshot()
            cur, peak = tracemalloc.get_traced_memory()
        finally:
            if ours:
                tracemalloc.stop()
    stats = snap.statistics("traceback" if debug else "lineno")
    head = (
        f"allocated in a {seconds:g} s sample and still alive (tracemalloc was off, and is again)"
        if ours
        else "traced by the program's own tracemalloc"
    )
    lines = [f"{head}: current {cur} B, peak {peak} B"]
    for st in stats[: 50 if not debug else 200]:
        lines.append(str(st))
        if debug:
            lines.extend("    " + ln for ln in st.traceback.format())
    return "\n".join(lines) + "\n"


def install(rt: Any) -> None:
    rt.listen("acid", Acid())


def serve_everywhere() -> None:
    """Give this process's runtime (now, or when it is made) the ``acid``
    service. Servers, workers and client programs each call it, so every
    runtime of a circuit can be debugged by its address; calling it again
    does nothing (``on_install`` runs a hook once)."""
    from ..runtime._runtime import on_install

    on_install(install)
