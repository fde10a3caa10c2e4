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

import psutil

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

    def runtime_profile(self, name: str, debug: int = 0) -> str:
        if name in ("threads", "goroutine", "stack"):
            return thread_stacks()
        if name == "heap":
            import tracemalloc

            if not tracemalloc.is_tracing():
                tracemalloc.start()
                return "tracemalloc started now; call again for allocation statistics\n"
            snap = tracemalloc.take_snapshot()
            stats = snap.statistics("traceback" if debug else "lineno")
            cur, peak = tracemalloc.get_traced_memory()
            lines = [f"traced: current {cur} B, peak {peak} B"]
            for st in stats[: 50 if not debug else 200]:
                lines.append(str(st))
                if debug:
                    lines.extend("    " + ln for ln in st.traceback.format())
            return "\n".join(lines) + "\n"
        if name == "gc":
            counts = gc.get_count()
            lines = [f"counts: {counts}", f"thresholds: {gc.get_threshold()}", f"objects: {len(gc.get_objects())}"]
            for i, st in enumerate(gc.get_stats()):
                lines.append(f"generation {i}: {st}")
            return "\n".join(lines) + "\n"
        raise ValueError(f"unknown runtime profile {name!r} (known: threads, heap, gc)")

    def cpu_profile(self, seconds: float) -> str:
        return _sampler.profile(seconds)

    def stat(self) -> dict[str, Any]:
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
                "python": sys.version.split()[0],
            }


def install(rt) -> None:
    rt.listen("acid", Acid())
